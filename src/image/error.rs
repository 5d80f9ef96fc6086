//! [`ImageError`]: why an import or an image walk failed. Every variant names the blob,
//! archive entry or document involved, and the cause.

use std::io;

use strata_formats::{Digest, ErrorKind};

use crate::content::ContentError;
use crate::metadata::MetadataError;
use crate::store::StoreError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// An import failed; `cause` says why. The message reads
    /// `import <path>: <cause>`.
    #[error("import {archive}: {cause}")]
    Import {
        /// The layout directory or archive, as given.
        archive: String,
        /// What went wrong.
        cause: Box<ImageError>,
    },
    /// A blob's bytes do not hash to the digest it is stored under.
    #[error("blob {digest}: digest mismatch (expected {digest}, got {actual})")]
    DigestMismatch {
        /// The digest the archive claims.
        digest: Digest,
        /// The digest of the bytes found.
        actual: Digest,
    },
    /// A blob's size differs from what its descriptor (or archive entry) says.
    #[error("blob {digest}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The size the descriptor gives.
        expected: u64,
        /// The size found (for an oversized stream: at least this).
        actual: u64,
    },
    /// A descriptor points at a blob that neither the archive nor the store has.
    #[error("blob {digest} referenced by {referrer} is missing from the archive")]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// Who refers to it: `index.json`, `manifest sha256:…`.
        referrer: String,
    },
    /// A `docker save` manifest names a file the archive does not contain.
    #[error("{what} {path:?} referenced by {referrer} is missing from the archive")]
    MissingEntry {
        /// `config` or `layer`.
        what: &'static str,
        /// The path as written in the archive's manifest.
        path: String,
        /// Who refers to it: `manifest.json entry 0 ("alpine:3.20")`.
        referrer: String,
    },
    /// A path named by the archive is absolute or climbs out with `..`.
    #[error(
        "{what} {path:?} referenced by {referrer}: unsafe path (absolute or containing \"..\")"
    )]
    UnsafePath {
        /// `config` or `layer`.
        what: &'static str,
        /// The offending path.
        path: String,
        /// Who refers to it.
        referrer: String,
    },
    /// A document is larger than Strata is willing to parse.
    #[error("{what}: {size} bytes is more than the {max} bytes allowed")]
    TooLarge {
        /// The document (`index.json`, `manifest sha256:…`).
        what: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// A document is malformed or inconsistent.
    #[error("{what}: {reason}")]
    Invalid {
        /// The document or input.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer's uncompressed digest differs from the config's `rootfs.diff_ids` entry.
    #[error(
        "layer {layer:?} ({digest}): uncompressed digest {actual} does not match the config's rootfs.diff_ids[{index}] {expected}"
    )]
    DiffIdMismatch {
        /// The layer's path in the archive.
        layer: String,
        /// The layer blob's digest.
        digest: Digest,
        /// Its position in the manifest.
        index: usize,
        /// The diffID the config lists.
        expected: Digest,
        /// The digest of the uncompressed layer.
        actual: Digest,
    },
    /// The input uses something Strata does not support (schema1, non-sha256 digests…).
    #[error("{0}")]
    Unsupported(String),
    /// Something the image needs does not exist (e.g. no manifest for the platform).
    #[error("{0}")]
    NotFound(String),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The metadata database failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The store could not be locked against garbage collection.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A snapshotter operation or a layer unpack failed; `context` names the layer or
    /// snapshot, `kind` keeps the cause's category.
    // The reason may start by naming the layer again (`layer sha256:…: entry …`): once.
    #[error("{}", crate::error_chain::join([context, reason]))]
    Unpack {
        /// What was being done (`unpack layer sha256:… into snapshot sha256:…`).
        context: String,
        /// The cause's category.
        kind: ErrorKind,
        /// The cause.
        reason: String,
    },
    /// Reading the input failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read, naming the path or entry.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Import { cause, .. } => cause.kind(),
            Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::DiffIdMismatch { .. } => ErrorKind::DataCorrupt,
            Self::MissingBlob { .. } | Self::MissingEntry { .. } => ErrorKind::NotFound,
            Self::UnsafePath { .. } | Self::TooLarge { .. } | Self::Invalid { .. } => {
                ErrorKind::InvalidArgument
            }
            Self::Unsupported(_) => ErrorKind::NotImplemented,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Content(e) => e.kind(),
            Self::Metadata(e) => e.kind(),
            Self::Store(StoreError::Content(e)) => e.kind(),
            Self::Store(StoreError::Metadata(e)) => e.kind(),
            Self::Store(_) => ErrorKind::Internal,
            Self::Unpack { kind, .. } => *kind,
            Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Self::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ErrorKind::FailedPrecondition
            }
            Self::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                ErrorKind::InvalidArgument
            }
            Self::Io { .. } => ErrorKind::Internal,
        }
    }

    /// The innermost cause: for [`ImageError::Import`], what went wrong inside it.
    pub fn cause(&self) -> &ImageError {
        match self {
            Self::Import { cause, .. } => cause.cause(),
            other => other,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn snapshot(
        context: impl Into<String>,
        e: &strata_snapshotters::SnapshotError,
    ) -> Self {
        Self::Unpack {
            context: context.into(),
            kind: e.kind(),
            reason: e.message().to_owned(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Maps a content-store failure while ingesting blob `digest` (if known) into the
    /// import's terms: a digest or size mismatch is the archive's corruption.
    pub(crate) fn from_ingest(e: ContentError, digest: Option<&Digest>) -> Self {
        match (e, digest) {
            (
                ContentError::DigestMismatch {
                    expected, actual, ..
                },
                _,
            ) => Self::DigestMismatch {
                digest: expected,
                actual,
            },
            (
                ContentError::SizeMismatch {
                    expected, actual, ..
                },
                Some(d),
            ) => Self::SizeMismatch {
                digest: d.clone(),
                expected,
                actual,
            },
            (ContentError::Overflow { total, offset, .. }, Some(d)) => Self::SizeMismatch {
                digest: d.clone(),
                expected: total,
                actual: offset,
            },
            (e, _) => Self::Content(e),
        }
    }
}
