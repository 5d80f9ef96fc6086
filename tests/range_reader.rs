//! The range reader lazy loading stands on ([`RangeReader`] over [`HttpRangeFetcher`]),
//! against a real registry (Debian's distribution 2.8) behind the fault-injecting proxy:
//! random reads, multi-range batches, coalescing, retries and resumes, servers that
//! ignore `Range` (fail, or one verified full download), slow and stalled responses.
//!
//! Reads are made from plain std threads, as FUSE threads make them, with a 2-worker
//! tokio runtime owned by the test.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use strata::content::LocalContentStore;
use strata::metadata::MetadataDb;
use strata::registry::{
    ClientOptions, DockerConfig, HttpRangeFetcher, RangeError, RangeFetcher as _, RangeHosts,
    RangeOptions, RangePolicy, RangeReader, ReaderOptions, Reference, RegistryClient,
    RegistryError,
};
use strata_formats::{Digest, ErrorKind, ReadAt};
use strata_testdata::registry::{Fault, FaultProxy, FaultRule, RegistryServer, RequestRecord};

const REPO: &str = "lazy/blob";

/// Everything a test needs: a registry holding one random blob, a fault proxy in front of
/// it, a client pointed at the proxy, and a runtime for the fetches.
struct Harness {
    _registry: RegistryServer,
    proxy: FaultProxy,
    blob: Vec<u8>,
    digest: Digest,
    client: RegistryClient,
    reference: Reference,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(size: usize, seed: u64) -> Self {
        Self::with_client(size, seed, ClientOptions::default())
    }

    fn with_client(size: usize, seed: u64, opts: ClientOptions) -> Self {
        let registry = RegistryServer::start().unwrap();
        let blob = strata_testdata::random_bytes(size, seed);
        let digest = Digest::of(&blob);
        registry
            .push_blob_from(REPO, &digest.to_string(), blob.len() as u64, &mut &blob[..])
            .unwrap();
        let proxy = FaultProxy::start(registry.addr()).unwrap();
        let client = client_for(opts);
        let reference: Reference = format!("{}/{REPO}", proxy.host()).parse().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Self {
            _registry: registry,
            proxy,
            blob,
            digest,
            client,
            reference,
            runtime,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn fetcher(&self, opts: RangeOptions) -> Arc<HttpRangeFetcher> {
        let (c, r, d) = (
            self.client.clone(),
            self.reference.clone(),
            self.digest.clone(),
        );
        Arc::new(HttpRangeFetcher::new(c, r, d, self.blob.len() as u64, opts))
    }

    fn reader_with(&self, fetcher: Arc<HttpRangeFetcher>, opts: ReaderOptions) -> RangeReader {
        RangeReader::new(
            fetcher,
            self.blob.len() as u64,
            self.runtime.handle().clone(),
            opts,
        )
    }

    fn reader(&self, opts: RangeOptions) -> RangeReader {
        self.reader_with(self.fetcher(opts), ReaderOptions::default())
    }

    fn store(&self) -> LocalContentStore {
        let db = MetadataDb::open(self.dir.path().join("metadata.db")).unwrap();
        LocalContentStore::open(self.dir.path().join("content"), Arc::new(db)).unwrap()
    }

    /// The blob requests (GET of `/blobs/<digest>`) the proxy has seen.
    fn blob_requests(&self) -> Vec<RequestRecord> {
        let path = format!("/blobs/{}", self.digest);
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&path))
            .collect()
    }

    fn bytes(&self, r: Range<u64>) -> &[u8] {
        &self.blob[r.start as usize..r.end as usize]
    }
}

fn client_for(opts: ClientOptions) -> RegistryClient {
    RegistryClient::with_docker_config(
        ClientOptions {
            plain_http: true,
            ..opts
        },
        DockerConfig::default(),
    )
}

fn read(reader: &RangeReader, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = reader.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// Warnings and above from every test, captured by one global subscriber (the fetches
/// log from runtime threads, so a thread-local subscriber would miss them).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(buf))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

fn warnings_about(digest: &Digest) -> Vec<String> {
    let all = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    all.lines()
        .filter(|l| l.contains("WARN") && l.contains(&digest.to_string()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn random_reads_equal_the_blob() {
    let h = Harness::new((1 << 20) + 321, 1);
    let size = h.blob.len() as u64;
    for opts in [
        ReaderOptions::default(),
        ReaderOptions {
            block_size: Some(64 << 10),
        },
    ] {
        let reader = h.reader_with(h.fetcher(RangeOptions::default()), opts.clone());
        assert_eq!(reader.size(), size);
        // The edges: first byte, last byte, across the end, at and past the end, nothing.
        assert_eq!(read(&reader, 0, 1).unwrap(), h.bytes(0..1));
        assert_eq!(read(&reader, size - 1, 1).unwrap(), h.bytes(size - 1..size));
        assert_eq!(
            read(&reader, size - 10, 100).unwrap(),
            h.bytes(size - 10..size),
            "a read across the end is cut"
        );
        assert!(read(&reader, size, 10).unwrap().is_empty());
        assert!(read(&reader, size + 5, 10).unwrap().is_empty());
        assert_eq!(reader.read_at(&mut [], 5).unwrap(), 0);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..40 {
            let offset = rng.random_range(0..size);
            let len = rng.random_range(1..300_000);
            let end = (offset + len as u64).min(size);
            assert_eq!(
                read(&reader, offset, len).unwrap(),
                h.bytes(offset..end),
                "{opts:?} read {offset}+{len}"
            );
        }
        let mut whole = vec![0u8; size as usize];
        reader.read_exact_at(&mut whole, 0).unwrap();
        assert!(whole == h.blob);
        assert!(
            reader.read_exact_at(&mut [0u8; 2], size - 1).is_err(),
            "read_exact_at past the end fails"
        );
    }
}

#[test]
fn read_ranges_is_one_multi_range_request() {
    let h = Harness::new(3 << 20, 2);
    let fetcher = h.fetcher(RangeOptions::default());
    let reader = h.reader_with(fetcher.clone(), ReaderOptions::default());
    let size = h.blob.len() as u64;
    let ranges = [
        2_000_000..2_100_000,
        10..20,
        500_000..564_000,
        size - 7..size,
        1_000_000..1_000_001,
    ];
    h.proxy.clear_requests();
    let got = reader.read_ranges(&ranges).unwrap();
    for (r, b) in ranges.iter().zip(&got) {
        assert_eq!(&b[..], h.bytes(r.clone()), "{r:?}");
    }
    let log = h.blob_requests();
    assert_eq!(log.len(), 1, "{log:#?}");
    // distribution serves blobs with Go's http.ServeContent, which answers multi-range
    // requests with multipart/byteranges.
    let range = log[0].range.as_deref().unwrap();
    assert_eq!(range.matches(',').count(), 4, "{range}");
    assert_eq!(log[0].status, 206);
    assert_eq!(fetcher.multi_range(), Some(true));
    let stats = reader.stats();
    assert_eq!(
        (stats.requests, stats.multi_range_requests, stats.retries),
        (1, 1, 0),
        "{stats:?}"
    );

    // Overlapping, empty and out-of-blob ranges: merged, empty, clipped.
    let odd = [
        100..200,
        150..250,
        5..5,
        size - 3..size + 50,
        size + 10..size + 20,
    ];
    let got = reader.read_ranges(&odd).unwrap();
    let want: [&[u8]; 5] = [
        h.bytes(100..200),
        h.bytes(150..250),
        &[],
        h.bytes(size - 3..size),
        &[],
    ];
    for (i, (b, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(&b[..], w, "range {i}");
    }
    // The fetcher itself refuses ranges outside the blob instead of clipping them.
    let outside = size - 1..size + 1;
    let e = h
        .runtime
        .block_on(fetcher.fetch(std::slice::from_ref(&outside)))
        .unwrap_err();
    assert!(matches!(e, RangeError::OutOfBounds { .. }), "{e}");
    assert!(e.to_string().contains(&h.digest.to_string()), "{e}");
}

#[test]
fn a_broken_multi_range_body_is_resumed_for_the_missing_parts() {
    let h = Harness::new(1 << 20, 3);
    let reader = h.reader(RangeOptions::default());
    let ranges = [
        0..8192,
        100_000..108_192,
        200_000..208_192,
        300_000..308_192,
    ];
    // The first part (plus its headers) arrives whole, the second is cut.
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::TruncateBody {
            after_bytes: 12_000,
        })
        .blobs()
        .first(1),
    ]);
    h.proxy.clear_requests();
    let got = reader.read_ranges(&ranges).unwrap();
    for (r, b) in ranges.iter().zip(&got) {
        assert_eq!(&b[..], h.bytes(r.clone()), "{r:?}");
    }
    let log = h.blob_requests();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(!log[0].complete);
    assert_eq!(
        log[1].range.as_deref(),
        Some("bytes=100000-108191,200000-208191,300000-308191")
    );
    assert_eq!(reader.stats().retries, 1);
}

/// A server that honours only the first range of a request (as some CDNs and object
/// stores do): answers `206` with that one part and no multipart body.
fn single_range_server(blob: Arc<Vec<u8>>) -> SocketAddr {
    use std::io::{BufRead as _, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let blob = blob.clone();
            std::thread::spawn(move || {
                let mut out: TcpStream = conn.try_clone().unwrap();
                let mut lines = BufReader::new(conn);
                loop {
                    let mut range = None;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() && !first {
                            break;
                        }
                        first = false;
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            let spec = v.trim().split(',').next().unwrap().to_owned();
                            let (a, b) = spec.split_once('-').unwrap();
                            range =
                                Some((a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                        }
                    }
                    let head = match range {
                        Some((a, b)) => {
                            let body = &blob[a..=b];
                            let head = format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                                body.len(),
                                blob.len()
                            );
                            [head.as_bytes(), body].concat()
                        }
                        None => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
                    };
                    if out.write_all(&head).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn servers_without_multi_range_get_one_request_per_range() {
    let blob = Arc::new(strata_testdata::random_bytes(1 << 20, 4));
    let digest = Digest::of(&blob);
    let addr = single_range_server(blob.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reference: Reference = format!("{addr}/{REPO}").parse().unwrap();
    let hosts = RangeHosts::default();
    let opts = RangeOptions {
        hosts: hosts.clone(),
        ..RangeOptions::default()
    };
    let fetcher = Arc::new(HttpRangeFetcher::new(
        client_for(ClientOptions::default()),
        reference.clone(),
        digest.clone(),
        blob.len() as u64,
        opts.clone(),
    ));
    let reader = RangeReader::new(
        fetcher.clone(),
        blob.len() as u64,
        runtime.handle().clone(),
        ReaderOptions::default(),
    );
    let ranges = [0..10, 5000..6000, 70_000..80_000];
    let got = reader.read_ranges(&ranges).unwrap();
    for (r, b) in ranges.iter().zip(&got) {
        assert_eq!(&b[..], &blob[r.start as usize..r.end as usize]);
    }
    // One multi-range request answered with its first part, then one request for each
    // of the other two; from then on no multi-range requests, here or for the host.
    assert_eq!(fetcher.multi_range(), Some(false));
    assert_eq!(hosts.multi_range(reference.registry()), Some(false));
    assert_eq!(
        (
            fetcher.stats().requests,
            fetcher.stats().multi_range_requests
        ),
        (3, 1)
    );
    let again = Arc::new(HttpRangeFetcher::new(
        client_for(ClientOptions::default()),
        reference,
        digest,
        blob.len() as u64,
        opts,
    ));
    let got = runtime.block_on(again.fetch(&ranges)).unwrap();
    assert_eq!(&got[2][..], &blob[70_000..80_000]);
    assert_eq!(
        (again.stats().requests, again.stats().multi_range_requests),
        (3, 0),
        "the host is known"
    );
}

#[test]
fn concurrent_identical_reads_make_one_request() {
    let h = Harness::new(1 << 20, 5);
    // The request takes a while, so all eight readers surely overlap with it.
    h.proxy
        .set_faults(vec![FaultRule::new(Fault::Delay { ms: 300 }).blobs()]);
    for (block_size, pieces) in [(None, false), (Some(64 << 10), true)] {
        let reader = Arc::new(h.reader_with(
            h.fetcher(RangeOptions::default()),
            ReaderOptions { block_size },
        ));
        h.proxy.clear_requests();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let (reader, barrier) = (reader.clone(), barrier.clone());
                // Aligned: each thread reads its own 8 KiB of the same 64 KiB block.
                let (offset, len) = if pieces {
                    (128 * 1024 + i * 8192, 8192)
                } else {
                    (128 * 1024, 64 * 1024)
                };
                std::thread::spawn(move || {
                    barrier.wait();
                    (offset, read(&reader, offset, len).unwrap())
                })
            })
            .collect();
        for t in threads {
            let (offset, bytes) = t.join().unwrap();
            assert_eq!(bytes, h.bytes(offset..offset + bytes.len() as u64));
        }
        let log = h.blob_requests();
        assert_eq!(log.len(), 1, "block size {block_size:?}: {log:#?}");
        assert_eq!(log[0].range.as_deref(), Some("bytes=131072-196607"));
        assert_eq!(reader.stats().coalesced_reads, 7);
    }
}

#[test]
fn server_errors_are_retried() {
    let h = Harness::new(1 << 20, 6);
    let reader = h.reader(RangeOptions::default());
    h.proxy
        .set_faults(vec![FaultRule::new(Fault::Status(500)).blobs().first(2)]);
    assert_eq!(
        read(&reader, 4096, 100_000).unwrap(),
        h.bytes(4096..104_096)
    );
    let statuses: Vec<u16> = h.blob_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 206]);
}

#[test]
fn persistent_server_errors_fail_naming_the_blob_and_the_status() {
    let h = Harness::new(1 << 20, 7);
    let reader = h.reader(RangeOptions::default());
    h.proxy
        .set_faults(vec![FaultRule::new(Fault::Status(500)).blobs()]);
    let e = read(&reader, 0, 1000).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&h.digest.to_string()) && msg.contains("500"),
        "{msg}"
    );
    let inner = RangeError::from_io(&e).unwrap();
    assert!(
        matches!(
            inner,
            RangeError::Registry(RegistryError::Status { code: 500, .. })
        ),
        "{inner:?}"
    );
    assert!(inner.is_retryable());
}

#[test]
fn a_reset_body_is_resumed_from_where_it_broke() {
    let h = Harness::new(1 << 20, 8);
    let reader = h.reader(RangeOptions::default());
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::ResetMidBody {
            after_bytes: 50_000,
        })
        .blobs()
        .first(1),
    ]);
    let (offset, len) = (1000u64, 300_000usize);
    assert_eq!(
        read(&reader, offset, len).unwrap(),
        h.bytes(offset..offset + len as u64)
    );
    let log = h.blob_requests();
    assert_eq!(log.len(), 2, "{log:#?}");
    // Only the missing tail is asked for again (a reset may lose some bytes in flight,
    // so the restart point is at most where the proxy cut).
    let second = log[1].range.as_deref().unwrap();
    let (start, end) = second.trim_start_matches("bytes=").split_once('-').unwrap();
    let start: u64 = start.parse().unwrap();
    assert!(start > offset && start <= offset + 50_000, "{second}");
    assert_eq!(end, (offset + len as u64 - 1).to_string());
    assert_eq!(reader.stats().retries, 1);
}

#[test]
fn a_truncated_body_is_resumed_for_the_missing_bytes_only() {
    let h = Harness::new(1 << 20, 9);
    let reader = h.reader(RangeOptions::default());
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::TruncateBody { after_bytes: 5000 })
            .blobs()
            .first(2),
    ]);
    assert_eq!(read(&reader, 0, 100_000).unwrap(), h.bytes(0..100_000));
    let ranges: Vec<Option<String>> = h.blob_requests().into_iter().map(|r| r.range).collect();
    let want = ["bytes=0-99999", "bytes=5000-99999", "bytes=10000-99999"];
    assert_eq!(ranges, want.map(|s| Some(s.to_owned())));
    assert_eq!(reader.stats().retries, 2);
}

#[test]
fn a_body_that_keeps_breaking_fails_after_the_attempts() {
    let h = Harness::new(1 << 20, 10);
    let reader = h.reader(RangeOptions {
        max_attempts: 3,
        ..RangeOptions::default()
    });
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::TruncateBody { after_bytes: 10 }).blobs(),
    ]);
    let e = read(&reader, 0, 100_000).unwrap_err();
    assert!(e.to_string().contains(&h.digest.to_string()), "{e}");
    assert_eq!(h.blob_requests().len(), 3);
}

#[test]
fn ignored_range_with_fail_policy_is_range_not_supported() {
    logs();
    let h = Harness::new(1 << 20, 11);
    let reader = h.reader(RangeOptions {
        policy: RangePolicy::Fail,
        ..RangeOptions::default()
    });
    h.proxy
        .set_faults(vec![FaultRule::new(Fault::IgnoreRange).blobs()]);
    for _ in 0..3 {
        let e = read(&reader, 100, 1000).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        let inner = RangeError::from_io(&e).unwrap();
        assert!(
            matches!(
                inner,
                RangeError::Registry(RegistryError::RangeNotSupported { .. })
            ),
            "{inner:?}"
        );
        assert_eq!(inner.kind(), ErrorKind::NotImplemented);
        assert!(e.to_string().contains(&h.digest.to_string()), "{e}");
    }
    assert_eq!(h.blob_requests().len(), 1, "the answer is remembered");
    let warnings = warnings_about(&h.digest);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains(&h.proxy.host()), "{}", warnings[0]);
}

#[test]
fn ignored_range_with_full_fetch_downloads_the_blob_once() {
    logs();
    let h = Harness::new(4 << 20, 12);
    let store = h.store();
    let fetcher = h.fetcher(RangeOptions {
        policy: RangePolicy::FullFetch(store.clone()),
        ..RangeOptions::default()
    });
    let reader = Arc::new(h.reader_with(fetcher.clone(), ReaderOptions::default()));
    h.proxy
        .set_faults(vec![FaultRule::new(Fault::IgnoreRange).blobs()]);
    let size = h.blob.len() as u64;
    // 50 reads from 5 threads at once, then the batch path.
    let threads: Vec<_> = (0..5u64)
        .map(|t| {
            let reader = reader.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                (0..10)
                    .map(|_| {
                        let offset = rng.random_range(0..size);
                        (offset, read(&reader, offset, 70_000).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (offset, bytes) in t.join().unwrap() {
            assert_eq!(bytes, h.bytes(offset..(offset + 70_000).min(size)));
        }
    }
    let got = reader.read_ranges(&[0..10, size - 10..size]).unwrap();
    assert_eq!(
        (&got[0][..], &got[1][..]),
        (h.bytes(0..10), h.bytes(size - 10..size))
    );
    let log = h.blob_requests();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(
        (log[0].status, log[0].complete, log[0].bytes_sent),
        (200, true, size)
    );
    assert!(
        store.exists(&h.digest),
        "the verified copy is in the content store"
    );
    let stats = reader.stats();
    assert_eq!((stats.full_fetches, stats.requests), (1, 1), "{stats:?}");
    let warnings = warnings_about(&h.digest);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains(&h.proxy.host()) && warnings[0].contains("ignores HTTP Range"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_corrupt_full_fetch_is_rejected_and_not_stored() {
    let h = Harness::new(1 << 20, 13);
    let store = h.store();
    let reader = h.reader(RangeOptions {
        policy: RangePolicy::FullFetch(store.clone()),
        ..RangeOptions::default()
    });
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::IgnoreRange).blobs(),
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 300_000,
            count: 4,
        })
        .blobs(),
    ]);
    let e = read(&reader, 0, 4096).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let inner = RangeError::from_io(&e).unwrap();
    assert!(
        matches!(
            inner,
            RangeError::Registry(RegistryError::DigestMismatch { .. })
        ),
        "{inner:?}"
    );
    assert_eq!(inner.kind(), ErrorKind::DataCorrupt);
    assert!(e.to_string().contains(&h.digest.to_string()), "{e}");
    assert!(!store.exists(&h.digest), "nothing unverified is stored");
    let ingests = std::fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .count();
    assert_eq!(ingests, 0, "the failed ingest is removed");
    // Within the cooldown, reads fail at once instead of downloading the blob again.
    let again = read(&reader, 100, 10).unwrap_err();
    assert!(
        matches!(
            RangeError::from_io(&again),
            Some(RangeError::FullFetchFailed { .. })
        ),
        "{again}"
    );
    assert!(again.to_string().contains("digest mismatch"), "{again}");
    assert_eq!(h.blob_requests().len(), 1);
}

#[test]
fn slow_responses_finish_within_the_timeouts() {
    // Each read waits at most 1 s for bytes; the transfer takes about 2 s in all.
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let h = Harness::with_client(1 << 20, 14, opts);
    let reader = h.reader(RangeOptions::default());
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::Delay { ms: 400 }).blobs(),
        FaultRule::new(Fault::Slow {
            bytes_per_sec: 128 << 10,
        })
        .blobs(),
    ]);
    let started = Instant::now();
    assert_eq!(
        read(&reader, 10_000, 200_000).unwrap(),
        h.bytes(10_000..210_000)
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let stats = reader.stats();
    assert_eq!((stats.requests, stats.retries), (1, 0), "{stats:?}");
}

#[test]
fn a_stalled_response_times_out_and_is_retried() {
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let h = Harness::with_client(1 << 20, 15, opts);
    let reader = h.reader(RangeOptions::default());
    h.proxy.set_faults(vec![
        FaultRule::new(Fault::Delay { ms: 3000 }).blobs().first(1),
    ]);
    let started = Instant::now();
    assert_eq!(read(&reader, 0, 50_000).unwrap(), h.bytes(0..50_000));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the stalled answer: {:?}",
        started.elapsed()
    );
}
