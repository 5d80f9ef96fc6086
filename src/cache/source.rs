//! [`CachedChunkSource`]: the chunk cache in front of another chunk source (the one that
//! fetches and verifies), so each chunk is fetched once per node, not once per mount —
//! and once at a time: concurrent misses of the same chunk wait for one fetch. FUSE reads
//! of a stored chunk read just their range from its file ([`ChunkCache::read_range`]).

use std::io;
use std::sync::Arc;

use strata_formats::layer_index::FileChunk;
use strata_fuse::{ChunkSource, FileRef};

use super::{ChunkCache, ChunkFlights, ChunkWriter, HotChunks};

/// Serves chunks from `cache`; on a miss asks `inner` (which returns only verified bytes)
/// once, however many readers want the chunk, and stores the result.
pub struct CachedChunkSource {
    inner: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
    flights: ChunkFlights,
    memory: Option<(Arc<HotChunks>, Arc<ChunkWriter>)>,
}

impl std::fmt::Debug for CachedChunkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedChunkSource")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachedChunkSource {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn ChunkSource>, cache: Arc<ChunkCache>) -> Self {
        Self {
            inner,
            cache,
            flights: ChunkFlights::default(),
            memory: None,
        }
    }

    /// Keeps fetched chunks in `hot` until read through, and serves reads from there
    /// first (see [`HotChunks`]); their files are written by `writer`, off the reader's
    /// path. Both may be shared by several sources.
    #[must_use]
    pub fn with_memory(mut self, hot: Arc<HotChunks>, writer: Arc<ChunkWriter>) -> Self {
        self.memory = Some((hot, writer));
        self
    }

    fn hot(&self) -> Option<&HotChunks> {
        self.memory.as_ref().map(|(hot, _)| &**hot)
    }

    fn fetch(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        let started = std::time::Instant::now();
        let bytes = self.inner.chunk(file, chunk)?;
        tracing::debug!(
            layer = file.layer,
            file = file.path,
            offset = chunk.offset,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "chunk fetched"
        );
        // The inner source verified them (the ChunkSource contract): not hashed again.
        if let Some((hot, writer)) = &self.memory {
            writer.store(&self.cache, hot, &chunk.digest, &bytes);
        } else if let Err(e) = self.cache.put_verified(&chunk.digest, &bytes) {
            // The chunk is verified and served all the same; only caching failed.
            tracing::warn!(layer = file.layer, file = file.path, error = %e, "caching a chunk");
        }
        Ok(bytes)
    }
}

impl ChunkSource for CachedChunkSource {
    fn backing_file(&self, file: &FileRef<'_>) -> Option<std::fs::File> {
        self.cache.backing_file(file)
    }

    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        if let Some(bytes) = self.hot().and_then(|h| h.get(&chunk.digest)) {
            return Ok(bytes);
        }
        if let Some(bytes) = self.cache.get_shared(&chunk.digest) {
            return Ok(bytes);
        }
        self.flights.run(&chunk.digest, || {
            // A fetch that finished between our cache miss and now has kept the chunk.
            if let Some(bytes) = self.hot().and_then(|h| h.get(&chunk.digest)) {
                return Ok(bytes);
            }
            match self.cache.get_shared(&chunk.digest) {
                Some(bytes) => Ok(bytes),
                None => self.fetch(file, chunk),
            }
        })
    }

    fn read_chunk(
        &self,
        file: &FileRef<'_>,
        chunk: &FileChunk,
        range: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if let Some(hot) = self.hot()
            && hot.read(&chunk.digest, range.clone(), out)
        {
            return Ok(());
        }
        if self
            .cache
            .read_range(&chunk.digest, range.start as u64..range.end as u64, out)
        {
            return Ok(());
        }
        // Fetched (once, however many readers miss it) and stored; this read takes its
        // piece from the fetched bytes, the next ones from disk.
        let bytes = self.chunk(file, chunk)?;
        let piece = bytes.get(range).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "range outside the chunk")
        })?;
        out.extend_from_slice(piece);
        if let Some(hot) = self.hot() {
            hot.served(&chunk.digest, piece.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use strata_formats::Digest;
    use strata_formats::layer_index::{Encoding, Extent};

    use super::*;

    /// A source that counts fetches and takes a while, returning `bytes`.
    struct Slow {
        bytes: Vec<u8>,
        calls: AtomicUsize,
        fail: bool,
    }

    impl ChunkSource for Slow {
        fn chunk(&self, _: &FileRef<'_>, _: &FileChunk) -> io::Result<Arc<[u8]>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            if self.fail {
                return Err(io::Error::other("registry unreachable"));
            }
            Ok(self.bytes.clone().into())
        }
    }

    fn chunk_of(bytes: &[u8]) -> FileChunk {
        FileChunk {
            offset: 0,
            size: bytes.len() as u64,
            extent: Extent {
                offset: 0,
                len: bytes.len() as u64,
                encoding: Encoding::Raw,
            },
            digest: Digest::of(bytes),
        }
    }

    /// Fetch count, each reader's result, and the cache.
    type Outcome = (usize, Vec<io::Result<Arc<[u8]>>>, Arc<ChunkCache>);

    fn run(fail: bool) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"chunk bytes".to_vec();
        let chunk = chunk_of(&bytes);
        let inner = Arc::new(Slow {
            bytes,
            calls: AtomicUsize::new(0),
            fail,
        });
        let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 20).unwrap());
        let source = CachedChunkSource::new(inner.clone(), cache.clone());
        let file = FileRef {
            layer: "l",
            path: "f",
            ino: 2,
            size: chunk.size,
            chunks: std::slice::from_ref(&chunk),
        };
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| source.chunk(&file, &chunk)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        (inner.calls.load(Ordering::SeqCst), results, cache)
    }

    #[test]
    fn concurrent_misses_fetch_once_and_fill_the_cache() {
        let (calls, results, cache) = run(false);
        assert_eq!(calls, 1);
        for r in results {
            assert_eq!(&r.unwrap()[..], b"chunk bytes");
        }
        assert_eq!(cache.stats().stored, 1);
    }

    #[test]
    fn a_failed_fetch_fails_every_waiter_and_caches_nothing() {
        let (calls, results, cache) = run(true);
        assert_eq!(calls, 1);
        for r in results {
            assert!(r.unwrap_err().to_string().contains("registry unreachable"));
        }
        assert_eq!(cache.stats().stored, 0);
    }
}
