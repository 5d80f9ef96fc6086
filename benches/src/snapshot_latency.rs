//! Snapshot latency benchmark (issue #5): Prepare then Commit of an empty snapshot (no
//! parent), timed per iteration, p50/p99 — Strata's overlayfs and native snapshotters
//! called as a library, and containerd 1.6's builtin overlayfs and native snapshotters
//! called over its own gRPC socket (`containerd.services.snapshots.v1.Snapshots`, the
//! `containerd-namespace` metadata header set) with Strata's generated client.
//!
//! The rows measure different things and the report says so: a library call is the
//! snapshotter alone (metadata transaction, directory create, fsyncs); a containerd call
//! adds a gRPC round trip over a Unix socket and containerd's namespaced metadata layer
//! (its own bolt transaction on top of the snapshotter's). ctr would add a process spawn
//! per call, which would measure ctr rather than the snapshotter. Every backend gets a
//! fresh root under the work dir (on disk, not tmpfs) and a short untimed warm-up; the
//! iterations are split into rounds and the backends take turns round by round, so load
//! from other work on the machine falls on all of them alike. Snapshots are not removed
//! between iterations, so every store grows to the same size. Every Prepare and Commit
//! carries the label `containerd.io/gc.root` (for all backends alike): without it
//! containerd's garbage collector, which runs after every 100 mutations, removes the
//! unreferenced snapshots, active ones included, while the bench is using them.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hyper_util::rt::TokioIo;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::{CommitSnapshotRequest, PrepareSnapshotRequest};
use strata_snapshotters::Snapshotter;
use strata_snapshotters::native::NativeSnapshotter;
use strata_snapshotters::overlay::OverlaySnapshotter;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::convert::loadavg;
use strata_testdata::containerd::Containerd;

const NS: &str = "bench";
/// Iterations per backend before timing starts.
const WARM_UP: usize = 10;
/// Keeps containerd's garbage collector off the bench's snapshots.
const GC_ROOT: (&str, &str) = ("containerd.io/gc.root", "bench");

#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    /// Timed Prepare+Commit iterations per backend.
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// Rounds the iterations are split into (the backends alternate round by round).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// The containerd binary (1.6) whose builtin snapshotters are measured; empty to skip.
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// Skip the containerd rows.
    #[arg(long)]
    no_containerd: bool,
    /// Directory for the snapshotter roots (default: a temp dir under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One snapshotter under test.
enum Backend {
    Library {
        label: &'static str,
        snapshotter: Box<dyn Snapshotter>,
    },
    Containerd {
        label: &'static str,
        snapshotter: &'static str,
        client: SnapshotsClient<Channel>,
    },
}

impl Backend {
    fn label(&self) -> &'static str {
        match self {
            Backend::Library { label, .. } | Backend::Containerd { label, .. } => label,
        }
    }

    /// Prepares `active-<i>` with no parent and commits it as `committed-<i>`; returns the
    /// time of each call.
    fn prepare_commit(
        &mut self,
        rt: &tokio::runtime::Runtime,
        i: usize,
    ) -> anyhow::Result<(Duration, Duration)> {
        let (key, name) = (format!("active-{i}"), format!("committed-{i}"));
        let labels = || [(GC_ROOT.0.to_owned(), GC_ROOT.1.to_owned())].into_iter();
        match self {
            Backend::Library { snapshotter, .. } => {
                let t = Instant::now();
                snapshotter
                    .prepare(&key, "", labels().collect())
                    .with_context(|| format!("prepare {key}"))?;
                let prepared = t.elapsed();
                let t = Instant::now();
                snapshotter
                    .commit(&name, &key, labels().collect())
                    .with_context(|| format!("commit {key}"))?;
                Ok((prepared, t.elapsed()))
            }
            Backend::Containerd {
                snapshotter,
                client,
                ..
            } => rt.block_on(async {
                let t = Instant::now();
                let prepare = PrepareSnapshotRequest {
                    snapshotter: (*snapshotter).to_owned(),
                    key: key.clone(),
                    labels: labels().collect(),
                    ..Default::default()
                };
                client
                    .prepare(namespaced(prepare))
                    .await
                    .with_context(|| format!("prepare {key}"))?;
                let prepared = t.elapsed();
                let t = Instant::now();
                let commit = CommitSnapshotRequest {
                    snapshotter: (*snapshotter).to_owned(),
                    name: name.clone(),
                    key: key.clone(),
                    labels: labels().collect(),
                    ..Default::default()
                };
                client
                    .commit(namespaced(commit))
                    .await
                    .with_context(|| format!("commit {key}"))?;
                Ok((prepared, t.elapsed()))
            }),
        }
    }
}

/// A request carrying containerd's namespace header.
pub(crate) fn namespaced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NS),
    );
    request
}

pub(crate) async fn connect(socket: PathBuf) -> anyhow::Result<Channel> {
    // The URI is required by the API but unused: the connector always dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connect to containerd's socket")
}

/// The `q`-quantile of sorted samples (nearest rank).
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn run(args: &LatencyArgs) -> anyhow::Result<()> {
    if args.iterations == 0 || args.rounds == 0 || args.rounds > args.iterations {
        bail!("--iterations and --rounds must be positive, with rounds ≤ iterations");
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-latency.")
        .tempdir_in(&base)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let lib = |label: &'static str, snapshotter: Box<dyn Snapshotter>| Backend::Library {
        label,
        snapshotter,
    };
    let mut backends = vec![
        lib(
            "Strata `OverlaySnapshotter` (library call)",
            Box::new(OverlaySnapshotter::open(
                &work.path().join("strata-overlay"),
            )?),
        ),
        lib(
            "Strata `NativeSnapshotter` (library call)",
            Box::new(NativeSnapshotter::open(&work.path().join("strata-native"))?),
        ),
    ];
    let mut daemons = Vec::new();
    if !args.no_containerd {
        for (label, snapshotter) in [
            (
                "containerd 1.6 builtin `overlayfs` (gRPC over its Unix socket)",
                "overlayfs",
            ),
            (
                "containerd 1.6 builtin `native` (gRPC over its Unix socket)",
                "native",
            ),
        ] {
            let dir = work.path().join(format!("containerd-{snapshotter}"));
            fs::create_dir_all(&dir)?;
            let daemon = Containerd::start_binary(&args.containerd, &dir, NS, "")?;
            let client = SnapshotsClient::new(rt.block_on(connect(daemon.socket.clone()))?);
            backends.push(Backend::Containerd {
                label,
                snapshotter,
                client,
            });
            daemons.push(daemon);
        }
    }

    let load_before = loadavg();
    let n = backends.len();
    let mut prepare: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut commit: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut total: Vec<Vec<Duration>> = vec![Vec::new(); n];
    for backend in &mut backends {
        for i in 0..WARM_UP {
            backend
                .prepare_commit(&rt, i)
                .with_context(|| format!("warm-up of {}", backend.label()))?;
        }
    }
    let per_round = args.iterations.div_ceil(args.rounds);
    let mut next = vec![WARM_UP; n];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..n).collect();
        order.rotate_left(round % n);
        for k in order {
            let count = per_round.min(args.iterations - total[k].len());
            for _ in 0..count {
                let (p, c) = backends[k]
                    .prepare_commit(&rt, next[k])
                    .with_context(|| backends[k].label())?;
                next[k] += 1;
                prepare[k].push(p);
                commit[k].push(c);
                total[k].push(p + c);
            }
        }
    }
    for daemon in daemons {
        daemon.stop();
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| snapshotter (what is timed) | iterations | Prepare+Commit p50 | p99 | max | Prepare p50 | Commit p50 |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for k in 0..n {
        for v in [&mut prepare[k], &mut commit[k], &mut total[k]] {
            v.sort();
        }
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            backends[k].label(),
            total[k].len(),
            ms(quantile(&total[k], 0.5)),
            ms(quantile(&total[k], 0.99)),
            ms(total[k][total[k].len() - 1]),
            ms(quantile(&prepare[k], 0.5)),
            ms(quantile(&commit[k], 0.5)),
        );
    }
    print!("{table}");
    println!(
        "\nEmpty snapshots (no parent), fresh roots under {}; {WARM_UP} untimed warm-up iterations each, then {} \
         rounds taking turns; {} CPUs; load average (1/5/15 min) {load_before} before, {} after.",
        fs_of(work.path()),
        args.rounds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg(),
    );
    Ok(())
}

/// The file system type a directory is on (`stat -f`), for the report.
pub(crate) fn fs_of(dir: &Path) -> String {
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v[..1], 0.99), Duration::from_millis(1));
    }
}
