//! Convert benchmark (issue #4): `strata convert` against stargz-snapshotter's
//! `ctr-remote image convert --estargz --oci` (on containerd 1.6), both converting the
//! same generated multi-layer gzip image already in their store, alternating runs.
//!
//! The image (deterministic, ~150 MiB uncompressed in 5 gzip layers) mixes what real
//! images hold: many small config-like and source-like text files, log-like text,
//! repetitive "binary" blocks, and incompressible random data (binaries, media), so that
//! both compression speed and output size mean something. It is pushed once to Debian's
//! distribution registry started by the test harness on a free loopback port.
//!
//! Every run is cold: Strata gets a fresh `--root` and `strata pull --plain-http`, ctr-remote
//! a freshly started private containerd (fresh root; CRI disabled) and
//! `ctr image pull --plain-http`; pulls and daemon start-up are not timed, only the
//! conversion is. Output size is the sum of the converted manifest's layer sizes. Each
//! timed command runs under `/usr/bin/time` so its CPU time (user + sys) and peak RSS are
//! reported too; for ctr-remote the CPU includes the private containerd daemon's share
//! (content writes go through it), read from `/proc/PID/stat` around the conversion, and
//! the peak RSS is the client's.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use strata_testdata::registry::RegistryServer;
use strata_testdata::{BuiltImage, ImageSpec, LayerSpec, Platform};

use crate::stats::{run_timed, summarize};
use strata_testdata::containerd::Containerd;

const REPO: &str = "bench/conv";
const SRC_TAG: &str = "1";
const DST_TAG: &str = "esgz";
const NS: &str = "bench";

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The strata binary to measure.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The ctr-remote binary (stargz-snapshotter's ctr with `image convert --estargz`).
    #[arg(long, default_value = "/usr/bin/ctr-remote")]
    ctr_remote: PathBuf,
    /// The containerd binary (1.6; a private instance is started per ctr-remote run).
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// The ctr binary (pulls the source image into containerd).
    #[arg(long, default_value = "/usr/bin/ctr")]
    ctr: PathBuf,
    /// Runs of each tool.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also run `strata convert --level 9` this many times (ctr-remote's default level).
    #[arg(long, default_value_t = 1)]
    level9_runs: usize,
    /// Extra arguments for `strata convert` (repeatable), e.g. `--strata-arg=--parallelism=1`.
    #[arg(long = "strata-arg", allow_hyphen_values = true)]
    strata_args: Vec<String>,
    /// Directory for the stores and containerd roots (default: a temp dir under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory for inspection.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Strata,
    CtrRemote,
    StrataLevel9,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Strata => "`strata convert` (gzip level 7, default)",
            Tool::CtrRemote => "`ctr-remote image convert --estargz --oci` (level 9, default)",
            Tool::StrataLevel9 => "`strata convert --level 9`",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Tool::Strata => "strata",
            Tool::CtrRemote => "ctr-remote",
            Tool::StrataLevel9 => "strata-l9",
        }
    }
}

/// One timed conversion.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// User + system CPU of the timed process.
    cpu: Duration,
    /// Of which the containerd daemon's (ctr-remote only).
    daemon_cpu: Duration,
    /// Peak RSS of the timed process, KiB.
    max_rss_kib: u64,
    /// Sum of the converted layers' sizes.
    out_bytes: u64,
}

pub(crate) fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    for bin in [
        &args.strata,
        &args.ctr_remote,
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
        .prefix("strata-bench-convert.")
        .tempdir_in(&base)?;

    let t = Instant::now();
    let (image, files) = build_image()?;
    let compressed: u64 = image.layers.iter().map(|l| l.size).sum();
    let uncompressed: u64 = image.layers.iter().map(|l| l.uncompressed_size).sum();
    eprintln!(
        "generated {} layers, {files} files, {:.1} MiB uncompressed, {:.1} MiB gzip in {:.1}s; manifest {}",
        image.layers.len(),
        mib(uncompressed),
        mib(compressed),
        t.elapsed().as_secs_f64(),
        image.manifest.digest
    );
    let layer_desc: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{:.1}→{:.1}", mib(l.uncompressed_size), mib(l.size)))
        .collect();

    let registry =
        RegistryServer::start().context("start the registry (scripts/setup.sh installs it)")?;
    registry
        .push_image(REPO, SRC_TAG, &image)
        .context("push the image")?;
    let src = format!("{}/{REPO}:{SRC_TAG}", registry.host());
    let dst = format!("{}/{REPO}:{DST_TAG}", registry.host());
    drop(image);
    eprintln!("pushed {src}");

    let load_before = loadavg();
    let mut tools = vec![Tool::Strata, Tool::CtrRemote];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); 3];
    let result = (|| -> anyhow::Result<()> {
        for i in 0..args.runs {
            let mut order = tools.clone();
            order.rotate_left(i % 2);
            if i < args.level9_runs {
                order.push(Tool::StrataLevel9);
            }
            let mut line = Vec::new();
            for tool in order {
                let dir = work.path().join(format!("run{i}-{}", tool.short()));
                let s = measure(args, &strata, tool, &dir, &src, &dst)
                    .with_context(|| format!("run {}: {}", i + 1, tool.short()))?;
                line.push(format!(
                    "{} {:.2}s (cpu {:.2}s, daemon {:.2}s; {} bytes)",
                    tool.short(),
                    s.wall.as_secs_f64(),
                    s.cpu.as_secs_f64(),
                    s.daemon_cpu.as_secs_f64(),
                    s.out_bytes
                ));
                samples[tool as usize].push(s);
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
    if args.level9_runs > 0 {
        tools.push(Tool::StrataLevel9);
    }

    let ctr = &samples[Tool::CtrRemote as usize];
    let ctr_wall = summarize(&ctr.iter().map(|s| s.wall).collect::<Vec<_>>()).median;
    let ctr_bytes = median_u64(ctr.iter().map(|s| s.out_bytes).collect());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| tool | runs | wall median | wall min–max | CPU (user+sys) median | client peak RSS | output bytes | speedup (ctr-remote / this) | size (this / ctr-remote) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|");
    for tool in &tools {
        let ss = &samples[*tool as usize];
        let wall = summarize(&ss.iter().map(|s| s.wall).collect::<Vec<_>>());
        let cpu = summarize(&ss.iter().map(|s| s.cpu).collect::<Vec<_>>());
        let rss = median_u64(ss.iter().map(|s| s.max_rss_kib).collect());
        let bytes = median_u64(ss.iter().map(|s| s.out_bytes).collect());
        let (bmin, bmax) = (
            ss.iter().map(|s| s.out_bytes).min(),
            ss.iter().map(|s| s.out_bytes).max(),
        );
        let bytes_txt = if bmin == bmax {
            format!("{bytes}")
        } else {
            format!("{bytes} ({}–{})", bmin.unwrap_or(0), bmax.unwrap_or(0))
        };
        let _ = writeln!(
            table,
            "| {} | {} | {:.2} s | {:.2}–{:.2} s | {:.2} s | {} MiB | {bytes_txt} ({:.1} MiB) | {:.2}× | {:.3} |",
            tool.label(),
            ss.len(),
            wall.median.as_secs_f64(),
            wall.min.as_secs_f64(),
            wall.max.as_secs_f64(),
            cpu.median.as_secs_f64(),
            rss / 1024,
            mib(bytes),
            ctr_wall.as_secs_f64() / wall.median.as_secs_f64(),
            bytes as f64 / ctr_bytes as f64,
        );
    }
    print!("{table}");
    println!(
        "\nSource: {:.1} MiB uncompressed, {:.1} MiB gzip, {files} files in {} layers (MiB uncompressed→gzip: {}). \
         Conversion only (pull and daemon start not timed), {} alternating runs, {} CPUs; \
         load average (1/5/15 min) {load_before} before, {} after.",
        mib(uncompressed),
        mib(compressed),
        layer_desc.len(),
        layer_desc.join(", "),
        args.runs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg(),
    );
    keep_or_clean(work, args.keep);
    Ok(())
}

/// The first three fields of `/proc/loadavg` (other work on the machine skews wall times).
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub(crate) fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn keep_or_clean(work: tempfile::TempDir, keep: bool) {
    if keep {
        eprintln!("work dir kept: {}", work.keep().display());
    }
}

/// Runs `cmd` under `/usr/bin/time`, returning wall time, stdout, CPU time and peak RSS.
pub(crate) fn run_measured(
    cmd: &Command,
    dir: &Path,
) -> anyhow::Result<(Duration, String, Duration, u64)> {
    let stats = dir.join("time.out");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&stats)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let _ = Command::new("sync").status();
    let (wall, out) = run_timed(&mut wrapped)?;
    let text = fs::read_to_string(&stats)?;
    let nums: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [user, sys, rss] = nums[..] else {
        bail!("unexpected /usr/bin/time output {text:?}")
    };
    Ok((wall, out, Duration::from_secs_f64(user + sys), rss as u64))
}

fn measure(
    args: &ConvertArgs,
    strata: &Path,
    tool: Tool,
    dir: &Path,
    src: &str,
    dst: &str,
) -> anyhow::Result<Sample> {
    fs::create_dir_all(dir)?;
    match tool {
        Tool::Strata | Tool::StrataLevel9 => {
            let root = dir.join("root");
            run_timed(Command::new(strata).arg("--root").arg(&root).args([
                "pull",
                "--plain-http",
                src,
            ]))?;
            let mut cmd = Command::new(strata);
            cmd.arg("--root")
                .arg(&root)
                .arg("convert")
                .args(&args.strata_args);
            if tool == Tool::StrataLevel9 {
                cmd.args(["--level", "9"]);
            }
            cmd.args([src, dst]);
            let (wall, out, cpu, max_rss_kib) = run_measured(&cmd, dir)?;
            let digest = out.trim();
            let hex = digest
                .strip_prefix("sha256:")
                .with_context(|| format!("unexpected output {out:?}"))?;
            let manifest = fs::read_to_string(root.join("content/blobs/sha256").join(hex))
                .with_context(|| format!("read converted manifest {digest}"))?;
            let out_bytes = layer_bytes(&manifest)?;
            Ok(Sample {
                wall,
                cpu,
                daemon_cpu: Duration::ZERO,
                max_rss_kib,
                out_bytes,
            })
        }
        Tool::CtrRemote => {
            let daemon = Containerd::start_binary(&args.containerd, dir, NS, "")?;
            let with = |bin: &Path, sub: &[&str]| {
                let mut cmd = Command::new(bin);
                cmd.arg("--address")
                    .arg(&daemon.socket)
                    .args(["--namespace", NS])
                    .args(sub);
                cmd
            };
            run_timed(&mut with(
                &args.ctr,
                &["image", "pull", "--plain-http", src],
            ))?;
            let cmd = with(
                &args.ctr_remote,
                &["image", "convert", "--estargz", "--oci", src, dst],
            );
            let pid = daemon.pid().context("containerd pid")?;
            let before = proc_cpu(pid)?;
            let (wall, _, client_cpu, max_rss_kib) = run_measured(&cmd, dir)?;
            let daemon_cpu = proc_cpu(pid)?.saturating_sub(before);
            let cpu = client_cpu + daemon_cpu;
            let (_, list) = run_timed(&mut with(&args.ctr, &["image", "ls"]))?;
            let digest = list
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|cols| cols.first() == Some(&dst))
                .and_then(|cols| cols.get(2).map(|d| (*d).to_owned()))
                .with_context(|| format!("no image {dst} in `ctr image ls`:\n{list}"))?;
            let (_, manifest) = run_timed(&mut with(&args.ctr, &["content", "get", &digest]))?;
            if manifest.contains("\"manifests\"") {
                bail!("ctr-remote produced an index ({digest}), expected a manifest:\n{manifest}");
            }
            let out_bytes = layer_bytes(&manifest)?;
            daemon.stop();
            Ok(Sample {
                wall,
                cpu,
                daemon_cpu,
                max_rss_kib,
                out_bytes,
            })
        }
    }
}

/// User + system CPU time a process has used so far (`/proc/PID/stat`).
pub(crate) fn proc_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Sum of the `size` fields of a manifest's `layers` descriptors (a minimal scan: layer
/// descriptors hold no nested arrays, and annotation keys never are exactly `"size"`).
fn layer_bytes(manifest: &str) -> anyhow::Result<u64> {
    let start = manifest
        .find("\"layers\"")
        .context("manifest has no layers")?;
    let rest = &manifest[start..];
    let open = rest.find('[').context("malformed layers")?;
    let close = rest.find(']').context("malformed layers")?;
    let body = &rest[open..close];
    let mut total = 0;
    let mut n = 0;
    for piece in body.split("\"size\"").skip(1) {
        let num: String = piece
            .trim_start()
            .trim_start_matches(':')
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        total += num
            .parse::<u64>()
            .with_context(|| format!("bad size in {piece:?}"))?;
        n += 1;
    }
    if n == 0 {
        bail!("no layer sizes in manifest:\n{manifest}");
    }
    Ok(total)
}

// ---- the image ------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "as",
    "by",
    "this",
    "from",
    "be",
    "are",
    "value",
    "config",
    "server",
    "client",
    "request",
    "response",
    "error",
    "return",
    "function",
    "struct",
    "const",
    "let",
    "if",
    "else",
    "while",
    "match",
    "buffer",
    "length",
    "index",
    "count",
    "string",
    "bytes",
    "layer",
    "image",
    "digest",
    "content",
    "store",
    "manifest",
    "snapshot",
    "mount",
    "path",
    "file",
    "directory",
    "user",
    "group",
    "mode",
    "time",
    "default",
    "option",
    "enable",
    "disable",
    "timeout",
    "retry",
    "cache",
    "module",
    "package",
    "library",
    "version",
    "license",
    "copyright",
    "author",
    "description",
    "install",
    "build",
    "test",
    "debug",
    "release",
    "target",
    "source",
    "include",
    "define",
    "static",
    "public",
    "private",
    "self",
    "new",
    "init",
    "close",
    "open",
    "read",
    "write",
    "seek",
    "flush",
    "sync",
    "lock",
    "unlock",
    "thread",
];

/// Prose/code-like text of about `len` bytes.
fn text(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 128);
    while out.len() < len {
        match rng.random_range(0..10) {
            0 => {
                let _ = writeln!(
                    out,
                    "{}_{} = \"{}-{}\"",
                    WORDS[rng.random_range(0..WORDS.len())],
                    WORDS[rng.random_range(0..WORDS.len())],
                    WORDS[rng.random_range(0..WORDS.len())],
                    rng.random_range(0..100_000u32)
                );
            }
            1 => {
                let _ = writeln!(
                    out,
                    "    {}({}, {});",
                    WORDS[rng.random_range(0..WORDS.len())],
                    rng.random::<u16>(),
                    rng.random::<u8>()
                );
            }
            _ => {
                let n = rng.random_range(4..16);
                for k in 0..n {
                    if k > 0 {
                        out.push(' ');
                    }
                    out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                }
                out.push_str(".\n");
            }
        }
    }
    out.into_bytes()
}

/// Log-like lines: timestamps, levels, request ids.
fn log_text(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 256);
    let mut ts: u64 = 1_704_067_200_000;
    while out.len() < len {
        ts += rng.random_range(0..50);
        let level = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"][rng.random_range(0..6)];
        let _ = writeln!(
            out,
            "{ts} {level} [worker-{}] {} {} request_id={:016x} status={} duration_ms={}",
            rng.random_range(0..8),
            WORDS[rng.random_range(0..WORDS.len())],
            WORDS[rng.random_range(0..WORDS.len())],
            rng.random::<u64>(),
            [200, 200, 200, 204, 404, 500][rng.random_range(0..6)],
            rng.random_range(0..2000)
        );
    }
    out.into_bytes()
}

/// Small JSON/config file of about `len` bytes.
fn json_config(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = String::from("{\n");
    while out.len() < len {
        let _ = writeln!(
            out,
            "  \"{}.{}\": {{\"enabled\": {}, \"value\": {}, \"name\": \"{}\"}},",
            WORDS[rng.random_range(0..WORDS.len())],
            WORDS[rng.random_range(0..WORDS.len())],
            rng.random::<bool>(),
            rng.random_range(0..65536),
            WORDS[rng.random_range(0..WORDS.len())]
        );
    }
    out.push_str("  \"end\": true\n}\n");
    out.into_bytes()
}

/// Binary-like data: repeated 4 KiB blocks (e.g. code/tables) with sparse random bytes,
/// compressible ~3–10×.
fn binary_like(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let patterns: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            (0..4096)
                .map(|i| {
                    if i % 7 == 0 {
                        rng.random()
                    } else {
                        (i % 251) as u8
                    }
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let mut block = patterns[rng.random_range(0..patterns.len())].clone();
        for _ in 0..64 {
            let at = rng.random_range(0..block.len());
            block[at] = rng.random();
        }
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

const MIB: u64 = 1 << 20;

/// ~150 MiB uncompressed in 5 layers, about half random (incompressible) bytes.
/// The image and its number of files (regular files and symlinks; not parent dirs).
pub(crate) fn build_image() -> anyhow::Result<(BuiltImage, usize)> {
    let mut rng = SmallRng::seed_from_u64(4);
    let mut seed = 4000;
    let mut next_seed = || {
        seed += 1;
        seed
    };

    // 0: base OS: ~1500 small config/text files, docs, and random "binaries".
    let mut l0 = LayerSpec::new().created_by("ADD rootfs.tar /");
    for i in 0..1500 {
        let len = rng.random_range(256..6 * 1024);
        l0 = l0.file(
            format!("etc/conf.d/{}/file{i}.conf", i % 40),
            0o644,
            text(&mut rng, len),
        );
    }
    for i in 0..12 {
        l0 = l0.file(
            format!("usr/share/doc/pkg{i}/README"),
            0o644,
            text(&mut rng, 512 * 1024),
        );
    }
    for i in 0..24 {
        l0 = l0.random_file(format!("usr/bin/tool{i}"), 0o755, next_seed(), MIB / 2);
    }

    // 1: libraries: random plus binary-like sections.
    let mut l1 = LayerSpec::new().created_by("RUN apt-get install -y libs");
    for i in 0..10 {
        l1 = l1.random_file(
            format!("usr/lib/x86_64-linux-gnu/lib{i}.so.1"),
            0o644,
            next_seed(),
            5 * MIB / 2,
        );
    }
    for i in 0..8 {
        l1 = l1.file(
            format!("usr/lib/x86_64-linux-gnu/libdata{i}.so"),
            0o644,
            binary_like(&mut rng, MIB as usize),
        );
    }

    // 2: sources: ~3000 source-like text files, ~30 MiB.
    let mut l2 = LayerSpec::new().created_by("COPY src/ /app/src/");
    for i in 0..3000 {
        let len = rng.random_range(2 * 1024..19 * 1024);
        l2 = l2.file(
            format!("app/src/mod{}/file{i}.rs", i % 60),
            0o644,
            text(&mut rng, len),
        );
    }

    // 3: assets: incompressible media.
    let mut l3 = LayerSpec::new().created_by("COPY assets/ /app/assets/");
    for i in 0..3 {
        l3 = l3.random_file(
            format!("app/assets/video{i}.mp4"),
            0o644,
            next_seed(),
            10 * MIB,
        );
    }

    // 4: app: JSON configs, a log, a random bundle, a zero-filled database file.
    let mut l4 = LayerSpec::new().created_by("COPY app/ /app/");
    for i in 0..2000 {
        let len = rng.random_range(512..6 * 1024);
        l4 = l4.file(
            format!("app/config/{}/c{i}.json", i % 50),
            0o644,
            json_config(&mut rng, len),
        );
    }
    l4 = l4
        .file(
            "var/log/app/app.log",
            0o644,
            log_text(&mut rng, 12 * MIB as usize),
        )
        .random_file("app/bin/app", 0o755, next_seed(), 12 * MIB)
        .file("var/lib/app/db.sqlite", 0o644, vec![0u8; 4 * MIB as usize])
        .symlink("app/current", "/app/bin/app");

    let files = [&l0, &l1, &l2, &l3, &l4]
        .iter()
        .map(|l| l.entries().len())
        .sum();
    let spec = ImageSpec::new(Platform::linux_amd64())
        .entrypoint(["/app/bin/app"])
        .layer(l0)
        .layer(l1)
        .layer(l2)
        .layer(l3)
        .layer(l4);
    Ok((spec.build()?, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_sizes_from_manifest() {
        let m = r#"{"schemaVersion":2,"config":{"size":7,"digest":"sha256:aa"},"layers":[
            {"mediaType":"x","size":100,"digest":"sha256:bb","annotations":{"io.containers.estargz.uncompressed-size":"999"}},
            {"mediaType":"x","digest":"sha256:cc","size": 23}]}"#;
        assert_eq!(layer_bytes(m).unwrap(), 123);
    }
}
