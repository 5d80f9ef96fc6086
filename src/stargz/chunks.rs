//! [`LayerChunks`]: how a lazily mounted layer gets its file data. A FUSE read takes its
//! range from the chunk's file in the chunk cache; a miss fetches, in one range request (a
//! [`WindowFetcher`] window), the missed chunk and the following chunks of the same file
//! that are not cached (up to [`FetchOptions::window`] compressed bytes), and decompresses
//! each straight into the cache ([`EstargzReader::chunk_stream`], hashed on the way and
//! renamed into place only if it matches its TOC digest). At mount, the layer's
//! prioritized range (`[0, landmark)`, the files `strata convert` or `ctr-remote` put
//! before `.prefetch.landmark`) is fetched in requests sent together (at most
//! [`MAX_PREFETCH_WINDOWS`] held at a time) — from the image's
//! prefetch-end hint even before the TOC is in — and cached; reads of those files
//! meanwhile wait for it instead of fetching. Then, optionally, the rest of the layer is
//! fetched in the background, rate-limited, pausing while reads are fetching.
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use strata_formats::estargz::{Chunk, EstargzReader};
use strata_fuse::{ChunkSource, FileRef};

use super::window::WindowFetcher;
use crate::cache::{ChunkCache, ChunkFlights};
use crate::registry::range::RangeReader;

/// How a layer's chunks are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Most compressed bytes fetched for one miss (the missed chunk and its uncached
    /// neighbours in the same file).
    pub window: u64,
    /// Size of each request of the prefetch and of the background fetch.
    pub prefetch_request: u64,
    /// Fetch the rest of the layer in the background after the prefetch.
    pub background: bool,
    /// Bandwidth of the background fetch, bytes per second.
    pub background_rate: u64,
    /// The background fetch starts once reads have fetched nothing for this long.
    pub background_idle: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            window: 1 << 20,
            prefetch_request: 1 << 20,
            background: true,
            background_rate: 32 << 20,
            background_idle: Duration::from_secs(2),
        }
    }
}

/// Most prefetch windows of one layer in flight at once (with the default 1 MiB requests,
/// 16 MiB held in memory): a layer whose prioritized files are large — a model's weights —
/// is prefetched in that many requests at a time, not all of it at once.
pub(crate) const MAX_PREFETCH_WINDOWS: usize = 16;

/// Prefetch windows opened before the TOC was in: where they end, and each window's
/// (end offset, id) in blob order.
pub(crate) type EarlyWindows = (u64, Vec<(u64, u64)>);

/// The chunk source of one lazily mounted layer (see the module docs).
pub struct LayerChunks {
    layer: String,
    reader: Arc<EstargzReader<RangeReader>>,
    windows: Arc<WindowFetcher>,
    cache: Arc<ChunkCache>,
    options: FetchOptions,
    /// Reads fetching right now.
    demand: AtomicUsize,
    last_demand: Mutex<Instant>,
    /// Chunks being decompressed, by the prefetch or by reads.
    decoding: ChunkFlights<()>,
    errors: AtomicU64,
    stop: AtomicBool,
    prefetch_started: AtomicBool,
    prefetched: AtomicBool,
    complete: AtomicBool,
    /// Windows over `[0, end)` opened before the TOC was in, for the prefetch to use:
    /// `end` and each window's (end offset, id), in blob order.
    early: Mutex<Option<EarlyWindows>>,
}

impl std::fmt::Debug for LayerChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerChunks").field("layer", &self.layer).finish_non_exhaustive()
    }
}

/// Decrements the in-flight count of on-demand fetches when dropped.
struct Demand<'a>(&'a LayerChunks);

impl Drop for Demand<'_> {
    fn drop(&mut self) {
        self.0.demand.fetch_sub(1, Ordering::Relaxed);
        *self.0.last_demand.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

impl LayerChunks {
    /// Chunks of `layer` (a name for log lines) read through `reader`, whose blob is
    /// fetched through `windows`, cached in `cache`.
    pub fn new(layer: String, reader: Arc<EstargzReader<RangeReader>>, windows: Arc<WindowFetcher>, cache: Arc<ChunkCache>, options: FetchOptions) -> Self {
        Self {
            layer,
            reader,
            windows,
            cache,
            options,
            demand: AtomicUsize::new(0),
            last_demand: Mutex::new(Instant::now()),
            decoding: ChunkFlights::default(),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            prefetch_started: AtomicBool::new(false),
            prefetched: AtomicBool::new(false),
            complete: AtomicBool::new(false),
            early: Mutex::new(None),
        }
    }

    /// Hands the prefetch windows `ids` (each window's end offset and id, in blob order) of
    /// `windows`, over `[0, end)` of the blob, opened (from the image's prefetch-end hint)
    /// while the TOC was being fetched: the prefetch reads its chunks from them and closes
    /// each once past it.
    #[must_use]
    pub fn with_early_windows(self, end: u64, ids: Vec<(u64, u64)>) -> Self {
        *self.early.lock().unwrap_or_else(PoisonError::into_inner) = Some((end, ids));
        self
    }

    /// Chunk reads that failed (fetch or verification).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether the prioritized range is cached (or there is none).
    pub fn prefetched(&self) -> bool {
        self.prefetched.load(Ordering::Relaxed)
    }

    /// Whether the background fetch has cached the whole layer.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// Stops the prefetch and background fetch (at the next chunk).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Decompresses chunk `chunk` of `path` straight into the cache (streamed, verified
    /// before it is renamed into place, never whole in memory) — once at a time: a read
    /// wanting a chunk the prefetch is storing (or the reverse) waits for it.
    fn decode(&self, path: &str, chunk: &Chunk) -> io::Result<()> {
        self.decoding.run(&chunk.digest, || {
            if self.cache.contains(&chunk.digest) {
                return Ok(());
            }
            let context = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, format!("{path} at {}: {e}", chunk.chunk_offset));
            let mut stream = self.reader.chunk_stream(chunk).map_err(|e| context(&e))?;
            self.cache.put_from(&chunk.digest, chunk.chunk_size, &mut stream).map_err(|e| context(&e))
        })
    }

    /// [`Self::decode`] for the prefetch and background fetch: a failure is counted and
    /// logged (a read of the chunk later tries again).
    fn decode_ahead(&self, path: &str, chunk: &Chunk) {
        if let Err(e) = self.decode(path, chunk) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(layer = self.layer, file = path, error = %e, "stargz: fetching a chunk ahead of reads");
        }
    }

    /// Every chunk of the layer once (by digest), in blob order.
    fn all_chunks(&self) -> Vec<(String, Chunk)> {
        let mut chunks: Vec<(String, Chunk)> =
            self.reader.index().nodes().iter().flat_map(|n| n.chunks.iter().map(|c| (n.path.clone(), c.clone()))).collect();
        chunks.sort_by_key(|(_, c)| c.offset);
        let mut seen = std::collections::HashSet::new();
        chunks.retain(|(_, c)| seen.insert(c.digest.clone()));
        chunks
    }

    /// Caches `chunks` (blob-ordered), fetching them in windows of about
    /// `prefetch_request` bytes opened `ahead` at a time; `pace` runs before each window.
    fn fetch_chunks(&self, chunks: &[(String, Chunk)], ahead: usize, mut pace: impl FnMut(u64) -> bool) -> u64 {
        let groups = group(chunks, self.options.prefetch_request);
        let mut open: std::collections::VecDeque<(u64, std::ops::Range<usize>)> = std::collections::VecDeque::new();
        let mut next = 0;
        let mut bytes = 0;
        loop {
            while open.len() < ahead.max(1) && next < groups.len() {
                let g = groups[next].clone();
                let span = chunks[g.start].1.offset..chunks[g.end - 1].1.next_offset;
                if !pace(span.end - span.start) {
                    break;
                }
                bytes += span.end - span.start;
                open.push_back((self.windows.open(span), g));
                next += 1;
            }
            let Some((id, g)) = open.pop_front() else {
                break;
            };
            for (path, chunk) in &chunks[g] {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                if self.cache.contains(&chunk.digest) {
                    continue;
                }
                self.decode_ahead(path, chunk);
            }
            self.windows.close(id);
            if self.stop.load(Ordering::Relaxed) {
                for (id, _) in open {
                    self.windows.close(id);
                }
                break;
            }
        }
        bytes
    }

    /// Fetches and caches the prioritized range `[0, landmark)`; returns the bytes asked
    /// for (0 without a landmark).
    pub fn prefetch(&self) -> u64 {
        let early = self.early.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(landmark) = self.reader.index().prefetch_landmark_offset() else {
            for (_, id) in early.into_iter().flat_map(|(_, ids)| ids) {
                self.windows.close(id);
            }
            self.prefetched.store(true, Ordering::Relaxed);
            return 0;
        };
        let chunks: Vec<(String, Chunk)> =
            self.all_chunks().into_iter().filter(|(_, c)| c.next_offset <= landmark && !self.cache.contains(&c.digest)).collect();
        let mut bytes = 0;
        let rest: Vec<(String, Chunk)> = match early {
            Some((end, mut ids)) => {
                let (ready, rest): (Vec<_>, Vec<_>) = chunks.into_iter().partition(|(_, c)| c.next_offset <= end);
                bytes += end;
                ids.reverse();
                for (path, chunk) in &ready {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.decode_ahead(path, chunk);
                    // Chunks come in blob order: windows ending before this one's start
                    // have served every chunk they hold.
                    while ids.last().is_some_and(|&(window_end, _)| window_end <= chunk.offset) {
                        let (_, id) = ids.pop().expect("checked");
                        self.windows.close(id);
                    }
                }
                for (_, id) in ids {
                    self.windows.close(id);
                }
                rest
            }
            None => chunks,
        };
        bytes += self.fetch_chunks(&rest, MAX_PREFETCH_WINDOWS, |_| true);
        self.prefetched.store(true, Ordering::Relaxed);
        bytes
    }

    /// Caches every chunk not cached yet, `background_rate` bytes per second at most,
    /// waiting while reads are fetching.
    pub fn fetch_rest(&self) {
        let chunks: Vec<(String, Chunk)> = self.all_chunks().into_iter().filter(|(_, c)| !self.cache.contains(&c.digest)).collect();
        let started = Instant::now();
        let mut sent = 0u64;
        let rate = self.options.background_rate.max(1) as f64;
        self.fetch_chunks(&chunks, 1, |len| {
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return false;
                }
                let busy = self.demand.load(Ordering::Relaxed) > 0
                    || self.last_demand.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < self.options.background_idle;
                let ahead = Duration::from_secs_f64(sent as f64 / rate).saturating_sub(started.elapsed());
                if !busy && ahead.is_zero() {
                    break;
                }
                std::thread::sleep(ahead.clamp(Duration::from_millis(20), Duration::from_millis(200)));
            }
            sent += len;
            true
        });
        if !self.stop.load(Ordering::Relaxed) {
            self.complete.store(true, Ordering::Relaxed);
        }
    }

    /// Fetches the prioritized files on a thread of its own.
    pub fn start_prefetch(self: &Arc<Self>) {
        self.prefetch_started.store(true, Ordering::Relaxed);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("stargz-prefetch".into()).spawn(move || {
            let started = Instant::now();
            let bytes = me.prefetch();
            if bytes > 0 {
                tracing::info!(layer = me.layer, bytes, elapsed = ?started.elapsed(), "stargz: prioritized files prefetched");
            }
        });
        if let Err(e) = spawned {
            self.prefetched.store(true, Ordering::Relaxed);
            tracing::warn!(layer = self.layer, error = %e, "stargz: cannot start the prefetch thread");
        }
    }

    /// Fetches the rest of the layer on a thread of its own, once the prefetch (if any
    /// was started) is done.
    pub fn start_background(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("stargz-background".into()).spawn(move || {
            let started = Instant::now();
            while me.prefetch_started.load(Ordering::Relaxed) && !me.prefetched() && !me.stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                std::thread::sleep(Duration::from_millis(50));
            }
            me.fetch_rest();
        });
        if let Err(e) = spawned {
            tracing::warn!(layer = self.layer, error = %e, "stargz: cannot start the background fetch");
        }
    }
}

/// Splits blob-ordered chunks into runs whose compressed span is about `size` bytes.
fn group(chunks: &[(String, Chunk)], size: u64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 0..chunks.len() {
        let span = chunks[i].1.next_offset.saturating_sub(chunks[start].1.offset);
        let contiguous = i == start || chunks[i].1.offset <= chunks[i - 1].1.next_offset;
        if i > start && (span > size || !contiguous) {
            groups.push(start..i);
            start = i;
        }
    }
    if start < chunks.len() {
        groups.push(start..chunks.len());
    }
    groups
}

impl ChunkSource for LayerChunks {
    fn backing_file(&self, file: &FileRef<'_>) -> Option<std::fs::File> {
        self.cache.backing_file(file.node)
    }

    fn chunk(&self, file: &FileRef<'_>, chunk: &Chunk) -> io::Result<Arc<[u8]>> {
        if let Some(bytes) = self.cache.get_shared(&chunk.digest) {
            return Ok(bytes);
        }
        self.fetch_on_demand(file, chunk)?;
        match self.cache.get_shared(&chunk.digest) {
            Some(bytes) => Ok(bytes),
            // Evicted already (a cache smaller than what is being read): decompress again.
            None => self.reader.read_chunk_shared(file.path, chunk).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    fn read_chunk(&self, file: &FileRef<'_>, chunk: &Chunk, range: std::ops::Range<usize>, out: &mut Vec<u8>) -> io::Result<()> {
        let on_disk = range.start as u64..range.end as u64;
        if self.cache.read_range(&chunk.digest, on_disk.clone(), out) {
            return Ok(());
        }
        self.fetch_on_demand(file, chunk)?;
        if self.cache.read_range(&chunk.digest, on_disk, out) {
            return Ok(());
        }
        let bytes = self.reader.read_chunk_shared(file.path, chunk).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        out.extend_from_slice(bytes.get(range).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range outside the chunk"))?);
        Ok(())
    }
}

impl LayerChunks {
    /// A read's miss: fetches and stores `chunk` and the file's following uncached chunks
    /// (up to the window) in one request.
    fn fetch_on_demand(&self, file: &FileRef<'_>, chunk: &Chunk) -> io::Result<()> {
        self.demand.fetch_add(1, Ordering::Relaxed);
        let _demand = Demand(self);
        let chunks = &file.node.chunks;
        let idx = chunks.iter().position(|c| c.offset == chunk.offset && c.chunk_offset == chunk.chunk_offset).unwrap_or(chunks.len());
        let mut last = idx;
        while last + 1 < chunks.len() {
            let n = &chunks[last + 1];
            if n.next_offset.saturating_sub(chunk.offset) > self.options.window || self.cache.contains(&n.digest) {
                break;
            }
            last += 1;
        }
        let window = (last > idx && last < chunks.len()).then(|| self.windows.open(chunk.offset..chunks[last].next_offset));
        let result = self.decode(file.path, chunk);
        if result.is_ok() && last > idx && last < chunks.len() {
            for n in &chunks[idx + 1..=last] {
                if let Err(e) = self.decode(file.path, n) {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(layer = self.layer, file = file.path, error = %e, "stargz: a neighbouring chunk");
                    break;
                }
            }
        }
        if let Some(id) = window {
            self.windows.close(id);
        }
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_formats::Digest;

    fn chunk(offset: u64, next: u64) -> (String, Chunk) {
        ("f".into(), Chunk { offset, next_offset: next, chunk_offset: 0, chunk_size: 1, inner_offset: 0, digest: Digest::of(&offset.to_le_bytes()) })
    }

    /// An eStargz blob in memory; each request records how many chunk files the cache
    /// held when it was made.
    struct Blob {
        bytes: Vec<u8>,
        cache_dir: std::path::PathBuf,
        asked: Mutex<Vec<usize>>,
    }

    impl std::fmt::Debug for Blob {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Blob").finish_non_exhaustive()
        }
    }

    fn files_under(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
        })
    }

    impl crate::registry::range::RangeFetcher for Blob {
        fn fetch<'a>(
            &'a self,
            ranges: &'a [std::ops::Range<u64>],
        ) -> futures_util::future::BoxFuture<'a, Result<Vec<bytes::Bytes>, crate::registry::range::RangeError>> {
            self.asked.lock().unwrap().push(files_under(&self.cache_dir));
            let out = ranges.iter().map(|r| bytes::Bytes::copy_from_slice(&self.bytes[r.start as usize..r.end as usize])).collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[test]
    fn a_large_prioritized_range_is_prefetched_a_bounded_number_of_windows_at_a_time() {
        use strata_formats::estargz::{WriteOptions, convert};
        // 64 prioritized files of 64 KiB (incompressible), fetched in 64 KiB requests.
        let mut layer = strata_testdata::LayerSpec::new();
        let mut prioritized = Vec::new();
        for i in 0..64 {
            layer = layer.file(format!("w/{i:02}"), 0o644, strata_testdata::random_bytes(64 << 10, i));
            prioritized.push(format!("w/{i:02}"));
        }
        let opts = WriteOptions { prioritized_files: prioritized, ..WriteOptions::default() };
        let mut bytes = Vec::new();
        convert(layer.tar().unwrap().as_slice(), &mut bytes, &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = Arc::new(ChunkCache::open(&cache_dir, 1 << 30).unwrap());
        let size = bytes.len() as u64;
        let blob = Arc::new(Blob { bytes, cache_dir, asked: Mutex::default() });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let fetcher = Arc::clone(&blob) as Arc<dyn crate::registry::range::RangeFetcher>;
        // As the provider wires it: the reader reads through the windows.
        let windows = Arc::new(WindowFetcher::new(fetcher, runtime.handle().clone()));
        let through = Arc::clone(&windows) as Arc<dyn crate::registry::range::RangeFetcher>;
        let reader = RangeReader::new(through, size, runtime.handle().clone(), crate::registry::range::ReaderOptions::default());
        let reader = Arc::new(EstargzReader::open(reader, None).unwrap());
        let options = FetchOptions { prefetch_request: 64 << 10, background: false, ..FetchOptions::default() };
        let chunks = LayerChunks::new("test".into(), reader, windows, Arc::clone(&cache), options);
        blob.asked.lock().unwrap().clear();
        assert!(chunks.prefetch() > 0);
        let asked = blob.asked.lock().unwrap().clone();
        assert!(asked.len() >= 64, "one request per file: {asked:?}");
        // Up to MAX_PREFETCH_WINDOWS go out at once; each later one only after another
        // window was decoded into the cache (so at most that many are held in memory).
        // (How many of the first ones go out before the first is decoded is up to the
        // scheduler: not asserted.)
        for (i, &stored) in asked.iter().enumerate().skip(MAX_PREFETCH_WINDOWS) {
            assert!(stored > i - MAX_PREFETCH_WINDOWS, "request {i} went out with only {stored} chunks stored: {asked:?}");
        }
        assert_eq!(files_under(&dir.path().join("cache")), 64, "every prioritized file cached");
    }

    #[test]
    fn groups_are_bounded_and_contiguous() {
        let chunks = vec![chunk(0, 10), chunk(10, 20), chunk(20, 30), chunk(40, 50), chunk(50, 200)];
        assert_eq!(group(&chunks, 25), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(group(&chunks, 1000), vec![0..3, 3..5]);
        assert!(group(&[], 10).is_empty());
    }
}
