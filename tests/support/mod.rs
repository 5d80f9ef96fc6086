//! Helpers shared by the integration tests: the strata binary, a test environment, child
//! processes, mounts. The private containerd, daemon processes and the rule for tests that
//! need root (`#[ignore]`d, run by `make test`, failing when root or a tool is missing) are
//! `strata_testdata`'s `containerd`, `daemon` and `host` modules.

#![allow(dead_code)]

pub(crate) mod mounts;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) const STRATA: &str = env!("CARGO_BIN_EXE_strata");
pub(crate) const CTR: &str = strata_testdata::containerd::CTR;
pub(crate) const CTR_REMOTE: &str = strata_testdata::containerd::CTR_REMOTE;

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

/// The last `n` lines of `log`.
pub(crate) fn log_tail(log: &Path, n: usize) -> String {
    strata_testdata::daemon::log_tail(log, n)
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
pub(crate) fn stop_child(child: &mut Child) {
    strata_testdata::daemon::stop(child);
}

/// Waits until `socket` accepts connections, failing with the log tail if `child` exits
/// or 20 s pass.
pub(crate) fn wait_for_socket(name: &str, child: &mut Child, socket: &Path, log: &Path) {
    strata_testdata::daemon::wait_for_socket(name, child, socket, log)
        .unwrap_or_else(|e| panic!("{e}"));
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
