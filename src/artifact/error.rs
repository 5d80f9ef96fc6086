//! [`ArtifactError`]: why pushing or indexing an artifact failed.

use std::io;
use std::path::PathBuf;

use strata_formats::ErrorKind;
use strata_formats::artifact::LayoutError;
use strata_formats::chunk_index::ChunkIndexError;

use crate::registry::RegistryError;

/// Why an artifact operation failed. Each variant names the file, blob or reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory entry that cannot be pushed (a symlink, device, …).
    #[error("{}: not a regular file or directory (symlinks are not pushed)", .0.display())]
    NotRegular(PathBuf),
    /// The directory holds no file to push.
    #[error("{}: no files to push", .0.display())]
    Empty(PathBuf),
    /// Talking to the registry failed.
    #[error("{reference}: {source}")]
    Registry {
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<RegistryError>,
    },
    /// The manifest's layers cannot be laid out.
    #[error("manifest {reference}: {source}")]
    Layout {
        /// The manifest.
        reference: String,
        /// The cause.
        #[source]
        source: Box<LayoutError>,
    },
    /// A chunk index is invalid, or a blob does not match it.
    #[error("{what}: {source}")]
    ChunkIndex {
        /// The blob or index.
        what: String,
        /// The cause.
        #[source]
        source: Box<ChunkIndexError>,
    },
    /// The reference names an index (several platforms) where a manifest is needed.
    #[error("{0} is an image index; name one manifest (by digest)")]
    IsIndex(String),
}

impl ArtifactError {
    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { .. } => ErrorKind::Internal,
            Self::NotRegular(_) | Self::Empty(_) | Self::IsIndex(_) => ErrorKind::InvalidArgument,
            Self::Registry { source, .. } => source.kind(),
            Self::Layout { .. } => ErrorKind::InvalidArgument,
            Self::ChunkIndex { .. } => ErrorKind::DataCorrupt,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn registry(reference: &impl std::fmt::Display, source: RegistryError) -> Self {
        Self::Registry {
            reference: reference.to_string(),
            source: Box::new(source),
        }
    }
}
