//! `strata pull` and `strata push`: images between a registry and the local store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use strata::image::platform::Platform;
use strata::image::pull::{PullEvent, PullOptions, UnpackTarget};
use strata::image::push::{BlobOutcome, PushEvent, PushOptions};
use strata::registry::{ClientOptions, Reference, RegistryClient};

use super::format;
use super::progress::Reporter;

/// How to reach registries: shared by pull, push and convert.
#[derive(Debug, Clone, Args)]
pub(crate) struct RegistryArgs {
    /// Use plain HTTP (no TLS) for registries without a hosts.toml (as `ctr --plain-http`).
    #[arg(long)]
    plain_http: bool,
    /// containerd's `config_path`: a directory of `<host>/hosts.toml` files (mirrors,
    /// CAs, skip_verify, plain HTTP). Ignored if it does not exist.
    #[arg(
        long,
        env = "STRATA_HOSTS_DIR",
        default_value = "/etc/containerd/certs.d"
    )]
    hosts_dir: PathBuf,
    /// Docker config.json with credentials (`auths`, `credsStore`, `credHelpers`).
    /// Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json.
    #[arg(long)]
    docker_config: Option<PathBuf>,
}

impl RegistryArgs {
    pub(crate) fn client(&self) -> anyhow::Result<RegistryClient> {
        self.client_with(None)
    }

    /// The flags that give another strata process this registry access.
    pub(crate) fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.plain_http {
            args.push("--plain-http".into());
        }
        args.push("--hosts-dir".into());
        args.push(self.hosts_dir.clone().into());
        if let Some(config) = &self.docker_config {
            args.push("--docker-config".into());
            args.push(config.clone().into());
        }
        args
    }

    fn client_with(&self, push_chunk_size: Option<u64>) -> anyhow::Result<RegistryClient> {
        let opts = ClientOptions {
            push_chunk_size,
            hosts_dir: self.hosts_dir.is_dir().then(|| self.hosts_dir.clone()),
            plain_http: self.plain_http,
            docker_config: self.docker_config.clone(),
            ..ClientOptions::default()
        };
        Ok(RegistryClient::new(opts)?)
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Downloads the image into the content store and unpacks its layers into committed \
    snapshots named by chainID (see `strata snapshot ls`); layers already unpacked are skipped. \
    An OCI artifact (a model: ModelPack, ORAS, …) is stored and verified the same way, never \
    unpacked.\n\n\
    Examples:\n  strata pull alpine:3.20\n  \
    strata pull --plain-http 127.0.0.1:5000/app:1.0\n  strata pull --snapshotter native alpine:3.20\n  \
    strata pull --no-unpack --platform linux/arm64 docker.io/library/busybox:latest"
)]
pub(crate) struct PullArgs {
    /// The image reference (`alpine` means docker.io/library/alpine:latest).
    reference: String,
    /// The platform to pull, os/arch[/variant] (default: this host's): the matching entry
    /// of a multi-platform image; a single-platform image of another platform is an error.
    #[arg(long, value_parser = super::parse_platform)]
    platform: Option<Platform>,
    /// Blobs downloaded at once.
    #[arg(long, default_value_t = 3)]
    max_concurrent_downloads: usize,
    /// The snapshotter to unpack into (overlayfs, native, erofs).
    #[arg(long, default_value = strata::snapshots::DEFAULT_SNAPSHOTTER)]
    snapshotter: String,
    /// Only download; do not unpack (the default for platforms other than the host's).
    #[arg(long)]
    no_unpack: bool,
    /// The socket of `strata serve`: while the daemon holds the snapshotter's metadata,
    /// layers are unpacked through it.
    #[arg(long, env = "STRATA_SOCKET", default_value = strata::serve::config::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata push --plain-http 127.0.0.1:5000/app:1.0\n  \
    strata push --plain-http 127.0.0.1:5000/copy:1.0 docker.io/library/sample:1.0\n  \
    strata push --platform linux/amd64 registry.example.com/team/app:2"
)]
pub(crate) struct PushArgs {
    /// Where to push: a registry reference.
    reference: String,
    /// The local image to push (`strata image ls`); default: the same name as REFERENCE.
    local: Option<String>,
    /// Push only this platform's manifest of a multi-platform image.
    #[arg(long, value_parser = super::parse_platform)]
    platform: Option<Platform>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3)]
    max_concurrent_uploads: usize,
    /// Upload blobs in chunks of this many bytes (PATCH requests, then a closing PUT)
    /// instead of one monolithic PUT; for registries or proxies that limit request sizes.
    #[arg(long)]
    chunk_size: Option<u64>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")
}

fn short(d: &strata_formats::Digest) -> String {
    d.encoded()[..12].to_owned()
}

/// Pulls `reference` for the host platform (for commands that pull on the way).
pub(crate) fn pull_reference(
    root: &Path,
    reference: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<()> {
    let args = PullArgs {
        reference: reference.to_owned(),
        platform: None,
        max_concurrent_downloads: 3,
        snapshotter: strata::snapshots::DEFAULT_SNAPSHOTTER.to_owned(),
        no_unpack: true,
        socket: PathBuf::from(strata::serve::config::DEFAULT_SOCKET),
        registry: registry.clone(),
    };
    pull_quiet(root, &args).map(drop)
}

/// Pushes the local image `local` to `reference` (for commands that push on the way).
pub(crate) fn push_reference(
    root: &Path,
    reference: &str,
    local: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<()> {
    let args = PushArgs {
        reference: reference.to_owned(),
        local: Some(local.to_owned()),
        platform: None,
        max_concurrent_uploads: 3,
        chunk_size: None,
        registry: registry.clone(),
    };
    push_quiet(root, &args).map(drop)
}

pub(crate) fn pull(root: &Path, args: &PullArgs) -> anyhow::Result<()> {
    println!("{}", pull_quiet(root, args)?);
    Ok(())
}

/// Pulls, reporting on stderr; returns the image digest.
fn pull_quiet(root: &Path, args: &PullArgs) -> anyhow::Result<String> {
    let store = super::open_store(root)?;
    let reference: Reference = args.reference.parse()?;
    let client = args.registry.client()?;
    let reporter = Arc::new(Reporter::new());
    let kinds: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let (r, k) = (reporter.clone(), kinds.clone());
    let name = args.reference.clone();
    let progress = move |e: &PullEvent| match e {
        PullEvent::Resolved { reference, digest } => eprintln!("{reference}: resolved to {digest}"),
        PullEvent::BlobStarted {
            kind,
            digest,
            size,
            offset,
        } => {
            k.lock()
                .expect("invariant: not poisoned")
                .insert(digest.to_string(), kind);
            r.start(
                format!("{kind} {}", short(digest)),
                &digest.to_string(),
                *size,
                *offset,
            );
        }
        PullEvent::BlobProgress { digest, bytes } => r.advance(&digest.to_string(), *bytes),
        PullEvent::BlobRetry {
            digest,
            offset,
            cause,
        } => {
            let kind = k
                .lock()
                .expect("invariant: not poisoned")
                .get(&digest.to_string())
                .copied()
                .unwrap_or("blob");
            r.message(
                &digest.to_string(),
                &format!("{kind} {}", short(digest)),
                &format!("retrying from {offset}: {cause}"),
            );
        }
        PullEvent::BlobDone {
            digest,
            size,
            existed,
        } => {
            let kind = k
                .lock()
                .expect("invariant: not poisoned")
                .get(&digest.to_string())
                .copied()
                .unwrap_or("blob");
            let msg = if *existed {
                "already present".to_owned()
            } else {
                format!("done ({})", format::size(*size))
            };
            r.finish(
                &digest.to_string(),
                &format!("{kind} {}", short(digest)),
                &msg,
            );
        }
        PullEvent::Artifact { artifact_type } => eprintln!(
            "{name}: an artifact ({artifact_type}): stored in the content store, not unpacked"
        ),
        PullEvent::Unpacked(u) => {
            let how = if u.existed {
                "exists".to_owned()
            } else {
                format!("unpacked {}", format::size(u.size))
            };
            eprintln!(
                "layer {}: snapshot {} {how}",
                short(&u.layer),
                short(&u.chain_id)
            );
        }
    };
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    // Only the host's platform can run here, so only it is unpacked (as ctr does).
    let unpack = if args.no_unpack || platform != Platform::host() {
        None
    } else {
        let context = || format!("pull {}: snapshotter {}", args.reference, args.snapshotter);
        let snapshotter: Arc<dyn strata_snapshotters::Snapshotter> =
            match strata::snapshots::open_snapshotter(root, &args.snapshotter, &Default::default())
            {
                Ok(sn) => {
                    // This process holds the snapshotter alone: an unpack left active is
                    // one that was interrupted (Ctrl-C, a crash), never one in flight.
                    for key in strata::image::unpack::remove_interrupted_unpacks(&*sn)? {
                        eprintln!("removed {key:?}, the active snapshot of an interrupted unpack");
                    }
                    sn
                }
                // `strata serve` holds it: unpack through the daemon.
                Err(e) if e.kind() == strata_snapshotters::ErrorKind::Unavailable => {
                    match strata::serve::client::DaemonSnapshotter::connect(
                        &args.socket,
                        &args.snapshotter,
                    ) {
                        Ok(daemon) => Arc::new(daemon),
                        Err(daemon) => {
                            return Err(anyhow::anyhow!(
                                "{e}; and through the daemon: {daemon}; if `strata serve` \
                                 listens on another socket, name it with --socket or \
                                 STRATA_SOCKET"
                            ))
                            .with_context(context);
                        }
                    }
                }
                Err(e) => return Err(e).with_context(context),
            };
        Some(UnpackTarget {
            snapshotter,
            scratch: strata::snapshots::scratch_dir(root, &args.snapshotter),
        })
    };
    let opts = PullOptions {
        platform,
        max_concurrent_downloads: args.max_concurrent_downloads,
        progress: Some(Arc::new(progress)),
        unpack,
        ..PullOptions::default()
    };
    let start = std::time::Instant::now();
    let record = runtime()?.block_on(strata::image::pull::pull(
        &store, &client, &reference, &opts,
    ))?;
    eprintln!(
        "pulled {} in {:.1}s",
        record.name,
        start.elapsed().as_secs_f64()
    );
    Ok(record.target.digest().to_string())
}

pub(crate) fn push(root: &Path, args: &PushArgs) -> anyhow::Result<()> {
    println!("{}", push_quiet(root, args)?);
    Ok(())
}

/// Pushes, reporting on stderr; returns the pushed root digest.
fn push_quiet(root: &Path, args: &PushArgs) -> anyhow::Result<String> {
    let store = super::open_store(root)?;
    let target: Reference = args.reference.parse()?;
    let local = args.local.clone().unwrap_or_else(|| target.to_string());
    let image = strata::image::find_image(&store, &local)
        .with_context(|| format!("push {target}: local image {local:?} (see `strata image ls`)"))?;
    let client = args.registry.client_with(args.chunk_size)?;
    let reporter = Arc::new(Reporter::new());
    let r = reporter.clone();
    let progress = move |e: &PushEvent| match e {
        PushEvent::BlobStarted { digest, size } => r.start(
            format!("blob {}", short(digest)),
            &digest.to_string(),
            *size,
            0,
        ),
        PushEvent::BlobDone {
            digest,
            size,
            outcome,
        } => {
            let msg = match outcome {
                BlobOutcome::Exists => "already in the registry".to_owned(),
                BlobOutcome::Mounted => "mounted from another repository".to_owned(),
                BlobOutcome::Uploaded => format!("uploaded ({})", format::size(*size)),
            };
            r.finish(
                &digest.to_string(),
                &format!("blob {}", short(digest)),
                &msg,
            );
        }
        PushEvent::ManifestPushed { digest, reference } => {
            eprintln!("manifest {}: pushed to {reference}", short(digest))
        }
    };
    let opts = PushOptions {
        platform: args.platform.clone(),
        max_concurrent_uploads: args.max_concurrent_uploads,
        progress: Some(Arc::new(progress)),
    };
    let start = std::time::Instant::now();
    let root_desc = runtime()?.block_on(strata::image::push::push(
        &store, &client, &image, &target, &opts,
    ))?;
    eprintln!(
        "pushed {local} to {target} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(root_desc.digest().to_string())
}
