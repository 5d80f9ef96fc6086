//! [`CachedChunkSource`]: the chunk cache in front of another chunk source (the one that
//! fetches and verifies), so each chunk is fetched once per node, not once per mount.

use std::io;
use std::sync::Arc;

use strata_formats::estargz::Chunk;
use strata_fuse::{ChunkSource, FileRef};

use super::ChunkCache;

/// Serves chunks from `cache`; on a miss asks `inner` (which returns only verified bytes)
/// and stores the result.
pub struct CachedChunkSource {
    inner: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
}

impl std::fmt::Debug for CachedChunkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedChunkSource").field("cache", &self.cache).finish_non_exhaustive()
    }
}

impl CachedChunkSource {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn ChunkSource>, cache: Arc<ChunkCache>) -> Self {
        Self { inner, cache }
    }
}

impl ChunkSource for CachedChunkSource {
    fn chunk(&self, file: &FileRef<'_>, chunk: &Chunk) -> io::Result<Arc<[u8]>> {
        if let Some(bytes) = self.cache.get(&chunk.digest) {
            return Ok(bytes.into());
        }
        let bytes = self.inner.chunk(file, chunk)?;
        if let Err(e) = self.cache.put(&chunk.digest, &bytes) {
            // The chunk is verified and served all the same; only caching failed.
            tracing::warn!(layer = file.layer, file = file.path, error = %e, "caching a chunk");
        }
        Ok(bytes)
    }
}
