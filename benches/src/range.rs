//! Range-read benchmark (issue #3, item 4): random reads of a large blob served by the
//! real registry (Debian's distribution 2.8, started by the test harness on loopback),
//! through `RangeReader` over `HttpRangeFetcher`, with 1 and with 8 reader threads.
//!
//! There is no reference tool for lazy range reads; as a baseline the same kind of reads
//! are made the naive way, one fresh connection per read: with a new `reqwest::Client`
//! per read (in-process, no connection reuse) and with one `curl -r` process per read
//! (what a shell script would do). A few hundred of each are enough for their medians.
//!
//! A last row shows the batch path: the same reads handed to `RangeReader::read_ranges`
//! in batches (one multi-range request each); its latencies are per batch.
//!
//! Every read is checked against the blob's bytes (outside the timed section).

use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use rand::{Rng as _, SeedableRng as _};
use strata::registry::{
    ClientOptions, DockerConfig, HttpRangeFetcher, RangeOptions, RangeReader, RangeStats,
    ReaderOptions, Reference, RegistryClient,
};
use strata_formats::{Digest, ReadAt as _};
use strata_testdata::registry::RegistryServer;

use crate::stats::parse_size;

/// Repository the blob is pushed to.
const REPO: &str = "bench/range";

#[derive(Debug, Args)]
pub(crate) struct RangeArgs {
    /// Size of the random blob.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    size: u64,
    /// Reads per RangeReader run.
    #[arg(long, default_value_t = 10_000)]
    reads: usize,
    /// Bytes per read.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    read_size: u64,
    /// Reader thread counts to run, comma-separated.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Reads per naive baseline (one fresh connection each).
    #[arg(long, default_value_t = 300)]
    baseline_reads: usize,
    /// Reads per `read_ranges` batch in the batch row (0: no batch row).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The curl binary for the curl baseline (skipped if it cannot be run).
    #[arg(long, default_value = "curl")]
    curl: PathBuf,
}

/// One measured configuration.
struct Row {
    client: String,
    threads: usize,
    reads: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    requests: Option<u64>,
}

pub(crate) fn run(args: &RangeArgs) -> anyhow::Result<()> {
    ensure!(
        args.read_size > 0 && args.read_size <= args.size,
        "--read-size must be within 1..=--size"
    );
    eprintln!(
        "generating a {} byte random blob and pushing it to a local registry",
        args.size
    );
    let setup = Instant::now();
    let blob = Arc::new(strata_testdata::random_bytes(
        usize::try_from(args.size)?,
        0x5eed,
    ));
    let digest = Digest::of(&blob);
    let registry = RegistryServer::start().context("starting the registry")?;
    registry
        .push_blob_from(REPO, &digest.to_string(), args.size, &mut &blob[..])
        .context("pushing the blob")?;
    eprintln!("  ready in {:.1} s", setup.elapsed().as_secs_f64());
    let url = format!("{}/v2/{REPO}/blobs/{digest}", registry.url());
    let reference: Reference = format!("{}/{REPO}", registry.host()).parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Also installs the process's rustls provider, which the naive reqwest baseline needs.
    let client = RegistryClient::with_docker_config(
        ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        },
        DockerConfig::default(),
    );

    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let offsets: Vec<u64> = (0..args.reads.max(args.baseline_reads))
        .map(|_| rng.random_range(0..=args.size - args.read_size))
        .collect();
    let ranges: Vec<Range<u64>> = offsets.iter().map(|&o| o..o + args.read_size).collect();

    let mut rows = Vec::new();
    for &threads in &args.threads {
        let fetcher = Arc::new(HttpRangeFetcher::new(
            client.clone(),
            reference.clone(),
            digest.clone(),
            args.size,
            RangeOptions::default(),
        ));
        let reader = Arc::new(RangeReader::new(
            fetcher,
            args.size,
            runtime.handle().clone(),
            ReaderOptions::default(),
        ));
        eprintln!("RangeReader: {} reads with {threads} thread(s)", args.reads);
        let (wall, latencies, stats) =
            range_reader_run(&reader, &ranges[..args.reads], threads.max(1), &blob)?;
        eprintln!("  {:.1} s", wall.as_secs_f64());
        rows.push(Row {
            client: "`RangeReader` (`HttpRangeFetcher`, shared connections)".into(),
            threads,
            reads: args.reads,
            wall,
            latencies,
            requests: Some(stats.requests),
        });
    }

    if args.batch > 0 {
        let fetcher = Arc::new(HttpRangeFetcher::new(
            client.clone(),
            reference.clone(),
            digest.clone(),
            args.size,
            RangeOptions {
                max_ranges_per_request: args.batch.max(2),
                ..RangeOptions::default()
            },
        ));
        let reader = RangeReader::new(
            fetcher,
            args.size,
            runtime.handle().clone(),
            ReaderOptions::default(),
        );
        eprintln!(
            "RangeReader::read_ranges: {} reads in batches of {}",
            args.reads, args.batch
        );
        let started = Instant::now();
        let mut latencies = Vec::new();
        for batch in ranges[..args.reads].chunks(args.batch) {
            let t = Instant::now();
            let got = reader.read_ranges(batch).context("read_ranges")?;
            latencies.push(t.elapsed());
            for (b, r) in got.iter().zip(batch) {
                check(b, r, &blob)?;
            }
        }
        rows.push(Row {
            client: format!(
                "`RangeReader::read_ranges`, batches of {} (latency per batch)",
                args.batch
            ),
            threads: 1,
            reads: args.reads,
            wall: started.elapsed(),
            latencies,
            requests: Some(reader.stats().requests),
        });
    }

    let baseline = &ranges[..args.baseline_reads];
    eprintln!(
        "naive reqwest: {} reads, a new client per read",
        baseline.len()
    );
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(baseline.len());
    for r in baseline {
        let t = Instant::now();
        let body = runtime.block_on(naive_get(&url, r))?;
        latencies.push(t.elapsed());
        check(&body, r, &blob)?;
    }
    rows.push(Row {
        client: "naive reqwest (new client and connection per read)".into(),
        threads: 1,
        reads: baseline.len(),
        wall: started.elapsed(),
        latencies,
        requests: Some(baseline.len() as u64),
    });

    match curl_run(&args.curl, &url, baseline, &blob) {
        Ok((wall, latencies)) => rows.push(Row {
            client: "`curl -r` (one process and connection per read)".into(),
            threads: 1,
            reads: baseline.len(),
            wall,
            latencies,
            requests: Some(baseline.len() as u64),
        }),
        Err(e) => eprintln!("skipping the curl baseline: {e:#}"),
    }

    println!(
        "{} random {} KiB reads of a {} MiB blob from distribution 2.8 on loopback:\n",
        args.reads,
        args.read_size >> 10,
        args.size >> 20
    );
    println!(
        "| client | threads | reads | throughput | p50 latency | p99 latency | HTTP requests |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let mb_s = (row.reads as u64 * args.read_size) as f64 / 1e6 / row.wall.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.0} MB/s | {:.2} ms | {:.2} ms | {} |",
            row.client,
            row.threads,
            row.reads,
            mb_s,
            ms(percentile(&row.latencies, 0.50)),
            ms(percentile(&row.latencies, 0.99)),
            row.requests.map_or("?".to_owned(), |n| n.to_string()),
        );
    }
    Ok(())
}

/// `ranges` read through `reader` by `threads` threads taking the next read in turn.
fn range_reader_run(
    reader: &Arc<RangeReader>,
    ranges: &[Range<u64>],
    threads: usize,
    blob: &Arc<Vec<u8>>,
) -> anyhow::Result<(Duration, Vec<Duration>, RangeStats)> {
    let next = Arc::new(AtomicUsize::new(0));
    let ranges: Arc<[Range<u64>]> = ranges.into();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (reader, next, ranges, blob) =
                (reader.clone(), next.clone(), ranges.clone(), blob.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut buf = vec![0u8; (ranges[0].end - ranges[0].start) as usize];
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = ranges.get(i) else {
                        return Ok(latencies);
                    };
                    let t = Instant::now();
                    reader
                        .read_exact_at(&mut buf, r.start)
                        .with_context(|| format!("read {}..{}", r.start, r.end))?;
                    latencies.push(t.elapsed());
                    check(&buf, r, &blob)?;
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ranges.len());
    for w in workers {
        latencies.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??,
        );
    }
    Ok((started.elapsed(), latencies, reader.stats()))
}

/// One range with a client built for this read alone: a new connection every time.
async fn naive_get(url: &str, r: &Range<u64>) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::Client::builder().build()?;
    let resp = client
        .get(url)
        .header("Range", format!("bytes={}-{}", r.start, r.end - 1))
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 206,
        "GET {url}: status {}",
        resp.status()
    );
    Ok(resp.bytes().await?.to_vec())
}

fn curl_run(
    curl: &PathBuf,
    url: &str,
    ranges: &[Range<u64>],
    blob: &[u8],
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(ranges.len());
    for r in ranges {
        let t = Instant::now();
        let out = Command::new(curl)
            .args(["-sSf", "-r", &format!("{}-{}", r.start, r.end - 1), url])
            .output()
            .with_context(|| format!("running {}", curl.display()))?;
        latencies.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "curl failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        check(&out.stdout, r, blob)?;
    }
    Ok((started.elapsed(), latencies))
}

fn check(got: &[u8], r: &Range<u64>, blob: &[u8]) -> anyhow::Result<()> {
    ensure!(
        got == &blob[r.start as usize..r.end as usize],
        "bytes {}..{} differ from the blob",
        r.start,
        r.end
    );
    Ok(())
}

fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s.get(((s.len().saturating_sub(1)) as f64 * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
