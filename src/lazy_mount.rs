//! `strata mount --lazy`: an eStargz image's rootfs mounted straight from its registry,
//! without containerd and without downloading it. Each layer's footer and TOC are fetched
//! with range requests, its files are served by a FUSE layer filesystem
//! ([`strata_fuse`]) whose chunks are fetched on first read and verified against their
//! digests, and the layers are stacked as the lower directories of an overlay with a
//! scratch upper directory (writes stay local and are discarded at unmount).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_formats::estargz::{EstargzReader, TOC_DIGEST_ANNOTATION};
use strata_formats::{Digest, ErrorKind};
use strata_fuse::{ChunkSource, EstargzChunkSource, FuseServer, LayerFs, LayerTree, ServeOptions};

use crate::cache::{CachedChunkSource, ChunkCache};
use strata_snapshotters::{Mount, mount};
use tokio::runtime::Handle;

use crate::image::media;
use crate::image::platform::Platform;
use crate::image::walk::{descriptor_digest, parse_index, parse_manifest};
use crate::registry::range::{
    HttpRangeFetcher, RangeFetcher, RangeOptions, RangeReader, RangeStats, ReaderOptions,
};
use crate::registry::{Reference, RegistryClient};

/// Why a lazy mount failed; the message names the image or layer and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {reason}")]
pub struct LazyMountError {
    context: String,
    kind: ErrorKind,
    reason: String,
}

impl LazyMountError {
    /// `reason` is the cause's whole source chain: a registry error's own text may be only
    /// "error sending request", with "Connection refused" in its sources.
    fn new(
        context: impl Into<String>,
        kind: ErrorKind,
        reason: &(dyn std::error::Error + 'static),
    ) -> Self {
        Self {
            context: context.into(),
            kind,
            reason: crate::error_chain::chain(reason),
        }
    }

    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// One lazily served layer.
#[derive(Debug)]
struct LazyLayer {
    digest: Digest,
    fetcher: Arc<HttpRangeFetcher>,
    server: Option<FuseServer>,
    mountpoint: PathBuf,
}

/// A mounted image: FUSE layer mounts stacked under an overlay on the target. Dropping
/// it unmounts everything.
#[derive(Debug)]
pub struct LazyMount {
    target: PathBuf,
    layers: Vec<LazyLayer>,
    mounted: bool,
}

/// Bytes fetched so far for one layer.
#[derive(Debug, Clone)]
pub struct LayerFetched {
    /// The layer blob.
    pub digest: Digest,
    /// Its compressed size.
    pub size: u64,
    /// Range requests and bytes so far.
    pub stats: RangeStats,
}

/// How [`LazyMount::mount`] serves the layers.
#[derive(Debug, Clone, Default)]
pub struct LazyMountOptions {
    /// The chunk cache chunks go through, if any.
    pub cache: Option<Arc<ChunkCache>>,
    /// Files whose chunks are all cached are read by the kernel from a backing file (FUSE
    /// passthrough, needs `CAP_SYS_ADMIN`).
    pub passthrough: bool,
}

impl LazyMount {
    /// Mounts `reference` (its manifest for `platform`) on `target`, with FUSE layer mounts
    /// and the overlay's upper directory under `work`, as `options` say. Blocks on `runtime` for registry
    /// I/O; must not be called from inside it.
    ///
    /// # Errors
    ///
    /// A layer without the TOC-digest annotation (not eStargz) is NotImplemented: pull and
    /// unpack it instead. Registry, TOC and mount failures name the layer.
    pub fn mount(
        runtime: &Handle,
        client: &RegistryClient,
        reference: &Reference,
        platform: &Platform,
        target: &Path,
        work: &Path,
        options: LazyMountOptions,
    ) -> Result<LazyMount, LazyMountError> {
        let LazyMountOptions { cache, passthrough } = options;
        let what = format!("lazy mount {reference}");
        let layers = runtime
            .block_on(remote_layers(client, reference, platform))
            .map_err(|(kind, reason)| LazyMountError {
                context: what.clone(),
                kind,
                reason,
            })?;
        let mut mounted = LazyMount {
            target: target.to_path_buf(),
            layers: Vec::new(),
            mounted: false,
        };
        for (i, (digest, size, toc)) in layers.into_iter().enumerate() {
            let context = format!("{what}: layer {digest}");
            let fetcher = Arc::new(HttpRangeFetcher::new(
                client.clone(),
                reference.clone(),
                digest.clone(),
                size,
                RangeOptions::default(),
            ));
            let reader = RangeReader::new(
                fetcher.clone() as Arc<dyn RangeFetcher>,
                size,
                runtime.clone(),
                ReaderOptions::default(),
            );
            let estargz = EstargzReader::open(reader, Some(&toc))
                .map_err(|e| LazyMountError::new(&context, e.kind(), &e))?
                .without_toc();
            let index = estargz
                .index()
                .layer_index()
                .map_err(|e| LazyMountError::new(&context, ErrorKind::InvalidArgument, &e))?;
            let tree = LayerTree::build(digest.to_string(), index);
            let direct: Arc<dyn ChunkSource> = Arc::new(EstargzChunkSource::new(Arc::new(estargz)));
            let source = match &cache {
                Some(cache) => {
                    Arc::new(CachedChunkSource::new(direct, cache.clone())) as Arc<dyn ChunkSource>
                }
                None => direct,
            };
            let fs = LayerFs::new(tree, source);
            let mountpoint = work.join("layers").join(i.to_string());
            std::fs::create_dir_all(&mountpoint)
                .map_err(|e| LazyMountError::new(&context, ErrorKind::Internal, &e))?;
            let options = ServeOptions {
                passthrough,
                ..ServeOptions::default()
            };
            let server = FuseServer::mount(Arc::new(fs), &mountpoint, &options)
                .map_err(|e| LazyMountError::new(&context, ErrorKind::Internal, &e))?;
            mounted.layers.push(LazyLayer {
                digest,
                fetcher,
                server: Some(server),
                mountpoint,
            });
        }
        let upper = work.join("upper");
        let workdir = work.join("work");
        for d in [&upper, &workdir] {
            std::fs::create_dir_all(d)
                .map_err(|e| LazyMountError::new(&what, ErrorKind::Internal, &e))?;
        }
        let lower: Vec<String> = mounted
            .layers
            .iter()
            .rev()
            .map(|l| l.mountpoint.display().to_string())
            .collect();
        let overlay = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", lower.join(":")),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", workdir.display()),
            ],
        };
        overlay
            .mount(target)
            .map_err(|e| LazyMountError::new(&what, ErrorKind::Internal, &e))?;
        mounted.mounted = true;
        Ok(mounted)
    }

    /// What each layer has fetched so far (footer, TOC and the chunks read).
    pub fn fetched(&self) -> Vec<LayerFetched> {
        self.layers
            .iter()
            .map(|l| LayerFetched {
                digest: l.digest.clone(),
                size: l.fetcher.size(),
                stats: l.fetcher.stats(),
            })
            .collect()
    }

    /// Unmounts the overlay and every layer.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.release()
    }

    fn release(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        if self.mounted {
            self.mounted = false;
            result = mount::unmount_all(&self.target, false)
                .or_else(|_| mount::unmount_all(&self.target, true));
        }
        for layer in self.layers.iter_mut().rev() {
            if let Some(server) = layer.server.take()
                && let Err(e) = server.unmount()
            {
                tracing::warn!(layer = %layer.digest, error = %e, "unmounting a lazy layer");
            }
        }
        result
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// The layers of `reference` for `platform`: digest, size and TOC digest of each, bottom
/// first.
async fn remote_layers(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<Vec<(Digest, u64, Digest)>, (ErrorKind, String)> {
    // The whole source chain: reqwest keeps the root cause ("Connection refused") there.
    let fail = |e: &(dyn std::error::Error + 'static), kind: ErrorKind| {
        (kind, crate::error_chain::chain(e))
    };
    let root = client
        .resolve(reference)
        .await
        .map_err(|e| fail(&e, e.kind()))?;
    let mut desc = root;
    if media::is_index(desc.media_type().as_ref()) {
        let bytes = client
            .fetch_manifest(reference, &desc)
            .await
            .map_err(|e| fail(&e, e.kind()))?;
        let index = parse_index(&bytes, "index").map_err(|e| fail(&e, e.kind()))?;
        desc = platform.select(&index).cloned().ok_or_else(|| {
            (
                ErrorKind::NotFound,
                format!("no manifest for platform {platform}"),
            )
        })?;
    }
    let bytes = client
        .fetch_manifest(reference, &desc)
        .await
        .map_err(|e| fail(&e, e.kind()))?;
    let manifest = parse_manifest(&bytes, "manifest").map_err(|e| fail(&e, e.kind()))?;
    manifest
        .layers()
        .iter()
        .map(|l| {
            let digest = descriptor_digest(l).map_err(|e| fail(&e, e.kind()))?;
            let toc = l
                .annotations()
                .as_ref()
                .and_then(|a| a.get(TOC_DIGEST_ANNOTATION))
                .ok_or_else(|| {
                    (ErrorKind::NotImplemented, format!("layer {digest} is not eStargz (no {TOC_DIGEST_ANNOTATION} annotation): convert the image with `strata convert`, or pull and mount it"))
                })?;
            let toc: Digest = toc.parse().map_err(|e| fail(&e, ErrorKind::InvalidArgument))?;
            Ok((digest, l.size(), toc))
        })
        .collect()
}
