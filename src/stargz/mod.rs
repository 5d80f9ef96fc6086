//! The `stargz` snapshotter's layer provider: eStargz layers mounted lazily from their
//! registry instead of downloaded and unpacked.
//!
//! The `stargz` implementation of `strata serve` is the overlayfs snapshotter with this
//! provider behind the remote-snapshot protocol ([`strata_snapshotters::remote`]). For an
//! unpack Prepare whose labels name the image and the layer (`ctr-remote image rpull`'s
//! `remote/stargz.*` or CRI's `cri.*` labels), the provider looks the layer up in the
//! image's manifest; a layer with the TOC-digest annotation is opened (footer and TOC
//! fetched with range requests, checked against the annotation) and served by a FUSE
//! layer filesystem mounted on the new snapshot's `fs` directory, which then is an overlay
//! lower of the container's rootfs. File data is fetched on first read, verified chunk by
//! chunk, and kept in the chunk cache. A layer without the annotation is declined: the
//! Prepare goes on as a normal one and containerd pulls and unpacks the layer (logged and
//! counted in `strata_stargz_layers_total{outcome="fallback"}`).
//!
//! At the first Prepare of an image, the footers and TOCs of all its eStargz layers are
//! fetched in parallel, so the following Prepares find theirs ready. For images `strata
//! convert` wrote, that first Prepare's labels already carry its layer's size, TOC offset
//! and prefetch end (containerd passes `containerd.io/snapshot/` annotations on), so that
//! layer's TOC and prioritized files are requested at once, alongside the manifest.
//!
//! **Restarts.** Each mounted layer's record and compressed TOC are saved under
//! `<snapshotter root>/layers/`, and a duplicate of its `/dev/fuse` descriptor is handed to
//! the fd holder ([`crate::fdstore`]), a small process that outlives `strata serve`. While
//! the daemon is down, reads of the mounted layers wait in the kernel (a container stalls;
//! it does not see `ENOTCONN`). At start, the restarted daemon takes the descriptors back
//! and resumes serving the same connections from the saved TOCs, without the registry;
//! layers whose mount is gone (a reboot) are mounted again, lazily. A saved record must
//! agree with the snapshot's labels (layer and TOC digest, where they carry them), and a
//! saved TOC is hashed against the record's TOC digest (the layer's annotation at the
//! first Prepare) before it is parsed; a TOC that is missing, torn or fails is fetched
//! again from the registry and saved anew, never used.

mod ahead;
pub mod fetch;
mod hints;
mod images;
pub mod plan;
mod record;
pub mod stack;
mod tail;
mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use strata_formats::Digest;
use strata_fuse::{
    ChunkSource, EstargzChunkSource, FuseServer, InitState, LayerFs, LayerTree, ServeOptions,
};
use strata_snapshotters::remote::{LayerRequest, LayerTarget, Provision, RemoteLayers};
use strata_snapshotters::{Labels, SnapshotError, Usage};

pub use self::fetch::{FetchOptions, LayerFetch};
pub use self::images::{ImageLayer, image_layers};
pub use self::plan::PlanOptions;
pub use self::record::{LayerRecord, RecordDir};
pub use self::tail::LayerTail;
pub use self::window::WindowFetcher;

use self::ahead::Images;
use self::fetch::{Activity, BackgroundFetch, EarlyStream, FileSink};
use self::hints::Hints;

use crate::cache::ChunkCache;
use crate::fdstore::FdStore;
use crate::image::platform::Platform;
use crate::registry::range::{HttpRangeFetcher, RangeFetcher, RangeOptions};
use crate::registry::{Reference, RegistryClient};

/// The provider's name in log lines.
pub const STARGZ: &str = "stargz";

/// How the provider serves layers.
#[derive(Debug, Clone)]
pub struct StargzOptions {
    /// FUSE threads per mounted layer.
    pub fuse_threads: usize,
    /// Negotiate FUSE passthrough for files held whole in the cache.
    pub passthrough: bool,
    /// The platform picked from multi-platform images.
    pub platform: Platform,
    /// The fd holder's socket; `None`: no holder (mounts die with the daemon).
    pub fd_holder: Option<PathBuf>,
    /// The `strata` executable that runs the fd holder.
    pub executable: PathBuf,
    /// Fetch the prioritized files (`[0, landmark)`) of each layer at mount.
    pub prefetch: bool,
    /// How chunks are fetched (the fetch plan's tuning, background fetch).
    pub fetch: FetchOptions,
}

impl Default for StargzOptions {
    fn default() -> Self {
        Self {
            fuse_threads: 2,
            passthrough: false,
            platform: Platform::host(),
            fd_holder: None,
            executable: PathBuf::from("strata"),
            prefetch: true,
            fetch: FetchOptions::default(),
        }
    }
}

/// What is saved with each descriptor in the fd holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldMeta {
    init: InitState,
    /// The kernel's connection id (the mount's device minor), to recognise the mount.
    connection: Option<u32>,
}

/// A layer being served.
struct LayerMount {
    server: FuseServer,
    fetch: Option<Arc<LayerFetch>>,
    layer: Digest,
    image_ref: String,
    size: u64,
    fetcher: Arc<dyn RangeFetcher>,
}

/// A layer opened for serving: its tree and chunk source.
struct OpenedLayer {
    fs: Arc<LayerFs>,
    fetcher: Arc<dyn RangeFetcher>,
    fetch: Option<Arc<LayerFetch>>,
}

/// Outcome counters, for metrics.
#[derive(Debug, Default)]
struct Outcomes {
    lazy: AtomicU64,
    fallback: AtomicU64,
    failed: AtomicU64,
    resumed: AtomicU64,
    remounted: AtomicU64,
}

/// Per-layer state, for metrics and `strata snapshot info` (the daemon's `state.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerState {
    /// The layer blob.
    pub layer: String,
    /// The image it is fetched through.
    pub image: String,
    /// The blob's size.
    pub size: u64,
    /// Bytes fetched from the registry so far (footer, TOC, chunks).
    pub fetched_bytes: u64,
    /// Range requests sent.
    pub requests: u64,
    /// Requests repeated after a broken, stalled or short body.
    pub retries: u64,
    /// How much of the blob has been fetched, percent.
    pub percent: f64,
    /// Fetches that failed (each an EIO to a reader, or a background fetch error).
    pub errors: u64,
    /// Whether every chunk of the layer is local.
    pub complete: bool,
}

/// The state file: every mounted layer by snapshot (chainID).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct StateFile {
    layers: BTreeMap<String, LayerState>,
}

/// The state file's name in the records directory.
pub const STATE_FILE: &str = "state.json";

/// The lazy eStargz layer provider.
pub struct StargzLayers {
    client: RegistryClient,
    runtime: ManuallyDrop<tokio::runtime::Runtime>,
    records: RecordDir,
    cache: Option<Arc<ChunkCache>>,
    options: StargzOptions,
    range_options: RangeOptions,
    /// The fd holder, once connected.
    fdstore: Mutex<Option<FdStore>>,
    /// The images whose layers are pulled or served: manifests, layers opened ahead,
    /// layers served.
    images: Mutex<Images>,
    /// What every layer's reads and requests are doing (the background fetch waits).
    activity: Arc<Activity>,
    /// The rest of every layer, while nothing else is fetched.
    background: Option<Arc<BackgroundFetch>>,
    /// Content-aware prefetch (an ELF file's libraries).
    hints: Arc<Hints>,
    /// ChainIDs being provided right now.
    pending: Mutex<HashSet<String>>,
    /// ChainID → the layer served.
    mounts: Mutex<BTreeMap<String, LayerMount>>,
    /// Descriptors the holder had at start, until restored.
    held: Mutex<HashMap<String, (std::os::fd::OwnedFd, HeldMeta)>>,
    /// Snapshots handed to [`RemoteLayers::restore`] (their records stay).
    seen: Mutex<HashSet<String>>,
    outcomes: Outcomes,
}

impl std::fmt::Debug for StargzLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StargzLayers")
            .field("records", &self.records)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn internal(context: impl std::fmt::Display, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::internal(format!("{context}: {e}"))
}

impl StargzLayers {
    /// A provider keeping its records under `state`, fetching through `client`, caching
    /// chunks in `cache`. Connects to (or starts) the fd holder when configured and takes
    /// the descriptors it holds, for [`RemoteLayers::restore`].
    ///
    /// # Errors
    ///
    /// Internal when the state directory, the runtime or the fd holder cannot be set up.
    pub fn open(
        state: &Path,
        client: RegistryClient,
        cache: Option<Arc<ChunkCache>>,
        options: StargzOptions,
    ) -> Result<StargzLayers, SnapshotError> {
        let records = RecordDir::open(state)
            .map_err(|e| internal(format_args!("stargz: create {}", state.display()), e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("strata-stargz")
            .build()
            .map_err(|e| internal("stargz: start the fetch runtime", e))?;
        // Take back what a previous daemon left with the holder; a holder is started only
        // when the first layer is mounted.
        let mut held = HashMap::new();
        let fdstore = match &options.fd_holder {
            Some(socket) if socket.exists() => match FdStore::connect(socket) {
                Ok(store) => {
                    let entries = store.take_all().map_err(|e| {
                        internal(format_args!("stargz: fd holder {}", socket.display()), e)
                    })?;
                    for entry in entries {
                        match serde_json::from_slice::<HeldMeta>(&entry.meta) {
                            Ok(meta) => {
                                held.insert(entry.key, (entry.fd, meta));
                            }
                            Err(e) => {
                                tracing::warn!(key = entry.key, error = %e, "fd holder: unreadable entry dropped")
                            }
                        }
                    }
                    tracing::info!(socket = %socket.display(), held = held.len(), "fd holder: connected");
                    Some(store)
                }
                Err(e) => {
                    tracing::info!(socket = %socket.display(), error = %e, "fd holder: none running (mounts of an earlier daemon are mounted again)");
                    None
                }
            },
            _ => None,
        };
        let activity = Arc::new(Activity::default());
        let background = (options.fetch.background && cache.is_some())
            .then(|| BackgroundFetch::start(Arc::clone(&activity), options.fetch.clone()));
        Ok(StargzLayers {
            client,
            runtime: ManuallyDrop::new(runtime),
            records,
            cache,
            options,
            range_options: RangeOptions::default(),
            fdstore: Mutex::new(fdstore),
            images: Mutex::default(),
            activity,
            background,
            hints: Hints::start(),
            pending: Mutex::default(),
            mounts: Mutex::default(),
            held: Mutex::new(held),
            seen: Mutex::default(),
            outcomes: Outcomes::default(),
        })
    }

    fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            threads: self.options.fuse_threads.max(1),
            passthrough: self.options.passthrough,
            ..ServeOptions::default()
        }
    }

    /// The layers of `image_ref`, from the registry the first time.
    fn layers_of(
        &self,
        reference: &Reference,
        image_ref: &str,
    ) -> Result<Arc<Vec<ImageLayer>>, String> {
        if let Some(found) = self.images().layers.get(image_ref) {
            return Ok(Arc::clone(found));
        }
        let layers = Arc::new(self.runtime.block_on(image_layers(
            &self.client,
            reference,
            &self.options.platform,
        ))?);
        // The manifest request authenticated and connected: range requests need no warm-up.
        self.range_options.hosts.mark_warm(reference.registry());
        self.images()
            .layers
            .insert(image_ref.to_owned(), Arc::clone(&layers));
        Ok(layers)
    }

    fn fetcher(&self, reference: &Reference, digest: &Digest, size: u64) -> Arc<dyn RangeFetcher> {
        Arc::new(HttpRangeFetcher::new(
            self.client.clone(),
            reference.clone(),
            digest.clone(),
            size,
            self.range_options.clone(),
        ))
    }

    /// Opens a layer from `tail` (its footer and compressed TOC): no registry request.
    /// `early`: its prioritized range, requested before the TOC was in.
    fn open_layer(
        &self,
        layer: &str,
        size: u64,
        toc: &Digest,
        tail: LayerTail,
        fetcher: Arc<dyn RangeFetcher>,
        early: Option<EarlyStream>,
    ) -> Result<OpenedLayer, String> {
        let estargz = Arc::new(
            tail.open(size, toc, Arc::clone(&fetcher), self.runtime.handle())?
                .without_toc(),
        );
        let index = estargz.index().layer_index().map_err(|e| e.to_string())?;
        let tree = LayerTree::build(layer.to_owned(), index);
        let (source, fetch): (Arc<dyn ChunkSource>, _) = match &self.cache {
            Some(cache) => {
                let fetch = LayerFetch::new(
                    layer.to_owned(),
                    estargz,
                    Arc::clone(&fetcher),
                    Arc::clone(cache),
                    self.runtime.handle().clone(),
                    Arc::clone(&self.activity),
                    self.options.fetch.plan.clone(),
                    early,
                );
                let hints: Arc<dyn FileSink> = Arc::clone(&self.hints) as Arc<dyn FileSink>;
                fetch.set_sink(Arc::downgrade(&hints));
                (Arc::clone(&fetch) as Arc<dyn ChunkSource>, Some(fetch))
            }
            None => (Arc::new(EstargzChunkSource::new(estargz)), None),
        };
        Ok(OpenedLayer {
            fs: Arc::new(LayerFs::new(tree, source)),
            fetcher,
            fetch,
        })
    }

    /// Hands a mounted layer to the background fetch.
    fn start_background(&self, opened: &OpenedLayer) {
        if let (Some(fetch), Some(background)) = (&opened.fetch, &self.background) {
            background.add(fetch);
        }
    }

    /// Hands the holder a duplicate of `server`'s descriptor under `chain_id`, starting
    /// the holder if none runs.
    fn hold(&self, chain_id: &str, server: &FuseServer) {
        let Some(socket) = &self.options.fd_holder else {
            return;
        };
        let mut store = self.fdstore.lock().unwrap_or_else(PoisonError::into_inner);
        if store.is_none() {
            match FdStore::connect_or_spawn(socket, &self.options.executable) {
                Ok(s) => *store = Some(s),
                Err(e) => {
                    tracing::warn!(socket = %socket.display(), error = %e, "fd holder: cannot start it; mounted layers will not survive a restart of strata serve");
                    return;
                }
            }
        }
        let meta = HeldMeta {
            init: server.init_state(),
            connection: server.connection_id(),
        };
        let meta = serde_json::to_vec(&meta).unwrap_or_default();
        if let Some(s) = store.as_ref()
            && let Err(e) = s.put(chain_id, server.device(), &meta)
        {
            tracing::warn!(snapshot = chain_id, error = %e, "fd holder: the layer's mount will not survive a restart of strata serve");
        }
    }

    fn unhold(&self, chain_id: &str) {
        if let Some(store) = self
            .fdstore
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && let Err(e) = store.remove(chain_id)
        {
            tracing::warn!(snapshot = chain_id, error = %e, "fd holder: dropping a layer's descriptor");
        }
    }

    fn provide_layer(
        &self,
        request: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        let declined = |reason: String| Ok(Provision::Declined(reason));
        let (Some(image_ref), Some(layer_text)) = (
            request.image_ref.as_deref(),
            request.layer_digest.as_deref(),
        ) else {
            return declined(
                "the Prepare names no image and layer (no remote/stargz.* or cri.* labels)".into(),
            );
        };
        let Ok(layer_digest) = layer_text.parse::<Digest>() else {
            return declined(format!("layer digest {layer_text:?} is not a digest"));
        };
        if self.records.record_path(&request.chain_id).is_none() {
            return declined(format!("chainID {:?} is not a digest", request.chain_id));
        }
        let context = format!("layer {layer_digest} of {image_ref}");
        let reference: Reference = image_ref.parse().map_err(|e| internal(&context, e))?;
        self.start_from_labels(
            &reference,
            image_ref,
            &layer_digest,
            &request.annotations,
            &request.image_layers,
        );
        let layers = self.layers_of(&reference, image_ref).map_err(|e| {
            self.drop_started(&layer_digest);
            internal(&context, e)
        })?;
        let Some(layer) = layers.iter().find(|l| l.digest == layer_digest) else {
            self.drop_started(&layer_digest);
            return declined(format!(
                "{context}: the image's manifest for {} has no such layer",
                self.options.platform
            ));
        };
        let Some(toc_digest) = &layer.toc_digest else {
            self.drop_started(&layer_digest);
            return declined(format!(
                "{context} is not eStargz (no TOC digest annotation): pulled and unpacked instead"
            ));
        };
        self.open_ahead(&reference, &layers);
        let (opened, tail) = match self.take_ahead(layer) {
            Some(opened) => opened,
            None => {
                let fetcher = self.fetcher(&reference, &layer_digest, layer.size);
                let tail = self.runtime.block_on(LayerTail::fetch(
                    fetcher.as_ref(),
                    layer.size,
                    layer.toc_offset,
                ));
                tail.and_then(|tail| {
                    Ok((
                        self.open_layer(
                            layer_text,
                            layer.size,
                            toc_digest,
                            tail.clone(),
                            fetcher,
                            None,
                        )?,
                        tail,
                    ))
                })
            }
        }
        .map_err(|e| internal(&context, e))?;
        let record = LayerRecord {
            chain_id: request.chain_id.clone(),
            image_ref: image_ref.to_owned(),
            layer_digest: layer_digest.to_string(),
            size: layer.size,
            toc_digest: toc_digest.to_string(),
        };
        let tail_path = self
            .records
            .tail_path(&record.chain_id)
            .expect("checked above");
        tail.save(&tail_path)
            .map_err(|e| internal(format_args!("{context}: save {}", tail_path.display()), e))?;
        self.records
            .save(&record)
            .map_err(|e| internal(format_args!("{context}: save its record"), e))?;
        let server = FuseServer::mount(Arc::clone(&opened.fs), target.fs, &self.serve_options())
            .map_err(|e| {
                self.records.remove(&record.chain_id);
                internal(
                    format_args!("{context}: mount on {}", target.fs.display()),
                    e,
                )
            })?;
        self.hold(&record.chain_id, &server);
        self.start_background(&opened);
        if let Some(fetch) = &opened.fetch {
            // Hints resolve paths in this layer and the ones under it in the image.
            let mut images = self.images();
            fetch.set_lower(images.lower(image_ref, &layer_digest));
            images
                .served
                .insert(layer_digest.clone(), Arc::downgrade(fetch));
        }
        let tree = opened.fs.tree();
        let usage = Usage {
            size: i64::try_from(tree.total_file_bytes()).unwrap_or(i64::MAX),
            inodes: i64::try_from(tree.inode_count()).unwrap_or(i64::MAX),
        };
        tracing::info!(snapshot = record.chain_id, layer = %layer_digest, image = image_ref, mountpoint = %target.fs.display(), "stargz: layer mounted lazily");
        self.mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                record.chain_id.clone(),
                LayerMount {
                    server,
                    fetch: opened.fetch,
                    layer: layer_digest,
                    image_ref: record.image_ref,
                    size: record.size,
                    fetcher: opened.fetcher,
                },
            );
        Ok(Provision::Mounted { usage })
    }

    fn restore_layer(
        &self,
        name: &str,
        labels: &Labels,
        fs: &Path,
    ) -> Result<&'static str, String> {
        let record = self
            .records
            .load(name)
            .map_err(|e| format!("no saved record: {e}"))?;
        check_record(&record, labels)?;
        let tail_path = self.records.tail_path(name).ok_or("not a chainID")?;
        let reference: Reference = record
            .image_ref
            .parse()
            .map_err(|e| format!("image {}: {e}", record.image_ref))?;
        let digest: Digest = record
            .layer_digest
            .parse()
            .map_err(|e| format!("layer {}: {e}", record.layer_digest))?;
        let fetcher = self.fetcher(&reference, &digest, record.size);
        let toc: Digest = record
            .toc_digest
            .parse()
            .map_err(|e| format!("TOC digest {}: {e}", record.toc_digest))?;
        let open = |tail: LayerTail| {
            self.open_layer(
                &record.layer_digest,
                record.size,
                &toc,
                tail,
                Arc::clone(&fetcher),
                None,
            )
        };
        let fetch_again = || {
            self.runtime
                .block_on(LayerTail::fetch(fetcher.as_ref(), record.size, None))
        };
        let (opened, fetched) =
            tail::open_saved(LayerTail::load(&tail_path, record.size), open, fetch_again)?;
        if let Some(tail) = fetched {
            tracing::warn!(snapshot = name, path = %tail_path.display(), "stargz: the saved TOC was unusable; fetched it again from the registry");
            if let Err(e) = tail.save(&tail_path) {
                tracing::warn!(snapshot = name, path = %tail_path.display(), error = %e, "stargz: saving the TOC fetched again");
            }
        }
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        let live = fuse_connection_at(fs);
        let (server, how) = match (held, live) {
            (Some((fd, meta)), Some(connection))
                if meta.connection.is_none_or(|c| c == connection) =>
            {
                let server = FuseServer::resume(
                    Arc::clone(&opened.fs),
                    fd,
                    meta.init,
                    Some(fs.to_path_buf()),
                    &self.serve_options(),
                )
                .map_err(|e| format!("resume serving the mount on {}: {e}", fs.display()))?;
                self.outcomes.resumed.fetch_add(1, Ordering::Relaxed);
                (server, "resumed")
            }
            (held, live) => {
                drop(held);
                if live.is_some() || is_mountpoint(fs) {
                    // A mount whose connection is gone (nobody holds it): answer ENOTCONN no more.
                    let _ = strata_snapshotters::mount::unmount_all(fs, true);
                }
                let server = FuseServer::mount(Arc::clone(&opened.fs), fs, &self.serve_options())
                    .map_err(|e| format!("mount on {}: {e}", fs.display()))?;
                self.hold(name, &server);
                self.outcomes.remounted.fetch_add(1, Ordering::Relaxed);
                (server, "mounted again")
            }
        };
        if let Some(fetch) = &opened.fetch
            && self.options.prefetch
        {
            fetch.start_prefetch();
        }
        self.start_background(&opened);
        if let Some(fetch) = &opened.fetch {
            self.images()
                .served
                .insert(digest.clone(), Arc::downgrade(fetch));
        }
        self.mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.to_owned(),
                LayerMount {
                    server,
                    fetch: opened.fetch,
                    layer: digest,
                    image_ref: record.image_ref,
                    size: record.size,
                    fetcher: opened.fetcher,
                },
            );
        Ok(how)
    }

    /// The layers served now, by snapshot, with what each has fetched.
    pub fn layer_states(&self) -> BTreeMap<String, LayerState> {
        self.mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, m)| {
                let fetched = m.fetcher.stats();
                let state = LayerState {
                    layer: m.layer.to_string(),
                    image: m.image_ref.clone(),
                    size: m.size,
                    fetched_bytes: fetched.bytes,
                    requests: fetched.requests,
                    retries: fetched.retries,
                    percent: match &m.fetch {
                        Some(c) if c.complete() => 100.0,
                        _ if m.size == 0 => 100.0,
                        _ => (fetched.bytes as f64 * 100.0 / m.size as f64).min(100.0),
                    },
                    errors: m.fetch.as_ref().map_or(0, |c| c.errors()),
                    complete: m.fetch.as_ref().is_some_and(|c| c.complete()),
                };
                (name.clone(), state)
            })
            .collect()
    }

    /// Starts a thread that keeps `state.json` in the records directory current (every
    /// 250 ms, when something changed) for `strata snapshot info`; it ends with the
    /// provider.
    pub fn spawn_state_writer(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let path = self.records.dir().join(STATE_FILE);
        let spawned = std::thread::Builder::new().name("stargz-state".into()).spawn(move || {
            let mut last: Option<StateFile> = None;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let Some(layers) = weak.upgrade() else {
                    return;
                };
                let state = StateFile { layers: layers.layer_states() };
                drop(layers);
                if last.as_ref() == Some(&state) {
                    continue;
                }
                let tmp = path.with_extension("json.tmp");
                let written = serde_json::to_vec_pretty(&state)
                    .map_err(std::io::Error::other)
                    .and_then(|json| std::fs::write(&tmp, json))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                match written {
                    Ok(()) => last = Some(state),
                    Err(e) => tracing::debug!(path = %path.display(), error = %e, "stargz: writing the state file"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "stargz: cannot start the state file writer");
        }
    }

    /// Prometheus text for the provider: outcomes, per-layer fetch state, cache.
    fn write_metrics(&self, out: &mut String) {
        let o = &self.outcomes;
        let _ = writeln!(
            out,
            "# HELP strata_stargz_layers_total Unpack Prepares of the stargz snapshotter by outcome: lazy (mounted from the registry), fallback (not eStargz or not labelled: pulled and unpacked), failed (error; pulled and unpacked)."
        );
        let _ = writeln!(out, "# TYPE strata_stargz_layers_total counter");
        for (outcome, c) in [
            ("lazy", &o.lazy),
            ("fallback", &o.fallback),
            ("failed", &o.failed),
        ] {
            let _ = writeln!(
                out,
                "strata_stargz_layers_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_stargz_restored_layers_total Layers brought back at start: resumed (the mount survived) or remounted."
        );
        let _ = writeln!(out, "# TYPE strata_stargz_restored_layers_total counter");
        for (how, c) in [("resumed", &o.resumed), ("remounted", &o.remounted)] {
            let _ = writeln!(
                out,
                "strata_stargz_restored_layers_total{{how=\"{how}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let states = self.layer_states();
        let _ = writeln!(
            out,
            "# HELP strata_stargz_mounted_layers Layers mounted lazily now."
        );
        let _ = writeln!(out, "# TYPE strata_stargz_mounted_layers gauge");
        let _ = writeln!(out, "strata_stargz_mounted_layers {}", states.len());
        type Gauge = (&'static str, &'static str, fn(&LayerState) -> f64);
        let gauges: [Gauge; 6] = [
            (
                "strata_stargz_layer_fetched_bytes",
                "Bytes fetched from the registry for the layer.",
                |s| s.fetched_bytes as f64,
            ),
            (
                "strata_stargz_layer_fetch_requests",
                "Range requests sent for the layer.",
                |s| s.requests as f64,
            ),
            (
                "strata_stargz_layer_fetch_retries",
                "Requests repeated after a broken, stalled or short body.",
                |s| s.retries as f64,
            ),
            (
                "strata_stargz_layer_fetch_errors",
                "Chunk fetches of the layer that failed.",
                |s| s.errors as f64,
            ),
            (
                "strata_stargz_layer_fetched_ratio",
                "How much of the layer is local (0 to 1).",
                |s| s.percent / 100.0,
            ),
            (
                "strata_stargz_layer_size_bytes",
                "The layer blob's compressed size.",
                |s| s.size as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (snapshot, s) in &states {
                let _ = writeln!(
                    out,
                    "{name}{{snapshot=\"{snapshot}\",layer=\"{}\"}} {}",
                    s.layer,
                    value(s)
                );
            }
        }
        if let Some(cache) = &self.cache {
            let c = cache.stats();
            let _ = writeln!(
                out,
                "# HELP strata_chunk_cache_bytes Bytes of decompressed chunks in the cache."
            );
            let _ = writeln!(out, "# TYPE strata_chunk_cache_bytes gauge");
            let _ = writeln!(out, "strata_chunk_cache_bytes {}", c.bytes);
            let _ = writeln!(
                out,
                "# HELP strata_chunk_cache_requests_total Chunk cache lookups by result."
            );
            let _ = writeln!(out, "# TYPE strata_chunk_cache_requests_total counter");
            let _ = writeln!(
                out,
                "strata_chunk_cache_requests_total{{result=\"hit\"}} {}",
                c.hits
            );
            let _ = writeln!(
                out,
                "strata_chunk_cache_requests_total{{result=\"miss\"}} {}",
                c.misses
            );
            let _ = writeln!(
                out,
                "# HELP strata_chunk_cache_evictions_total Chunks evicted to stay within the size bound."
            );
            let _ = writeln!(out, "# TYPE strata_chunk_cache_evictions_total counter");
            let _ = writeln!(out, "strata_chunk_cache_evictions_total {}", c.evictions);
        }
    }

    /// Stops serving every layer but leaves the connections up (the fd holder keeps
    /// them): for a daemon shutting down that will be started again.
    pub fn detach_all(&self) {
        let mounts =
            std::mem::take(&mut *self.mounts.lock().unwrap_or_else(PoisonError::into_inner));
        for (name, m) in mounts {
            if let Some(fetch) = &m.fetch {
                fetch.stop();
            }
            if self
                .fdstore
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
            {
                // Nobody keeps the connection: unmount rather than leave a dead mount.
                if let Err(e) = m.server.unmount() {
                    tracing::warn!(snapshot = name, error = %e, "stargz: unmounting a layer at shutdown");
                }
                continue;
            }
            if let Err(e) = m.server.stop() {
                tracing::warn!(snapshot = name, error = %e, "stargz: stopping a layer's server at shutdown");
            }
        }
    }
}

impl Drop for StargzLayers {
    fn drop(&mut self) {
        if let Some(background) = &self.background {
            background.stop();
        }
        self.detach_all();
        // SAFETY: dropped once, here; nothing uses the runtime afterwards.
        let runtime = unsafe { ManuallyDrop::take(&mut self.runtime) };
        // Allowed from any context, unlike dropping a runtime inside another one.
        runtime.shutdown_background();
    }
}

impl crate::metrics::MetricsSource for StargzLayers {
    fn render_metrics(&self, out: &mut String) {
        self.write_metrics(out);
    }
}

impl RemoteLayers for StargzLayers {
    fn name(&self) -> &str {
        STARGZ
    }

    fn provide(
        &self,
        request: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        if !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.chain_id.clone())
        {
            self.outcomes.fallback.fetch_add(1, Ordering::Relaxed);
            return Ok(Provision::Declined(format!(
                "{} is being provided by a concurrent prepare",
                request.chain_id
            )));
        }
        let result = self.provide_layer(request, target);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&request.chain_id);
        let counter = match &result {
            Ok(Provision::Mounted { .. } | Provision::Provided) => &self.outcomes.lazy,
            Ok(Provision::Declined(_)) => &self.outcomes.fallback,
            Err(_) => &self.outcomes.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(Provision::Declined(reason)) = &result {
            tracing::warn!(
                snapshot = request.chain_id,
                reason,
                "stargz: not lazy: the layer is pulled and unpacked"
            );
        }
        result
    }

    fn release(&self, name: &str, fs: &Path) -> Result<(), SnapshotError> {
        let mount = self
            .mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.unhold(name);
        self.records.remove(name);
        if let Some(fetch) = mount.as_ref().and_then(|m| m.fetch.as_ref()) {
            fetch.stop();
        }
        match mount {
            Some(m) => m
                .server
                .unmount_at(fs)
                .map_err(|e| internal(format_args!("stargz: unmount {}", fs.display()), e)),
            None if is_mountpoint(fs) => strata_snapshotters::mount::unmount_all(fs, true)
                .map_err(|e| internal(format_args!("stargz: unmount {}", fs.display()), e)),
            None => Ok(()),
        }
    }

    fn restore(&self, name: &str, labels: &Labels, fs: &Path) -> Result<(), SnapshotError> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        match self.restore_layer(name, labels, fs) {
            Ok(how) => {
                tracing::info!(snapshot = name, mountpoint = %fs.display(), "stargz: layer {how}");
                Ok(())
            }
            Err(e) => Err(internal(
                format_args!("stargz: restore {name} on {}", fs.display()),
                e,
            )),
        }
    }

    fn restored(&self) {
        let leftover: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(k, _)| k)
            .collect();
        for key in leftover {
            self.unhold(&key);
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        for chain_id in self.records.chain_ids() {
            if !seen.contains(&chain_id) {
                self.records.remove(&chain_id);
            }
        }
    }
}

/// A saved record must agree with what the snapshot's own labels (in the snapshotter's
/// metadata) say of its layer, where they say it: the layer digest and the TOC digest the
/// saved TOC is checked against.
fn check_record(record: &LayerRecord, labels: &Labels) -> Result<(), String> {
    let Some(request) = LayerRequest::from_labels(labels) else {
        return Ok(());
    };
    if let Some(layer) = request.layer_digest
        && layer != record.layer_digest
    {
        return Err(format!(
            "saved record names layer {}, the snapshot's labels {layer}",
            record.layer_digest
        ));
    }
    if let Some(toc) = request
        .annotations
        .get(strata_formats::estargz::TOC_DIGEST_ANNOTATION)
        && *toc != record.toc_digest
    {
        return Err(format!(
            "saved record has TOC digest {}, the snapshot's labels {toc}",
            record.toc_digest
        ));
    }
    Ok(())
}

/// The FUSE connection id of the mount at `path` (from `/proc/self/mountinfo`; never
/// touches the mount, whose server may be this process).
fn fuse_connection_at(path: &Path) -> Option<u32> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields.get(4)?;
        let dash = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(dash + 1)?;
        if *point != want || !fstype.starts_with("fuse") {
            return None;
        }
        fields.get(2)?.split_once(':')?.1.parse().ok()
    })
}

fn is_mountpoint(path: &Path) -> bool {
    strata_snapshotters::mount::is_mounted(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_record_must_agree_with_the_snapshots_labels() {
        let record = LayerRecord {
            chain_id: format!("sha256:{}", "c".repeat(64)),
            image_ref: "r.example/app:1".into(),
            layer_digest: format!("sha256:{}", "1".repeat(64)),
            size: 100,
            toc_digest: format!("sha256:{}", "7".repeat(64)),
        };
        let labels = |layer: &str, toc: Option<&str>| -> Labels {
            let mut l: Labels = [
                (
                    strata_snapshotters::remote::LABEL_TARGET_REF,
                    record.chain_id.as_str(),
                ),
                (strata_snapshotters::remote::LABEL_CRI_LAYER_DIGEST, layer),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            if let Some(toc) = toc {
                l.insert(
                    strata_formats::estargz::TOC_DIGEST_ANNOTATION.to_owned(),
                    toc.to_owned(),
                );
            }
            l
        };
        assert!(
            check_record(&record, &Labels::new()).is_ok(),
            "no labels: nothing to compare"
        );
        assert!(check_record(&record, &labels(&record.layer_digest, None)).is_ok());
        assert!(
            check_record(
                &record,
                &labels(&record.layer_digest, Some(&record.toc_digest))
            )
            .is_ok()
        );
        let other = format!("sha256:{}", "2".repeat(64));
        let err = check_record(&record, &labels(&other, None)).unwrap_err();
        assert!(
            err.contains(&other) && err.contains(&record.layer_digest),
            "{err}"
        );
        let err = check_record(&record, &labels(&record.layer_digest, Some(&other))).unwrap_err();
        assert!(err.contains("TOC digest") && err.contains(&other), "{err}");
    }
}
