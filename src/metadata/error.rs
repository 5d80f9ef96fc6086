//! The metadata database's error type.

use strata_formats::ErrorKind;

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The named record does not exist.
    #[error("{what} {name:?}: not found")]
    NotFound {
        /// The record type (`image`, `lease`).
        what: &'static str,
        /// Its key.
        name: String,
    },
    /// A record with this key exists already.
    #[error("{what} {name:?}: already exists")]
    AlreadyExists {
        /// The record type.
        what: &'static str,
        /// Its key.
        name: String,
    },
    /// A malformed name, label or filter.
    #[error("{0}")]
    InvalidArgument(String),
    /// Another process held the database for longer than we were willing to wait.
    #[error("metadata database {path}: still in use by another process after {waited_ms} ms")]
    Busy {
        /// The database file.
        path: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// The database itself failed (I/O, corruption).
    #[error("metadata database {path}: {message}")]
    Database {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("metadata database: {what} {name:?}: corrupt record: {message}")]
    Corrupt {
        /// The record type.
        what: &'static str,
        /// Its key.
        name: String,
        /// The decoding error.
        message: String,
    },
}

impl MetadataError {
    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::Busy { .. } => ErrorKind::Unavailable,
            Self::Database { .. } => ErrorKind::Internal,
            Self::Corrupt { .. } => ErrorKind::DataCorrupt,
        }
    }
}
