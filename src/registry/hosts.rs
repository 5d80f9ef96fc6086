//! Which hosts serve a registry, and how to talk to them: containerd's `hosts.toml`
//! (`config_path`) layout, read as containerd's `remotes/docker/config` reads it.
//!
//! For a registry `R` (as written in references: `docker.io`, `localhost:5000`) the first
//! existing directory of `<config_path>/R'` (with `host:port` spelled `host_port_`),
//! `<config_path>/R` and `<config_path>/_default` is used. In it, `hosts.toml` holds:
//!
//! ```toml
//! server = "https://registry.example.com"      # optional; the default server otherwise
//! capabilities = ["pull", "resolve", "push"]    # these keys apply to the server
//! skip_verify = false
//! ca = "ca.pem"                                 # or a list; relative to this directory
//! client = [["client.cert", "client.key"]]      # string, list of strings, list of pairs
//! override_path = false
//! [header]
//!   x-custom = "value"                          # or a list of values
//!
//! [host."https://mirror.example.com"]           # mirrors, tried first, in file order
//!   capabilities = ["pull", "resolve"]
//!   ca = ["/etc/certs/mirror.pem"]
//! ```
//!
//! A directory without `hosts.toml` is read the docker `certs.d` way: `*.crt` files are
//! CAs, `*.cert` files client certificates with their key in the matching `*.key` (or in
//! the same file). Unlike containerd (which logs and falls back to that), a `hosts.toml`
//! that does not parse is an error naming the file: a typo should not silently disable a
//! mirror.
//!
//! The result is an ordered list of [`RegistryHost`]: mirrors first, in file order, then
//! the server. A host URL without scheme gets `https://`; the API root is the URL's path
//! plus `/v2` unless the path already ends in `/v2` or `override_path` is set; hosts
//! without `capabilities` get all three.
//!
//! **The default server** (no directory, or no `server` key):
//! - `docker.io` is always `https://registry-1.docker.io`;
//! - with [`HostsConfig::plain_http`] (ctr's `--plain-http`), any other registry is
//!   `http://<registry>`;
//! - otherwise a loopback registry (`localhost`, `127.0.0.0/8`, `::1`, any port) is tried as
//!   `https://<registry>` with certificate verification off and, when that cannot connect
//!   (e.g. the server speaks plain HTTP), as `http://<registry>`: containerd 1.6 uses plain
//!   HTTP for loopback registries and 1.7 falls back to it, and both behaviours result;
//! - and every other registry is `https://<registry>`.
//!
//! The default server always has all capabilities and the API root `/v2`; the top-level
//! TLS and header keys of a `hosts.toml` without `server` apply to it.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use toml::{Table, Value};
use url::Url;

use super::error::RegistryError;
use super::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST};

/// An operation a host may serve, as containerd's `HostCapabilities` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Fetching manifests by digest and blobs.
    Pull,
    /// Resolving a tag to a digest.
    Resolve,
    /// Pushing blobs and manifests.
    Push,
}

impl Capability {
    /// The name used in `hosts.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Resolve => "resolve",
            Self::Push => "push",
        }
    }
}

/// The set of [`Capability`] a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    /// Serves pulls.
    pub pull: bool,
    /// Serves resolves.
    pub resolve: bool,
    /// Accepts pushes.
    pub push: bool,
}

impl Capabilities {
    /// Pull, resolve and push.
    pub const ALL: Self = Self {
        pull: true,
        resolve: true,
        push: true,
    };

    /// Whether the set contains `c`.
    pub fn has(self, c: Capability) -> bool {
        match c {
            Capability::Pull => self.pull,
            Capability::Resolve => self.resolve,
            Capability::Push => self.push,
        }
    }
}

/// A TLS client certificate: the PEM certificate file and the key file (`None`: the key is
/// in the certificate file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientCert {
    /// The PEM certificate (chain).
    pub cert: PathBuf,
    /// The PEM private key, when not in `cert`.
    pub key: Option<PathBuf>,
}

/// One endpoint serving a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// Host and port: `registry-1.docker.io`, `127.0.0.1:5000`.
    pub host: String,
    /// The API root path: `/v2` unless `override_path` gave another.
    pub path_prefix: String,
    /// What the host may be used for.
    pub capabilities: Capabilities,
    /// Whether TLS certificate verification is off.
    pub skip_verify: bool,
    /// Extra CA certificate files (PEM), trusted in addition to the system roots.
    pub ca: Vec<PathBuf>,
    /// TLS client certificates.
    pub client_certs: Vec<ClientCert>,
    /// Headers sent with every request to this host.
    pub headers: HeaderMap,
}

impl RegistryHost {
    /// The API root as a URL ending in `/`: `https://host/v2/`. Request paths are
    /// appended to it.
    pub fn base_url(&self) -> Result<Url, RegistryError> {
        let s = format!(
            "{}://{}{}/",
            self.scheme,
            self.host,
            self.path_prefix.trim_end_matches('/')
        );
        Url::parse(&s).map_err(|e| RegistryError::InvalidArgument {
            what: format!("registry host URL {s:?}"),
            reason: e.to_string(),
        })
    }

    fn default_server(scheme: &str, host: &str) -> Self {
        Self {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path_prefix: "/v2".to_owned(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            ca: Vec::new(),
            client_certs: Vec::new(),
            headers: HeaderMap::new(),
        }
    }
}

/// Where host configuration comes from: containerd's `config_path` and ctr's
/// `--plain-http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsConfig {
    /// The directory of per-registry directories (`/etc/containerd/certs.d`); `None`: the
    /// default server only.
    pub config_path: Option<PathBuf>,
    /// Use `http` for the default server of every registry but `docker.io`.
    pub plain_http: bool,
}

impl HostsConfig {
    /// The hosts serving `registry`, in the order to try them: mirrors, then the server.
    pub fn hosts(&self, registry: &str) -> Result<Vec<RegistryHost>, RegistryError> {
        let entries = match self
            .config_path
            .as_deref()
            .map(|root| host_dir(root, registry))
            .transpose()?
        {
            Some(Some(dir)) => load_host_dir(&dir)?,
            _ => vec![Parsed::Default(Settings::default())],
        };
        let mut out = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            match entry {
                Parsed::Host(h) => out.push(h),
                Parsed::Default(tls) => out.extend(self.default_servers(registry, tls)),
            }
        }
        Ok(out)
    }

    /// The default server(s) of `registry`, with the top-level TLS and header settings.
    fn default_servers(&self, registry: &str, tls: Settings) -> Vec<RegistryHost> {
        let apply = |mut h: RegistryHost| {
            h.skip_verify |= tls.skip_verify;
            h.ca.clone_from(&tls.ca);
            h.client_certs.clone_from(&tls.client_certs);
            h.headers.clone_from(&tls.headers);
            h
        };
        if registry == DOCKER_HUB {
            return vec![apply(RegistryHost::default_server(
                "https",
                DOCKER_HUB_API_HOST,
            ))];
        }
        if self.plain_http {
            return vec![apply(RegistryHost::default_server("http", registry))];
        }
        if is_localhost(registry) {
            let mut https = apply(RegistryHost::default_server("https", registry));
            https.skip_verify = true;
            return vec![https, apply(RegistryHost::default_server("http", registry))];
        }
        vec![apply(RegistryHost::default_server("https", registry))]
    }
}

/// Whether `host` (with or without port) is `localhost` or a loopback address, as
/// containerd's `docker.IsLocalhost` decides.
pub fn is_localhost(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else if host.matches(':').count() == 1 {
        host.split_once(':').map_or(host, |(h, _)| h)
    } else {
        host
    };
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// containerd's `hostPaths`: `host_port_`, then `host:port`, then `_default`.
fn host_dir(root: &Path, registry: &str) -> Result<Option<PathBuf>, RegistryError> {
    let mut candidates = Vec::new();
    if let Some(i) = registry.rfind(':').filter(|&i| i > 0) {
        candidates.push(root.join(format!("{}_{}_", &registry[..i], &registry[i + 1..])));
    }
    candidates.push(root.join(registry));
    candidates.push(root.join("_default"));
    for dir in candidates {
        match fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RegistryError::config(dir, e)),
        }
    }
    Ok(None)
}

/// TLS and header settings of one host entry.
#[derive(Debug, Default, Clone)]
struct Settings {
    skip_verify: bool,
    ca: Vec<PathBuf>,
    client_certs: Vec<ClientCert>,
    headers: HeaderMap,
}

/// One entry of a host directory: a host with its URL, or the default server with the
/// directory's top-level settings (only ever the last entry).
#[derive(Debug)]
enum Parsed {
    Host(RegistryHost),
    Default(Settings),
}

fn load_host_dir(dir: &Path) -> Result<Vec<Parsed>, RegistryError> {
    let file = dir.join("hosts.toml");
    match fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => parse_hosts_file(dir, &file, &text),
        Ok(_) => load_cert_files(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => load_cert_files(dir),
        Err(e) => Err(RegistryError::config(file, e)),
    }
}

/// Parses `hosts.toml` text; `dir` anchors relative paths, `file` names errors.
fn parse_hosts_file(dir: &Path, file: &Path, text: &str) -> Result<Vec<Parsed>, RegistryError> {
    let err = |reason: String| RegistryError::config(file, reason);
    let table: Table =
        toml::from_str(text).map_err(|e| err(format!("invalid TOML: {}", e.message())))?;
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let Value::Table(hosts) = hosts else {
            return Err(err("\"host\" must be a table".into()));
        };
        // `preserve_order` keeps the file order, which is the order to try mirrors in.
        for (url, entry) in hosts {
            let Value::Table(entry) = entry else {
                return Err(err(format!("host {url:?} must be a table")));
            };
            let host =
                parse_host(dir, url, entry).map_err(|r| err(format!("host {url:?}: {r}")))?;
            out.push(Parsed::Host(host));
        }
    }
    let server = match table.get("server") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(err("\"server\" must be a string".into())),
    };
    match server {
        Some(url) => {
            let host =
                parse_host(dir, url, &table).map_err(|r| err(format!("server {url:?}: {r}")))?;
            out.push(Parsed::Host(host));
        }
        None => out.push(Parsed::Default(parse_settings(dir, &table).map_err(err)?)),
    }
    Ok(out)
}

/// Parses `hosts.toml` text as if it were a registry's file (for the fuzz targets; nothing
/// is read from disk): how many hosts it names, and whether each has a usable base URL.
pub(crate) fn parse_hosts_text(text: &str) -> Result<Vec<bool>, RegistryError> {
    let dir = Path::new("certs.d/registry.example");
    let parsed = parse_hosts_file(dir, &dir.join("hosts.toml"), text)?;
    Ok(parsed
        .iter()
        .map(|p| match p {
            Parsed::Host(h) => h.base_url().is_ok(),
            Parsed::Default(_) => true,
        })
        .collect())
}

/// containerd's `parseHostConfig` for an entry with a URL.
fn parse_host(dir: &Path, server: &str, entry: &Table) -> Result<RegistryHost, String> {
    let with_scheme = if server.starts_with("http") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported scheme {:?}", url.scheme()));
    }
    let Some(hostname) = url.host_str() else {
        return Err("URL has no host".into());
    };
    let host = match url.port() {
        Some(p) => format!("{hostname}:{p}"),
        None => hostname.to_owned(),
    };
    let override_path = match entry.get("override_path") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(_) => return Err("\"override_path\" must be a boolean".into()),
    };
    let path = url.path().trim_end_matches('/');
    let path_prefix = if override_path || path.ends_with("/v2") {
        path.to_owned()
    } else {
        format!("{path}/v2")
    };
    let capabilities = match entry.get("capabilities") {
        None => Capabilities::ALL,
        Some(v) => {
            let names = string_list(v, "capabilities")?;
            if names.is_empty() {
                Capabilities::ALL
            } else {
                let mut caps = Capabilities::default();
                for c in names {
                    match c.to_ascii_lowercase().as_str() {
                        "pull" => caps.pull = true,
                        "resolve" => caps.resolve = true,
                        "push" => caps.push = true,
                        other => return Err(format!("unknown capability {other:?}")),
                    }
                }
                caps
            }
        }
    };
    let s = parse_settings(dir, entry)?;
    Ok(RegistryHost {
        scheme: url.scheme().to_owned(),
        host,
        path_prefix,
        capabilities,
        skip_verify: s.skip_verify,
        ca: s.ca,
        client_certs: s.client_certs,
        headers: s.headers,
    })
}

fn parse_settings(dir: &Path, entry: &Table) -> Result<Settings, String> {
    let abs = |p: &str| {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            dir.join(p)
        }
    };
    let mut s = Settings::default();
    match entry.get("skip_verify") {
        None => {}
        Some(Value::Boolean(b)) => s.skip_verify = *b,
        Some(_) => return Err("\"skip_verify\" must be a boolean".into()),
    }
    if let Some(v) = entry.get("ca") {
        s.ca = string_list(v, "ca")?.iter().map(|p| abs(p)).collect();
    }
    match entry.get("client") {
        None => {}
        Some(Value::String(p)) => s.client_certs.push(ClientCert {
            cert: abs(p),
            key: None,
        }),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(p) => s.client_certs.push(ClientCert {
                        cert: abs(p),
                        key: None,
                    }),
                    Value::Array(_) => {
                        let pair = string_list(item, "client")?;
                        let [cert, key] = pair.as_slice() else {
                            return Err(format!(
                                "invalid pair {pair:?} for \"client\": need [cert, key]"
                            ));
                        };
                        s.client_certs.push(ClientCert {
                            cert: abs(cert),
                            key: Some(abs(key)),
                        });
                    }
                    other => {
                        return Err(format!("invalid type {} in \"client\"", other.type_str()));
                    }
                }
            }
        }
        Some(other) => return Err(format!("invalid type {} for \"client\"", other.type_str())),
    }
    match entry.get("header") {
        None => {}
        Some(Value::Table(headers)) => {
            for (name, v) in headers {
                let hname = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("header {name:?}: {e}"))?;
                for value in string_list(v, &format!("header {name:?}"))? {
                    let hv = HeaderValue::from_str(&value)
                        .map_err(|e| format!("header {name:?}: {e}"))?;
                    s.headers.append(hname.clone(), hv);
                }
            }
        }
        Some(other) => return Err(format!("invalid type {} for \"header\"", other.type_str())),
    }
    Ok(s)
}

/// A string or a list of strings.
fn string_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "invalid type {} in {key:?}: expected strings",
                    other.type_str()
                )),
            })
            .collect(),
        other => Err(format!(
            "invalid type {} for {key:?}: expected a string or a list of strings",
            other.type_str()
        )),
    }
}

/// The docker `certs.d` layout: `*.crt` CAs, `*.cert` client certificates with `*.key`.
fn load_cert_files(dir: &Path) -> Result<Vec<Parsed>, RegistryError> {
    let mut tls = Settings::default();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| RegistryError::config(dir, e))?;
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => tls.ca.push(path),
            Some("cert") => {
                let key = path.with_extension("key");
                let key = key.exists().then_some(key);
                tls.client_certs.push(ClientCert { cert: path, key });
            }
            _ => {}
        }
    }
    Ok(vec![Parsed::Default(tls)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, dir: &str, text: &str) -> PathBuf {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("hosts.toml"), text).unwrap();
        d
    }

    fn summary(hosts: &[RegistryHost]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path_prefix))
            .collect()
    }

    #[test]
    fn defaults_without_config() {
        let cfg = HostsConfig::default();
        assert_eq!(
            summary(&cfg.hosts("docker.io").unwrap()),
            ["https://registry-1.docker.io/v2"]
        );
        assert_eq!(
            summary(&cfg.hosts("quay.io").unwrap()),
            ["https://quay.io/v2"]
        );
        let local = cfg.hosts("localhost:5000").unwrap();
        assert_eq!(
            summary(&local),
            ["https://localhost:5000/v2", "http://localhost:5000/v2"]
        );
        assert!(local[0].skip_verify);
        assert_eq!(summary(&cfg.hosts("127.0.0.1:5000").unwrap()).len(), 2);
        assert_eq!(summary(&cfg.hosts("[::1]:5000").unwrap()).len(), 2);

        let plain = HostsConfig {
            config_path: None,
            plain_http: true,
        };
        assert_eq!(
            summary(&plain.hosts("quay.io").unwrap()),
            ["http://quay.io/v2"]
        );
        assert_eq!(
            summary(&plain.hosts("localhost:5000").unwrap()),
            ["http://localhost:5000/v2"]
        );
        assert_eq!(
            summary(&plain.hosts("docker.io").unwrap()),
            ["https://registry-1.docker.io/v2"]
        );
        assert_eq!(
            plain.hosts("docker.io").unwrap()[0]
                .base_url()
                .unwrap()
                .as_str(),
            "https://registry-1.docker.io/v2/"
        );
    }

    #[test]
    fn localhost_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
            "[::1]",
        ] {
            assert!(is_localhost(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_localhost(h), "{h}");
        }
    }

    #[test]
    fn mirrors_first_in_file_order_then_server() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = write(
            tmp.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve"]

[host."https://zmirror.example.com"]
  capabilities = ["pull"]
  ca = "certs/mirror.pem"
  [host."https://zmirror.example.com".header]
    x-token = ["a", "b"]

[host."http://amirror.example.com:5000/prefix"]
  skip_verify = true
  client = [["c.cert", "/abs/c.key"], "both.pem"]

[host."bare.example.com"]
  override_path = true
"#,
        );
        let cfg = HostsConfig {
            config_path: Some(tmp.path().into()),
            plain_http: false,
        };
        let hosts = cfg.hosts("docker.io").unwrap();
        assert_eq!(
            summary(&hosts),
            [
                "https://zmirror.example.com/v2",
                "http://amirror.example.com:5000/prefix/v2",
                "https://bare.example.com",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert_eq!(
            hosts[0].capabilities,
            Capabilities {
                pull: true,
                resolve: false,
                push: false
            }
        );
        assert_eq!(hosts[0].ca, [dir.join("certs/mirror.pem")]);
        let values: Vec<_> = hosts[0]
            .headers
            .get_all("x-token")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, ["a", "b"]);
        assert!(hosts[1].skip_verify);
        assert_eq!(
            hosts[1].client_certs,
            [
                ClientCert {
                    cert: dir.join("c.cert"),
                    key: Some("/abs/c.key".into())
                },
                ClientCert {
                    cert: dir.join("both.pem"),
                    key: None
                },
            ]
        );
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
        assert_eq!(
            hosts[2].base_url().unwrap().as_str(),
            "https://bare.example.com/"
        );
        assert_eq!(
            hosts[3].capabilities,
            Capabilities {
                pull: true,
                resolve: true,
                push: false
            }
        );
    }

    #[test]
    fn directory_names_and_default_server_settings() {
        let tmp = tempfile::tempdir().unwrap();
        // `host_port_` wins over `host:port`.
        write(tmp.path(), "reg.local_5000_", "[host.\"https://m1\"]\n");
        write(tmp.path(), "reg.local:5000", "[host.\"https://m2\"]\n");
        write(
            tmp.path(),
            "other:6000",
            "skip_verify = true\nca = [\"a.pem\", \"/b.pem\"]\n[header]\nx-a = \"1\"\n",
        );
        write(
            tmp.path(),
            "_default",
            "[host.\"https://fallback-mirror\"]\ncapabilities = [\"pull\"]\n",
        );
        let cfg = HostsConfig {
            config_path: Some(tmp.path().into()),
            plain_http: true,
        };
        assert_eq!(
            summary(&cfg.hosts("reg.local:5000").unwrap()),
            ["https://m1/v2", "http://reg.local:5000/v2"]
        );
        let other = cfg.hosts("other:6000").unwrap();
        assert_eq!(summary(&other), ["http://other:6000/v2"]);
        assert!(other[0].skip_verify);
        assert_eq!(
            other[0].ca,
            [tmp.path().join("other:6000/a.pem"), PathBuf::from("/b.pem")]
        );
        assert_eq!(other[0].headers.get("x-a").unwrap(), "1");
        assert_eq!(other[0].capabilities, Capabilities::ALL);
        assert_eq!(
            summary(&cfg.hosts("quay.io").unwrap()),
            ["https://fallback-mirror/v2", "http://quay.io/v2"]
        );
    }

    #[test]
    fn certs_d_layout_without_hosts_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("reg.example");
        fs::create_dir_all(&d).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "readme.txt"] {
            fs::write(d.join(f), "x").unwrap();
        }
        let cfg = HostsConfig {
            config_path: Some(tmp.path().into()),
            plain_http: false,
        };
        let hosts = cfg.hosts("reg.example").unwrap();
        assert_eq!(summary(&hosts), ["https://reg.example/v2"]);
        assert_eq!(hosts[0].ca, [d.join("ca.crt")]);
        assert_eq!(
            hosts[0].client_certs,
            [ClientCert {
                cert: d.join("client.cert"),
                key: Some(d.join("client.key"))
            }]
        );
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = HostsConfig {
            config_path: Some(tmp.path().into()),
            plain_http: false,
        };
        let cases = [
            ("a.example", "server = [", "invalid TOML"),
            (
                "b.example",
                "[host.\"https://m\"]\ncapabilities = [\"fetch\"]\n",
                "unknown capability \"fetch\"",
            ),
            (
                "c.example",
                "skip_verify = \"yes\"\n",
                "\"skip_verify\" must be a boolean",
            ),
            ("d.example", "ca = 3\n", "invalid type integer for \"ca\""),
            ("e.example", "client = [[\"only-one\"]]\n", "invalid pair"),
            (
                "f.example",
                "[header]\n\"bad header\" = \"x\"\n",
                "header \"bad header\"",
            ),
            ("g.example", "host = 1\n", "\"host\" must be a table"),
        ];
        for (reg, text, want) in cases {
            let dir = write(tmp.path(), reg, text);
            let e = cfg.hosts(reg).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, RegistryError::Config { .. }), "{reg}: {msg}");
            assert!(
                msg.contains(&dir.join("hosts.toml").display().to_string()),
                "{msg}"
            );
            assert!(msg.contains(want), "{reg}: {msg} lacks {want:?}");
        }
    }
}
