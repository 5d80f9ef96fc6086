//! [`ApplyError`]: why a layer could not be applied, naming the layer and, when there is
//! one, the entry.

use std::io;
use std::path::PathBuf;

use strata_formats::tar_layer::TarLayerError;
use strata_formats::{Digest, ErrorKind};

use crate::SnapshotError;

/// Applying a layer failed. The target may hold part of the layer; the caller discards it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The stream is corrupt, truncated, too large or could not be read.
    #[error("layer {layer}: {source}")]
    Read {
        /// The layer's digest (or name) as the caller gave it.
        layer: String,
        /// What the tar reader met, naming the entry.
        source: TarLayerError,
    },
    /// Writing an entry into the target failed.
    #[error("layer {layer}: entry {entry:?}: {context}: {source}")]
    Write {
        /// The layer.
        layer: String,
        /// The entry's cleaned path.
        entry: String,
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The uncompressed stream does not hash to the expected diffID.
    #[error("layer {layer}: diffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The layer.
        layer: String,
        /// The diffID the image config announced.
        expected: Digest,
        /// The digest of the uncompressed stream.
        actual: Digest,
    },
    /// The target (or a lower layer) could not be opened, or a mount set up.
    #[error("layer {layer}: {context} {path}: {source}", path = path.display())]
    Target {
        /// The layer.
        layer: String,
        /// What was being done.
        context: String,
        /// The directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The mounts cannot be applied to (e.g. an empty list).
    #[error("layer {layer}: {reason}")]
    Unsupported {
        /// The layer.
        layer: String,
        /// Why.
        reason: String,
    },
}

impl ApplyError {
    /// containerd's category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Read { source, .. } => source.kind(),
            Self::DiffIdMismatch { .. } => ErrorKind::DataCorrupt,
            Self::Write { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT)
                | Some(libc::ENOTDIR)
                | Some(libc::EISDIR)
                | Some(libc::ENAMETOOLONG)
                | Some(libc::ELOOP) => ErrorKind::InvalidArgument,
                _ => ErrorKind::Internal,
            },
            Self::Target { .. } => ErrorKind::Internal,
            Self::Unsupported { .. } => ErrorKind::InvalidArgument,
        }
    }
}

impl From<ApplyError> for SnapshotError {
    fn from(e: ApplyError) -> Self {
        SnapshotError::new(e.kind(), e.to_string())
    }
}
