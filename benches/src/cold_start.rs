//! Container cold start through containerd 1.6 (issue #17): from nothing on the node to a
//! container's exit — pull the image, unpack it into a snapshotter, run python in it —
//! with containerd's builtin overlayfs (the reference) and Strata's snapshotters behind
//! `strata serve` as proxy plugins, in one invocation:
//!
//! - `overlayfs (containerd)`: `ctr image pull` + `ctr run` on containerd's builtin;
//! - `strata overlayfs`: the same on the `strata` proxy plugin (Strata's overlayfs);
//! - `strata erofs`: the same on the `erofs` proxy plugin: containerd 1.6's walking differ
//!   writes each layer through the active snapshot's overlay, and Commit converts the
//!   upper directory into `layer.erofs` (containerd 1.6 has no EROFS differ);
//! - `strata erofs, Strata fetches`: `strata pull --no-unpack` into the daemon's content
//!   store, then `ctr-remote image rpull --snapshotter erofs`, whose labelled Prepares let
//!   the daemon stream each blob straight into `layer.erofs` (`[remote] local_content`),
//!   then `ctr run`.
//!
//! Every run starts a fresh containerd and `strata serve` on empty roots (not timed),
//! syncs and drops the page cache, then times the commands. Cases alternate run by run.
//! The image is the Debian-package fixture (4 layers, python3.11 and its stdlib), served
//! by a loopback registry; the container runs `python3.11 -c 'import …; print(…)'`.
//! Needs root, containerd, ctr, ctr-remote, runc and docker-registry.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_testdata::containerd::Containerd;
use strata_testdata::registry::RegistryServer;

use crate::convert::{loadavg, mib};
use crate::pull::mounts_under;
use crate::stats::summarize;
use crate::strata_serve::StrataServe;

/// What the container prints: python started and imported modules from several layers.
const EXPECTED: &str = "hello from python";
/// The container's command.
const COMMAND: [&str; 3] = [
    "/usr/bin/python3.11",
    "-c",
    "import email.parser, http.client, zoneinfo; print('hello from python')",
];

#[derive(Debug, Args)]
pub(crate) struct ColdStartArgs {
    /// The strata binary (`strata serve`, `strata pull`).
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The containerd binary (1.6).
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// The ctr binary.
    #[arg(long, default_value = "/usr/bin/ctr")]
    ctr: PathBuf,
    /// The ctr-remote binary (stargz-snapshotter's), for the remote-snapshot case.
    #[arg(long, default_value = "/usr/bin/ctr-remote")]
    ctr_remote: PathBuf,
    /// Runs of each case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the daemons' roots (default: a temp dir under /var/tmp, on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One way from nothing to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    ContainerdOverlayfs,
    StrataOverlayfs,
    StrataErofs,
    StrataErofsLocalContent,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::ContainerdOverlayfs,
        Case::StrataOverlayfs,
        Case::StrataErofs,
        Case::StrataErofsLocalContent,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::ContainerdOverlayfs => "overlayfs (containerd's builtin): ctr pull + run",
            Case::StrataOverlayfs => "strata overlayfs (proxy): ctr pull + run",
            Case::StrataErofs => "strata erofs (proxy): ctr pull + run",
            Case::StrataErofsLocalContent => {
                "strata erofs (proxy): strata pull --no-unpack + ctr-remote rpull + run"
            }
        }
    }

    /// A name for progress lines.
    fn short(self) -> &'static str {
        match self {
            Case::ContainerdOverlayfs => "containerd-overlayfs",
            Case::StrataOverlayfs => "strata-overlayfs",
            Case::StrataErofs => "strata-erofs",
            Case::StrataErofsLocalContent => "strata-erofs-local-content",
        }
    }

    /// The `--snapshotter` containerd is given.
    fn snapshotter(self) -> &'static str {
        match self {
            Case::ContainerdOverlayfs => "overlayfs",
            Case::StrataOverlayfs => "strata",
            Case::StrataErofs | Case::StrataErofsLocalContent => "erofs",
        }
    }
}

/// One timed run: the pull (download + unpack) and the container's run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    pull: Duration,
    run: Duration,
}

pub(crate) fn run(args: &ColdStartArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("cold-start needs root (containerd, mounts, /proc/sys/vm/drop_caches)");
    }
    for bin in [&args.containerd, &args.ctr, &args.ctr_remote] {
        if !bin.exists() {
            bail!(
                "{} is missing (scripts/setup.sh installs it)",
                bin.display()
            );
        }
    }
    let strata = fs::canonicalize(&args.strata)
        .with_context(|| format!("{} (build it first)", args.strata.display()))?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-cold-start.")
        .tempdir_in(&base)?;
    let image =
        strata_testdata::debian_image::build_debian_image(&work.path().join("layout"))?.image;
    let uncompressed: u64 = image.layers.iter().map(|l| l.uncompressed_size).sum();
    let compressed: u64 = image.layers.iter().map(|l| l.size).sum();
    let layers = image.layers.len();
    let registry = RegistryServer::start().context("start the registry")?;
    registry.push_image("bench/debian", "1", &image)?;
    drop(image);
    let reference = format!("{}/bench/debian:1", registry.host());

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Case::ALL.len()];
    for run in 0..args.runs {
        let mut order: Vec<usize> = (0..Case::ALL.len()).collect();
        order.rotate_left(run % Case::ALL.len());
        let mut line = String::new();
        for k in order {
            let case = Case::ALL[k];
            let dir = work.path().join(format!("run{run}-{k}"));
            let sample = measure(args, &strata, case, &dir, &reference)
                .with_context(|| format!("run {}: {}", run + 1, case.label()))?;
            let left = mounts_under(&dir);
            if !left.is_empty() {
                bail!("{}: mounts left behind: {left:?}", case.label());
            }
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            let _ = write!(
                line,
                "  {}: {:.2}s",
                case.short(),
                (sample.pull + sample.run).as_secs_f64()
            );
            samples[k].push(sample);
        }
        eprintln!("run {}/{}:{line}", run + 1, args.runs);
    }

    println!(
        "image: Debian-package fixture, {layers} gzip layers, {:.1} MiB compressed, {:.1} MiB uncompressed; {} runs; load average {}",
        mib(compressed),
        mib(uncompressed),
        args.runs,
        loadavg()
    );
    println!(
        "| case | pull median | run median | pull → exit median (min–max) | / containerd overlayfs |"
    );
    println!("|---|---|---|---|---|");
    let total = |s: &[Sample]| s.iter().map(|s| s.pull + s.run).collect::<Vec<_>>();
    let reference_median = summarize(&total(&samples[0])).median;
    for (k, case) in Case::ALL.iter().enumerate() {
        let pull = summarize(&samples[k].iter().map(|s| s.pull).collect::<Vec<_>>());
        let run = summarize(&samples[k].iter().map(|s| s.run).collect::<Vec<_>>());
        let all = summarize(&total(&samples[k]));
        println!(
            "| {} | {:.3} s | {:.3} s | {:.3} s ({:.3}–{:.3}) | {:.2}× |",
            case.label(),
            pull.median.as_secs_f64(),
            run.median.as_secs_f64(),
            all.median.as_secs_f64(),
            all.min.as_secs_f64(),
            all.max.as_secs_f64(),
            all.median.as_secs_f64() / reference_median.as_secs_f64()
        );
    }
    Ok(())
}

/// One cold run of `case` in `dir`.
fn measure(
    args: &ColdStartArgs,
    strata: &Path,
    case: Case,
    dir: &Path,
    reference: &str,
) -> anyhow::Result<Sample> {
    fs::create_dir_all(dir)?;
    let serve = match case {
        Case::ContainerdOverlayfs => None,
        Case::StrataErofsLocalContent => Some(StrataServe::start_with_config(
            strata,
            &dir.join("strata"),
            "[remote]\nlocal_content = true\n",
        )?),
        _ => Some(StrataServe::start(strata, &dir.join("strata"))?),
    };
    let proxies = match &serve {
        None => String::new(),
        Some(serve) => ["strata", "erofs"]
            .iter()
            .map(|name| {
                format!(
                    "[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = {:?}\n",
                    serve.socket
                )
            })
            .collect(),
    };
    let containerd =
        Containerd::start_binary(&args.containerd, &dir.join("containerd"), "bench", &proxies)?;
    let context = |what: &str, out: &Output| {
        let serve_log = serve.as_ref().map(StrataServe::log).unwrap_or_default();
        let tail: Vec<&str> = serve_log.lines().rev().take(15).collect();
        format!(
            "{what} failed ({}):\n{}\n{}\ncontainerd log tail:\n{}\nstrata serve log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            containerd.log_tail(15),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    };
    let run_ok = |mut cmd: Command, what: &str| -> anyhow::Result<Output> {
        let out = cmd.output().with_context(|| format!("start {what}"))?;
        if !out.status.success() {
            bail!("{}", context(what, &out));
        }
        Ok(out)
    };
    let snapshotter = case.snapshotter();
    drop_caches()?;
    let started = Instant::now();
    match case {
        Case::StrataErofsLocalContent => {
            let serve = serve.as_ref().context("invariant: strata serve runs")?;
            let mut pull = Command::new(strata);
            pull.arg("--root")
                .arg(&serve.root)
                .args(["pull", "--no-unpack", "--plain-http", reference])
                .env("DOCKER_CONFIG", dir)
                .env("STRATA_HOSTS_DIR", dir.join("no-hosts"));
            run_ok(pull, "strata pull --no-unpack")?;
            let mut rpull = containerd.command(&args.ctr_remote);
            rpull.args([
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                reference,
            ]);
            run_ok(rpull, "ctr-remote image rpull")?;
        }
        _ => {
            let mut pull = containerd.command(&args.ctr);
            pull.args([
                "image",
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                reference,
            ]);
            run_ok(pull, "ctr image pull")?;
        }
    }
    let pulled = started.elapsed();
    let mut run = containerd.command(&args.ctr);
    run.args(["run", "--rm", "--runc-root"])
        .arg(dir.join("runc"))
        .args(["--snapshotter", snapshotter, reference, "cold-start"])
        .args(COMMAND);
    let out = run_ok(run, "ctr run")?;
    let ran = started.elapsed() - pulled;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.trim() != EXPECTED {
        bail!("{}", context("the container's output", &out));
    }
    if case == Case::StrataErofsLocalContent {
        let log = serve.as_ref().map(StrataServe::log).unwrap_or_default();
        let provided = log
            .lines()
            .filter(|l| l.contains("provided layer from the local content store"))
            .count();
        if provided == 0 {
            bail!("strata serve provided no layer from its content store:\n{log}");
        }
    }
    containerd.stop();
    if let Some(serve) = serve {
        serve.stop()?;
    }
    Ok(Sample {
        pull: pulled,
        run: ran,
    })
}

fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches")
}
