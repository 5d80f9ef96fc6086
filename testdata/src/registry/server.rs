//! [`RegistryServer`]: Debian's CNCF distribution registry (2.8) as a child
//! process on a free loopback port, with storage, config, htpasswd file and
//! log in one temp dir that disappears with it.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::{RawClient, basic_auth};
use super::{Error, Result, url_of};

/// Where Debian installs the registry (`apt-get install docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How long the registry gets to answer `GET /v2/` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Spawn attempts: the free port is found by binding port 0 and releasing
/// it, so another process can take it before the registry binds it.
const START_ATTEMPTS: usize = 5;

/// bcrypt cost of the htpasswd hashes: the minimum, because the registry
/// verifies the password on every request and tests make thousands.
const BCRYPT_COST: u32 = 4;

/// A running registry; killed and waited for on drop.
///
/// ```no_run
/// let registry = strata_testdata::registry::RegistryServer::start().unwrap();
/// let mut client = registry.client();
/// assert_eq!(client.get("/v2/", &[]).unwrap().status, 200);
/// ```
#[derive(Debug)]
pub struct RegistryServer {
    child: Child,
    addr: SocketAddr,
    users: Vec<(String, String)>,
    // Removed after Drop::drop has killed the process that writes into it.
    dir: TempDir,
}

impl RegistryServer {
    /// Starts a registry without authentication.
    pub fn start() -> Result<Self> {
        Self::start_with_users(&[])
    }

    /// Starts a registry that requires htpasswd Basic auth for every request
    /// when `users` (name, password) is non-empty; the first user is the one
    /// [`client`](Self::client) and the push helpers authenticate as.
    pub fn start_with_users(users: &[(&str, &str)]) -> Result<Self> {
        Self::launch(Path::new(DOCKER_REGISTRY), users, bcrypt::Version::TwoY)
    }

    /// Starts `binary` with htpasswd hashes in `version`'s format (`$2y$`
    /// is what `htpasswd -B` writes; tests check `$2b$` works too).
    pub(super) fn launch(
        binary: &Path,
        users: &[(&str, &str)],
        version: bcrypt::Version,
    ) -> Result<Self> {
        if !binary.exists() {
            return Err(Error::RegistryMissing {
                path: binary.to_path_buf(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .map_err(Error::io("creating the registry's temp dir"))?;
        let htpasswd = if users.is_empty() {
            None
        } else {
            let path = dir.path().join("htpasswd");
            let mut lines = String::new();
            for (user, password) in users {
                lines.push_str(&htpasswd_line(user, password, version.clone())?);
            }
            fs::write(&path, lines).map_err(Error::io(format!("writing {}", path.display())))?;
            Some(path)
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let addr = free_port()?;
            let mut child = spawn(binary, dir.path(), addr, htpasswd.as_deref())?;
            match wait_ready(&mut child, addr, !users.is_empty(), dir.path()) {
                Ok(()) => {
                    return Ok(RegistryServer {
                        child,
                        addr,
                        users: users
                            .iter()
                            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                            .collect(),
                        dir,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let port_taken = matches!(&err, Error::Exited { log_tail, .. }
                        if log_tail.contains("address already in use"));
                    if !port_taken {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url_of(self.addr)
    }

    /// `127.0.0.1:<port>`, the registry host of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first configured user, if auth is enabled.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.users.first().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The `Authorization` header value for [`credentials`](Self::credentials).
    pub fn authorization(&self) -> Option<String> {
        self.credentials().map(|(u, p)| basic_auth(u, p))
    }

    /// A raw client for this registry (add [`authorization`](Self::authorization) yourself).
    pub fn client(&self) -> RawClient {
        RawClient::new(self.addr)
    }

    /// The registry's storage root (the filesystem driver's `rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`):
    /// overwrite it to make the registry serve corrupt content.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = crate::digest_hex(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }

    /// The registry's log file (stdout and stderr, level warn).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `user:hash` htpasswd line. The registry (Go's `x/crypto/bcrypt`)
/// accepts any `$2<minor>$` prefix; `$2y$` is what `htpasswd -B` writes.
fn htpasswd_line(user: &str, password: &str, version: bcrypt::Version) -> Result<String> {
    let hash = bcrypt::hash_with_result(password, BCRYPT_COST)?.format_for_version(version);
    Ok(format!("{user}:{hash}\n"))
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("finding a free port"))?;
    listener
        .local_addr()
        .map_err(Error::io("finding a free port"))
}

fn config_yaml(dir: &Path, addr: SocketAddr, htpasswd: Option<&Path>) -> String {
    let mut config = format!(
        "version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  # A fixed secret: without one the registry warns and makes a random one.
  secret: strata-test-secret
health:
  storagedriver:
    enabled: false
",
        storage = dir.join("storage").display(),
    );
    if let Some(path) = htpasswd {
        let _ = write!(
            config,
            "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
            path.display()
        );
    }
    config
}

fn spawn(binary: &Path, dir: &Path, addr: SocketAddr, htpasswd: Option<&Path>) -> Result<Child> {
    let config = dir.join("config.yml");
    fs::write(&config, config_yaml(dir, addr, htpasswd))
        .map_err(Error::io(format!("writing {}", config.display())))?;
    let log_path = dir.join("registry.log");
    let log =
        File::create(&log_path).map_err(Error::io(format!("creating {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(Error::io("duplicating the log handle"))?;
    Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(Error::io(format!("spawning {}", binary.display())))
}

/// Polls `GET /v2/` until it answers 200 (401 when auth is on).
fn wait_ready(child: &mut Child, addr: SocketAddr, auth: bool, dir: &Path) -> Result<()> {
    let log = dir.join("registry.log");
    let deadline = Instant::now() + START_TIMEOUT;
    let expected = if auth { 401 } else { 200 };
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(Error::io("polling the registry"))?
        {
            return Err(Error::Exited {
                status: status.to_string(),
                log_tail: tail(&log, 40),
            });
        }
        if let Ok(response) = RawClient::new(addr).get("/v2/", &[])
            && response.status == expected
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::StartTimeout {
                addr: addr.to_string(),
                timeout: START_TIMEOUT,
                log_tail: tail(&log, 40),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
