//! runc, as `strata run` drives it: `runc --root <root>/runc run --bundle B ID` in the
//! foreground (runc forwards the signals it gets to the container and exits with the
//! container's status), `runc delete --force` to clear its state, `runc state` to see
//! whether a container outlived the `strata run` that started it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::RunError;

/// Where runc is looked for, in order (Debian installs it in /usr/sbin).
const CANDIDATES: [&str; 3] = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];

/// The runc binary and the state directory Strata gives it.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    /// runc from `$STRATA_RUNC`, `PATH` or the usual places, keeping its state in `root`.
    ///
    /// # Errors
    ///
    /// [`RunError::MissingRunc`] when none is found.
    pub fn find(root: &Path) -> Result<Runc, RunError> {
        let from_env = std::env::var_os("STRATA_RUNC").map(PathBuf::from);
        let from_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("runc"))
                .find(|p| p.is_file())
        });
        let binary = from_env
            .into_iter()
            .chain(from_path)
            .chain(CANDIDATES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or(RunError::MissingRunc)?;
        Ok(Runc {
            binary,
            root: root.to_path_buf(),
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// `runc run` of `bundle` as `id`, in the foreground, with the caller's stdio.
    pub fn run(&self, bundle: &Path, id: &str) -> Command {
        let mut cmd = self.command();
        cmd.arg("run").arg("--bundle").arg(bundle).arg(id);
        cmd
    }

    /// Whether runc keeps state for `id` (`<root>/<id>/`): `runc run` in the foreground
    /// removes it when the container exits, so after a normal exit there is nothing to
    /// delete (and no process to start for it).
    pub fn has_state(&self, id: &str) -> bool {
        !id.is_empty() && !id.contains('/') && self.root.join(id).exists()
    }

    /// Removes runc's state of `id`, killing it if it still runs. No error when runc does
    /// not know it.
    ///
    /// # Errors
    ///
    /// runc cannot be started, or fails for another reason.
    pub fn delete(&self, id: &str) -> Result<(), RunError> {
        if !self.has_state(id) {
            return Ok(());
        }
        let out = self
            .command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RunError::Runc(format!("start {}: {e}", self.binary.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("does not exist") || stderr.contains("not exist")
        {
            return Ok(());
        }
        Err(RunError::Runc(format!(
            "runc delete {id}: {}",
            stderr.trim()
        )))
    }

    /// Sends `signal` (a name: `TERM`, `KILL`…) to the init process of `id`.
    ///
    /// # Errors
    ///
    /// runc cannot be started or refuses (no such container, not running).
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RunError> {
        let out = self
            .command()
            .args(["kill", id, signal])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RunError::Runc(format!("start {}: {e}", self.binary.display())))?;
        if out.status.success() {
            return Ok(());
        }
        Err(RunError::Runc(format!(
            "runc kill {id} {signal}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// runc's status of `id` (`created`, `running`, `stopped`…), or `None` if it does not
    /// know it.
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self
            .command()
            .args(["state", id])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        state["status"].as_str().map(str::to_owned)
    }
}
