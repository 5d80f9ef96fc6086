//! Ingest benchmark: `strata content ingest FILE` (hash + write + fsync into a fresh
//! store) against `sha256sum FILE` (hash only), alternating runs on the same file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::stats::{parse_size, run_timed, summarize};

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// The strata binary to measure.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Size of the generated input file.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    size: u64,
    /// Runs of each tool.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the input file and the stores (default: a temp dir under /var/tmp,
    /// on disk rather than tmpfs so fsync means something).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) fn run(args: &IngestArgs) -> anyhow::Result<()> {
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-ingest.")
        .tempdir_in(&base)?;
    let input = work.path().join("input.bin");
    eprintln!(
        "generating {} bytes of random data in {}",
        args.size,
        input.display()
    );
    strata_testdata::random_file(&input, args.size, 42)?;

    let mut sha = Vec::new();
    let mut ours = Vec::new();
    let mut digests = (String::new(), String::new());
    // Stores are kept until the end: deleting a 1 GiB blob (ext4 with `discard` here) makes
    // the next run's block allocation wait, which is not ingest cost.
    // Warm the page cache once so both tools read from memory.
    run_timed(Command::new("sha256sum").arg(&input))?;
    for i in 0..args.runs {
        let (t, out) = run_timed(Command::new("sha256sum").arg(&input))?;
        sha.push(t);
        digests.0 = format!(
            "sha256:{}",
            out.split_whitespace().next().unwrap_or_default()
        );
        let root = work.path().join(format!("root{i}"));
        let (t, out) = run_timed(
            Command::new(&args.strata)
                .arg("--root")
                .arg(&root)
                .args(["content", "ingest"])
                .arg(&input),
        )?;
        ours.push(t);
        digests.1 = out.trim().to_owned();
        eprintln!(
            "run {}: sha256sum {:.3}s, strata ingest {:.3}s",
            i + 1,
            sha[i].as_secs_f64(),
            ours[i].as_secs_f64()
        );
    }
    if digests.0 != digests.1 {
        bail!(
            "digests differ: sha256sum {} vs strata {}",
            digests.0,
            digests.1
        );
    }
    let (s, o) = (summarize(&sha), summarize(&ours));
    let mbps = |d: Duration| args.size as f64 / d.as_secs_f64() / 1e6;
    println!("| tool | median | min–max | throughput |");
    println!("|---|---|---|---|");
    println!(
        "| `sha256sum` (hash only) | {:.3} s | {:.3}–{:.3} s | {:.0} MB/s |",
        s.median.as_secs_f64(),
        s.min.as_secs_f64(),
        s.max.as_secs_f64(),
        mbps(s.median)
    );
    println!(
        "| `strata content ingest` (hash + write + fsync) | {:.3} s | {:.3}–{:.3} s | {:.0} MB/s |",
        o.median.as_secs_f64(),
        o.min.as_secs_f64(),
        o.max.as_secs_f64(),
        mbps(o.median)
    );
    println!(
        "\nthroughput ratio strata/sha256sum: **{:.2}×** ({} MiB, {} runs each, medians)",
        s.median.as_secs_f64() / o.median.as_secs_f64(),
        args.size >> 20,
        args.runs
    );
    Ok(())
}
