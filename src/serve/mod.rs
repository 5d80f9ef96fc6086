//! `strata serve`: the daemon containerd loads as a proxy snapshotter
//! (`[proxy_plugins.strata] type = "snapshot"`). One unix socket serves every configured
//! snapshotter; the request's `snapshotter` field (the proxy plugin's name in containerd's
//! config) picks which one answers.
//!
//! Lifecycle: the socket path is checked first (a second daemon is refused before it
//! touches any snapshotter state), then each implementation is opened once and cleaned up
//! (whatever a killed daemon left half-made is removed), then the socket
//! is bound (connectable means ready); on SIGTERM or SIGINT
//! the server stops accepting, in-flight calls get [`SHUTDOWN_GRACE`] to finish, the
//! snapshotters are closed and the socket file is removed.
//!
//! - [`config`]: the TOML configuration;
//! - [`socket`]: binding the socket (stale takeover, refusal when live);
//! - [`snapshotters`]: request names to opened snapshotters;
//! - [`service`]: the gRPC `Snapshots` service;
//! - [`errors`]: snapshotter errors to gRPC statuses;
//! - [`remote_store`]: the local-content layer provider (`[remote] local_content`);
//! - [`client`]: a running daemon's snapshotters as [`strata_snapshotters::Snapshotter`]s
//!   (the CLI's way in while the daemon holds the metadata).

pub mod client;
pub mod config;
pub mod errors;
pub mod remote_store;
pub mod service;
pub mod snapshotters;
pub mod socket;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::snapshots::v1::snapshots_server::SnapshotsServer;
use strata_snapshotters::SnapshotError;
use strata_snapshotters::remote::RemoteLayers;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::cache::ChunkCache;
use crate::metrics::{Metrics, MetricsEndpoint, MetricsError};
use crate::registry::{ClientOptions, RegistryClient};
use crate::stargz::{FetchOptions, PlanOptions, StargzLayers, StargzOptions};

use self::config::Config;
use self::remote_store::LocalContentLayers;
use self::service::{ServiceState, SnapshotService};
use self::snapshotters::{Providers, ServedSnapshotters};
use self::socket::SocketError;

/// How long in-flight calls may run on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The daemon could not start, or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration's snapshotter mapping is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// A snapshotter could not be opened.
    #[error(transparent)]
    Snapshotter(#[from] SnapshotError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The gRPC server failed.
    #[error("serve {}: {source}", socket.display())]
    Transport {
        /// The socket served.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Runs the daemon described by `config` until SIGTERM or SIGINT.
///
/// # Errors
///
/// [`ServeError`] when the socket, a snapshotter or the runtime cannot be set up, or the
/// server fails.
pub fn run(config: &Config) -> Result<(), ServeError> {
    crate::alloc::tune_for_daemon();
    let names = config.resolved_snapshotters().map_err(ServeError::Config)?;
    let metrics_address = metrics_address(config)?;
    // Refuse a live socket before touching any snapshotter state; bind only once the
    // snapshotters are open, so that a connectable socket means a ready daemon.
    socket::claim(&config.socket)?;
    let mut providers = Providers::default();
    if config.remote.local_content {
        tracing::info!(content = %config.root.join("content").display(), "remote snapshots: layers in the local content store are provided without a download");
        let layers = Arc::new(LocalContentLayers::open(&config.root)?) as Arc<dyn RemoteLayers>;
        providers.overlayfs = Some(Arc::clone(&layers));
        providers.erofs = Some(layers);
    }
    let stargz = if names.values().any(|i| i == "stargz") {
        let layers = Arc::new(open_stargz(config)?);
        layers.spawn_state_writer();
        providers.stargz = Some(Arc::clone(&layers) as Arc<dyn RemoteLayers>);
        Some(layers)
    } else {
        None
    };
    let served = ServedSnapshotters::open(
        &config.root,
        &names,
        &crate::snapshots::SnapshotterOptions {
            overlay: config.overlayfs.options(),
            erofs: config.erofs.options(),
        },
        &providers,
    )?;
    // The runtime and the signal handlers come before the socket: a SIGTERM sent as soon
    // as the socket is connectable must stop the daemon cleanly, not kill it by default.
    let setup = |what| move |source| ServeError::Setup { what, source };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .build()
        .map_err(setup("start the async runtime"))
        .and_then(|runtime| {
            let signals = {
                let _entered = runtime.enter();
                Signals::install()?
            };
            Ok((runtime, signals))
        }) {
        Ok(started) => started,
        Err(e) => {
            served.close();
            return Err(e);
        }
    };
    let (runtime, signals) = runtime;
    let listener = match socket::bind(&config.socket) {
        Ok(listener) => listener,
        Err(e) => {
            served.close();
            return Err(e.into());
        }
    };
    let bound = SocketIdentity::of(&config.socket);
    let mut state = ServiceState::new(served);
    if metrics_address.is_some() {
        let metrics = Arc::new(Metrics::new());
        if let Some(stargz) = &stargz {
            metrics.add_source(Arc::clone(stargz) as Arc<dyn crate::metrics::MetricsSource>);
        }
        state = state.with_metrics(metrics);
    }
    let state = Arc::new(state);
    let result = runtime.block_on(serve(
        config,
        listener,
        Arc::clone(&state),
        metrics_address,
        signals,
    ));
    // Calls still running on blocking threads finish (within the grace) before close.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    state.snapshotters().close();
    bound.remove_if_ours(&config.socket);
    tracing::info!(socket = %config.socket.display(), "stopped");
    result
}

/// The daemon's shutdown signals, installed before its socket is bound.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the SIGTERM and SIGINT handlers (inside a runtime context).
    fn install() -> Result<Signals, ServeError> {
        let setup = |what| move |source| ServeError::Setup { what, source };
        Ok(Signals {
            terminate: signal(SignalKind::terminate())
                .map_err(setup("install the SIGTERM handler"))?,
            interrupt: signal(SignalKind::interrupt())
                .map_err(setup("install the SIGINT handler"))?,
        })
    }
}

async fn serve(
    config: &Config,
    listener: std::os::unix::net::UnixListener,
    state: Arc<ServiceState>,
    metrics_address: Option<SocketAddr>,
    signals: Signals,
) -> Result<(), ServeError> {
    let setup = |what| move |source| ServeError::Setup { what, source };
    let Signals {
        mut terminate,
        mut interrupt,
    } = signals;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(setup("register the socket"))?;
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let which = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "shutting down: no new calls, waiting for in-flight ones"
        );
        let _ = stopping_tx.send(true);
    };
    if let (Some(addr), Some(metrics)) = (metrics_address, state.metrics()) {
        let endpoint = MetricsEndpoint::bind(addr).await?;
        tracing::info!(address = %endpoint.local_addr(), "metrics endpoint: GET /metrics");
        let mut stopping = stopping_rx.clone();
        tokio::spawn(endpoint.serve(Arc::clone(metrics), async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }));
    }
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        snapshotters = ?state.snapshotters().names().collect::<Vec<_>>(),
        "serving"
    );
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        SnapshotsServer::new(SnapshotService::new(state)),
        UnixListenerStream::new(listener),
        shutdown,
    );
    let grace = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        let started = Instant::now();
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        started.elapsed()
    };
    tokio::select! {
        result = server => result.map_err(|source| ServeError::Transport { socket: config.socket.clone(), source }),
        waited = grace => {
            tracing::warn!(?waited, "in-flight calls did not finish in time; stopping anyway");
            Ok(())
        }
    }
}

/// The lazy eStargz provider of the `stargz` implementation: registry hosts from
/// `config_path`, chunks cached under `<root>/cache/stargz`, records under the
/// snapshotter's root, descriptors kept by the fd holder at `<root>/fd-holder.sock`.
fn open_stargz(config: &Config) -> Result<StargzLayers, ServeError> {
    let hosts_dir = config
        .config_path
        .is_dir()
        .then(|| config.config_path.clone());
    let client = RegistryClient::new(ClientOptions {
        hosts_dir,
        ..ClientOptions::default()
    })
    .map_err(|e| ServeError::Config(format!("stargz: registry client: {e}")))?;
    let warm = client.clone();
    let _ = std::thread::Builder::new()
        .name("registry-tls".into())
        .spawn(move || {
            if let Err(e) = warm.build_default_http() {
                tracing::warn!(error = %e, "stargz: registry client");
            }
        });
    let s = &config.stargz;
    let cache = if s.cache_max_size == 0 {
        None
    } else {
        let dir = config.root.join("cache").join("stargz");
        let cache =
            ChunkCache::open(&dir, s.cache_max_size).map_err(|source| ServeError::Setup {
                what: "open the stargz chunk cache",
                source,
            })?;
        Some(Arc::new(cache))
    };
    let executable = std::env::current_exe().map_err(|source| ServeError::Setup {
        what: "find the strata executable",
        source,
    })?;
    let options = StargzOptions {
        fuse_threads: s.fuse_threads,
        passthrough: s.passthrough,
        fd_holder: s.fd_holder.then(|| config.root.join("fd-holder.sock")),
        executable,
        prefetch: s.prefetch,
        fetch: FetchOptions {
            plan: PlanOptions {
                file_window: s.fetch_window.max(64 << 10),
                bulk_request: s.prefetch_request.max(64 << 10),
                ..PlanOptions::default()
            },
            background: s.background_fetch,
            background_rate: s.background_rate,
            ..FetchOptions::default()
        },
        ..StargzOptions::default()
    };
    let state = crate::snapshots::snapshotter_root(&config.root, "stargz").join("layers");
    Ok(StargzLayers::open(&state, client, cache, options)?)
}

/// The configured metrics endpoint address, or `None` when `metrics_address` is empty (off).
fn metrics_address(config: &Config) -> Result<Option<SocketAddr>, ServeError> {
    let value = config.metrics_address.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| {
        ServeError::Config(format!(
            "metrics_address {value:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:9102)"
        ))
    })
}

/// The socket file we bound, so that shutdown removes it only if it is still ours.
#[derive(Debug, Clone, Copy)]
struct SocketIdentity(Option<(u64, u64)>);

impl SocketIdentity {
    fn of(path: &Path) -> Self {
        Self(
            std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino())),
        )
    }

    fn remove_if_ours(self, path: &Path) {
        if self.0.is_some()
            && Self::of(path).0 == self.0
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(socket = %path.display(), error = %e, "remove socket failed");
        }
    }
}
