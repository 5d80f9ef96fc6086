//! Pulling an image from a registry into the content store, and optionally unpacking it
//! into a snapshotter on the way (containerd's `ctr image pull`).
//!
//! 1. Resolve the reference to a root descriptor; fetch the root (index or manifest).
//! 2. For an index, pick the manifest for the requested platform (host by default).
//! 3. Download the config and layers concurrently (bounded), each streamed into the
//!    content store with its expected size and digest: corrupted bytes are never committed.
//!    A download that breaks mid-body is resumed with a `Range` request from where the
//!    ingest stopped — also across processes, since ingests survive a crash.
//! 4. Label parents for GC (index → chosen manifest, manifest → config + layers) and every
//!    blob with `containerd.io/distribution.source.<registry>=<repository>` (which push uses
//!    for cross-repository mounts), then create the image record.
//!    An artifact (a manifest whose config is not an image config: a model, …) is
//!    stored and recorded the same way, never unpacked ([`PullEvent::Artifact`]).
//! 5. With [`PullOptions::unpack`], the config is fetched first and each layer is applied
//!    into its chainID snapshot as soon as it and the layers below it are in ([`super::unpack`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use oci_spec::image::Descriptor;
use strata_formats::Digest;

use super::error::ImageError;
use super::media;
use super::platform::Platform;
use super::walk::{child_gc_labels, descriptor_digest, parse_index, parse_manifest};
use crate::content::{ContentError, StreamSource};
use crate::metadata::ImageRecord;
use crate::registry::{Reference, RegistryClient, RegistryError};
use crate::store::Store;

/// The label recording where a blob was pulled from: `…source.<registry>=<repository>`.
pub const LABEL_DISTRIBUTION_SOURCE_PREFIX: &str = "containerd.io/distribution.source.";

/// How a pull behaves.
#[derive(Clone)]
pub struct PullOptions {
    /// The platform to pull from an index (default: the host's).
    pub platform: Platform,
    /// Blobs downloaded at once (containerd's default is 3).
    pub max_concurrent_downloads: usize,
    /// Attempts per blob for broken transfers (each resumes where the last stopped).
    pub max_attempts: u32,
    /// Progress reports, called from several tasks.
    pub progress: Option<PullEventSink>,
    /// Unpack the layers into this snapshotter as they arrive (containerd's `ctr pull`).
    pub unpack: Option<UnpackTarget>,
}

/// Where a pull unpacks to.
#[derive(Clone)]
pub struct UnpackTarget {
    /// The snapshotter receiving one committed snapshot per layer, named by chainID.
    pub snapshotter: Arc<dyn strata_snapshotters::Snapshotter>,
    /// A directory for temporary mounts.
    pub scratch: std::path::PathBuf,
}

impl std::fmt::Debug for UnpackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpackTarget")
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field(
                "unpack",
                &self
                    .unpack
                    .as_ref()
                    .map(|u| u.scratch.display().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            max_concurrent_downloads: 3,
            max_attempts: 5,
            progress: None,
            unpack: None,
        }
    }
}

/// Where progress events go: called from several tasks at once.
pub type PullEventSink = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// What a pull reports as it goes.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The reference resolved to this root.
    Resolved {
        /// The full reference.
        reference: String,
        /// The root descriptor's digest.
        digest: Digest,
    },
    /// A blob download starts (or is skipped: `existing`).
    BlobStarted {
        /// `index`, `manifest`, `config` or `layer`.
        kind: &'static str,
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Bytes already present (a resumed ingest), or the whole size if it exists.
        offset: u64,
    },
    /// More bytes of a blob arrived.
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes received in this step.
        bytes: u64,
    },
    /// A transfer broke and is retried from `offset`.
    BlobRetry {
        /// The blob.
        digest: Digest,
        /// Where the retry resumes.
        offset: u64,
        /// Why the last attempt failed.
        cause: String,
    },
    /// The manifest is an artifact, not an image: stored, not unpacked.
    Artifact {
        /// Its `artifactType` (else its config's media type).
        artifact_type: String,
    },
    /// A blob is committed (or was there already).
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Whether it was in the store before this pull.
        existed: bool,
    },
    /// A layer's snapshot is committed (or existed already).
    Unpacked(super::unpack::Unpacked),
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Talking to the registry failed.
    #[error("pull {reference}: {source}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// The cause.
        #[source]
        source: Box<RegistryError>,
    },
    /// Storing or checking content failed.
    #[error("pull {reference}: {source}")]
    Image {
        /// The reference being pulled.
        reference: String,
        /// The cause.
        #[source]
        source: Box<ImageError>,
    },
}

impl PullError {
    /// The error's category.
    pub fn kind(&self) -> strata_formats::ErrorKind {
        match self {
            Self::Registry { source, .. } => source.kind(),
            Self::Image { source, .. } => source.kind(),
        }
    }
}

/// The platform a (single-platform) image's config names, if it names one.
fn config_platform(config: &[u8]) -> Option<Platform> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    let variant = v.get("variant").and_then(|v| v.as_str()).unwrap_or("");
    (!os.is_empty() && !arch.is_empty()).then(|| Platform::new(os, arch, variant))
}

struct Puller<'a> {
    store: &'a Store,
    client: &'a RegistryClient,
    reference: &'a Reference,
    opts: &'a PullOptions,
}

/// Pulls `reference` into `store` and records it as an image named by the full reference.
/// Returns the image record.
pub async fn pull(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    let name = reference.to_string();
    let p = Puller {
        store,
        client,
        reference,
        opts,
    };
    let reg = |source| PullError::Registry {
        reference: name.clone(),
        source: Box::new(source),
    };
    let img = |source| PullError::Image {
        reference: name.clone(),
        source: Box::new(source),
    };

    // Content written below is not referenced until the record exists: keep GC off it.
    let gc_store = store.clone();
    let _gc = tokio::task::spawn_blocking(move || gc_store.hold_gc())
        .await
        .map_err(|e| img(ImageError::invalid("pull", format!("task failed: {e}"))))?
        .map_err(|e| img(ImageError::invalid("pull", e.to_string())))?;

    let root = client.resolve(reference).await.map_err(reg)?;
    let root_digest = descriptor_digest(&root).map_err(img)?;
    p.event(PullEvent::Resolved {
        reference: name.clone(),
        digest: root_digest.clone(),
    });

    let root_kind = if media::is_index(root.media_type().as_ref()) {
        "index"
    } else {
        "manifest"
    };
    let root_bytes = p.document(&root, root_kind).await?;
    let manifest_desc = if root_kind == "index" {
        let index = parse_index(&root_bytes, &format!("index {root_digest}")).map_err(img)?;
        let chosen = opts.platform.select(&index).cloned().ok_or_else(|| {
            let available: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|pl| format!("{}/{}", pl.os(), pl.architecture()))
                .collect();
            img(ImageError::NotFound(format!(
                "index {root_digest} has no manifest for platform {} (available: {})",
                opts.platform,
                available.join(", ")
            )))
        })?;
        p.label(&root_digest, child_gc_labels(std::slice::from_ref(&chosen)))
            .await?;
        chosen
    } else {
        root.clone()
    };
    let manifest_digest = descriptor_digest(&manifest_desc).map_err(img)?;
    let manifest_bytes = if root_kind == "index" {
        p.document(&manifest_desc, "manifest").await?
    } else {
        root_bytes
    };
    let manifest =
        parse_manifest(&manifest_bytes, &format!("manifest {manifest_digest}")).map_err(img)?;
    // An artifact (a model, …) has no image config: its blobs are stored, verified, and
    // recorded like an image's, but there is no rootfs to unpack them into.
    let config_type = manifest.config().media_type().as_ref().to_owned();
    let artifact = !media::is_config(&config_type);
    if artifact {
        p.event(PullEvent::Artifact {
            artifact_type: manifest
                .artifact_type()
                .as_ref()
                .map_or(config_type.clone(), |t| t.as_ref().to_owned()),
        });
    }
    let unpack_target = if artifact { None } else { opts.unpack.as_ref() };

    // The config comes first: a single-platform manifest names its platform only there,
    // and with unpacking its diffIDs name the snapshots. Layers then download while
    // earlier ones are applied, in order, on a blocking thread.
    p.blob("config", manifest.config()).await?;
    let config = descriptor_digest(manifest.config()).map_err(img)?;
    let content = store.content().clone();
    let config_id = config.clone();
    let config_bytes = tokio::task::spawn_blocking(move || content.read_all(&config_id, 8 << 20))
        .await
        .map_err(|e| img(ImageError::invalid("pull", format!("task failed: {e}"))))?
        .map_err(|e| img(e.into()))?;
    if root_kind == "manifest"
        && !artifact
        && let Some(found) = config_platform(&config_bytes)
        && !opts.platform.accepts(&found)
    {
        return Err(img(ImageError::NotFound(format!(
            "manifest {manifest_digest} is a single-platform image for {found}, not {}",
            opts.platform
        ))));
    }
    let blobs: Vec<(&'static str, Descriptor)> = manifest
        .layers()
        .iter()
        .map(|l| ("layer", l.clone()))
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
    let unpacking = match unpack_target {
        Some(target) => {
            let layers = manifest.layers().clone();
            let plan = tokio::task::spawn_blocking(move || {
                let diff_ids =
                    super::unpack::config_diff_ids(&config_bytes, &format!("config {config}"))?;
                super::unpack::plan_layers(&layers, &diff_ids, &config)
            })
            .await
            .map_err(|e| img(ImageError::invalid("pull", format!("task failed: {e}"))))?
            .map_err(img)?;
            Some(spawn_unpack(
                store.clone(),
                target.clone(),
                plan,
                ready_rx,
                opts.progress.clone(),
            ))
        }
        None => None,
    };
    let p = &p;
    let results: Vec<Result<(), PullError>> = futures_util::stream::iter(blobs.iter().enumerate())
        .map(|(i, (kind, desc))| {
            let tx = ready_tx.clone();
            async move {
                p.blob(kind, desc).await?;
                let _ = tx.send(i);
                Ok(())
            }
        })
        .buffer_unordered(opts.max_concurrent_downloads.max(1))
        .collect()
        .await;
    drop(ready_tx);
    let downloaded = results.into_iter().collect::<Result<Vec<()>, PullError>>();
    if let Some(task) = unpacking {
        let unpacked = task
            .await
            .map_err(|e| img(ImageError::invalid("unpack", format!("task failed: {e}"))));
        downloaded?;
        unpacked?.map_err(img)?;
    } else {
        downloaded?;
    }

    let mut children = vec![manifest.config().clone()];
    children.extend(manifest.layers().iter().cloned());
    p.label(&manifest_digest, child_gc_labels(&children))
        .await?;

    let record = ImageRecord {
        name: name.clone(),
        target: root,
        labels: BTreeMap::new(),
        created: std::time::SystemTime::now(),
        updated: std::time::SystemTime::now(),
    };
    let meta = store.metadata().clone();
    tokio::task::spawn_blocking(move || meta.put_image(&record, true))
        .await
        .map_err(|e| img(ImageError::invalid("pull", format!("task failed: {e}"))))?
        .map_err(|e| img(e.into()))
}

/// Applies `plan`'s layers in order as their indices arrive on `ready` (layers whose
/// snapshot exists need not wait). Stops early, without error, when `ready` closes before
/// a needed layer arrived: the download's own error is reported instead.
fn spawn_unpack(
    store: Store,
    target: UnpackTarget,
    plan: Vec<super::unpack::LayerPlan>,
    ready: std::sync::mpsc::Receiver<usize>,
    progress: Option<PullEventSink>,
) -> tokio::task::JoinHandle<Result<(), ImageError>> {
    tokio::task::spawn_blocking(move || {
        let unpacker = super::unpack::Unpacker::new(&store, &*target.snapshotter, &target.scratch);
        let mut arrived = vec![false; plan.len()];
        for (i, layer) in plan.iter().enumerate() {
            if !unpacker.is_unpacked(layer) {
                while !arrived[i] {
                    match ready.recv() {
                        Ok(j) => arrived[j] = true,
                        Err(_) => return Ok(()),
                    }
                }
            }
            let done = unpacker.unpack(layer)?;
            if let Some(p) = &progress {
                p(&PullEvent::Unpacked(done));
            }
        }
        Ok(())
    })
}

impl Puller<'_> {
    fn event(&self, e: PullEvent) {
        if let Some(p) = &self.opts.progress {
            p(&e);
        }
    }

    fn err_img(&self, source: ImageError) -> PullError {
        PullError::Image {
            reference: self.reference.to_string(),
            source: Box::new(source),
        }
    }

    fn err_reg(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            reference: self.reference.to_string(),
            source: Box::new(source),
        }
    }

    fn source_label(&self) -> BTreeMap<String, String> {
        let key = format!(
            "{LABEL_DISTRIBUTION_SOURCE_PREFIX}{}",
            self.reference.registry()
        );
        BTreeMap::from([(key, self.reference.repository().to_owned())])
    }

    async fn label(
        &self,
        digest: &Digest,
        labels: BTreeMap<String, String>,
    ) -> Result<(), PullError> {
        let content = self.store.content().clone();
        let digest = digest.clone();
        let changes: BTreeMap<String, Option<String>> =
            labels.into_iter().map(|(k, v)| (k, Some(v))).collect();
        tokio::task::spawn_blocking(move || content.update_labels(&digest, &changes))
            .await
            .map_err(|e| self.err_img(ImageError::invalid("label", format!("task failed: {e}"))))?
            .map_err(|e| self.err_img(e.into()))?;
        Ok(())
    }

    /// Fetches an index or manifest (small, verified by the client) and stores it.
    async fn document(&self, desc: &Descriptor, kind: &'static str) -> Result<Bytes, PullError> {
        let digest = descriptor_digest(desc).map_err(|e| self.err_img(e))?;
        let existed = self.store.content().exists(&digest);
        self.event(PullEvent::BlobStarted {
            kind,
            digest: digest.clone(),
            size: desc.size(),
            offset: 0,
        });
        let bytes = if existed {
            let content = self.store.content().clone();
            let d = digest.clone();
            Bytes::from(
                tokio::task::spawn_blocking(move || {
                    content.read_all(&d, super::walk::MAX_MANIFEST_SIZE)
                })
                .await
                .map_err(|e| self.err_img(ImageError::invalid(kind, format!("task failed: {e}"))))?
                .map_err(|e| self.err_img(e.into()))?,
            )
        } else {
            let bytes = self
                .client
                .fetch_manifest(self.reference, desc)
                .await
                .map_err(|e| self.err_reg(e))?;
            let content = self.store.content().clone();
            let (d, b, labels) = (digest.clone(), bytes.clone(), self.source_label());
            let key = format!("{kind}-{digest}");
            tokio::task::spawn_blocking(move || {
                content.ingest(
                    &key,
                    &mut StreamSource(&b[..]),
                    Some(b.len() as u64),
                    Some(&d),
                    labels,
                    Duration::from_secs(300),
                )
            })
            .await
            .map_err(|e| self.err_img(ImageError::invalid(kind, format!("task failed: {e}"))))?
            .map_err(|e| self.err_img(e.into()))?;
            bytes
        };
        self.event(PullEvent::BlobDone {
            digest,
            size: desc.size(),
            existed,
        });
        Ok(bytes)
    }

    /// Downloads one config or layer into the store, resuming broken transfers.
    async fn blob(&self, kind: &'static str, desc: &Descriptor) -> Result<(), PullError> {
        let digest = descriptor_digest(desc).map_err(|e| self.err_img(e))?;
        let size = desc.size();
        if self.store.content().exists(&digest) {
            self.event(PullEvent::BlobStarted {
                kind,
                digest: digest.clone(),
                size,
                offset: size,
            });
            self.label(&digest, self.source_label()).await?;
            self.event(PullEvent::BlobDone {
                digest,
                size,
                existed: true,
            });
            return Ok(());
        }
        let key = format!("{kind}-{digest}");
        let mut corrupt_retries = 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let content = self.store.content().clone();
            let (k, d) = (key.clone(), digest.clone());
            let writer = tokio::task::spawn_blocking(move || {
                content.writer_wait(&k, Some(size), Some(&d), Duration::from_secs(300))
            })
            .await
            .map_err(|e| self.err_img(ImageError::invalid(kind, format!("task failed: {e}"))))?;
            let writer = match writer {
                Ok(w) => w,
                // Another pull committed it meanwhile.
                Err(ContentError::AlreadyExists(_)) => {
                    self.event(PullEvent::BlobDone {
                        digest,
                        size,
                        existed: true,
                    });
                    return Ok(());
                }
                Err(e) => return Err(self.err_img(e.into())),
            };
            let offset = writer.status().offset;
            if attempt == 1 {
                self.event(PullEvent::BlobStarted {
                    kind,
                    digest: digest.clone(),
                    size,
                    offset,
                });
            }
            let range = (offset > 0 && offset < size).then_some(offset..size);
            let transfer = self.transfer(&digest, range, writer).await;
            let (writer, failure) = match transfer {
                Ok(w) => (w, None),
                Err((_, Failure::Store(e))) => {
                    return Err(self.err_img(ImageError::from_ingest(e, Some(&digest))));
                }
                Err((w, Failure::Net(cause))) => (w, Some(cause)),
            };
            if let Some(cause) = failure {
                if attempt >= self.opts.max_attempts || !cause.is_retryable() {
                    return Err(self.err_reg(cause));
                }
                let offset = writer.status().offset;
                self.event(PullEvent::BlobRetry {
                    digest: digest.clone(),
                    offset,
                    cause: cause.to_string(),
                });
                drop(writer);
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            let labels = self.source_label();
            let d = digest.clone();
            let committed =
                tokio::task::spawn_blocking(move || writer.commit(Some(size), Some(&d), labels))
                    .await
                    .map_err(|e| {
                        self.err_img(ImageError::invalid(kind, format!("task failed: {e}")))
                    })?;
            match committed {
                Ok(_) | Err(ContentError::AlreadyExists(_)) => {
                    self.event(PullEvent::BlobDone {
                        digest,
                        size,
                        existed: false,
                    });
                    return Ok(());
                }
                Err(
                    e @ (ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. }),
                ) => {
                    let e = ImageError::from_ingest(e, Some(&digest));
                    // Corrupt bytes never reach blobs/: drop the ingest; one fresh try, since a
                    // flaky proxy may have flipped them in transit.
                    let content = self.store.content().clone();
                    let k = key.clone();
                    let _ = tokio::task::spawn_blocking(move || content.abort(&k)).await;
                    if corrupt_retries == 0 || attempt >= self.opts.max_attempts {
                        return Err(self.err_img(e));
                    }
                    corrupt_retries -= 1;
                    self.event(PullEvent::BlobRetry {
                        digest: digest.clone(),
                        offset: 0,
                        cause: e.to_string(),
                    });
                }
                Err(e) => return Err(self.err_img(e.into())),
            }
        }
    }

    /// Streams the blob (from `range.start` if given) into `writer` on a blocking thread.
    /// On failure, hands the writer back with the cause so the caller can resume.
    async fn transfer(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
        mut writer: crate::content::IngestWriter,
    ) -> Result<crate::content::IngestWriter, (crate::content::IngestWriter, Failure)> {
        let ranged = range.is_some();
        let mut response = match self.client.fetch_blob(self.reference, digest, range).await {
            Ok(r) => r,
            Err(e) => return Err((writer, Failure::Net(e))),
        };
        let url = response.url().clone();
        if ranged && !crate::registry::is_partial(&response) {
            // The server sent the whole blob: start over rather than append it.
            if let Err(e) = writer.truncate(0) {
                return Err((writer, Failure::Store(e)));
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        // The ingest's own copy pipeline (4 MiB O_DIRECT writes, hashing on a second
        // thread) reads the network chunks through a small adapter.
        let sink = tokio::task::spawn_blocking(move || {
            let mut source = ChannelReader {
                rx: &mut rx,
                current: Bytes::new(),
            };
            match writer.copy_from(&mut source) {
                Ok(_) => (writer, None),
                Err(e) => (writer, Some(e)),
            }
        });
        let mut net_error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    self.event(PullEvent::BlobProgress {
                        digest: digest.clone(),
                        bytes: n,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    net_error = Some(RegistryError::transport(&reqwest::Method::GET, &url, e));
                    break;
                }
            }
        }
        drop(tx);
        let (writer, write_error) = sink
            .await
            .expect("invariant: the ingest task does not panic");
        if let Some(e) = write_error {
            return Err((writer, Failure::Store(e)));
        }
        match net_error {
            Some(e) => Err((writer, Failure::Net(e))),
            None => Ok(writer),
        }
    }
}

/// A blocking `Read` over the chunks a download task sends; EOF when the sender is gone.
struct ChannelReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Why a transfer stopped: the network (retry from where it stopped) or the store (fail).
enum Failure {
    Net(RegistryError),
    Store(ContentError),
}

/// Exponential backoff with jitter: 100 ms, 200 ms, 400 ms… capped at 5 s, ±50 %.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}
