//! Read-ahead for sequential readers of large files (a loader streaming a weight file, a
//! copy): when a file's reads cross from one chunk into the next, the chunks after it are
//! fetched into the cache by a small pool of threads, so several range requests are in
//! flight and the link stays busy while the reader consumes. The window is half the chunks
//! the run has read so far (from 2 chunks up to [`ReadaheadOptions::max_window`]), so a
//! reader of one tensor gets few chunks it does not read; a read
//! elsewhere in the file (a loader touching tensors of an mmapped file in arbitrary
//! order) stops it, so random access fetches only what it reads.
//!
//! Chunks are fetched through the cached source the reads use, so a read of a chunk the
//! read-ahead is fetching waits for that fetch instead of starting its own, and every
//! chunk is verified before it is stored. Chunks already stored are read from the disk
//! ahead instead ([`ChunkCache::prefetch`]: into the page cache, in the background).

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use strata_formats::layer_index::FileChunk;
use strata_fuse::{ChunkSource, FileRef};

use crate::cache::ChunkCache;

/// How read-ahead behaves.
#[derive(Debug, Clone, Copy)]
pub struct ReadaheadOptions {
    /// Threads fetching ahead (each holds one request, one chunk, at a time).
    pub threads: usize,
    /// The most chunks fetched ahead of a sequential reader.
    pub max_window: usize,
}

impl Default for ReadaheadOptions {
    fn default() -> Self {
        Self {
            threads: 4,
            max_window: 16,
        }
    }
}

/// One chunk to fetch ahead, with what names it in a log line.
struct Job {
    source: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
    layer: Arc<str>,
    path: Arc<str>,
    ino: u64,
    size: u64,
    chunk: FileChunk,
}

/// The threads that fetch ahead, shared by the sources of one volume.
pub struct ReadaheadPool {
    jobs: SyncSender<Job>,
    opts: ReadaheadOptions,
}

impl std::fmt::Debug for ReadaheadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadaheadPool")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl ReadaheadPool {
    /// Starts `opts.threads` threads; they end when the pool and its sources are dropped.
    pub fn new(opts: ReadaheadOptions) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..opts.threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("readahead-{i}"))
                .spawn(move || work(&rx))
                .expect("spawning a read-ahead thread");
        }
        Arc::new(Self { jobs: tx, opts })
    }

    /// `source` (which returns verified chunks and stores them in `cache`) with read-ahead
    /// for the files of layer `layer`.
    pub fn source(
        self: &Arc<Self>,
        layer: &str,
        source: Arc<dyn ChunkSource>,
        cache: Arc<ChunkCache>,
    ) -> Readahead {
        Readahead {
            pool: Arc::clone(self),
            layer: layer.into(),
            source,
            cache,
            streams: Mutex::new(HashMap::new()),
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if job.cache.contains(&job.chunk.digest) {
            continue;
        }
        let file = FileRef {
            layer: &job.layer,
            path: &job.path,
            ino: job.ino,
            size: job.size,
            chunks: std::slice::from_ref(&job.chunk),
        };
        // A failure is the reader's to see when it gets there (its read fetches again).
        if let Err(e) = job.source.chunk(&file, &job.chunk) {
            tracing::debug!(layer = %job.layer, file = %job.path, error = %e, "read-ahead");
        }
    }
}

/// Where a file's reader is.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Where the current run of contiguous reads started.
    run_start: u64,
    /// Where the last read ended.
    end: u64,
    /// The chunk read last.
    last: usize,
    /// The first chunk not yet sent for read-ahead.
    next: usize,
    /// Chunks to keep ahead of the reader.
    window: usize,
}

/// Reads this close to where the last one ended continue its run (the kernel's own
/// read-ahead sends a sequential reader's reads slightly out of order); a quarter of the
/// chunk size when that is less.
const SLACK: u64 = 1 << 20;

/// A chunk source with read-ahead in front (see the module docs).
pub struct Readahead {
    pool: Arc<ReadaheadPool>,
    layer: Arc<str>,
    source: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
    streams: Mutex<HashMap<u64, Stream>>,
}

impl std::fmt::Debug for Readahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readahead")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl Readahead {
    /// Notes a read of bytes `range` of chunk `chunk` of `file`; returns the chunks to
    /// fetch ahead. Read-ahead starts once a run of contiguous reads longer than 2 MiB (or
    /// a chunk, when chunks are smaller) crosses into the next chunk: the kernel reading
    /// around an mmap fault (a megabyte about it) may cross a chunk boundary, but a reader
    /// of a large tensor or file gets read-ahead from its second chunk on.
    fn track(&self, file: &FileRef<'_>, chunk: &FileChunk, range: Range<u64>) -> Range<usize> {
        let i = file.chunks.partition_point(|c| c.offset < chunk.offset);
        let (start, end) = (chunk.offset + range.start, chunk.offset + range.end);
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let s = streams.entry(file.ino).or_insert(Stream {
            run_start: start,
            end: start,
            last: i,
            next: 0,
            window: 0,
        });
        let slack = SLACK.min(chunk.size / 4);
        if start > s.end.saturating_add(slack) || start.saturating_add(slack) < s.end {
            // A jump: random access, or a new pass over the file.
            *s = Stream {
                run_start: start,
                end,
                last: i,
                next: 0,
                window: 0,
            };
            return 0..0;
        }
        s.end = s.end.max(end);
        // More contiguous bytes than the kernel reads around an mmap fault (1 MiB): a
        // reader streaming, not a page fault.
        let run = (2 << 20).min(chunk.size.max(file.chunks[s.last].size));
        let crossed = i == s.last + 1 && start.saturating_sub(s.run_start) >= run;
        s.last = s.last.max(i);
        if !crossed {
            return 0..0;
        }
        // As far ahead as half the run read so far: a streaming reader soon has the whole
        // window in flight, while the reader of one tensor of a few chunks gets only a few
        // chunks it will not read.
        let read = end.saturating_sub(s.run_start) / chunk.size.max(1);
        s.window = usize::try_from(read / 2)
            .unwrap_or(usize::MAX)
            .clamp(2, self.pool.opts.max_window);
        let stop = (i + 1 + s.window).min(file.chunks.len());
        let from = s.next.max(i + 1);
        s.next = s.next.max(stop);
        from..stop.max(from)
    }

    fn send(&self, file: &FileRef<'_>, ahead: Range<usize>) {
        for c in &file.chunks[ahead] {
            // Stored: only read from the disk ahead of the reader.
            if self.cache.prefetch(&c.digest) {
                continue;
            }
            let job = Job {
                source: Arc::clone(&self.source),
                cache: Arc::clone(&self.cache),
                layer: Arc::clone(&self.layer),
                path: file.path.into(),
                ino: file.ino,
                size: file.size,
                chunk: c.clone(),
            };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.pool.jobs.try_send(job)
            {
                // Busy: the reader's own reads fetch what read-ahead could not queue.
                return;
            }
        }
    }
}

impl ChunkSource for Readahead {
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        let ahead = self.track(file, chunk, 0..chunk.size);
        self.send(file, ahead);
        self.source.chunk(file, chunk)
    }

    fn read_chunk(
        &self,
        file: &FileRef<'_>,
        chunk: &FileChunk,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let ahead = self.track(file, chunk, range.start as u64..range.end as u64);
        self.send(file, ahead);
        self.source.read_chunk(file, chunk, range, out)
    }

    fn backing_file(&self, file: &FileRef<'_>) -> Option<std::fs::File> {
        self.source.backing_file(file)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use strata_formats::Digest;
    use strata_formats::layer_index::raw::RawBlobFile;

    use super::*;
    use crate::cache::CachedChunkSource;

    /// Serves a blob from memory, counting chunk fetches.
    struct Counting {
        blob: Vec<u8>,
        fetches: AtomicUsize,
    }

    impl ChunkSource for Counting {
        fn chunk(&self, _: &FileRef<'_>, c: &FileChunk) -> io::Result<Arc<[u8]>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let r = c.extent.offset as usize..(c.extent.offset + c.extent.len) as usize;
            Ok(Arc::from(&self.blob[r]))
        }
    }

    fn setup(chunks: usize) -> (Arc<Counting>, Readahead, Vec<FileChunk>, tempfile::TempDir) {
        let size = 65536;
        let blob: Vec<u8> = (0..size * chunks).map(|i| (i % 253) as u8).collect();
        let index = RawBlobFile {
            path: "w".into(),
            size: blob.len() as u64,
            chunk_size: size as u64,
            digests: blob.chunks(size).map(Digest::of).collect(),
            mode: 0o444,
            mtime: 0,
        }
        .layer_index()
        .unwrap();
        let list = index.entries()[1].chunks.to_vec();
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 30).unwrap());
        let inner = Arc::new(Counting {
            blob,
            fetches: AtomicUsize::new(0),
        });
        let cached = Arc::new(CachedChunkSource::new(inner.clone(), cache.clone()));
        let pool = ReadaheadPool::new(ReadaheadOptions::default());
        (inner, pool.source("l", cached, cache), list, dir)
    }

    fn read(source: &Readahead, chunks: &[FileChunk], i: usize) {
        read_range(source, chunks, i, 0..chunks[i].size as usize);
    }

    fn read_range(source: &Readahead, chunks: &[FileChunk], i: usize, range: Range<usize>) {
        let file = FileRef {
            layer: "l",
            path: "w",
            ino: 2,
            size: chunks.iter().map(|c| c.size).sum(),
            chunks,
        };
        let mut out = Vec::new();
        let len = range.len();
        source
            .read_chunk(&file, &chunks[i], range, &mut out)
            .unwrap();
        assert_eq!(out.len(), len);
    }

    fn settle(inner: &Counting, expect: usize) -> usize {
        let start = Instant::now();
        while inner.fetches.load(Ordering::SeqCst) < expect
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        inner.fetches.load(Ordering::SeqCst)
    }

    #[test]
    fn sequential_reads_fetch_ahead_and_random_reads_do_not() {
        let (inner, source, chunks, _dir) = setup(64);
        read(&source, &chunks, 0);
        read(&source, &chunks, 1);
        // Chunk 1 read in order: 2 chunks ahead (2 and 3), besides 0 and 1.
        assert_eq!(settle(&inner, 4), 4);
        read(&source, &chunks, 2);
        // Half the run (3 chunks) is less than 2: still 2 ahead, up to chunk 4.
        assert_eq!(settle(&inner, 5), 5);
        for i in 3..8 {
            read(&source, &chunks, i);
        }
        // 8 chunks read in order: 4 ahead, up to chunk 11.
        assert_eq!(settle(&inner, 12), 12);
        // Every chunk is fetched once, however it was asked for.
        for i in 8..64 {
            read(&source, &chunks, i);
        }
        assert_eq!(settle(&inner, 64), 64);

        let (inner, source, chunks, _dir) = setup(64);
        for i in [40, 3, 17, 60, 9] {
            read(&source, &chunks, i);
        }
        assert_eq!(
            settle(&inner, 5),
            5,
            "random reads fetch only what they read"
        );
        // Reads around a point that cross a chunk boundary (the kernel around an mmap
        // fault) are not a sequential reader.
        let half = chunks[0].size as usize / 2;
        read_range(&source, &chunks, 20, half..2 * half);
        read_range(&source, &chunks, 21, 0..half);
        assert_eq!(settle(&inner, 7), 7);
    }
}
