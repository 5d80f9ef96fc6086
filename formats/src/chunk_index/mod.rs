//! Strata's chunk index: per-chunk SHA-256 digests of blobs, so a reader that fetches a
//! blob by byte range can verify each range before using it (a blob's own digest covers
//! only the whole blob). Specified in `docs/chunk-index.md`.
//!
//! The index is JSON, `application/vnd.strata.chunk-index.v1+json`:
//!
//! ```json
//! {"schemaVersion":1,"chunkSize":4194304,
//!  "layers":[{"digest":"sha256:…","size":9000000,"chunks":["sha256:…","sha256:…","sha256:…"]}]}
//! ```
//!
//! chunk `i` of a layer covers bytes `[i·chunkSize, min((i+1)·chunkSize, size))`. It
//! travels as the only layer of an OCI referrer ([`referrer_manifest`]) of the manifest
//! whose layers it describes.
//!
//! - [`ChunkIndex::parse`]: untrusted JSON, bounded ([`MAX_INDEX_SIZE`], chunk size a
//!   power of two in [[`MIN_CHUNK_SIZE`], [`MAX_CHUNK_SIZE`]], chunk count exactly
//!   `ceil(size / chunkSize)`, digests well-formed, no layer twice).
//! - [`LayerChunker`]: the streaming builder, one pass over a blob in bounded memory
//!   (32 bytes a chunk), checking the blob's own digest on the way.

mod builder;

use std::ops::Range;

pub use builder::LayerChunker;

use crate::Digest;
use crate::artifact::manifest::{Descriptor, Manifest, OCI_MANIFEST};

/// The referrer manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.strata.chunk-index.v1";
/// The media type of the index JSON (the referrer's one layer).
pub const MEDIA_TYPE: &str = "application/vnd.strata.chunk-index.v1+json";
/// The smallest chunk size accepted: 64 KiB.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// The largest chunk size accepted: 64 MiB.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// The chunk size Strata writes: 4 MiB (the stargz chunk cache's granule).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The most bytes of index JSON accepted: 16 MiB (some 200,000 chunks).
pub const MAX_INDEX_SIZE: usize = 16 << 20;

/// The chunk digests of some blobs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkIndex {
    /// Always 1.
    pub schema_version: u32,
    /// Bytes per chunk (the last one of a layer may be shorter).
    pub chunk_size: u64,
    /// One entry per indexed blob.
    pub layers: Vec<LayerChunks>,
}

/// One blob's chunk digests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerChunks {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// The digest of each chunk, in order.
    pub chunks: Vec<Digest>,
}

/// Why an index is refused, or a chunk does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkIndexError {
    /// More JSON than [`MAX_INDEX_SIZE`].
    #[error("chunk index of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON of the index's shape (bad digests included).
    #[error("invalid chunk index JSON: {0}")]
    Json(String),
    /// `schemaVersion` other than 1.
    #[error("unsupported chunk index schemaVersion {0} (expected 1)")]
    SchemaVersion(u32),
    /// A chunk size that is not a power of two in the accepted range.
    #[error("chunk size {0} is not a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")]
    ChunkSize(u64),
    /// A layer whose chunk list does not cover its size exactly.
    #[error("layer {digest}: {actual} chunk digests for {size} bytes, expected {expected}")]
    ChunkCount {
        /// The layer.
        digest: Digest,
        /// Its size.
        size: u64,
        /// ceil(size / chunkSize).
        expected: u64,
        /// What the index lists.
        actual: usize,
    },
    /// One blob listed twice.
    #[error("layer {0} is listed twice")]
    DuplicateLayer(Digest),
    /// A chunk number past the layer's end.
    #[error("layer {digest}: no chunk {index} (it has {count})")]
    NoSuchChunk {
        /// The layer.
        digest: Digest,
        /// The chunk asked for.
        index: u64,
        /// How many it has.
        count: usize,
    },
    /// Bytes that are not the chunk the index describes.
    #[error(
        "layer {digest}: chunk {index} (bytes {start}..{end}) has digest {actual}, the index says {expected}"
    )]
    ChunkMismatch {
        /// The layer.
        digest: Digest,
        /// The chunk.
        index: u64,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The index's digest.
        expected: Digest,
        /// The bytes' digest.
        actual: Digest,
    },
    /// A blob whose bytes do not hash to its digest (while building).
    #[error("blob {expected}: its {size} bytes have digest {actual}")]
    BlobMismatch {
        /// The digest the blob should have.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
        /// How many bytes were read.
        size: u64,
    },
}

/// Whether `chunk_size` is acceptable.
pub fn valid_chunk_size(chunk_size: u64) -> bool {
    chunk_size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
}

/// `ceil(size / chunk_size)` (`chunk_size` non-zero).
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

impl ChunkIndex {
    /// An empty index of `chunk_size` (which must be [valid](valid_chunk_size)).
    pub fn new(chunk_size: u64) -> Result<Self, ChunkIndexError> {
        if !valid_chunk_size(chunk_size) {
            return Err(ChunkIndexError::ChunkSize(chunk_size));
        }
        Ok(Self {
            schema_version: 1,
            chunk_size,
            layers: Vec::new(),
        })
    }

    /// Parses and checks untrusted index JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, ChunkIndexError> {
        if bytes.len() > MAX_INDEX_SIZE {
            return Err(ChunkIndexError::TooLarge {
                size: bytes.len(),
                max: MAX_INDEX_SIZE,
            });
        }
        let index: Self =
            serde_json::from_slice(bytes).map_err(|e| ChunkIndexError::Json(e.to_string()))?;
        index.check()?;
        Ok(index)
    }

    /// Checks the invariants [`parse`](Self::parse) promises.
    pub fn check(&self) -> Result<(), ChunkIndexError> {
        if self.schema_version != 1 {
            return Err(ChunkIndexError::SchemaVersion(self.schema_version));
        }
        if !valid_chunk_size(self.chunk_size) {
            return Err(ChunkIndexError::ChunkSize(self.chunk_size));
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.layers {
            let expected = chunk_count(l.size, self.chunk_size);
            if l.chunks.len() as u64 != expected {
                return Err(ChunkIndexError::ChunkCount {
                    digest: l.digest.clone(),
                    size: l.size,
                    expected,
                    actual: l.chunks.len(),
                });
            }
            if !seen.insert(&l.digest) {
                return Err(ChunkIndexError::DuplicateLayer(l.digest.clone()));
            }
        }
        Ok(())
    }

    /// Adds a layer built with this index's chunk size (a layer already present is kept
    /// once).
    pub fn push(&mut self, layer: LayerChunks) {
        if self.layer(&layer.digest).is_none() {
            self.layers.push(layer);
        }
    }

    /// The chunks of blob `digest`, if indexed.
    pub fn layer(&self, digest: &Digest) -> Option<&LayerChunks> {
        self.layers.iter().find(|l| &l.digest == digest)
    }

    /// The JSON bytes (deterministic).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: an index serialises")
    }

    /// Checks chunk `index` of blob `digest`: `data` must be exactly its bytes.
    pub fn verify_chunk(
        &self,
        digest: &Digest,
        index: u64,
        data: &[u8],
    ) -> Result<(), ChunkIndexError> {
        let layer = self.layer(digest).ok_or(ChunkIndexError::NoSuchChunk {
            digest: digest.clone(),
            index,
            count: 0,
        })?;
        layer.verify_chunk(self.chunk_size, index, data)
    }
}

impl LayerChunks {
    /// The byte range chunk `index` covers.
    pub fn chunk_range(&self, chunk_size: u64, index: u64) -> Range<u64> {
        let start = index.saturating_mul(chunk_size).min(self.size);
        start..start.saturating_add(chunk_size).min(self.size)
    }

    /// Checks that `data` is chunk `index` of this blob.
    pub fn verify_chunk(
        &self,
        chunk_size: u64,
        index: u64,
        data: &[u8],
    ) -> Result<(), ChunkIndexError> {
        let Some(expected) = usize::try_from(index).ok().and_then(|i| self.chunks.get(i)) else {
            return Err(ChunkIndexError::NoSuchChunk {
                digest: self.digest.clone(),
                index,
                count: self.chunks.len(),
            });
        };
        let actual = Digest::of(data);
        let range = self.chunk_range(chunk_size, index);
        if actual != *expected || data.len() as u64 != range.end - range.start {
            return Err(ChunkIndexError::ChunkMismatch {
                digest: self.digest.clone(),
                index,
                start: range.start,
                end: range.end,
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// The referrer that carries `index_json` for the manifest `subject`: an OCI manifest
/// with `artifactType` [`ARTIFACT_TYPE`], the empty config, the index as its one layer.
/// Deterministic, so the same index for the same subject is the same manifest digest.
pub fn referrer_manifest(subject: &Descriptor, index_json: &[u8]) -> Manifest {
    let mut subject = subject.clone();
    subject.annotations.clear();
    subject.artifact_type = None;
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: Descriptor::empty(),
        layers: vec![Descriptor::of(MEDIA_TYPE, index_json)],
        subject: Some(subject),
        annotations: Default::default(),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
