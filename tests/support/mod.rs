//! Helpers shared by the reference-tool interop tests (`estargz_interop`,
//! `stargz_lazy_interop`): the strata binary, a test environment, child processes.

#![allow(dead_code)]

pub(crate) mod containerd;
pub(crate) mod mounts;

use std::fs;
use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const STRATA: &str = env!("CARGO_BIN_EXE_strata");
pub(crate) const CONTAINERD: &str = "/usr/bin/containerd";
pub(crate) const CTR: &str = "/usr/bin/ctr";
pub(crate) const CTR_REMOTE: &str = "/usr/bin/ctr-remote";

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty docker config: never pick up the machine's credentials.
        fs::write(dir.path().join("config.json"), "{}").unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn strata(&self, root: &str, args: &[&str]) -> Output {
        Command::new(STRATA)
            .arg("--root")
            .arg(self.path(root))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path())
            .env("STRATA_HOSTS_DIR", self.path("no-hosts"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs strata and returns its stdout, failing the test (with stderr) otherwise.
    pub(crate) fn strata_ok(&self, root: &str, args: &[&str]) -> String {
        let out = self.strata(root, args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn json(&self, root: &str, digest: &str) -> serde_json::Value {
        let path = self
            .path(root)
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(
            &fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }
}

pub(crate) fn log_tail(log: &Path, n: usize) -> String {
    let mut s = String::new();
    let _ = fs::File::open(log).and_then(|mut f| f.read_to_string(&mut s));
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
pub(crate) fn stop_child(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// Waits until `socket` accepts connections, failing with the log tail if `child` exits
/// or 20 s pass.
pub(crate) fn wait_for_socket(name: &str, child: &mut Child, socket: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{name} exited while starting ({status}); log tail:\n{}",
                log_tail(log, 20)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen within 20s:\n{}",
            log_tail(log, 20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Chain IDs of a layer stack (OCI image spec: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => strata_testdata::sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}
