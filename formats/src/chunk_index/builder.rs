//! [`LayerChunker`]: a blob's chunk digests computed in one streaming pass.

use sha2::Digest as _;

use super::{ChunkIndexError, LayerChunks, valid_chunk_size};
use crate::Digest;

/// Hashes a blob as it streams by: the whole blob (to check its digest) and each chunk.
/// Memory: one SHA-256 state per stream plus 32 bytes per finished chunk.
#[derive(Clone)]
pub struct LayerChunker {
    chunk_size: u64,
    whole: sha2::Sha256,
    chunk: sha2::Sha256,
    in_chunk: u64,
    total: u64,
    chunks: Vec<[u8; 32]>,
}

impl std::fmt::Debug for LayerChunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerChunker")
            .field("chunk_size", &self.chunk_size)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl LayerChunker {
    /// A chunker of `chunk_size` bytes (a power of two in the accepted range).
    pub fn new(chunk_size: u64) -> Result<Self, ChunkIndexError> {
        if !valid_chunk_size(chunk_size) {
            return Err(ChunkIndexError::ChunkSize(chunk_size));
        }
        Ok(Self {
            chunk_size,
            whole: sha2::Sha256::new(),
            chunk: sha2::Sha256::new(),
            in_chunk: 0,
            total: 0,
            chunks: Vec::new(),
        })
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether no byte was seen yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = (self.chunk_size - self.in_chunk) as usize;
            let n = room.min(data.len());
            self.chunk.update(&data[..n]);
            self.in_chunk += n as u64;
            data = &data[n..];
            if self.in_chunk == self.chunk_size {
                self.finish_chunk();
            }
        }
    }

    fn finish_chunk(&mut self) {
        let h = std::mem::replace(&mut self.chunk, sha2::Sha256::new()).finalize();
        self.chunks.push(h.into());
        self.in_chunk = 0;
    }

    /// The blob's digest (of the bytes fed so far), without finishing.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.whole.clone().finalize())
    }

    /// The chunks of the blob; fails when the bytes fed do not hash to `expected`.
    pub fn finish(mut self, expected: &Digest) -> Result<LayerChunks, ChunkIndexError> {
        if self.in_chunk > 0 {
            self.finish_chunk();
        }
        let actual = Digest::from_sha256_bytes(&self.whole.finalize());
        if actual != *expected {
            return Err(ChunkIndexError::BlobMismatch {
                expected: expected.clone(),
                actual,
                size: self.total,
            });
        }
        Ok(LayerChunks {
            digest: actual,
            size: self.total,
            chunks: self
                .chunks
                .iter()
                .map(|h| Digest::from_sha256_bytes(h))
                .collect(),
        })
    }
}
