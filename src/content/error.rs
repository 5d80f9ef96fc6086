//! The content store's error type.

use std::io;

use strata_formats::{Digest, ErrorKind};

/// Why a content-store operation failed. Every variant names the blob or ref involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// No committed blob has this digest.
    #[error("content {0}: not found")]
    NotFound(Digest),
    /// A blob with this digest is committed already.
    #[error("content {0}: already exists")]
    AlreadyExists(Digest),
    /// No ingest is in progress under this ref.
    #[error("ingest ref {0:?}: not found")]
    IngestNotFound(String),
    /// Another writer (in this or another process) holds the ref.
    #[error("ref {0:?} is locked: another writer is ingesting it")]
    Locked(String),
    /// The committed bytes do not hash to the expected digest.
    #[error("ref {reference:?}: unexpected commit digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The ingest ref.
        reference: String,
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of the bytes written.
        actual: Digest,
    },
    /// The committed bytes do not have the expected size.
    #[error("ref {reference:?}: unexpected commit size {actual}, expected {expected}")]
    SizeMismatch {
        /// The ingest ref.
        reference: String,
        /// The size the caller expected.
        expected: u64,
        /// The bytes written.
        actual: u64,
    },
    /// A resumed ingest was opened with a total that disagrees with the recorded one.
    #[error(
        "ref {reference:?}: provided total {provided} differs from the ingest's recorded total {recorded}"
    )]
    TotalMismatch {
        /// The ingest ref.
        reference: String,
        /// The total given now.
        provided: u64,
        /// The total recorded when the ingest started.
        recorded: u64,
    },
    /// More bytes were written than the declared total.
    #[error("ref {reference:?}: write past the expected size {total} (at offset {offset})")]
    Overflow {
        /// The ingest ref.
        reference: String,
        /// The declared total.
        total: u64,
        /// The offset the write would have reached.
        offset: u64,
    },
    /// A label or filter is malformed, or a ref is empty.
    #[error("{0}")]
    InvalidArgument(String),
    /// The label store failed.
    #[error("content {digest}: label store: {message}")]
    LabelStore {
        /// The blob whose record was being read or written.
        digest: Digest,
        /// What failed.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ContentError {
    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) | Self::IngestNotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::Locked(_) => ErrorKind::Unavailable,
            Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::TotalMismatch { .. }
            | Self::Overflow { .. } => ErrorKind::FailedPrecondition,
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::LabelStore { .. } | Self::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a path-naming context to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ContentError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ContentError> {
        self.map_err(|e| ContentError::io(context(), e))
    }
}
