//! [`LayerImageBuilder`] by running `mkfs.erofs` (erofs-utils; Debian 12 ships 1.5),
//! with the options containerd's erofs snapshotter uses when it converts an upper
//! directory at Commit: `--quiet -Enoinline_data`.
//!
//! Not `-T0`: in erofs-utils 1.5 `-T` sets every file's mtime to the given time, so the
//! layer would lose its files' times (tested below); containerd does not pass it either.
//! What `mkfs.erofs` 1.5 keeps and loses is pinned by the tests in `erofs/tests.rs`: it
//! keeps file types (whiteouts), owners, modes, ns mtimes, hard links and xattrs; it
//! fails on 255-byte file names, and stores holes of sparse files as data.

use std::path::Path;
use std::process::{Command, Stdio};

use super::builder::{BuildError, LayerImageBuilder};

/// Runs `mkfs.erofs` (the one on `PATH` unless configured).
#[derive(Debug, Clone)]
pub struct MkfsErofs {
    program: String,
    extra_options: Vec<String>,
}

impl Default for MkfsErofs {
    fn default() -> Self {
        MkfsErofs {
            program: "mkfs.erofs".to_owned(),
            extra_options: Vec::new(),
        }
    }
}

impl MkfsErofs {
    /// `program` with `extra_options` after the default ones (containerd's differ
    /// `mkfs_options`, e.g. `-zlz4hc`).
    pub fn new(program: impl Into<String>, extra_options: Vec<String>) -> Self {
        MkfsErofs {
            program: program.into(),
            extra_options,
        }
    }
}

impl LayerImageBuilder for MkfsErofs {
    fn build_from_dir(&self, dir: &Path, out: &Path) -> Result<(), BuildError> {
        let output = Command::new(&self.program)
            .args(["--quiet", "-Enoinline_data"])
            .args(&self.extra_options)
            .arg(out)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| BuildError::Start {
                tool: self.program.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(BuildError::Failed {
            tool: self.program.clone(),
            dir: dir.to_path_buf(),
            out: out.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
