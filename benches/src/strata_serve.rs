//! `strata serve` as the benchmarks run it: a private root, socket and configuration in
//! a work directory, ready once its socket accepts, stopped with SIGTERM.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `strata serve` on a private root and socket; SIGTERM on drop.
pub(crate) struct StrataServe {
    child: Option<Child>,
    pub(crate) socket: PathBuf,
    pub(crate) root: PathBuf,
    log: PathBuf,
}

impl StrataServe {
    pub(crate) fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        StrataServe::start_with_config(binary, dir, "")
    }

    /// Starts it with `config` as its configuration file (TOML).
    pub(crate) fn start_with_config(
        binary: &Path,
        dir: &Path,
        config: &str,
    ) -> anyhow::Result<Self> {
        let socket = dir.join("strata.sock");
        let log = dir.join("strata-serve.log");
        let root = dir.join("root");
        let config_file = dir.join("strata-serve.toml");
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fs::write(&config_file, config)?;
        let out = fs::File::create(&log)?;
        let child = Command::new(binary)
            .arg("--root")
            .arg(&root)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} serve", binary.display()))?;
        let mut daemon = StrataServe {
            child: Some(child),
            socket,
            root,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&daemon.socket).is_err() {
            let child = daemon.child.as_mut().expect("invariant: running");
            if let Some(status) = child.try_wait()? {
                daemon.child = None;
                bail!(
                    "strata serve exited while starting ({status}):\n{}",
                    daemon.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "strata serve did not listen on {} within 20s:\n{}",
                    daemon.socket.display(),
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 10 s; an unclean exit is an error.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_raw(child.id() as i32).context("strata serve pid")?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!(
                        "strata serve exited with {status} after SIGTERM:\n{}",
                        self.log()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                bail!("strata serve ignored SIGTERM for 10s; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StrataServe {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
