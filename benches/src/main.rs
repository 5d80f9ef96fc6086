//! `strata-bench`: Strata's end-to-end benchmarks, each run side by side with the
//! reference tool in the same invocation, reporting medians and the ratio.
//!
//! Absolute times on shared machines are noisy; the ratio between Strata and the
//! reference, measured back to back on the same input, is the number that matters.

mod cold_start;
mod convert;
mod cri;
mod delay_proxy;
mod erofs;
mod ingest;
mod model;
mod pull;
mod range;
mod rootfs_reads;
mod run_overhead;
mod snapshot_latency;
mod socket;
mod stats;
mod strata_serve;
mod unpack;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "strata-bench", version)]
#[command(
    after_help = "Example:\n  strata-bench ingest --strata target/release/strata --size 1GiB --runs 5"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Ingest of a large file (hash + write + fsync) vs `sha256sum` of the same file.
    #[command(
        after_help = "Example:\n  strata-bench ingest --strata target/release/strata --size 1GiB"
    )]
    Ingest(ingest::IngestArgs),
    /// Pull of a generated ~200 MB image from a local registry vs containerd 1.6's
    /// `ctr content fetch` and `ctr image pull` (all `--plain-http`, cold each run).
    #[command(
        after_help = "Example:\n  strata-bench pull --strata target/release/strata --size-mb 200 --layers 8 --runs 5"
    )]
    Pull(pull::PullArgs),
    /// Random 64 KiB reads of a 256 MiB blob from a local registry through `RangeReader`
    /// (1 and 8 threads) vs one fresh connection per read (reqwest, curl).
    #[command(
        after_help = "Example:\n  strata-bench range --size 256MiB --reads 10000 --threads 1,8"
    )]
    Range(range::RangeArgs),
    /// Conversion of a generated ~150 MiB, 5-layer gzip image to eStargz: `strata convert`
    /// vs `ctr-remote image convert --estargz --oci` on containerd 1.6 (cold stores).
    #[command(
        after_help = "Example:\n  strata-bench convert --strata target/release/strata --runs 3"
    )]
    Convert(convert::ConvertArgs),
    /// Layer → EROFS: Strata's streaming tar → EROFS writer vs extracting the tar and
    /// running `mkfs.erofs` 1.5 on the directory, on a ~100 MB base layer and a
    /// many-small-files layer generated at run time.
    #[command(after_help = "Example:\n  strata-bench erofs --runs 5")]
    Erofs(erofs::ErofsArgs),
    /// Unpack of a generated ~150 MiB, 5-layer gzip image (or the Debian-package fixture):
    /// `strata pull` / `strata mount` vs containerd 1.6's `ctr image pull` (cold stores).
    #[command(
        after_help = "Example:\n  strata-bench unpack --strata target/release/strata --runs 5"
    )]
    Unpack(unpack::UnpackArgs),
    /// Prepare+Commit latency of an empty snapshot (p50/p99): Strata's overlayfs and native
    /// snapshotters as a library vs containerd 1.6's builtin ones over its gRPC socket.
    #[command(after_help = "Example:\n  strata-bench snapshot-latency --iterations 1000")]
    SnapshotLatency(snapshot_latency::LatencyArgs),
    /// Prepare+Commit pairs through containerd 1.6: its builtin `overlayfs` vs the `strata`
    /// proxy plugin (`strata serve`), plus `strata serve`'s socket directly.
    #[command(
        after_help = "Example:\n  strata-bench socket --strata target/release/strata --pairs 1000"
    )]
    Socket(socket::SocketArgs),
    /// Reads of a rootfs unpacked by two snapshotters (overlayfs and erofs by default): a
    /// cold metadata walk, cold and warm reads of every file.
    #[command(
        after_help = "Example:\n  strata-bench rootfs-reads --strata target/release/strata --image debian --runs 5"
    )]
    RootfsReads(rootfs_reads::RootfsReadsArgs),
    /// Container cold start (pull → exit) through containerd 1.6: its builtin overlayfs
    /// vs Strata's overlayfs and erofs as proxy plugins (and erofs fed by `strata pull`
    /// through the remote-snapshot protocol), Debian-package image, cold each run.
    #[command(
        after_help = "Example:\n  strata-bench cold-start --strata target/release/strata --runs 5"
    )]
    ColdStart(cold_start::ColdStartArgs),
    /// `strata run --rm IMAGE sh -c :` vs `runc run` of a bundle prepared once: what
    /// Strata adds around runc (snapshot, mounts, spec, cleanup), median of 20.
    #[command(
        after_help = "Example:\n  strata-bench run-overhead --strata target/release/strata --runs 20"
    )]
    RunOverhead(run_overhead::RunOverheadArgs),
    /// Model artifacts (issue #18): a generated safetensors model pushed with `strata
    /// artifact push`; time to first tensor and sequential reads through `strata volume
    /// mount` vs a full `strata pull` and `skopeo copy`, cached reads vs the host disk.
    #[command(
        after_help = "Example:\n  strata-bench model --strata target/release/strata --files 4 --file-size 512MiB --runs 5\n  strata-bench model --slow-link --file-size 64MiB --runs 5"
    )]
    Model(model::ModelArgs),
    /// A TCP proxy holding every byte a fixed delay in each direction (the latency half of
    /// `benches/slow-link.sh`; tc's tbf does the rate). Runs until killed.
    #[command(
        after_help = "Example:\n  strata-bench delay-proxy 10.213.78.2:5000 127.0.0.1:5001 --delay-ms 20"
    )]
    DelayProxy(delay_proxy::DelayProxyArgs),
    /// A lazy cold start (pull → python's exit) through Kubernetes' CRI vs through `ctr`,
    /// both on Strata's stargz snapshotter behind containerd 1.6, side by side.
    #[command(
        after_help = "Example:\n  strata-bench cri --strata target/release/strata --runs 5\n  \
        strata-bench cri --strata target/release/strata --registry \"$(benches/slow-link.sh up)\""
    )]
    Cri(cri::CriArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Ingest(args) => ingest::run(&args),
        Bench::RootfsReads(args) => rootfs_reads::run(&args),
        Bench::Pull(args) => pull::run(&args),
        Bench::Range(args) => range::run(&args),
        Bench::Convert(args) => convert::run(&args),
        Bench::Erofs(args) => erofs::run(&args),
        Bench::Unpack(args) => unpack::run(&args),
        Bench::SnapshotLatency(args) => snapshot_latency::run(&args),
        Bench::Socket(args) => socket::run(&args),
        Bench::ColdStart(args) => cold_start::run(&args),
        Bench::RunOverhead(args) => run_overhead::run(&args),
        Bench::Model(args) => model::run(&args),
        Bench::DelayProxy(args) => delay_proxy::run(&args),
        Bench::Cri(args) => cri::run(&args),
    }
}
