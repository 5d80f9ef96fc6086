//! eStargz: seekable tar.gz (and zstd) layers with a table of contents, as written and read
//! by stargz-snapshotter's `estargz` package.
//!
//! A blob is a concatenation of compressed members that is still a valid `tar.gz`; a new
//! member starts at each regular file's payload and each chunk of a large file, so one
//! chunk can be fetched with a range request and decompressed alone. The last tar entry is
//! `stargz.index.json`, the TOC, and a fixed-size footer says where it starts.
//!
//! - [`toc`]: the TOC JSON types, their validation and the path index built from them.
//! - [`footer`]: the 51-byte gzip footer, the legacy 47-byte one, the zstd:chunked one.
//! - [`writer`]: converts a tar stream into an eStargz blob.
//! - [`reader`]: opens a blob through a [`crate::ReadAt`], verifies the TOC and chunks.
//! - `layer_index`: the TOC as the neutral [`crate::layer_index::LayerIndex`]
//!   ([`TocIndex::layer_index`], [`Chunk::from_file_chunk`]).

pub mod footer;
mod layer_index;
mod parallel;
pub mod reader;
mod tar_src;
pub mod toc;
mod toc_check;
mod toc_json;
pub mod writer;

#[cfg(test)]
mod interop_tests;
#[cfg(test)]
mod tests;

use crate::Digest;
use crate::errdefs::ErrorKind;

pub use footer::{Footer, FooterKind};
pub use reader::{EstargzReader, chunk_reader};
pub use toc::{Chunk, EntryType, Jtoc, Node, TocEntry, TocIndex};
pub use writer::{Compression, WriteOptions, WriteReport, convert, decompress_layer};

/// The name of the TOC tar entry, the last entry of a gzip eStargz blob.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// The landmark that ends the prioritized (prefetched) files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// The landmark that says no files are prioritized.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// A landmark's whole content: one byte, as stargz-snapshotter writes it.
pub const LANDMARK_CONTENTS: u8 = 0x0f;
/// The layer annotation carrying the sha256 of the uncompressed TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation carrying the uncompressed size of the eStargz layer.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Strata's own layer annotation: the blob offset where the prioritized files end (the
/// `.prefetch.landmark` member), so a lazy snapshotter can start fetching them in parallel
/// with the TOC instead of after it. A hint: readers bound it by the blob size and still
/// verify every chunk against the TOC. Absent when no files are prioritized.
///
/// Strata's annotations are under `containerd.io/snapshot/`, like the TOC digest's:
/// containerd hands a layer's annotations with that prefix to the snapshotter as labels
/// of the layer's Prepare, so a lazy snapshotter can start fetching the first layer from
/// its labels alone, before it has the image's manifest.
pub const PREFETCH_END_ANNOTATION: &str = "containerd.io/snapshot/strata/prefetch-end";
/// Strata's own layer annotation: the blob offset of the TOC (the footer's), so the
/// footer and TOC are fetched in one request of exactly their size. A hint, like
/// [`PREFETCH_END_ANNOTATION`]: the footer read is what counts.
pub const TOC_OFFSET_ANNOTATION: &str = "containerd.io/snapshot/strata/toc-offset";
/// Strata's own layer annotation: the blob's size (the descriptor's), for a snapshotter
/// that has only the Prepare's labels and not yet the manifest. A hint: a layer whose
/// manifest size differs is fetched afresh.
pub const BLOB_SIZE_ANNOTATION: &str = "containerd.io/snapshot/strata/blob-size";
/// The largest uncompressed TOC accepted: a bound on what an untrusted blob can make us
/// allocate. stargz's biggest real-world TOCs are a few MiB.
pub const MAX_TOC_SIZE: u64 = 50 << 20;
/// The largest chunk accepted in a TOC; bounds one `read_chunk` allocation.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;

/// Why an eStargz blob could not be written, opened or read.
#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    /// Reading the blob or the source, or writing the output, failed.
    #[error("eStargz I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The blob's tail is not a footer this reader knows.
    #[error("invalid eStargz footer: {0}")]
    InvalidFooter(String),
    /// The TOC is malformed or inconsistent with the blob.
    #[error("invalid eStargz TOC: {0}")]
    InvalidToc(String),
    /// The source tar stream cannot be converted.
    #[error("invalid source tar: {0}")]
    InvalidTar(String),
    /// Compressed bytes in the blob did not decompress.
    #[error("corrupt compressed data at blob offset {offset}: {reason}")]
    Decompress {
        /// Where the member starts in the blob.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// The TOC does not match the digest the layer descriptor announced.
    #[error("TOC digest mismatch: expected {expected}, got {actual}")]
    TocDigestMismatch {
        /// The annotated digest.
        expected: Digest,
        /// The digest of the TOC JSON found in the blob.
        actual: Digest,
    },
    /// A chunk's bytes do not match its `chunkDigest`.
    #[error(
        "chunk of {name:?} at file offset {chunk_offset}: digest mismatch (expected {expected}, got {actual})"
    )]
    ChunkDigestMismatch {
        /// The file the chunk belongs to.
        name: String,
        /// Where the chunk starts in the file.
        chunk_offset: u64,
        /// The TOC's `chunkDigest`.
        expected: Digest,
        /// The digest of the decompressed bytes.
        actual: Digest,
    },
    /// A whole file does not match its `digest`.
    #[error("file {name:?}: digest mismatch (expected {expected}, got {actual})")]
    FileDigestMismatch {
        /// The file.
        name: String,
        /// The TOC's `digest`.
        expected: Digest,
        /// The digest of the file's bytes.
        actual: Digest,
    },
    /// No entry has this path.
    #[error("no entry {0:?} in the eStargz TOC")]
    NotFound(String),
    /// The entry exists but is not a regular file.
    #[error("entry {0:?} is not a regular file")]
    NotRegular(String),
}

impl EstargzError {
    /// The errdefs category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { .. } => ErrorKind::Internal,
            Self::InvalidFooter(_) | Self::InvalidToc(_) | Self::InvalidTar(_) => {
                ErrorKind::InvalidArgument
            }
            Self::NotRegular(_) => ErrorKind::InvalidArgument,
            Self::Decompress { .. }
            | Self::TocDigestMismatch { .. }
            | Self::ChunkDigestMismatch { .. }
            | Self::FileDigestMismatch { .. } => ErrorKind::DataCorrupt,
            Self::NotFound(_) => ErrorKind::NotFound,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
