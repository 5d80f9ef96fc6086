//! Reads of an unpacked rootfs (issue #17): the same image pulled by `strata pull` into
//! two snapshotters (by default overlayfs, the reference, and erofs), each mounted with
//! `strata mount` (an active snapshot over the image's layers: overlayfs lowerdirs, or one
//! kernel EROFS mount per layer under overlayfs), then, alternating between the two:
//!
//! - a metadata walk with a cold cache (`drop_caches` first): every entry `lstat`ed and
//!   every directory listed, as `find` does;
//! - a read of every regular file with a cold cache;
//! - the same read again, warm (page cache).
//!
//! Needs root (mounts, `drop_caches`). Times are in-process (no fork per file).

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_testdata::registry::RegistryServer;

use crate::convert::{loadavg, mib};
use crate::stats::summarize;
use crate::unpack::ImageChoice;

#[derive(Debug, Args)]
pub(crate) struct RootfsReadsArgs {
    /// The strata binary.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The image pulled and mounted.
    #[arg(long, value_enum, default_value_t = ImageChoice::Debian)]
    image: ImageChoice,
    /// The snapshotters compared; the first is the reference of the ratio.
    #[arg(long, value_delimiter = ',', default_value = "overlayfs,erofs")]
    snapshotters: Vec<String>,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the stores (default: a temp dir under /var/tmp, on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What one walk or read saw, to check both trees are the same size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    entries: u64,
    bytes: u64,
}

const MEASURES: [&str; 3] = [
    "metadata walk, cold cache",
    "read every file, cold cache",
    "read every file, warm cache",
];

pub(crate) fn run(args: &RootfsReadsArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.snapshotters.len() < 2 {
        bail!("--runs must be positive and --snapshotters name at least two");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("rootfs-reads needs root (mounts, /proc/sys/vm/drop_caches)");
    }
    let strata = fs::canonicalize(&args.strata)
        .with_context(|| format!("{} (build it first)", args.strata.display()))?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-rootfs-reads.")
        .tempdir_in(&base)?;
    let (image, repo) = match args.image {
        ImageChoice::Generated => (crate::convert::build_image()?.0, "bench/reads"),
        ImageChoice::Debian => (
            strata_testdata::debian_image::build_debian_image(&work.path().join("layout"))?.image,
            "bench/debian",
        ),
    };
    let uncompressed: u64 = image.layers.iter().map(|l| l.uncompressed_size).sum();
    let layers = image.layers.len();
    let registry = RegistryServer::start().context("start the registry")?;
    registry.push_image(repo, "1", &image)?;
    drop(image);
    let reference = format!("{}/{repo}:1", registry.host());

    let mut mounts = Vec::new();
    let result = (|| -> anyhow::Result<String> {
        for name in &args.snapshotters {
            let root = work.path().join(format!("root-{name}"));
            let mnt = work.path().join(format!("mnt-{name}"));
            fs::create_dir_all(&mnt)?;
            let t = Instant::now();
            strata_ok(
                &strata,
                &root,
                &["pull", "--snapshotter", name, "--plain-http", &reference],
            )?;
            let pulled = t.elapsed();
            strata_ok(
                &strata,
                &root,
                &[
                    "mount",
                    "--snapshotter",
                    name,
                    &reference,
                    mnt.to_str().context("path")?,
                ],
            )?;
            mounts.push((name.clone(), root, mnt));
            eprintln!("{name}: pulled in {:.2}s and mounted", pulled.as_secs_f64());
        }
        // samples[snapshotter][measure]
        let mut samples = vec![vec![Vec::new(); MEASURES.len()]; mounts.len()];
        let mut seen: Vec<Option<[Seen; 2]>> = vec![None; mounts.len()];
        for run in 0..args.runs {
            let mut order: Vec<usize> = (0..mounts.len()).collect();
            order.rotate_left(run % mounts.len());
            let mut line = Vec::new();
            for k in order {
                let mnt = &mounts[k].2;
                drop_caches()?;
                let (walk_time, walk) = timed(|| walk(mnt))?;
                drop_caches()?;
                let (cold_time, read) = timed(|| read_all(mnt))?;
                let (warm_time, warm) = timed(|| read_all(mnt))?;
                if read != warm {
                    bail!(
                        "{}: two reads of the same tree differ: {read:?} vs {warm:?}",
                        mounts[k].0
                    );
                }
                match seen[k] {
                    None => seen[k] = Some([walk, read]),
                    Some(s) if s == [walk, read] => {}
                    Some(s) => bail!("{}: the tree changed between runs: {s:?}", mounts[k].0),
                }
                for (m, t) in [walk_time, cold_time, warm_time].into_iter().enumerate() {
                    samples[k][m].push(t);
                }
                line.push(format!(
                    "{} walk {:.3}s cold {:.3}s warm {:.3}s",
                    mounts[k].0,
                    walk_time.as_secs_f64(),
                    cold_time.as_secs_f64(),
                    warm_time.as_secs_f64()
                ));
            }
            eprintln!("run {}: {}", run + 1, line.join("; "));
        }
        let reference_seen = seen[0];
        for (k, s) in seen.iter().enumerate().skip(1) {
            if *s != reference_seen {
                bail!(
                    "{} and {} show different trees: {reference_seen:?} vs {s:?}",
                    mounts[0].0,
                    mounts[k].0
                );
            }
        }
        let [walked, read] = reference_seen.context("at least one run")?;
        let mut table = String::new();
        let mut header = "| measurement |".to_owned();
        for (name, _, _) in &mounts {
            let _ = write!(header, " {name} median (min–max) |");
        }
        for (name, _, _) in mounts.iter().skip(1) {
            let _ = write!(header, " {name} / {} |", mounts[0].0);
        }
        let _ = writeln!(table, "{header}");
        let _ = writeln!(table, "|{}", "---|".repeat(1 + 2 * mounts.len() - 1));
        for (m, label) in MEASURES.iter().enumerate() {
            let mut row = format!("| {label} |");
            let medians: Vec<f64> = samples
                .iter()
                .map(|s| {
                    let sum = summarize(&s[m]);
                    let _ = write!(
                        row,
                        " {:.3} s ({:.3}–{:.3}) |",
                        sum.median.as_secs_f64(),
                        sum.min.as_secs_f64(),
                        sum.max.as_secs_f64()
                    );
                    sum.median.as_secs_f64()
                })
                .collect();
            for med in medians.iter().skip(1) {
                let _ = write!(row, " **{:.2}×** |", med / medians[0]);
            }
            let _ = writeln!(table, "{row}");
        }
        let _ = writeln!(
            table,
            "\nImage: {layers} layers, {:.1} MiB uncompressed; the walk saw {} entries, the reads {:.1} MiB. \
             {} alternating runs, {} CPUs; load average {} after.",
            mib(uncompressed),
            walked.entries,
            mib(read.bytes),
            args.runs,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            loadavg()
        );
        Ok(table)
    })();
    for (_, root, mnt) in &mounts {
        let _ = strata_ok(&strata, root, &["umount", mnt.to_str().unwrap_or_default()]);
    }
    print!("{}", result?);
    Ok(())
}

fn strata_ok(strata: &Path, root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(strata)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "strata {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches")
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

/// `lstat` of every entry, listing every directory (not following symlinks).
fn walk(root: &Path) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = e?.path();
            let m = fs::symlink_metadata(&path)?;
            seen.entries += 1;
            seen.bytes += m.len() * u64::from(m.is_file());
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(seen)
}

/// Every regular file read to its end.
fn read_all(root: &Path) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                seen.entries += 1;
                let mut f = fs::File::open(e.path())?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    seen.bytes += n as u64;
                }
            }
        }
    }
    Ok(seen)
}
