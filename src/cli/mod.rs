//! The `strata` command line: argument definitions and dispatch.

mod artifact;
mod config;
mod content;
mod convert;
mod format;
mod image;
mod lazy_volume;
mod progress;
mod run;
mod serve;
mod snapshot;
mod transfer;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `--root` when neither the flag nor STRATA_ROOT is given.
const DEFAULT_ROOT: &str = "/var/lib/strata";

/// Strata: a container snapshotter-and-storage engine.
///
/// Strata keeps container images in a content-addressed store with containerd's
/// semantics, unpacks them into snapshots (overlayfs, native, erofs) or mounts eStargz layers
/// lazily over FUSE, and serves both to containerd as a snapshotter proxy plugin.
#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Examples:\n  strata --root /tmp/strata image import ./image-layout\n  strata --root /tmp/strata content ls\n  strata content ingest --expected sha256:… ./blob"
)]
pub(crate) struct Cli {
    // The environment variables are read here rather than with clap's `env`: clap counts
    // a value from the environment as given, and then prints the flag in usage lines as
    // if it were required.
    /// Root directory of Strata's state (content store, metadata database).
    /// Default: $STRATA_ROOT if set, else /var/lib/strata (`serve`: its configuration's
    /// `root`).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// `strata=debug`). Default: $STRATA_LOG if set, else warn (`serve`: its
    /// configuration's `log_level`, see `strata config default`).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the content store: blobs addressed by digest.
    #[command(
        subcommand,
        after_help = "Examples:\n  strata content ingest ./layer.tar.gz\n  strata content ls\n  \
        strata content info sha256:…\n  strata content gc --dry-run"
    )]
    Content(content::ContentCommand),
    /// Manage images: import archives and layouts, list and remove image records.
    #[command(
        subcommand,
        after_help = "Examples:\n  strata image import ./image-layout/\n  strata image ls\n  \
        strata image rm docker.io/library/alpine:3.20"
    )]
    Image(image::ImageCommand),
    /// Pull an image from a registry into the store (verified, resumable).
    Pull(transfer::PullArgs),
    /// Push an image from the store to a registry.
    Push(transfer::PushArgs),
    /// Push model artifacts (a directory as ModelPack or ORAS) to a registry.
    #[command(
        subcommand,
        after_help = "Examples:\n  strata artifact push --plain-http ./my-model 127.0.0.1:5000/models/mine:1\n  \
        strata artifact push --type oras ./files registry.example.com/team/files:v1"
    )]
    Artifact(artifact::ArtifactCommand),
    /// Compute and push the chunk index (per-chunk digests) of an artifact or image.
    Index(artifact::IndexArgs),
    /// Convert an image in the store to eStargz (gzip or zstd) or EROFS layers, or check one.
    Convert(convert::ConvertArgs),
    /// Manage snapshots: list, inspect, remove, usage, mounts (as `ctr snapshots`).
    Snapshot(snapshot::SnapshotArgs),
    /// Mount an image's rootfs read-write on a directory, for inspection.
    Mount(snapshot::MountArgs),
    /// Unmount a `strata mount` and discard its changes.
    Umount(snapshot::UmountArgs),
    /// Run a container from an image with runc, over a Strata snapshot (no containerd).
    Run(run::RunArgs),
    /// List the containers `strata run` made.
    Ps(run::PsArgs),
    /// Stop running containers: SIGTERM, then SIGKILL after a grace period.
    Stop(run::StopArgs),
    /// Print the output of a container started with `strata run -d`.
    Logs(run::LogsArgs),
    /// Remove stopped containers (their snapshots and bundles).
    Rm(run::RmArgs),
    /// Image volumes: an image, or a directory of it, mounted read-only (as Kubernetes
    /// image volumes).
    #[command(
        subcommand,
        after_help = "Examples:\n  strata volume mount --plain-http 127.0.0.1:5000/models:1 /mnt/models\n  \
        strata volume ls\n  strata volume umount /mnt/models"
    )]
    Volume(volume::VolumeCommand),
    /// Serve the snapshotters to containerd on a unix socket (proxy snapshotter plugin).
    Serve(serve::ServeArgs),
    /// The daemon's configuration file.
    #[command(
        subcommand,
        after_help = "Example:\n  mkdir -p /etc/strata && strata config default > /etc/strata/config.toml"
    )]
    Config(config::ConfigCommand),
    /// Keep `strata serve`'s FUSE descriptors across its restarts (started by the daemon).
    #[command(hide = true)]
    FdHolder(FdHolderArgs),
}

/// `strata fd-holder`: started by `strata serve`, not by hand.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Holds duplicates of `strata serve`'s /dev/fuse descriptors (one per lazily mounted \
    layer) so that the mounts outlive a crash or restart of the daemon: readers wait instead of \
    failing with \"transport endpoint is not connected\", and the restarted daemon takes the \
    descriptors back over the socket and serves the same mounts again. `strata serve` starts it \
    on the first lazy mount (socket <root>/fd-holder.sock, mode 0600), in its own session; it \
    exits by itself when it holds nothing and no daemon is connected. A second holder on a live \
    socket exits at once: a holder keeps an exclusive lock on <socket>.lock while it lives."
)]
pub(crate) struct FdHolderArgs {
    /// The unix socket to serve.
    #[arg(long)]
    socket: PathBuf,
}

pub(crate) fn main() -> ExitCode {
    // The fd holder lives as long as the lazy mounts: skip building the whole command tree
    // (and logging; its stderr is /dev/null) for the exact form `strata serve` starts it
    // with, which keeps its memory to the binary's load and the poll loop.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let [_, sub, flag, socket] = args.as_slice()
        && sub == "fd-holder"
        && flag == "--socket"
    {
        let socket = PathBuf::from(socket);
        return match strata::fdstore::holder::run(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strata: fd holder {}: {e}", socket.display());
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let from_env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    let given_root = cli
        .root
        .clone()
        .or_else(|| from_env("STRATA_ROOT").map(PathBuf::from));
    let given_level = cli
        .log_level
        .clone()
        .or_else(|| from_env("STRATA_LOG").map(|v| v.to_string_lossy().into_owned()));
    let root = given_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let root = root.as_path();
    // `serve` sets up its own logging: its level and format may come from its config file.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging(given_level.as_deref().unwrap_or("warn"));
    }
    let result = match &cli.command {
        Command::Content(c) => content::run(root, c),
        Command::Image(c) => image::run(root, c),
        Command::Pull(a) => transfer::pull(root, a),
        Command::Push(a) => transfer::push(root, a),
        Command::Artifact(c) => artifact::run(c),
        Command::Index(a) => artifact::index(a),
        Command::Convert(a) => convert::run(root, a),
        Command::Snapshot(a) => snapshot::run(root, a),
        Command::Mount(a) => snapshot::mount_image(root, a),
        Command::Umount(a) => snapshot::umount(root, a),
        Command::Volume(c) => volume::run(root, c),
        Command::Run(a) => run::run(root, a),
        Command::Ps(a) => run::ps(root, a),
        Command::Stop(a) => run::stop(root, a),
        Command::Logs(a) => run::logs(root, a),
        Command::Rm(a) => run::rm(root, a),
        Command::Serve(a) => serve::run(given_root.as_deref(), given_level.as_deref(), a),
        Command::Config(c) => config::run(c),
        Command::FdHolder(a) => strata::fdstore::holder::run(&a.socket)
            .map_err(|e| anyhow::anyhow!("fd holder {}: {e}", a.socket.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// One line: the context chain, outermost first, down to the root cause, each cause once
/// (errors that print their source and wrappers that hide it both read right).
pub(crate) fn error_line(e: &anyhow::Error) -> String {
    strata::error_chain::join(e.chain().map(ToString::to_string))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `--platform`'s parser: clap names the value, the error says only what is wrong with it.
fn parse_platform(s: &str) -> Result<strata::image::platform::Platform, String> {
    s.parse()
        .map_err(|e: strata::image::platform::PlatformError| e.cause())
}

fn open_store(root: &std::path::Path) -> anyhow::Result<strata::store::Store> {
    use anyhow::Context as _;
    strata::store::Store::open(root).with_context(|| format!("open store at {}", root.display()))
}
