//! [`LayerFetch`] over an eStargz blob in memory: what requests reads make, that a read is
//! served as soon as its own bytes are in, that wrong bytes are never served, and that a
//! complete ELF file brings its libraries.

use std::ops::Range;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use strata_formats::estargz::{WriteOptions, convert};
use strata_formats::layer_index::chunk_at;
use strata_fuse::FileRef;
use strata_testdata::LayerSpec;

use super::*;
use crate::registry::range::{RangeError, ReaderOptions};

/// An eStargz blob served from memory, recording the ranges asked of it. Streams go out in
/// 16 KiB frames; a stream may be held after its first `hold_after` bytes until released;
/// `corrupt` flips a byte at that offset in everything served.
#[derive(Default)]
struct Blob {
    bytes: Vec<u8>,
    asked: Mutex<Vec<Range<u64>>>,
    hold_after: Option<u64>,
    release: tokio::sync::Notify,
    corrupt: Option<u64>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Blob {
    fn slice(&self, r: &Range<u64>) -> Bytes {
        let mut b = self.bytes[r.start as usize..r.end as usize].to_vec();
        if let Some(at) = self.corrupt.filter(|at| r.contains(at)) {
            b[(at - r.start) as usize] ^= 0x55;
        }
        b.into()
    }

    fn asked(&self) -> Vec<Range<u64>> {
        self.asked.lock().unwrap().clone()
    }
}

impl RangeFetcher for Blob {
    fn fetch<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
        self.asked.lock().unwrap().extend(ranges.iter().cloned());
        let out = ranges.iter().map(|r| self.slice(r)).collect();
        Box::pin(async move { Ok(out) })
    }

    fn fetch_stream<'a>(
        &'a self,
        range: Range<u64>,
        sink: mpsc::Sender<Bytes>,
    ) -> BoxFuture<'a, Result<(), RangeError>> {
        self.asked.lock().unwrap().push(range.clone());
        Box::pin(async move {
            let mut pos = range.start;
            let mut held = false;
            while pos < range.end {
                if let Some(hold) = self.hold_after
                    && !held
                    && pos >= range.start + hold
                {
                    held = true;
                    self.release.notified().await;
                }
                let end = (pos + (16 << 10)).min(range.end);
                if sink.send(self.slice(&(pos..end))).await.is_err() {
                    return Ok(());
                }
                pos = end;
            }
            Ok(())
        })
    }
}

struct Layer {
    blob: Arc<Blob>,
    fetch: Arc<LayerFetch>,
    cache: Arc<ChunkCache>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn layer(spec: LayerSpec, opts: WriteOptions, blob: Blob, plan: PlanOptions) -> Layer {
    let mut bytes = Vec::new();
    convert(spec.tar().unwrap().as_slice(), &mut bytes, &opts).unwrap();
    let blob = Arc::new(Blob { bytes, ..blob });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = Arc::clone(&blob) as Arc<dyn RangeFetcher>;
    let size = blob.bytes.len() as u64;
    let reader = RangeReader::new(
        Arc::clone(&fetcher),
        size,
        runtime.handle().clone(),
        ReaderOptions::default(),
    );
    let reader = Arc::new(EstargzReader::open(reader, None).unwrap());
    blob.asked.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let fetch = LayerFetch::new(
        "test".into(),
        reader,
        fetcher,
        Arc::clone(&cache),
        runtime.handle().clone(),
        Arc::default(),
        plan,
        None,
    );
    Layer {
        blob,
        fetch,
        cache,
        _dir: dir,
        _runtime: runtime,
    }
}

impl Layer {
    /// Reads `len` bytes at `offset` of `path` as the FUSE server would.
    fn read(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let index = self.fetch.reader().index().layer_index().unwrap();
        let id = index.target(self.fetch.reader().index().lookup_id(path).unwrap());
        let entry = &index.entries()[id];
        let file = FileRef {
            layer: "test",
            path,
            ino: 2,
            size: entry.size,
            chunks: &entry.chunks,
        };
        let mut out = Vec::new();
        let mut pos = offset;
        let end = (offset + len).min(entry.size);
        while pos < end {
            let chunk = chunk_at(file.chunks, pos).unwrap();
            let from = (pos - chunk.offset) as usize;
            let to = (end.min(chunk.end()) - chunk.offset) as usize;
            self.fetch.read_chunk(&file, chunk, from..to, &mut out)?;
            pos = chunk.offset + to as u64;
        }
        Ok(out)
    }
}

fn four_mib_chunks() -> WriteOptions {
    WriteOptions {
        chunk_size: 4 << 20,
        ..WriteOptions::default()
    }
}

#[test]
fn a_miss_on_a_large_one_chunk_file_is_one_request_not_one_per_block() {
    // What ctr-remote writes by default: a 3 MB binary as one chunk (one gzip member).
    let big = strata_testdata::random_bytes(3 << 20, 1);
    let spec = LayerSpec::new()
        .file("usr/bin/big", 0o755, big.clone())
        .file("usr/bin/small", 0o755, b"#!/bin/sh\n".to_vec());
    let l = layer(
        spec,
        four_mib_chunks(),
        Blob::default(),
        PlanOptions::default(),
    );
    assert_eq!(l.read("usr/bin/big", 0, 16 << 10).unwrap(), big[..16 << 10]);
    let asked = l.blob.asked();
    assert_eq!(
        asked.len(),
        1,
        "one request for the whole member, whatever its size: {asked:?}"
    );
    assert!(asked[0].end - asked[0].start > 3 << 20);
    // The rest of the file (and the small file after it) came with it.
    assert_eq!(
        l.read("usr/bin/big", 2 << 20, 1 << 20).unwrap(),
        big[2 << 20..3 << 20]
    );
    assert_eq!(l.read("usr/bin/small", 0, 100).unwrap(), b"#!/bin/sh\n");
    assert_eq!(l.blob.asked().len(), 1);
}

#[test]
fn a_read_is_served_as_soon_as_its_own_bytes_are_in() {
    // A small file then a large one in the same directory: the miss of the small one
    // fetches both in one request (read-ahead), held after the small file's bytes.
    let spec = LayerSpec::new()
        .file("d/a", 0o644, b"first file".to_vec())
        .file("d/b", 0o644, strata_testdata::random_bytes(20 << 10, 2));
    let blob = Blob {
        hold_after: Some(1024),
        ..Blob::default()
    };
    let l = layer(spec, four_mib_chunks(), blob, PlanOptions::default());
    assert_eq!(
        l.read("d/a", 0, 100).unwrap(),
        b"first file",
        "served while the request is held"
    );
    let asked = l.blob.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].end > 20 << 10,
        "the request covers the next file: {asked:?}"
    );
    l.blob.release.notify_one();
    assert_eq!(l.read("d/b", 0, 20 << 10).unwrap().len(), 20 << 10);
    assert_eq!(l.blob.asked().len(), 1, "d/b came with the first request");
}

#[test]
fn concurrent_reads_of_one_file_share_its_request() {
    let data = strata_testdata::random_bytes(2 << 20, 3);
    let spec = LayerSpec::new().file("f", 0o644, data.clone());
    let opts = WriteOptions {
        chunk_size: 64 << 10,
        ..WriteOptions::default()
    };
    let l = Arc::new(layer(spec, opts, Blob::default(), PlanOptions::default()));
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let l = Arc::clone(&l);
            std::thread::spawn(move || l.read("f", i * (256 << 10), 4096).unwrap())
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let off = i * (256 << 10);
        assert_eq!(t.join().unwrap(), data[off..off + 4096]);
    }
    let asked = l.blob.asked();
    // The first miss fetches the whole 2 MiB file; reads racing it may plan the chunks
    // still absent when they came, but no byte is asked for twice.
    let mut sorted = asked.clone();
    sorted.sort_by_key(|r| r.start);
    assert!(
        sorted.windows(2).all(|w| w[0].end <= w[1].start),
        "no overlapping requests: {asked:?}"
    );
    assert!(asked.len() <= 8, "{asked:?}");
}

#[test]
fn wrong_bytes_are_an_error_never_served_or_cached() {
    let spec = LayerSpec::new().file("good", 0o644, b"fine".to_vec()).file(
        "bad",
        0o644,
        strata_testdata::random_bytes(50_000, 4),
    );
    let mut bytes = Vec::new();
    convert(
        spec.tar().unwrap().as_slice(),
        &mut bytes,
        &four_mib_chunks(),
    )
    .unwrap();
    // Corrupt a byte in the middle of `bad`'s member.
    let probe = layer(
        spec.clone(),
        four_mib_chunks(),
        Blob::default(),
        PlanOptions::default(),
    );
    let member = probe.fetch.reader().index().resolve("bad").unwrap().chunks[0].clone();
    drop(probe);
    let blob = Blob {
        corrupt: Some(member.offset + (member.next_offset - member.offset) / 2),
        ..Blob::default()
    };
    let l = layer(
        spec,
        four_mib_chunks(),
        blob,
        PlanOptions {
            readahead: 0,
            ..PlanOptions::default()
        },
    );
    let err = l.read("bad", 0, 100).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        !l.cache.contains(&member.digest),
        "nothing stored for a chunk that did not verify"
    );
    let asked: Vec<_> = l
        .blob
        .asked()
        .into_iter()
        .filter(|r| r.start == member.offset)
        .collect();
    assert_eq!(
        asked.len(),
        2,
        "fetched twice (one retry), then the error: {asked:?}"
    );
    assert!(l.fetch.errors() > 0);
    assert_eq!(l.read("good", 0, 4).unwrap(), b"fine");
}

#[test]
fn the_prioritized_range_is_prefetched_and_reads_of_it_wait_for_it() {
    let mut spec = LayerSpec::new();
    let mut prioritized = Vec::new();
    for i in 0..20 {
        spec = spec.file(
            format!("p/{i:02}"),
            0o644,
            strata_testdata::random_bytes(64 << 10, 10 + i),
        );
        prioritized.push(format!("p/{i:02}"));
    }
    spec = spec.file("rest/x", 0o644, strata_testdata::random_bytes(64 << 10, 99));
    let opts = WriteOptions {
        prioritized_files: prioritized,
        ..four_mib_chunks()
    };
    let l = layer(
        spec,
        opts,
        Blob::default(),
        PlanOptions {
            bulk_request: 1 << 20,
            ..PlanOptions::default()
        },
    );
    l.fetch.start_prefetch();
    for i in 0..20 {
        assert_eq!(
            l.read(&format!("p/{i:02}"), 0, 64 << 10).unwrap().len(),
            64 << 10
        );
    }
    let landmark = l.fetch.reader().index().prefetch_landmark_offset().unwrap();
    let asked = l.blob.asked();
    assert!(
        asked.iter().all(|r| r.end <= landmark),
        "only the prioritized range was asked for: {asked:?}"
    );
    assert_eq!(asked.len(), 2, "in bulk requests of about 1 MiB: {asked:?}");
    // Its requests end just after their last chunk is stored.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !l.fetch.prefetched() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(l.fetch.prefetched());
}

#[test]
fn an_early_stream_is_adopted_once_the_toc_is_in() {
    let mut spec = LayerSpec::new();
    let mut prioritized = Vec::new();
    for i in 0..4 {
        spec = spec.file(
            format!("p/{i}"),
            0o644,
            strata_testdata::random_bytes(100 << 10, 20 + i),
        );
        prioritized.push(format!("p/{i}"));
    }
    let opts = WriteOptions {
        prioritized_files: prioritized,
        ..four_mib_chunks()
    };
    let mut bytes = Vec::new();
    convert(spec.tar().unwrap().as_slice(), &mut bytes, &opts).unwrap();
    let blob = Arc::new(Blob {
        bytes,
        ..Blob::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = Arc::clone(&blob) as Arc<dyn RangeFetcher>;
    let size = blob.bytes.len() as u64;
    // Started before the reader (the TOC) exists: the whole blob up to the TOC.
    let toc_at = strata_formats::estargz::Footer::parse(&blob.bytes[blob.bytes.len() - 51..])
        .unwrap()
        .toc_offset;
    let early = EarlyStream::start(&fetcher, 0..toc_at, runtime.handle());
    let reader = RangeReader::new(
        Arc::clone(&fetcher),
        size,
        runtime.handle().clone(),
        ReaderOptions::default(),
    );
    let reader = Arc::new(EstargzReader::open(reader, None).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let fetch = LayerFetch::new(
        "test".into(),
        reader,
        fetcher,
        cache,
        runtime.handle().clone(),
        Arc::default(),
        PlanOptions::default(),
        Some(early),
    );
    fetch.start_prefetch();
    let l = Layer {
        blob,
        fetch,
        cache: Arc::new(ChunkCache::open(&dir.path().join("other"), 1 << 20).unwrap()),
        _dir: dir,
        _runtime: runtime,
    };
    for i in 0..4 {
        assert_eq!(
            l.read(&format!("p/{i}"), 0, 100 << 10).unwrap().len(),
            100 << 10
        );
    }
    let data_requests: Vec<_> = l
        .blob
        .asked()
        .into_iter()
        .filter(|r| r.start < toc_at)
        .collect();
    assert_eq!(
        data_requests,
        vec![0..toc_at],
        "the early stream alone brought the prioritized files"
    );
}

#[test]
fn the_background_fetch_completes_a_layer_once_reads_are_quiet() {
    let mut spec = LayerSpec::new();
    for i in 0..10 {
        spec = spec.file(
            format!("f{i}"),
            0o644,
            strata_testdata::random_bytes(100 << 10, 30 + i),
        );
    }
    let l = layer(
        spec,
        four_mib_chunks(),
        Blob::default(),
        PlanOptions::default(),
    );
    let activity = Arc::clone(&l.fetch.activity);
    let options = FetchOptions {
        background_idle: Duration::from_millis(300),
        ..FetchOptions::default()
    };
    // A read waiting elsewhere keeps the background fetch out.
    let busy = Waiting::new(&activity);
    let background = BackgroundFetch::start(Arc::clone(&activity), options);
    background.add(&l.fetch);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        l.blob.asked().is_empty(),
        "nothing fetched while a read waits"
    );
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l.fetch.complete() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(l.fetch.complete(), "the layer is complete");
    let asked = l.blob.asked();
    assert!(
        asked.iter().all(|r| r.end - r.start <= 300 << 10),
        "small background requests: {asked:?}"
    );
    background.stop();
}

/// `/usr/bin/true` and the files the loader opens for it, from this host (Debian: merged
/// /usr, the loader and libc in `/usr/lib/x86_64-linux-gnu`).
#[test]
fn a_complete_elf_file_brings_its_loader_and_libraries() {
    let gnu = "/usr/lib/x86_64-linux-gnu";
    let host = |p: &str| std::fs::read(p).ok();
    let (Some(exe), Some(libc), Some(ld)) = (
        host("/usr/bin/true"),
        host(&format!("{gnu}/libc.so.6")),
        host(&format!("{gnu}/ld-linux-x86-64.so.2")),
    ) else {
        eprintln!("skipping: not a Debian x86_64 host");
        return;
    };
    let spec = LayerSpec::new()
        .symlink("lib64", "usr/lib64")
        .symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .file("etc/ld.so.cache", 0o644, b"glibc-ld.so.cache1.1".to_vec())
        .file(
            "etc/unrelated",
            0o644,
            strata_testdata::random_bytes(300 << 10, 5),
        )
        .file("usr/bin/true", 0o755, exe.clone())
        .file("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o755, ld)
        .file("usr/lib/x86_64-linux-gnu/libc.so.6", 0o755, libc);
    let l = layer(
        spec,
        four_mib_chunks(),
        Blob::default(),
        PlanOptions {
            readahead: 0,
            ..PlanOptions::default()
        },
    );
    let hints: Arc<dyn FileSink> = super::super::hints::Hints::start();
    l.fetch.set_sink(Arc::downgrade(&hints));
    assert_eq!(l.read("usr/bin/true", 0, exe.len() as u64).unwrap(), exe);
    let local = |p: &str| {
        let node = l.fetch.reader().index().resolve(p).unwrap();
        node.chunks.iter().all(|c| l.cache.contains(&c.digest))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = [
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "etc/ld.so.cache",
    ];
    while !wanted.iter().all(|p| local(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in wanted {
        assert!(local(p), "{p} was fetched without being read");
    }
    assert!(!local("etc/unrelated"), "nothing the loader does not open");
    drop(hints);
}

/// Every eStargz flavour reads through the same path: stargz's zstd:chunked and the legacy
/// 47-byte gzip footer (crfs' stargz), small chunks, a file of many chunks.
#[test]
fn zstd_chunked_and_legacy_footer_layers_read_the_same() {
    use strata_formats::estargz::Compression;
    use strata_formats::estargz::footer::{GZIP_FOOTER_SIZE, legacy_gzip_footer};
    let big = strata_testdata::random_bytes(700 << 10, 7);
    let spec = || {
        LayerSpec::new()
            .file("a/small", 0o644, b"hello".to_vec())
            .file("a/big", 0o644, big.clone())
            .file(
                "b/text",
                0o644,
                b"some text that compresses well. ".repeat(4000),
            )
    };
    for (name, compression, legacy) in [
        ("zstd:chunked", Compression::Zstd, false),
        ("legacy gzip footer", Compression::Gzip, true),
    ] {
        let opts = WriteOptions {
            chunk_size: 64 << 10,
            compression,
            ..WriteOptions::default()
        };
        let mut bytes = Vec::new();
        let report = convert(spec().tar().unwrap().as_slice(), &mut bytes, &opts).unwrap();
        if legacy {
            bytes.truncate(bytes.len() - GZIP_FOOTER_SIZE);
            bytes.extend_from_slice(&legacy_gzip_footer(report.toc_offset));
        }
        let l = layer_of_blob(bytes);
        assert_eq!(l.read("a/small", 0, 5).unwrap(), b"hello", "{name}");
        assert_eq!(
            l.read("a/big", 100_000, 300_000).unwrap(),
            big[100_000..400_000],
            "{name}"
        );
        assert_eq!(l.read("b/text", 0, 10).unwrap(), b"some text ", "{name}");
        // The big file came with one request from the chunk read on (its first chunks
        // before the read, in a second one): never one request per chunk.
        let asked = l.blob.asked();
        assert!(asked.len() <= 4, "{name}: {asked:?}");
    }
}

fn layer_of_blob(bytes: Vec<u8>) -> Layer {
    let blob = Arc::new(Blob {
        bytes,
        ..Blob::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = Arc::clone(&blob) as Arc<dyn RangeFetcher>;
    let size = blob.bytes.len() as u64;
    let reader = RangeReader::new(
        Arc::clone(&fetcher),
        size,
        runtime.handle().clone(),
        ReaderOptions::default(),
    );
    let reader = Arc::new(EstargzReader::open(reader, None).unwrap());
    blob.asked.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let fetch = LayerFetch::new(
        "test".into(),
        reader,
        fetcher,
        Arc::clone(&cache),
        runtime.handle().clone(),
        Arc::default(),
        PlanOptions::default(),
        None,
    );
    Layer {
        blob,
        fetch,
        cache,
        _dir: dir,
        _runtime: runtime,
    }
}

#[test]
fn bulk_requests_run_a_bounded_number_at_a_time_and_a_read_jumps_the_line() {
    // A 40-file prioritized range of ~2.4 MB, in 64 KiB bulk requests: 37 or so requests.
    let mut spec = LayerSpec::new();
    let mut prioritized = Vec::new();
    for i in 0..40 {
        spec = spec.file(
            format!("p/{i:02}"),
            0o644,
            strata_testdata::random_bytes(60 << 10, 40 + i),
        );
        prioritized.push(format!("p/{i:02}"));
    }
    let opts = WriteOptions {
        prioritized_files: prioritized,
        ..four_mib_chunks()
    };
    // Every stream is held after its first byte until released.
    let blob = Blob {
        hold_after: Some(1),
        ..Blob::default()
    };
    let plan = PlanOptions {
        bulk_request: 64 << 10,
        ..PlanOptions::default()
    };
    let l = Arc::new(layer(spec, opts, blob, plan));
    l.fetch.start_prefetch();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        l.blob.asked().len(),
        MAX_BULK_IN_FLIGHT,
        "the others wait in line"
    );
    // A read of the last file does not wait for the line: its request starts now.
    let reader = {
        let l = Arc::clone(&l);
        std::thread::spawn(move || l.read("p/39", 0, 10).unwrap())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(l.blob.asked().len(), MAX_BULK_IN_FLIGHT + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() || !l.fetch.prefetched() {
        assert!(Instant::now() < deadline, "the prefetch never finished");
        l.blob.release.notify_waiters();
        std::thread::sleep(Duration::from_millis(5));
    }
    reader.join().unwrap();
    let asked = l.blob.asked();
    assert!(asked.len() > 30, "{}", asked.len());
}

/// A stream that breaks in the middle of a member: the chunk is failed (not stored from a
/// torn member), and the read's second request brings it.
#[test]
fn a_body_that_breaks_mid_chunk_is_fetched_again() {
    #[derive(Debug)]
    struct Flaky {
        inner: Blob,
        broken: std::sync::atomic::AtomicBool,
    }
    impl RangeFetcher for Flaky {
        fn fetch<'a>(
            &'a self,
            ranges: &'a [Range<u64>],
        ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
            self.inner.fetch(ranges)
        }
        fn fetch_stream<'a>(
            &'a self,
            range: Range<u64>,
            sink: mpsc::Sender<Bytes>,
        ) -> BoxFuture<'a, Result<(), RangeError>> {
            if self.broken.swap(true, Ordering::Relaxed) {
                return self.inner.fetch_stream(range, sink);
            }
            self.inner.asked.lock().unwrap().push(range.clone());
            Box::pin(async move {
                let half = range.start + (range.end - range.start) / 2;
                let _ = sink.send(self.inner.slice(&(range.start..half))).await;
                Err(RangeError::Contract {
                    what: "blob".into(),
                    reason: "connection reset".into(),
                })
            })
        }
    }
    let data = strata_testdata::random_bytes(500 << 10, 9);
    let spec = LayerSpec::new().file("f", 0o644, data.clone());
    let mut bytes = Vec::new();
    convert(
        spec.tar().unwrap().as_slice(),
        &mut bytes,
        &four_mib_chunks(),
    )
    .unwrap();
    let flaky = Arc::new(Flaky {
        inner: Blob {
            bytes,
            ..Blob::default()
        },
        broken: std::sync::atomic::AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = Arc::clone(&flaky) as Arc<dyn RangeFetcher>;
    let size = flaky.inner.bytes.len() as u64;
    let reader = RangeReader::new(
        Arc::clone(&fetcher),
        size,
        runtime.handle().clone(),
        ReaderOptions::default(),
    );
    let reader = Arc::new(EstargzReader::open(reader, None).unwrap());
    flaky.inner.asked.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let fetch = LayerFetch::new(
        "test".into(),
        reader,
        fetcher,
        cache,
        runtime.handle().clone(),
        Arc::default(),
        PlanOptions::default(),
        None,
    );
    let index = fetch.reader().index().layer_index().unwrap();
    let entry = &index.entries()[fetch.reader().index().lookup_id("f").unwrap()];
    let mut out = Vec::new();
    fetch
        .read_chunk(
            &FileRef {
                layer: "test",
                path: "f",
                ino: 2,
                size: entry.size,
                chunks: &entry.chunks,
            },
            &entry.chunks[0],
            0..data.len(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out, data);
    let asked = flaky.inner.asked();
    assert_eq!(
        asked.len(),
        2,
        "the broken request, then one that worked: {asked:?}"
    );
}
