//! The one error type snapshotters return: a message naming the snapshot and the
//! cause, and containerd's error category, which the socket maps to gRPC codes.

use strata_formats::ErrorKind;

/// A snapshotter operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SnapshotError {
    kind: ErrorKind,
    message: String,
}

impl SnapshotError {
    /// An error of `kind` with `message` (which names the snapshot and the cause).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `snapshot {key}: not found`-style errors.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The snapshot to create exists already.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// The snapshot is in the wrong state for the operation (e.g. it has children).
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// The request is malformed (bad label, bad filter, immutable field).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// An I/O or internal failure; `context` says what was being done.
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Internal, format!("{context}: {err}"))
    }

    /// Any other internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// containerd's category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the category.
    pub fn message(&self) -> &str {
        &self.message
    }
}
