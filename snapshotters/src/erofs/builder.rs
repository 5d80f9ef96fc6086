//! The seam between the erofs snapshotter and whatever writes EROFS images: building a
//! layer image (`layer.erofs`) from a directory tree, the step containerd's erofs
//! snapshotter takes at Commit for snapshots another differ filled through overlayfs.
//! The snapshotter needs nothing else from a builder, so an implementation can be a
//! tool run as a process ([`super::mkfs::MkfsErofs`]) or a library writer.

use std::path::{Path, PathBuf};

/// Building an EROFS image failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The builder could not be started (e.g. the tool is not installed).
    #[error("start {tool}: {source}")]
    Start {
        /// The program that could not be started.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The builder ran and failed.
    #[error("{tool} {dir} → {out}: {status}: {stderr}")]
    Failed {
        /// The program that failed.
        tool: String,
        /// The source directory.
        dir: PathBuf,
        /// The image that was being written.
        out: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said on stderr (trimmed).
        stderr: String,
    },
    /// Reading the tree or writing the image failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Writes an EROFS image of a directory tree.
///
/// The image must keep what overlayfs and a container see: every file type (overlay
/// whiteouts are 0:0 character devices and must stay so), owners, modes with setuid and
/// friends, nanosecond mtimes, hard links, and all xattrs, `trusted.overlay.*` included
/// (opaque directories).
pub trait LayerImageBuilder: Send + Sync + std::fmt::Debug {
    /// Writes the image of the tree at `dir` to `out` (a new file; the caller renames it
    /// into place, so a failure leaves nothing that looks like a layer).
    ///
    /// # Errors
    ///
    /// The builder cannot run, cannot read `dir` or cannot write `out`.
    fn build_from_dir(&self, dir: &Path, out: &Path) -> Result<(), BuildError>;
}
