//! Unpack benchmark (issue #5): Strata's layer applier against containerd 1.6's, on the
//! same multi-layer gzip image from the same local registry, alternating runs, every run
//! cold, in four cases:
//!
//! - pull + unpack: `strata pull --plain-http` (downloads, then unpacks into the overlayfs
//!   snapshotter) vs `ctr image pull --plain-http` (the same into containerd's builtin
//!   overlayfs);
//! - unpack only: the content is fetched first, untimed (`strata pull --no-unpack`,
//!   `ctr content fetch`); then `strata mount IMAGE DIR` (unpacks every layer into
//!   committed chainID snapshots, then prepares and mounts one active snapshot on top)
//!   vs `ctr image pull` (finds all content present — the bench checks that ctr reports
//!   0 bytes downloaded — and unpacks).
//!
//! The image is either the convert bench's generated one (~150 MiB uncompressed in 5
//! layers, 6,561 files: small text/config files, sources, libraries, media) or the
//! Debian-package fixture of `strata-testdata` (4 layers from the host's installed
//! packages, with whiteouts, opaque directories, hardlinks and xattrs). Cold means a
//! fresh Strata `--root`, and a freshly started private containerd per ctr measurement
//! (daemon start-up not timed). Each timed command runs under `/usr/bin/time`; the CPU
//! of a ctr measurement includes its containerd daemon's share, where containerd applies
//! layers. `sync` runs before every timed command; caches are not dropped (the registry's
//! blobs and the generated files stay in the page cache for both tools alike). After each
//! measurement the bench checks that the tool made one committed snapshot per layer.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use strata_testdata::BuiltImage;
use strata_testdata::registry::RegistryServer;

use crate::convert::{loadavg, mib, proc_cpu, run_measured};
use crate::stats::{run_timed, summarize};
use strata_testdata::containerd::Containerd;

const NS: &str = "bench";

/// Which image is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ImageChoice {
    /// The convert bench's generated ~150 MiB, 5-layer image (6,561 files).
    Generated,
    /// The Debian-package fixture (4 layers from the host's packages, ~85 MB).
    Debian,
}

#[derive(Debug, Args)]
pub(crate) struct UnpackArgs {
    /// The strata binary to measure.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The containerd binary (1.6; a private instance is started per ctr measurement).
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// The ctr binary.
    #[arg(long, default_value = "/usr/bin/ctr")]
    ctr: PathBuf,
    /// The image to unpack.
    #[arg(long, value_enum, default_value_t = ImageChoice::Generated)]
    image: ImageChoice,
    /// Strata's snapshotter (`overlayfs`, `native` or `erofs`); containerd 1.6 always
    /// unpacks into its overlayfs, the reference.
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Runs of each case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the unpack-only cases (skip pull + unpack).
    #[arg(long)]
    unpack_only: bool,
    /// Directory for the stores and containerd roots (default: a temp dir under /var/tmp,
    /// on disk rather than tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory for inspection.
    #[arg(long)]
    keep: bool,
    /// For profiling by hand: push the image, print its reference on stdout, then keep
    /// the registry up until stdin is closed (no measurements).
    #[arg(long)]
    serve: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    StrataPull,
    CtrPull,
    StrataUnpack,
    CtrUnpack,
}

impl Case {
    fn label(self, snapshotter: &str) -> String {
        match self {
            Case::StrataPull => format!("`strata pull` (download + unpack to {snapshotter})"),
            Case::CtrPull => "`ctr image pull` (download + unpack to overlayfs)".to_owned(),
            Case::StrataUnpack => format!(
                "`strata mount` after `strata pull --no-unpack` (unpack only, {snapshotter})"
            ),
            Case::CtrUnpack => {
                "`ctr image pull` after `ctr content fetch` (unpack only)".to_owned()
            }
        }
    }

    fn short(self) -> &'static str {
        match self {
            Case::StrataPull => "strata-pull",
            Case::CtrPull => "ctr-pull",
            Case::StrataUnpack => "strata-unpack",
            Case::CtrUnpack => "ctr-unpack",
        }
    }

    fn is_strata(self) -> bool {
        matches!(self, Case::StrataPull | Case::StrataUnpack)
    }
}

/// One timed measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// User + system CPU of the timed process (and, for ctr, of its daemon).
    cpu: Duration,
}

pub(crate) fn run(args: &UnpackArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    for bin in [
        &args.strata,
        &args.containerd,
        &args.ctr,
        &PathBuf::from("/usr/bin/time"),
    ] {
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
        .prefix("strata-bench-unpack.")
        .tempdir_in(&base)?;

    let t = Instant::now();
    let (image, files, repo) = match args.image {
        ImageChoice::Generated => {
            let (image, files) = crate::convert::build_image()?;
            (image, Some(files), "bench/unpack")
        }
        ImageChoice::Debian => {
            let fixture =
                strata_testdata::debian_image::build_debian_image(&work.path().join("layout"))
                    .context("build the Debian-package image")?;
            (fixture.image, None, "bench/debian")
        }
    };
    let layers = image.layers.len();
    let description = describe(&image, files);
    eprintln!(
        "generated {description} in {:.1}s; manifest {}",
        t.elapsed().as_secs_f64(),
        image.manifest.digest
    );

    let registry =
        RegistryServer::start().context("start the registry (scripts/setup.sh installs it)")?;
    registry
        .push_image(repo, "1", &image)
        .context("push the image")?;
    let reference = format!("{}/{repo}:1", registry.host());
    let expected = image.manifest.digest.clone();
    drop(image);
    eprintln!("pushed {reference}");
    if args.serve {
        println!("{reference}");
        eprintln!("serving {reference} (manifest {expected}) until stdin is closed");
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return Ok(());
    }

    let cases: Vec<Case> = if args.unpack_only {
        vec![Case::StrataUnpack, Case::CtrUnpack]
    } else {
        vec![
            Case::StrataPull,
            Case::CtrPull,
            Case::StrataUnpack,
            Case::CtrUnpack,
        ]
    };
    let load_before = loadavg();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    let result = (|| -> anyhow::Result<()> {
        for i in 0..args.runs {
            // Rotate so no case always runs first, or always right after the same other one.
            let mut order: Vec<usize> = (0..cases.len()).collect();
            order.rotate_left(i % cases.len());
            let mut line = Vec::new();
            for k in order {
                let case = cases[k];
                let dir = work.path().join(format!("run{i}-{}", case.short()));
                let s = measure(args, &strata, case, &dir, &reference, layers)
                    .with_context(|| format!("run {}: {}", i + 1, case.short()))?;
                line.push(format!(
                    "{} {:.2}s (cpu {:.2}s)",
                    case.short(),
                    s.wall.as_secs_f64(),
                    s.cpu.as_secs_f64()
                ));
                samples[k].push(s);
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

    let median = |case: Case| -> Option<Duration> {
        let k = cases.iter().position(|c| *c == case)?;
        Some(summarize(&samples[k].iter().map(|s| s.wall).collect::<Vec<_>>()).median)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| case | runs | wall median | wall min–max | CPU (user+sys) median | strata / containerd (wall) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for (case, ss) in cases.iter().zip(&samples) {
        let wall = summarize(&ss.iter().map(|s| s.wall).collect::<Vec<_>>());
        let cpu = summarize(&ss.iter().map(|s| s.cpu).collect::<Vec<_>>());
        let ratio = match case {
            Case::StrataPull => {
                median(Case::CtrPull).map(|c| wall.median.as_secs_f64() / c.as_secs_f64())
            }
            Case::StrataUnpack => {
                median(Case::CtrUnpack).map(|c| wall.median.as_secs_f64() / c.as_secs_f64())
            }
            _ => None,
        };
        let _ = writeln!(
            table,
            "| {} | {} | {:.3} s | {:.3}–{:.3} s | {:.2} s | {} |",
            case.label(&args.snapshotter),
            ss.len(),
            wall.median.as_secs_f64(),
            wall.min.as_secs_f64(),
            wall.max.as_secs_f64(),
            cpu.median.as_secs_f64(),
            ratio.map_or_else(|| "—".to_owned(), |r| format!("**{r:.2}×**")),
        );
    }
    print!("{table}");
    println!(
        "\nImage: {description}; manifest `{expected}`. {} alternating runs per case, cold stores, {} CPUs; \
         load average (1/5/15 min) {load_before} before, {} after. Target: strata / containerd ≤ 0.8×.",
        args.runs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg(),
    );
    keep_or_clean(work, args.keep);
    Ok(())
}

fn describe(image: &BuiltImage, files: Option<usize>) -> String {
    let compressed: u64 = image.layers.iter().map(|l| l.size).sum();
    let uncompressed: u64 = image.layers.iter().map(|l| l.uncompressed_size).sum();
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{:.1}→{:.1}", mib(l.uncompressed_size), mib(l.size)))
        .collect();
    let files = files.map(|n| format!("{n} files, ")).unwrap_or_default();
    format!(
        "{} gzip layers, {files}{:.1} MiB uncompressed, {:.1} MiB compressed (per layer MiB: {})",
        image.layers.len(),
        mib(uncompressed),
        mib(compressed),
        layers.join(", ")
    )
}

fn keep_or_clean(work: tempfile::TempDir, keep: bool) {
    if keep {
        eprintln!("work dir kept: {}", work.keep().display());
    }
}

fn measure(
    args: &UnpackArgs,
    strata: &Path,
    case: Case,
    dir: &Path,
    reference: &str,
    layers: usize,
) -> anyhow::Result<Sample> {
    fs::create_dir_all(dir)?;
    if case.is_strata() {
        let root = dir.join("root");
        // `--snapshotter` goes after the subcommand (`pull`, `mount`, `snapshot`).
        let strata_cmd = |sub: &[&str]| {
            let mut cmd = Command::new(strata);
            cmd.arg("--root").arg(&root).arg(sub[0]);
            if sub[0] != "umount" {
                cmd.args(["--snapshotter", &args.snapshotter]);
            }
            cmd.args(&sub[1..]);
            cmd
        };
        let sample = if case == Case::StrataPull {
            let (wall, _, cpu, _) =
                run_measured(&strata_cmd(&["pull", "--plain-http", reference]), dir)?;
            Sample { wall, cpu }
        } else {
            run_timed(&mut strata_cmd(&[
                "pull",
                "--plain-http",
                "--no-unpack",
                reference,
            ]))?;
            let mnt = dir.join("mnt");
            fs::create_dir_all(&mnt)?;
            let mut mount = strata_cmd(&["mount", reference]);
            mount.arg(&mnt);
            let (wall, _, cpu, _) = run_measured(&mount, dir)?;
            let mut umount = strata_cmd(&["umount"]);
            umount.arg(&mnt);
            run_timed(&mut umount)?;
            Sample { wall, cpu }
        };
        let (_, list) = run_timed(&mut strata_cmd(&["snapshot", "ls"]))?;
        check_committed(&list, layers, "strata snapshot ls")?;
        return Ok(sample);
    }
    let daemon = Containerd::start_binary(&args.containerd, dir, NS, "")?;
    let ctr = |sub: &[&str]| {
        let mut cmd = Command::new(&args.ctr);
        cmd.arg("--address")
            .arg(&daemon.socket)
            .args(["--namespace", NS])
            .args(sub);
        cmd
    };
    if case == Case::CtrUnpack {
        run_timed(&mut ctr(&["content", "fetch", "--plain-http", reference]))?;
    }
    let pid = daemon.pid().context("containerd pid")?;
    let before = proc_cpu(pid)?;
    let (wall, out, client_cpu, _) =
        run_measured(&ctr(&["image", "pull", "--plain-http", reference]), dir)?;
    let cpu = client_cpu + proc_cpu(pid)?.saturating_sub(before);
    if case == Case::CtrUnpack {
        let total = downloaded(&out)
            .with_context(|| format!("no download total in ctr's output:\n{out}"))?;
        if total != "0.0 B" {
            bail!(
                "`ctr image pull` after `ctr content fetch` downloaded {total}: not an unpack-only measurement"
            );
        }
    }
    let (_, list) = run_timed(&mut ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]))?;
    check_committed(&list, layers, "ctr snapshots ls")?;
    daemon.stop();
    Ok(Sample { wall, cpu })
}

/// The download total ctr prints last (`elapsed: 0.3 s  total:  0.0 B  (0.0 B/s)`).
fn downloaded(ctr_output: &str) -> Option<String> {
    let line = ctr_output.lines().rev().find(|l| l.contains("total:"))?;
    let after = line.split("total:").nth(1)?;
    let amount = after.split('(').next()?.trim();
    Some(amount.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Checks that a snapshot listing shows exactly `layers` committed snapshots.
fn check_committed(list: &str, layers: usize, what: &str) -> anyhow::Result<()> {
    let committed = list
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("committed"))
        })
        .count();
    if committed != layers {
        bail!(
            "{what} shows {committed} committed snapshots, expected one per layer ({layers}):\n{list}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_total_from_ctr_output() {
        let out = "bench/x:1: resolved |+++|\nelapsed: 0.2 s                                    total:   0.0 B (0.0 B/s)\n";
        assert_eq!(downloaded(out).as_deref(), Some("0.0 B"));
        let out = "elapsed: 3.1 s  total:  97.7 Mi (31.5 MiB/s)\n";
        assert_eq!(downloaded(out).as_deref(), Some("97.7 Mi"));
        assert_eq!(downloaded("nothing here"), None);
    }

    #[test]
    fn committed_snapshots_are_counted() {
        let list = "KEY PARENT KIND\nsha256:a  Committed\nsha256:b sha256:a Committed\nextract-1 sha256:b Active\n";
        assert!(check_committed(list, 2, "ls").is_ok());
        assert!(check_committed(list, 3, "ls").is_err());
    }
}
