//! Socket benchmark (issue #6): Prepare+Commit pairs of empty snapshots through containerd's
//! snapshots service, with containerd's builtin `overlayfs` snapshotter against `strata`, a
//! proxy plugin served by `strata serve` (overlayfs behind it) — same containerd, same client,
//! in one run. A third row calls `strata serve`'s socket directly, without containerd, to
//! show where the time goes.
//!
//! Every call is a gRPC request from Strata's generated client over a Unix socket, so the
//! rows differ only in what serves it: containerd's metadata layer plus its in-process
//! snapshotter, containerd's metadata layer plus one more gRPC hop to `strata serve`, or
//! `strata serve` alone. The pairs are split into rounds and the backends take turns round by
//! round (the order rotating), so load from other work on the machine falls on all of them
//! alike. Every Prepare and Commit carries `containerd.io/gc.root` so containerd's garbage
//! collector leaves the bench's snapshots alone (see `snapshot_latency`). The CPU time the
//! two daemons use during each backend's turns is reported per pair.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::{CommitSnapshotRequest, PrepareSnapshotRequest};
use tonic::transport::Channel;

use crate::convert::{loadavg, proc_cpu};
use crate::snapshot_latency::{connect, fs_of, ms, namespaced, quantile};
use crate::strata_serve::StrataServe;
use strata_testdata::containerd::Containerd;

/// Pairs per backend before timing starts.
const WARM_UP: usize = 10;
/// Keeps containerd's garbage collector off the bench's snapshots.
const GC_ROOT: (&str, &str) = ("containerd.io/gc.root", "bench");
/// The target: through the proxy plugin at most this many times the builtin's time.
const TARGET_RATIO: f64 = 1.3;

#[derive(Debug, Args)]
pub(crate) struct SocketArgs {
    /// The strata binary (`strata serve`).
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The containerd binary (1.6).
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// Timed Prepare+Commit pairs per backend.
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Rounds the pairs are split into (the backends alternate round by round).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Directory for the daemons' roots (default: a temp dir under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One way of reaching a snapshotter.
struct Backend {
    label: &'static str,
    /// The request's `snapshotter` field.
    snapshotter: &'static str,
    client: SnapshotsClient<Channel>,
}

impl Backend {
    /// Prepares `active-<i>` with no parent and commits it as `committed-<i>`; returns the
    /// time of the pair.
    async fn prepare_commit(&mut self, i: usize) -> anyhow::Result<Duration> {
        let (key, name) = (format!("active-{i}"), format!("committed-{i}"));
        let labels = || {
            [(GC_ROOT.0.to_owned(), GC_ROOT.1.to_owned())]
                .into_iter()
                .collect()
        };
        let t = Instant::now();
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.to_owned(),
            key: key.clone(),
            labels: labels(),
            ..Default::default()
        };
        self.client
            .prepare(namespaced(prepare))
            .await
            .with_context(|| format!("prepare {key}"))?;
        let commit = CommitSnapshotRequest {
            snapshotter: self.snapshotter.to_owned(),
            name,
            key: key.clone(),
            labels: labels(),
            ..Default::default()
        };
        self.client
            .commit(namespaced(commit))
            .await
            .with_context(|| format!("commit {key}"))?;
        Ok(t.elapsed())
    }
}

/// CPU time both daemons have used so far.
fn daemons_cpu(
    containerd: &Containerd,
    strata: &StrataServe,
) -> anyhow::Result<(Duration, Duration)> {
    let c = containerd.pid().context("containerd is not running")?;
    let s = strata.pid().context("strata serve is not running")?;
    Ok((proc_cpu(c)?, proc_cpu(s)?))
}

pub(crate) fn run(args: &SocketArgs) -> anyhow::Result<()> {
    if args.pairs == 0 || args.rounds == 0 || args.rounds > args.pairs {
        bail!("--pairs and --rounds must be positive, with rounds ≤ pairs");
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-socket.")
        .tempdir_in(&base)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let strata_dir = work.path().join("strata");
    let containerd_dir = work.path().join("containerd");
    fs::create_dir_all(&strata_dir)?;
    fs::create_dir_all(&containerd_dir)?;
    let strata = StrataServe::start(&args.strata, &strata_dir)?;
    let proxy = format!(
        "\n[proxy_plugins.strata]\n  type = \"snapshot\"\n  address = {:?}\n",
        strata.socket.to_string_lossy()
    );
    let containerd = Containerd::start_binary(&args.containerd, &containerd_dir, "bench", &proxy)?;

    let via_containerd = rt
        .block_on(connect(containerd.socket.clone()))
        .context("containerd's socket")?;
    let direct = rt
        .block_on(connect(strata.socket.clone()))
        .context("strata serve's socket")?;
    let mut backends = vec![
        Backend {
            label: "containerd 1.6 builtin `overlayfs`",
            snapshotter: "overlayfs",
            client: SnapshotsClient::new(via_containerd.clone()),
        },
        Backend {
            label: "`strata` proxy plugin via containerd 1.6 (`strata serve`, overlayfs)",
            snapshotter: "strata",
            client: SnapshotsClient::new(via_containerd),
        },
        Backend {
            label: "`strata serve` socket directly (no containerd)",
            snapshotter: "strata",
            client: SnapshotsClient::new(direct),
        },
    ];

    let load_before = loadavg();
    let n = backends.len();
    let mut pairs: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut cpu = vec![(Duration::ZERO, Duration::ZERO); n];
    let mut next = vec![0; n];
    for (k, backend) in backends.iter_mut().enumerate() {
        for _ in 0..WARM_UP {
            rt.block_on(backend.prepare_commit(next[k]))
                .with_context(|| format!("warm-up of {}", backend.label))?;
            next[k] += 1;
        }
    }
    let per_round = args.pairs.div_ceil(args.rounds);
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..n).collect();
        order.rotate_left(round % n);
        for k in order {
            let count = per_round.min(args.pairs - pairs[k].len());
            let before = daemons_cpu(&containerd, &strata)?;
            for _ in 0..count {
                let d = rt
                    .block_on(backends[k].prepare_commit(next[k]))
                    .with_context(|| backends[k].label)?;
                next[k] += 1;
                pairs[k].push(d);
            }
            let after = daemons_cpu(&containerd, &strata)?;
            cpu[k].0 += after.0.saturating_sub(before.0);
            cpu[k].1 += after.1.saturating_sub(before.1);
        }
    }
    // Close the connections first, so the daemons' graceful shutdown has none to wait for:
    // their tasks live on the runtime, which only drives them inside `block_on`, so
    // dropping the clients alone would leave the sockets open.
    let rows: Vec<(&str, &str)> = backends.iter().map(|b| (b.label, b.snapshotter)).collect();
    drop(backends);
    drop(rt);
    containerd.stop();
    strata.stop()?;

    let totals: Vec<Duration> = pairs.iter().map(|p| p.iter().sum()).collect();
    let builtin = totals[0].as_secs_f64();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| path (request's snapshotter) | pairs | total | per pair p50 | p99 | max | containerd CPU/pair | strata CPU/pair | total vs builtin |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|");
    for k in 0..n {
        let (label, snapshotter) = rows[k];
        let p = &mut pairs[k];
        p.sort();
        let count = p.len() as u32;
        let _ = writeln!(
            table,
            "| {label} (`{snapshotter}`) | {count} | {:.3} s | {} | {} | {} | {} | {} | {:.2}× |",
            totals[k].as_secs_f64(),
            ms(quantile(p, 0.5)),
            ms(quantile(p, 0.99)),
            ms(p[p.len() - 1]),
            ms(cpu[k].0 / count),
            ms(cpu[k].1 / count),
            totals[k].as_secs_f64() / builtin,
        );
    }
    print!("{table}");
    let ratio = totals[1].as_secs_f64() / builtin;
    let p50_ratio = quantile(&pairs[1], 0.5).as_secs_f64() / quantile(&pairs[0], 0.5).as_secs_f64();
    let verdict = if ratio <= TARGET_RATIO {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "\nProxy plugin vs builtin: {ratio:.2}× total time (target ≤ {TARGET_RATIO}×: {verdict}); \
         {p50_ratio:.2}× per-pair p50."
    );
    println!(
        "Empty snapshots (no parent), Prepare+Commit over gRPC on Unix sockets, roots under {} ({}); \
         {WARM_UP} untimed warm-up pairs each, then {} rounds taking turns; {} CPUs; load average \
         (1/5/15 min) {load_before} before, {} after.",
        base.display(),
        fs_of(work.path()),
        args.rounds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg(),
    );
    Ok(())
}
