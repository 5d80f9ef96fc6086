//! A private containerd for tests and benchmarks: root, state, sockets and opt dir under
//! one directory, never touching /run/containerd or /var/lib/containerd. CRI is off
//! unless started with [`Containerd::start_with_cri`], whose config (see [`cri_config`])
//! keeps the CRI plugin's directories, runc root and CNI paths under the same directory.
//!
//! ```no_run
//! use strata_testdata::containerd::{CTR, Containerd};
//! let dir = tempfile::tempdir().unwrap();
//! let daemon = Containerd::start(dir.path(), "example", "").unwrap();
//! let images = daemon.ok(CTR, &["image", "ls"]);
//! ```
//!
//! containerd (and runc, for containers) need root; see [`crate::host`] for how tests say
//! so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::daemon::{self, Error};

/// containerd 1.6 (Debian's package, as scripts/setup.sh installs it).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// containerd's client.
pub const CTR: &str = "/usr/bin/ctr";
/// stargz-snapshotter's `ctr` (scripts/setup.sh).
pub const CTR_REMOTE: &str = "/usr/bin/ctr-remote";
/// The OCI runtime containerd runs containers with.
pub const RUNC: &str = "/usr/sbin/runc";

/// Fails the test, naming what is missing, unless containerd, ctr and `extra` (e.g.
/// [`CTR_REMOTE`], [`RUNC`], `/dev/fuse`) are installed and the process is root; `why_root`
/// says what needs root. See [`crate::host`] for the rule such tests follow.
pub fn require(extra: &[&str], why_root: &str) {
    let mut tools = vec![CONTAINERD, CTR];
    tools.extend_from_slice(extra);
    crate::host::require_tools(&tools);
    crate::host::require_root(why_root);
}

/// A running containerd; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// Its root directory (content store, snapshotters' data).
    pub root: PathBuf,
    /// Its state directory.
    pub state: PathBuf,
    /// The namespace of every [`Containerd::command`].
    pub namespace: String,
    /// Other daemons' logs shown (tails) when an [`Containerd::ok`] call fails.
    other_logs: Vec<(String, PathBuf)>,
}

impl Containerd {
    /// Starts [`CONTAINERD`] in `dir` (created if needed) with `extra_config` (e.g. a
    /// `[proxy_plugins.NAME]` table) appended to its config, and waits for its socket.
    /// `namespace` is the one [`command`](Self::command) passes to clients.
    pub fn start(dir: &Path, namespace: &str, extra_config: &str) -> Result<Self, Error> {
        Self::start_binary(Path::new(CONTAINERD), dir, namespace, extra_config)
    }

    /// Like [`start`](Self::start), with containerd's CRI plugin on (served on the same
    /// socket, [`Containerd::socket`]): `extra_config` must hold its table, e.g. from
    /// [`cri_config`]. [`command`](Self::command) clients use `namespace`, which for the
    /// CRI's images and containers is `k8s.io`.
    pub fn start_with_cri(dir: &Path, namespace: &str, extra_config: &str) -> Result<Self, Error> {
        Self::start_inner(Path::new(CONTAINERD), dir, namespace, extra_config, true)
    }

    /// Like [`start`](Self::start), with another containerd binary.
    pub fn start_binary(
        binary: &Path,
        dir: &Path,
        namespace: &str,
        extra_config: &str,
    ) -> Result<Self, Error> {
        Self::start_inner(binary, dir, namespace, extra_config, false)
    }

    fn start_inner(
        binary: &Path,
        dir: &Path,
        namespace: &str,
        extra_config: &str,
        cri: bool,
    ) -> Result<Self, Error> {
        const NAME: &str = "containerd";
        if !binary.exists() {
            return Err(Error::Missing {
                path: binary.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(Error::io(NAME, format!("creating {}", dir.display())))?;
        // Short names: a Unix socket path has at most 107 bytes.
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        let log = dir.join("containerd.log");
        let root = dir.join("root");
        let state = dir.join("state");
        let q = |p: &Path| format!("{:?}", p.to_string_lossy());
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {}\nstate = {}\n{}\n\
                 [grpc]\n  address = {}\n\n[ttrpc]\n  address = {}\n\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n\n{extra_config}",
                q(&root),
                q(&state),
                if cri {
                    ""
                } else {
                    "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                },
                q(&socket),
                q(&dir.join("c.sock.ttrpc")),
                q(&dir.join("opt")),
            ),
        )
        .map_err(Error::io(NAME, "writing its config"))?;
        let out = fs::File::create(&log).map_err(Error::io(NAME, "creating its log"))?;
        let err = out
            .try_clone()
            .map_err(Error::io(NAME, "creating its log"))?;
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(Error::io(NAME, format!("spawning {}", binary.display())))?;
        if let Err(e) = daemon::wait_for_socket(NAME, &mut child, &socket, &log) {
            daemon::stop(&mut child);
            return Err(e);
        }
        Ok(Containerd {
            child: Some(child),
            socket,
            log,
            root,
            state,
            namespace: namespace.to_owned(),
            other_logs: Vec::new(),
        })
    }

    /// Shows the tail of `log` (another daemon's, e.g. a proxy snapshotter's, called
    /// `name`) too when an [`ok`](Self::ok) call fails.
    pub fn show_log_on_failure(&mut self, name: &str, log: &Path) {
        self.other_logs.push((name.to_owned(), log.to_path_buf()));
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `bin` (`ctr` or `ctr-remote`) against this daemon in its namespace; add the
    /// subcommand and arguments.
    pub fn command(&self, bin: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `bin args…` against this daemon (a 60 s timeout on each request); panics if
    /// it cannot be run at all.
    pub fn run(&self, bin: &str, args: &[&str]) -> Output {
        self.command(bin)
            .args(["--timeout", "60s"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {bin}: {e}"))
    }

    /// Runs `bin args…` and returns its stdout; panics (a test failure) with both
    /// outputs and the daemons' log tails if it fails.
    pub fn ok(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run(bin, args);
        if !out.status.success() {
            let mut logs = format!("containerd log tail:\n{}", self.log_tail(20));
            for (name, log) in &self.other_logs {
                logs.push_str(&format!(
                    "\n{name} log tail:\n{}",
                    daemon::log_tail(log, 20)
                ));
            }
            panic!(
                "{bin} {args:?} failed ({}):\nstdout: {}\nstderr: {}\n{logs}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{bin} {args:?}: {e}"))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        daemon::log_tail(&self.log, lines)
    }

    /// A blob of its content store; panics if it is not there.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self
            .root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(crate::digest_hex(digest));
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A JSON blob (manifest, config) of its content store.
    pub fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&self.blob(digest)).unwrap_or_else(|e| panic!("{digest}: {e}"))
    }

    /// The target digest of `reference` in `ctr image ls`; panics if it is not listed.
    pub fn image_digest(&self, reference: &str) -> String {
        let list = self.ok(CTR, &["image", "ls"]);
        image_ls_digest(&list, reference)
            .unwrap_or_else(|| panic!("no {reference} in `ctr image ls`:\n{list}"))
    }

    /// Stops the daemon (SIGTERM, up to 10 s, then SIGKILL); returns whether it had to
    /// be killed. Nothing happens if it is stopped already.
    pub fn terminate(&mut self) -> bool {
        self.child.take().is_some_and(|mut c| daemon::stop(&mut c))
    }
}

impl Containerd {
    /// Stops the daemon now, as [`terminate`](Self::terminate) does; returns whether it had
    /// to be killed.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What [`cri_config`] sets up for containerd 1.6's CRI plugin.
#[derive(Debug, Clone)]
pub struct CriConfig<'a> {
    /// The containerd directory ([`Containerd::start_with_cri`]'s `dir`): the runc root
    /// and the (empty) CNI directories go under it.
    pub dir: &'a Path,
    /// The snapshotter for pods' images (`[…containerd] snapshotter`), e.g. a proxy
    /// plugin's name.
    pub snapshotter: &'a str,
    /// The pod sandbox ("pause") image; present locally, it is never pulled.
    pub sandbox_image: &'a str,
    /// containerd's `config_path`: a `certs.d` directory of `<host>/hosts.toml` files.
    pub registry_config_path: &'a Path,
}

/// The `[plugins."io.containerd.grpc.v1.cri"]` table (config version 2) for
/// [`Containerd::start_with_cri`]: `snapshotter` and `disable_snapshot_annotations = false`
/// (each layer's Prepare carries the CRI's image and layer labels, which remote
/// snapshotters need), `sandbox_image`, registries from `config_path`, runc (v2 shim)
/// with its root under `dir`, CNI directories under `dir` (none configured: pods use the
/// host network), no AppArmor or SELinux, stats every second, and oom_score_adj kept
/// no lower than containerd's own (`restrict_oom_score_adj`: a pod sandbox asks for -998,
/// which a process without CAP_SYS_RESOURCE, as in some CI sandboxes, may not set).
pub fn cri_config(c: &CriConfig<'_>) -> String {
    let q = |p: &Path| format!("{:?}", p.to_string_lossy());
    format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
         \x20 sandbox_image = {sandbox:?}\n\
         \x20 stats_collect_period = 1\n\
         \x20 disable_apparmor = true\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 enable_selinux = false\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
         \x20   snapshotter = {snapshotter:?}\n\
         \x20   disable_snapshot_annotations = false\n\
         \x20   default_runtime_name = \"runc\"\n\
         \x20   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20     runtime_type = \"io.containerd.runc.v2\"\n\
         \x20     [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         \x20       Root = {runc}\n\
         \x20       SystemdCgroup = false\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".registry]\n\
         \x20   config_path = {hosts}\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   bin_dir = {cni_bin}\n\
         \x20   conf_dir = {cni_conf}\n",
        sandbox = c.sandbox_image,
        snapshotter = c.snapshotter,
        runc = q(&c.dir.join("runc")),
        hosts = q(c.registry_config_path),
        cni_bin = q(&c.dir.join("cni/bin")),
        cni_conf = q(&c.dir.join("cni/net.d")),
    )
}

/// The target digest of `reference` in the output of `ctr image ls`.
pub fn image_ls_digest(list: &str, reference: &str) -> Option<String> {
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&reference))
        .and_then(|cols| cols.get(2).map(|d| (*d).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ls_digest_finds_the_reference_row() {
        let list = "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
                    a/b:1 application/vnd.oci.image.manifest.v1+json sha256:aa 1.0 KiB linux/amd64 -\n\
                    a/b:10 application/vnd.oci.image.manifest.v1+json sha256:bb 1.0 KiB linux/amd64 -\n";
        assert_eq!(
            image_ls_digest(list, "a/b:10").as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(image_ls_digest(list, "a/b:1").as_deref(), Some("sha256:aa"));
        assert_eq!(image_ls_digest(list, "a/b"), None);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Containerd::start_binary(&dir.path().join("nope"), dir.path(), "t", "").unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
    }
}
