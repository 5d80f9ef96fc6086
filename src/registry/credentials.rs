//! Registry credentials from docker's `config.json` and docker credential helpers, found
//! the way the docker CLI (and nerdctl's resolver for containerd) finds them.
//!
//! The file is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, unless a path
//! is given; a missing file means no credentials. For a host, in this order:
//! 1. `credHelpers.<host>` names a helper: run `docker-credential-<name> get` with the
//!    server address on stdin; it answers `{"Username": …, "Secret": …}` (a `<token>`
//!    username means the secret is an identity token).
//! 2. `credsStore` names a helper for every host; when it has nothing for this host, the
//!    `auths` entries are still consulted (docker keeps placeholders there).
//! 3. `auths.<host>`: `auth` (base64 `user:password`), or `username` and `password`, and
//!    `identitytoken` (an OAuth2 refresh token, preferred when present). Keys may be URLs
//!    (`https://host/v1/`): they match by host name.
//!
//! Docker Hub is stored under `https://index.docker.io/v1/`; the hosts `docker.io`,
//! `index.docker.io` and `registry-1.docker.io` all look there (and under their own names).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use super::error::RegistryError;

/// The key Docker Hub's credentials are stored under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// Hosts that are Docker Hub.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// How long a credential helper may take (it may be waiting on a keychain).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The username a helper returns when the secret is an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// A credential for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A username and password (or personal access token), sent with HTTP Basic, either
    /// to the registry or to its token endpoint.
    Basic {
        /// The user.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// An identity token: an OAuth2 refresh token exchanged at the token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A loaded docker `config.json`.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    path: PathBuf,
    file: std::sync::Arc<FileConfig>,
    helper_path: Option<OsString>,
}

impl DockerConfig {
    /// Where docker keeps its config: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json` (`None` without either variable).
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Loads `path`; a missing file is an empty config (no credentials).
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::config(path, format!("invalid JSON: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileConfig::default(),
            Err(e) => return Err(RegistryError::config(path, e)),
        };
        Ok(Self {
            path: path.to_owned(),
            file: std::sync::Arc::new(file),
            helper_path: None,
        })
    }

    /// Loads the file at [`default_path`](Self::default_path) (an empty config if there is
    /// none).
    pub fn load_default() -> Result<Self, RegistryError> {
        match Self::default_path() {
            Some(p) => Self::load(&p),
            None => Ok(Self::default()),
        }
    }

    /// Searches credential helpers in `path` (a `PATH`-style list) instead of the
    /// process's `PATH`.
    pub fn with_helper_search_path(mut self, path: impl Into<OsString>) -> Self {
        self.helper_path = Some(path.into());
        self
    }

    /// The file this config was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential for `host` (`registry.example.com:5000`, `registry-1.docker.io`),
    /// or `None`. Blocking: it may run a credential helper.
    pub fn credentials(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let hub = DOCKER_HUB_HOSTS.contains(&host);
        let server = if hub { DOCKER_HUB_AUTH_KEY } else { host };
        let names: Vec<&str> = if hub {
            std::iter::once(DOCKER_HUB_AUTH_KEY)
                .chain(DOCKER_HUB_HOSTS)
                .collect()
        } else {
            vec![host]
        };
        if let Some(helper) = names.iter().find_map(|n| self.file.cred_helpers.get(*n)) {
            return self.run_helper(helper, server);
        }
        if let Some(store) = self.file.creds_store.as_deref().filter(|s| !s.is_empty())
            && let Some(c) = self.run_helper(store, server)?
        {
            return Ok(Some(c));
        }
        self.lookup_auths(&names)
    }

    fn lookup_auths(&self, names: &[&str]) -> Result<Option<Credential>, RegistryError> {
        let exact = names
            .iter()
            .find_map(|n| self.file.auths.get(*n).map(|e| (*n, e)));
        let entry = exact.or_else(|| {
            self.file
                .auths
                .iter()
                .find(|(k, _)| names.contains(&key_host(k)))
                .map(|(k, e)| (k.as_str(), e))
        });
        let Some((key, entry)) = entry else {
            return Ok(None);
        };
        if let Some(t) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.to_owned())));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad =
                |why: &str| RegistryError::config(&self.path, format!("auths.{key:?}.auth: {why}"));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(&format!("invalid base64: {e}")))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("expected base64 of \"user:password\""))?;
            return Ok(Some(Credential::Basic {
                username: user.to_owned(),
                password: pass.to_owned(),
            }));
        }
        match (&entry.username, &entry.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }

    /// Runs `docker-credential-<helper> get` for `server`; `None` when it has nothing.
    fn run_helper(&self, helper: &str, server: &str) -> Result<Option<Credential>, RegistryError> {
        let fail = |reason: String| RegistryError::CredentialHelper {
            helper: helper.to_owned(),
            host: server.to_owned(),
            reason,
        };
        if helper.is_empty() || helper.contains('/') {
            return Err(fail("invalid helper name".into()));
        }
        let program = format!("docker-credential-{helper}");
        let mut cmd = Command::new(&program);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = &self.helper_path {
            // std looks the program up in the child's PATH when it is set explicitly.
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                fail(format!("{program} not found on PATH"))
            } else {
                fail(format!("cannot run {program}: {e}"))
            }
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading gives EPIPE; its exit status tells more.
            let _ = stdin.write_all(server.as_bytes());
        }
        // Read both pipes on threads so a chatty helper cannot block on a full pipe while
        // we wait for it to exit.
        let read_pipe = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(1 << 20).read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = read_pipe(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = read_pipe(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "no answer within {}s",
                        HELPER_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(fail(format!("wait: {e}"))),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            let msg = String::from_utf8_lossy(if stdout.is_empty() { &stderr } else { &stdout })
                .trim()
                .to_owned();
            // docker-credential-helpers' ErrCredentialsNotFound.
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!("{status}: {msg}")));
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let a: Answer = serde_json::from_slice(&stdout)
            .map_err(|e| fail(format!("invalid JSON on stdout: {e}")))?;
        if a.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if a.username == TOKEN_USERNAME {
            Credential::IdentityToken(a.secret)
        } else {
            Credential::Basic {
                username: a.username,
                password: a.secret,
            }
        }))
    }
}

/// The host part of an `auths` key: docker's `ConvertToHostname` (scheme and path dropped).
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(dir: &Path, json: &str) -> DockerConfig {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        DockerConfig::load(&path).unwrap()
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auths_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let c = config(
            tmp.path(),
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "reg.example:5000": {{"username": "u2", "password": "p2"}},
                    "https://url.example/v1/": {{"auth": "{}"}},
                    "tok.example": {{"auth": "{}", "identitytoken": "refresh-me"}},
                    "empty.example": {{}},
                    "bad.example": {{"auth": "bm9jb2xvbg=="}}
                }}}}"#,
                b64("hubuser:hub:pass"),
                b64("u3:p3"),
                b64("x:y")
            ),
        );
        assert_eq!(
            c.credentials("registry-1.docker.io").unwrap(),
            basic("hubuser", "hub:pass")
        );
        assert_eq!(
            c.credentials("docker.io").unwrap(),
            basic("hubuser", "hub:pass")
        );
        assert_eq!(
            c.credentials("reg.example:5000").unwrap(),
            basic("u2", "p2")
        );
        assert_eq!(c.credentials("reg.example").unwrap(), None, "port matters");
        assert_eq!(c.credentials("url.example").unwrap(), basic("u3", "p3"));
        assert_eq!(
            c.credentials("tok.example").unwrap(),
            Some(Credential::IdentityToken("refresh-me".into()))
        );
        assert_eq!(c.credentials("empty.example").unwrap(), None);
        assert_eq!(c.credentials("nowhere.example").unwrap(), None);
        let e = c.credentials("bad.example").unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("bad.example") && e.contains("user:password"),
            "{e}"
        );
        assert_eq!(
            format!("{:?}", basic("u", "secret").unwrap()),
            "Basic(u, ***)"
        );
    }

    #[test]
    fn missing_and_broken_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = DockerConfig::load(&tmp.path().join("none.json")).unwrap();
        assert_eq!(c.credentials("x.example").unwrap(), None);
        let path = tmp.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = DockerConfig::load(&path).unwrap_err();
        assert!(matches!(e, RegistryError::Config { .. }));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    fn helper(dir: &Path, name: &str, script: &str) {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credential_helpers() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Answers by the server address on stdin, as docker-credential-helpers do.
        helper(
            &bin,
            "test",
            r#"[ "$1" = get ] || exit 2
read -r server || true
case "$server" in
  https://index.docker.io/v1/) echo '{"ServerURL":"hub","Username":"hubuser","Secret":"hubpass"}' ;;
  tok.example) echo '{"Username":"<token>","Secret":"idtoken"}' ;;
  fail.example) echo 'boom' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac"#,
        );
        helper(
            &bin,
            "other",
            r#"read -r s; echo "{\"Username\":\"o\",\"Secret\":\"$s\"}""#,
        );
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let c = config(
            tmp.path(),
            r#"{"credsStore": "test",
                "credHelpers": {"helped.example": "other", "missing.example": "nope"},
                "auths": {"fallback.example": {"username": "f", "password": "g"}}}"#,
        )
        .with_helper_search_path(&path);
        assert_eq!(
            c.credentials("registry-1.docker.io").unwrap(),
            basic("hubuser", "hubpass")
        );
        assert_eq!(
            c.credentials("tok.example").unwrap(),
            Some(Credential::IdentityToken("idtoken".into()))
        );
        assert_eq!(
            c.credentials("helped.example").unwrap(),
            basic("o", "helped.example")
        );
        assert_eq!(
            c.credentials("fallback.example").unwrap(),
            basic("f", "g"),
            "store miss falls back to auths"
        );
        assert_eq!(c.credentials("unknown.example").unwrap(), None);
        let e = c.credentials("fail.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-test")
                && e.contains("fail.example")
                && e.contains("boom"),
            "{e}"
        );
        let e = c.credentials("missing.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-nope not found on PATH"),
            "{e}"
        );
    }
}
