//! Pull benchmark (issue #3): `strata pull --plain-http` against containerd 1.6's
//! `ctr content fetch --plain-http` (content only: the same work as `strata pull`) and
//! `ctr image pull --plain-http` (content, then unpacked into overlayfs) from the same
//! local registry, alternating runs, every run cold.
//!
//! The image is generated (deterministic): `--layers` gzip layers holding one file of
//! seeded random data each, so compressed ≈ uncompressed ≈ `--size-mb` MiB in total. It
//! is pushed to Debian's distribution registry started by the test harness on a free
//! loopback port.
//!
//! Cold means: Strata gets a fresh `--root`, and every ctr measurement gets a freshly
//! started private containerd (its own root, state, sockets and opt dir under the work
//! dir; CRI disabled) — containerd's content store is shared by all namespaces, so a new
//! namespace alone would not be cold. Daemon start-up is not timed. The registry's blobs
//! stay in the page cache for every tool (they were just pushed). `sync` runs before each
//! measurement so no tool pays for another's dirty pages; stores are kept until the end
//! (freeing hundreds of MB between runs would make the next run's allocation wait).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_testdata::containerd::{Containerd, image_ls_digest};
use strata_testdata::registry::RegistryServer;
use strata_testdata::{BuiltImage, ImageSpec, LayerSpec, Platform};

use crate::stats::{run_timed, summarize};

/// Repository and tag the image is pushed as.
const REPO: &str = "bench/big";
const TAG: &str = "1";

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The strata binary to measure.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Total size of the image's layers in MiB (compressed ≈ uncompressed: random data).
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Number of layers (the size is split evenly).
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// Runs of each tool.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the stores and containerd roots (default: a temp dir under /var/tmp,
    /// on disk rather than tmpfs so fsync means something).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The containerd binary (1.6; a private instance is started per ctr measurement).
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// The ctr binary.
    #[arg(long, default_value = "/usr/bin/ctr")]
    ctr: PathBuf,
    /// Skip the `ctr image pull` (unpack) row.
    #[arg(long)]
    no_unpack: bool,
    /// Extra arguments for `strata pull` (repeatable), e.g.
    /// `--strata-arg=--max-concurrent-downloads=8`.
    #[arg(long = "strata-arg", allow_hyphen_values = true)]
    strata_args: Vec<String>,
    /// Keep the work directory (stores, containerd logs) for inspection.
    #[arg(long)]
    keep: bool,
    /// For profiling by hand: generate and push the image, print its reference on stdout,
    /// then keep the registry up until stdin is closed (no measurements).
    #[arg(long)]
    serve: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Strata,
    CtrFetch,
    CtrPull,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Strata => "`strata pull` (content only)",
            Tool::CtrFetch => "`ctr content fetch` (content only)",
            Tool::CtrPull => "`ctr image pull` (content + unpack to overlayfs)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Tool::Strata => "strata pull",
            Tool::CtrFetch => "ctr content fetch",
            Tool::CtrPull => "ctr image pull",
        }
    }
}

pub(crate) fn run(args: &PullArgs) -> anyhow::Result<()> {
    if args.layers == 0 || args.size_mb == 0 || args.runs == 0 {
        bail!("--layers, --size-mb and --runs must be positive");
    }
    for bin in [&args.strata, &args.containerd, &args.ctr] {
        if !bin.exists() {
            bail!("{} not found", bin.display());
        }
    }
    let strata = fs::canonicalize(&args.strata)?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-pull.")
        .tempdir_in(&base)?;

    let t = Instant::now();
    let image = build_image(args.size_mb << 20, args.layers)?;
    let total: u64 =
        image.layers.iter().map(|l| l.size).sum::<u64>() + image.config.size + image.manifest.size;
    eprintln!(
        "generated {} layers, {:.1} MiB compressed ({:.1} MiB uncompressed) in {:.1}s; manifest {}",
        image.layers.len(),
        total as f64 / (1 << 20) as f64,
        image
            .layers
            .iter()
            .map(|l| l.uncompressed_size)
            .sum::<u64>() as f64
            / (1 << 20) as f64,
        t.elapsed().as_secs_f64(),
        image.manifest.digest
    );

    let registry =
        RegistryServer::start().context("start the registry (scripts/setup.sh installs it)")?;
    let t = Instant::now();
    registry
        .push_image(REPO, TAG, &image)
        .context("push the image")?;
    let reference = format!("{}/{REPO}:{TAG}", registry.host());
    eprintln!("pushed {reference} in {:.1}s", t.elapsed().as_secs_f64());
    let expected = image.manifest.digest.clone();
    drop(image); // ~2× the image size in memory; not needed any more
    if args.serve {
        println!("{reference}");
        eprintln!("serving {reference} (manifest {expected}) until stdin is closed");
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return Ok(());
    }

    let mut tools = vec![Tool::Strata, Tool::CtrFetch];
    if !args.no_unpack {
        tools.push(Tool::CtrPull);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
    let result = (|| -> anyhow::Result<()> {
        for i in 0..args.runs {
            // Rotate the order so no tool always goes first (or right after another's I/O).
            let mut order: Vec<usize> = (0..tools.len()).collect();
            order.rotate_left(i % tools.len());
            let mut line = Vec::new();
            for &k in &order {
                let tool = tools[k];
                let dir = work
                    .path()
                    .join(format!("run{i}-{}", tool.short().replace(' ', "-")));
                let (t, digest) = measure(args, &strata, tool, &dir, &reference)
                    .with_context(|| format!("run {}: {}", i + 1, tool.short()))?;
                if digest != expected {
                    bail!(
                        "run {}: {} ended with manifest {digest}, expected {expected}",
                        i + 1,
                        tool.short()
                    );
                }
                samples[k].push(t);
                line.push(format!("{} {:.3}s", tool.short(), t.as_secs_f64()));
            }
            eprintln!("run {}: {}", i + 1, line.join(", "));
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("registry log tail:\n{}", registry.log_tail(20));
        keep_or_clean(work, args.keep);
        return Err(e);
    }
    drop(registry);

    let mbps = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    println!("| tool | median | min–max | throughput |");
    println!("|---|---|---|---|");
    let summaries: Vec<_> = samples.iter().map(|s| summarize(s)).collect();
    for (tool, s) in tools.iter().zip(&summaries) {
        println!(
            "| {} | {:.3} s | {:.3}–{:.3} s | {:.0} MB/s |",
            tool.label(),
            s.median.as_secs_f64(),
            s.min.as_secs_f64(),
            s.max.as_secs_f64(),
            mbps(s.median)
        );
    }
    let ours = summaries[0].median.as_secs_f64();
    println!(
        "\n{} MiB in {} gzip layers, {} runs each, medians, all ended at manifest `{}`.",
        args.size_mb, args.layers, args.runs, &expected
    );
    println!(
        "- wall-time ratio strata / `ctr content fetch` (like for like): **{:.2}×**",
        ours / summaries[1].median.as_secs_f64()
    );
    if summaries.len() > 2 {
        println!(
            "- wall-time ratio strata / `ctr image pull` (target ≤ 0.8×): **{:.2}×**",
            ours / summaries[2].median.as_secs_f64()
        );
    }
    keep_or_clean(work, args.keep);
    Ok(())
}

fn keep_or_clean(work: tempfile::TempDir, keep: bool) {
    let leftover = mounts_under(work.path());
    if keep || !leftover.is_empty() {
        if !leftover.is_empty() {
            eprintln!("mounts left under the work dir (not removing it): {leftover:?}");
        }
        eprintln!("work dir kept: {}", work.keep().display());
    }
}

/// Mount points under `dir` (there should be none: `ctr image pull`'s unpack unmounts).
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// `layers` layers of one random file each, `total` bytes of file data in all.
fn build_image(total: u64, layers: u64) -> anyhow::Result<BuiltImage> {
    let mut spec = ImageSpec::new(Platform::linux_amd64()).entrypoint(["/bin/true"]);
    for i in 0..layers {
        let len = total / layers + if i < total % layers { 1 } else { 0 };
        spec = spec.layer(
            LayerSpec::new()
                .random_file(format!("data/layer{i}.bin"), 0o644, 3000 + i, len)
                .created_by(format!("COPY layer{i}.bin /data/")),
        );
    }
    Ok(spec.build()?)
}

/// Runs one cold measurement in `dir`; returns the wall time and the manifest digest the
/// tool ended with.
fn measure(
    args: &PullArgs,
    strata: &Path,
    tool: Tool,
    dir: &Path,
    reference: &str,
) -> anyhow::Result<(Duration, String)> {
    fs::create_dir_all(dir)?;
    match tool {
        Tool::Strata => {
            let mut cmd = Command::new(strata);
            cmd.arg("--root")
                .arg(dir.join("root"))
                .args(["pull", "--plain-http"])
                .args(&args.strata_args)
                .arg(reference);
            sync();
            let (t, out) = run_timed(&mut cmd)?;
            Ok((t, out.trim().to_owned()))
        }
        Tool::CtrFetch | Tool::CtrPull => {
            let daemon = Containerd::start_binary(&args.containerd, dir, "bench", "")?;
            let ctr = |sub: &[&str]| {
                let mut cmd = daemon.command(&args.ctr);
                cmd.args(sub);
                cmd
            };
            let mut cmd = match tool {
                Tool::CtrFetch => ctr(&["content", "fetch", "--plain-http", reference]),
                _ => ctr(&["image", "pull", "--plain-http", reference]),
            };
            sync();
            let (t, _) = run_timed(&mut cmd)?;
            let (_, list) = run_timed(&mut ctr(&["image", "ls"]))?;
            let digest = image_ls_digest(&list, reference)
                .with_context(|| format!("no image {reference} in `ctr image ls`:\n{list}"))?;
            daemon.stop();
            Ok((t, digest))
        }
    }
}

fn sync() {
    let _ = Command::new("sync").status();
}
