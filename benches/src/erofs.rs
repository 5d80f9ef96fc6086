//! Layer → EROFS benchmark (issue #17): Strata's streaming writer
//! (`strata_formats::erofs::build_from_tar`, one pass from the tar to the image, in
//! process) against the reference path available on Debian 12, whose erofs-utils 1.5 has
//! no `--tar`: extract the tar to a directory (`tar -xpf`, as root, xattrs kept) and run
//! `mkfs.erofs` 1.5 on it (`-Enoinline_data`, a fixed UUID, as containerd's differ would).
//!
//! Two layers are generated at run time (seeded, so every run and both tools see the
//! same bytes): a ~100 MB "base" layer (files of 512 B to 128 KiB, one in twenty of 1 to
//! 8 MiB, random contents, symlinks) and a many-small-files layer (20,000 files
//! of 0–4 KiB in nested directories). Runs alternate between the tools; `sync` runs
//! before each timed step and the outputs are removed between runs (caches are not
//! dropped: the tar stays in the page cache for both). Reported: the median, min and max
//! wall time of each and the ratio, and the image sizes; Strata is measured without
//! inline tails (as containerd's `-Enoinline_data`, the compared row) and with them.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use strata_formats::erofs::{BuildOptions, build_from_tar, layer_uuid, uuid::uuid_string};

use crate::convert::mib;
use crate::stats::{run_timed, summarize};

#[derive(Debug, Args)]
pub(crate) struct ErofsArgs {
    /// Runs of each tool per layer (alternating).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The mkfs.erofs binary (erofs-utils 1.5 on Debian 12).
    #[arg(long, default_value = "/usr/bin/mkfs.erofs")]
    mkfs: PathBuf,
    /// Size of the base layer in MiB.
    #[arg(long, default_value_t = 100)]
    base_mib: u64,
    /// Files in the many-small-files layer.
    #[arg(long, default_value_t = 20_000)]
    small_files: usize,
    /// Work directory (default: a temp dir under /var/tmp, on disk rather than tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A ~`mib` MiB layer shaped like a base image: directories of binaries, libraries and
/// data files with a long-tailed size distribution, some symlinks.
fn base_layer(path: &Path, mib_total: u64) -> anyhow::Result<usize> {
    let mut rng = SmallRng::seed_from_u64(17);
    let mut b = tar::Builder::new(BufWriter::new(File::create(path)?));
    let dirs = [
        "usr/bin",
        "usr/lib/x86_64-linux-gnu",
        "usr/share/doc",
        "etc",
        "var/lib/dpkg",
    ];
    for d in dirs {
        b.append_data(
            &mut header(tar::EntryType::Directory, 0, 0o755),
            d,
            &b""[..],
        )?;
    }
    let mut total = 0u64;
    let mut i = 0;
    let mut data = Vec::new();
    while total < mib_total << 20 {
        // Mostly small files (log-uniform 512 B .. 128 KiB), one in 20 large (1..8 MiB).
        let bits = if rng.random_ratio(1, 20) {
            rng.random_range(20..23)
        } else {
            rng.random_range(9..17)
        };
        let size = (1u64 << bits) + rng.random_range(0..1024);
        data.resize(size as usize, 0);
        rng.fill_bytes(&mut data);
        let dir = dirs[i % dirs.len()];
        b.append_data(
            &mut header(tar::EntryType::Regular, size, 0o755),
            format!("{dir}/file-{i:05}"),
            &data[..],
        )?;
        if i % 10 == 0 {
            b.append_link(
                &mut header(tar::EntryType::Symlink, 0, 0o777),
                format!("{dir}/link-{i:05}"),
                format!("file-{i:05}"),
            )?;
        }
        total += size;
        i += 1;
    }
    b.into_inner()?.flush()?;
    Ok(i)
}

/// `n` files of 0–4 KiB spread over nested directories.
fn small_files_layer(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut rng = SmallRng::seed_from_u64(18);
    let mut b = tar::Builder::new(BufWriter::new(File::create(path)?));
    let mut data = vec![0u8; 4096];
    for i in 0..n {
        let size = rng.random_range(0..=4096usize);
        rng.fill_bytes(&mut data[..size]);
        let p = format!(
            "app/node_modules/pkg-{:03}/lib/sub-{}/f-{i:05}.js",
            i / 100,
            i % 7
        );
        b.append_data(
            &mut header(tar::EntryType::Regular, size as u64, 0o644),
            p,
            &data[..size],
        )?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn strata_build(
    tar: &Path,
    out: &Path,
    uuid: [u8; 16],
    inline_data: bool,
) -> anyhow::Result<(Duration, u64)> {
    sync();
    let start = Instant::now();
    let input = BufReader::with_capacity(1 << 20, File::open(tar)?);
    let opts = BuildOptions {
        uuid,
        inline_data,
        ..BuildOptions::default()
    };
    let (file, _) = build_from_tar(
        input,
        BufWriter::with_capacity(1 << 20, File::create(out)?),
        &opts,
    )
    .context("strata build")?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let t = start.elapsed();
    Ok((t, fs::metadata(out)?.len()))
}

fn reference_build(
    mkfs: &Path,
    tar: &Path,
    work: &Path,
    out: &Path,
    uuid: &str,
) -> anyhow::Result<(Duration, u64)> {
    let tree = work.join("tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree)?;
    sync();
    let start = Instant::now();
    run_timed(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(&tree),
    )?;
    run_timed(
        Command::new(mkfs)
            .args(["--quiet", "-Enoinline_data"])
            .arg(format!("-U{uuid}"))
            .arg(out)
            .arg(&tree),
    )?;
    // The reference's image must be durable too, as Strata's is.
    File::open(out)?.sync_all()?;
    let t = start.elapsed();
    fs::remove_dir_all(&tree)?;
    Ok((t, fs::metadata(out)?.len()))
}

pub(crate) fn run(args: &ErofsArgs) -> anyhow::Result<()> {
    if !args.mkfs.exists() {
        bail!(
            "{} is missing (apt install erofs-utils)",
            args.mkfs.display()
        );
    }
    let base = match &args.dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir_in("/var/tmp")?,
    };
    let work = base.path();
    let layers = [
        ("base (~100 MB)", work.join("base.tar")),
        ("many small files", work.join("small.tar")),
    ];
    let files = base_layer(&layers[0].1, args.base_mib)?;
    small_files_layer(&layers[1].1, args.small_files)?;
    println!(
        "base layer: {files} files (+ a symlink per 10); small-files layer: {} files",
        args.small_files
    );
    println!(
        "| layer | tar | strata, no inline (median, min–max) | extract + mkfs.erofs 1.5 -Enoinline_data | ratio | image strata / mkfs | strata, inline tails | its image |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, tar) in &layers {
        let uuid = layer_uuid("sha256:bench");
        let (mut ours, mut inlined, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut our_size, mut inline_size, mut their_size) = (0, 0, 0);
        for _ in 0..args.runs {
            let out = work.join("strata.erofs");
            let (t, size) = strata_build(tar, &out, uuid, false)?;
            ours.push(t);
            our_size = size;
            fs::remove_file(&out)?;
            let (t, size) = strata_build(tar, &out, uuid, true)?;
            inlined.push(t);
            inline_size = size;
            fs::remove_file(&out)?;
            let out = work.join("mkfs.erofs");
            let (t, size) = reference_build(&args.mkfs, tar, work, &out, &uuid_string(&uuid))?;
            theirs.push(t);
            their_size = size;
            fs::remove_file(&out)?;
        }
        let (o, r, i) = (summarize(&ours), summarize(&theirs), summarize(&inlined));
        println!(
            "| {name} | {:.1} MiB | {:.3} s ({:.3}–{:.3}) | {:.3} s ({:.3}–{:.3}) | {:.2}× | {:.1} / {:.1} MiB | {:.3} s | {:.1} MiB |",
            mib(fs::metadata(tar)?.len()),
            o.median.as_secs_f64(),
            o.min.as_secs_f64(),
            o.max.as_secs_f64(),
            r.median.as_secs_f64(),
            r.min.as_secs_f64(),
            r.max.as_secs_f64(),
            o.median.as_secs_f64() / r.median.as_secs_f64(),
            mib(our_size),
            mib(their_size),
            i.median.as_secs_f64(),
            mib(inline_size),
        );
    }
    Ok(())
}
