//! A private containerd for interop tests: root, state, sockets and opt dir under one
//! directory, CRI off, never touching /run/containerd or /var/lib/containerd. Extra config
//! text (e.g. `[proxy_plugins.…]` tables) is appended to the generated config.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{CONTAINERD, log_tail, stop_child, wait_for_socket};

/// A running containerd; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Containerd {
    child: Option<Child>,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) state: PathBuf,
    /// containerd namespace of every [`Containerd::run`] call.
    pub(crate) namespace: String,
}

impl Containerd {
    /// Starts containerd in `dir` with `extra_config` appended to its config, and waits
    /// for its socket.
    pub(crate) fn start(dir: &Path, namespace: &str, extra_config: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        let log = dir.join("containerd.log");
        let root = dir.join("root");
        let state = dir.join("state");
        let q = |p: &Path| format!("{:?}", p.to_string_lossy());
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {}\nstate = {}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
                 [grpc]\n  address = {}\n\n[ttrpc]\n  address = {}\n\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n\n{extra_config}",
                q(&root),
                q(&state),
                q(&socket),
                q(&dir.join("c.sock.ttrpc")),
                q(&dir.join("opt")),
            ),
        )
        .unwrap();
        let out = fs::File::create(&log).unwrap();
        let mut child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        wait_for_socket("containerd", &mut child, &socket, &log);
        Containerd {
            child: Some(child),
            socket,
            log,
            root,
            state,
            namespace: namespace.to_string(),
        }
    }

    /// `bin` (`ctr` or `ctr-remote`) against this daemon in its namespace.
    pub(crate) fn run(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin)
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace, "--timeout", "60s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `bin` and returns stdout, failing the test with both outputs and the
    /// daemon's log tail otherwise.
    pub(crate) fn ok(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run(bin, args);
        assert!(
            out.status.success(),
            "{bin} {args:?} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_tail(&self.log, 20)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the daemon (SIGTERM, up to 10 s, then SIGKILL).
    pub(crate) fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.terminate();
    }
}
