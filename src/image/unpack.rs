//! Unpacking an image's layers into snapshots, as containerd's unpacker does.
//!
//! Layer `i` becomes the committed snapshot named by its chainID (the diffIDs of layers
//! `0..=i` folded with sha256, from the config's `rootfs.diff_ids`), whose parent is the
//! snapshot of layer `i-1`. A layer whose chainID exists already is skipped, so images
//! sharing a base share its snapshots. Each layer is prepared under a unique
//! `extract-<unique> <chainID>` key carrying `containerd.io/snapshot.ref=<chainID>`
//! (which lets a remote snapshotter provide it without unpacking: Prepare then answers
//! AlreadyExists), applied with its diffID checked, and committed; on any failure the
//! active snapshot is removed, so no half-made snapshot survives. Into the erofs
//! snapshotter, a layer is written straight into its `layer.erofs` (`unpack_erofs.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageManifest};
use strata_formats::{Digest, ErrorKind, ReadAtCursor};
use strata_snapshotters::Snapshotter;
use strata_snapshotters::apply::{ApplyOptions, WhiteoutMode, apply_to_mounts};

use super::error::ImageError;
use super::media;
use super::platform::Platform;
use super::walk::{MAX_MANIFEST_SIZE, descriptor_digest, parse_index, parse_manifest};
use crate::metadata::ImageRecord;
use crate::store::Store;

/// The label containerd's unpacker puts on Prepare and Commit: the chainID the
/// snapshot stands for.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// The most bytes of a config read to find its diffIDs.
const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// The chainIDs of a layer stack: `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The config's `rootfs.diff_ids`, parsed.
pub fn config_diff_ids(bytes: &[u8], what: &str) -> Result<Vec<Digest>, ImageError> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let config: Config = serde_json::from_slice(bytes).map_err(|e| {
        ImageError::invalid(
            what,
            format!("not an image config with rootfs.diff_ids: {e}"),
        )
    })?;
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| ImageError::invalid(what, format!("diff_id {d:?}: {e}")))
        })
        .collect()
}

/// The manifest of `image` for `platform` (the image itself when it is a manifest).
pub fn image_manifest(
    store: &Store,
    image: &ImageRecord,
    platform: &Platform,
) -> Result<(Digest, ImageManifest), ImageError> {
    let root = &image.target;
    let root_digest = descriptor_digest(root)?;
    let desc = if media::is_index(root.media_type().as_ref()) {
        let bytes = store.content().read_all(&root_digest, MAX_MANIFEST_SIZE)?;
        let index = parse_index(&bytes, &format!("index {root_digest}"))?;
        platform.select(&index).cloned().ok_or_else(|| {
            ImageError::NotFound(format!(
                "image {}: index {root_digest} has no manifest for platform {platform}",
                image.name
            ))
        })?
    } else {
        root.clone()
    };
    let digest = descriptor_digest(&desc)?;
    let bytes = store.content().read_all(&digest, MAX_MANIFEST_SIZE)?;
    Ok((
        digest.clone(),
        parse_manifest(&bytes, &format!("manifest {digest}"))?,
    ))
}

/// The layers of `manifest` paired with their diffIDs and chainIDs.
pub fn manifest_layers(
    store: &Store,
    manifest: &ImageManifest,
) -> Result<Vec<LayerPlan>, ImageError> {
    let config = descriptor_digest(manifest.config())?;
    let bytes = store.content().read_all(&config, MAX_CONFIG_SIZE)?;
    let diff_ids = config_diff_ids(&bytes, &format!("config {config}"))?;
    plan_layers(manifest.layers(), &diff_ids, &config)
}

/// Pairs `layers` with `diff_ids` (which must be as many) and their chainIDs.
pub fn plan_layers(
    layers: &[Descriptor],
    diff_ids: &[Digest],
    config: &Digest,
) -> Result<Vec<LayerPlan>, ImageError> {
    if layers.len() != diff_ids.len() {
        return Err(ImageError::invalid(
            format!("config {config}"),
            format!(
                "rootfs.diff_ids lists {} layers but the manifest has {}",
                diff_ids.len(),
                layers.len()
            ),
        ));
    }
    let chains = chain_ids(diff_ids);
    layers
        .iter()
        .zip(diff_ids)
        .zip(chains)
        .enumerate()
        .map(|(i, ((desc, diff_id), chain_id))| {
            Ok(LayerPlan {
                digest: descriptor_digest(desc)?,
                descriptor: desc.clone(),
                diff_id: diff_id.clone(),
                parent: (i > 0).then(|| chain_ids(&diff_ids[..i]).pop()).flatten(),
                chain_id,
            })
        })
        .collect()
}

/// One layer to unpack.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// The layer blob.
    pub digest: Digest,
    /// Its descriptor.
    pub descriptor: Descriptor,
    /// Its uncompressed digest (from the config).
    pub diff_id: Digest,
    /// The chainID of the layers below (`None` for the base layer).
    pub parent: Option<Digest>,
    /// Its chainID: the committed snapshot's name.
    pub chain_id: Digest,
}

/// What unpacking one layer did.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The layer blob.
    pub layer: Digest,
    /// The committed snapshot.
    pub chain_id: Digest,
    /// The snapshot existed already (or a remote snapshotter provided it).
    pub existed: bool,
    /// Uncompressed bytes applied (0 when it existed).
    pub size: u64,
}

/// Unpacks layers into one snapshotter; `scratch` is a directory for temporary mounts.
pub struct Unpacker<'a> {
    store: &'a Store,
    snapshotter: &'a dyn Snapshotter,
    scratch: PathBuf,
}

/// Whether `key` is an unpack's active snapshot as Strata itself makes them
/// (`extract-<unique> <chainID>`). containerd's own unpacks reach `strata serve` with
/// their namespace in front (`default/3/extract-…`) and are never matched.
pub fn is_strata_unpack_key(key: &str) -> bool {
    key.strip_prefix("extract-")
        .and_then(|rest| rest.split_once(' '))
        .is_some_and(|(unique, chain)| {
            !unique.is_empty() && !unique.contains('/') && chain.starts_with("sha256:")
        })
}

/// Removes the active snapshots that interrupted unpacks left in `snapshotter` (a
/// `strata pull` stopped by Ctrl-C or a crash between Prepare and Commit); returns their
/// keys. Only for a snapshotter this process holds exclusively — the snapshotter's
/// metadata can be open in one process only, so no unpack of another process can be in
/// flight — and only keys [`is_strata_unpack_key`] matches.
///
/// # Errors
///
/// [`ImageError::Snapshot`] when the snapshots cannot be listed or one cannot be removed.
pub fn remove_interrupted_unpacks(
    snapshotter: &dyn Snapshotter,
) -> Result<Vec<String>, ImageError> {
    let mut stale = Vec::new();
    snapshotter
        .walk(&[], &mut |info| {
            if info.kind == strata_snapshotters::Kind::Active
                && is_strata_unpack_key(&info.name)
                && info.labels.contains_key(LABEL_SNAPSHOT_REF)
            {
                stale.push(info.name.clone());
            }
            Ok(())
        })
        .map_err(|e| ImageError::snapshot("list interrupted unpacks".to_owned(), &e))?;
    for key in &stale {
        snapshotter.remove(key).map_err(|e| {
            ImageError::snapshot(format!("remove the interrupted unpack {key:?}"), &e)
        })?;
    }
    Ok(stale)
}

impl std::fmt::Debug for Unpacker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacker")
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl<'a> Unpacker<'a> {
    /// An unpacker writing into `snapshotter`, mounting under `scratch` when it must.
    pub fn new(store: &'a Store, snapshotter: &'a dyn Snapshotter, scratch: &Path) -> Self {
        Self {
            store,
            snapshotter,
            scratch: scratch.to_path_buf(),
        }
    }

    /// Whether the snapshot for `layer` exists already.
    pub fn is_unpacked(&self, layer: &LayerPlan) -> bool {
        self.snapshotter.stat(&layer.chain_id.to_string()).is_ok()
    }

    /// Unpacks every layer in order.
    pub fn unpack_all(&self, layers: &[LayerPlan]) -> Result<Vec<Unpacked>, ImageError> {
        layers.iter().map(|l| self.unpack(l)).collect()
    }

    /// Unpacks one layer whose parent snapshot exists (or is `None`).
    pub fn unpack(&self, layer: &LayerPlan) -> Result<Unpacked, ImageError> {
        let chain = layer.chain_id.to_string();
        let done = |size: Option<u64>| Unpacked {
            layer: layer.digest.clone(),
            chain_id: layer.chain_id.clone(),
            existed: size.is_none(),
            size: size.unwrap_or(0),
        };
        if self.is_unpacked(layer) {
            return Ok(done(None));
        }
        let context = format!("unpack layer {} into snapshot {chain}", layer.digest);
        let parent = layer
            .parent
            .as_ref()
            .map(Digest::to_string)
            .unwrap_or_default();
        let key = format!("extract-{} {chain}", crate::metadata::unique_suffix());
        let labels = BTreeMap::from([(LABEL_SNAPSHOT_REF.to_owned(), chain.clone())]);
        let mounts = match self.snapshotter.prepare(&key, &parent, labels.clone()) {
            Ok(m) => m,
            // A remote snapshotter provided the layer, or a concurrent unpack made it.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && self.is_unpacked(layer) => {
                return Ok(done(None));
            }
            Err(e) => return Err(ImageError::snapshot(context, &e)),
        };
        let applied = self.apply(layer, &mounts);
        let report = match applied {
            Ok(r) => r,
            Err(e) => {
                if let Err(re) = self.snapshotter.remove(&key) {
                    tracing::warn!(key, error = %re, "removing the failed unpack's active snapshot");
                }
                return Err(e);
            }
        };
        match self.snapshotter.commit(&chain, &key, labels) {
            Ok(()) => Ok(done(Some(report))),
            Err(e) => {
                let _ = self.snapshotter.remove(&key);
                if e.kind() == ErrorKind::AlreadyExists {
                    return Ok(done(None));
                }
                Err(ImageError::snapshot(context, &e))
            }
        }
    }

    /// Applies the layer blob to the active snapshot's mounts; returns uncompressed bytes.
    fn apply(
        &self,
        layer: &LayerPlan,
        mounts: &[strata_snapshotters::Mount],
    ) -> Result<u64, ImageError> {
        if let Some(image) = strata_snapshotters::erofs::staged_image_path(mounts) {
            return super::unpack_erofs::unpack_to_image(self.store, layer, &image);
        }
        if super::media::is_erofs_layer(layer.descriptor.media_type().as_ref()) {
            return Err(ImageError::Unsupported(format!(
                "layer {} is a native EROFS layer ({}): only the erofs snapshotter can use it \
                 (--snapshotter erofs)",
                layer.digest,
                layer.descriptor.media_type()
            )));
        }
        let blob = self.store.content().reader_at(&layer.digest)?;
        // The whiteout mode is chosen by apply_to_mounts from the mounts' shape.
        let mut options = ApplyOptions::new(layer.digest.to_string(), WhiteoutMode::Delete);
        options.expected_diff_id = Some(layer.diff_id.clone());
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| ImageError::io(format!("create {}", self.scratch.display()), e))?;
        let report = apply_to_mounts(ReadAtCursor::new(blob), mounts, &self.scratch, &options)
            .map_err(|e| ImageError::Unpack {
                context: format!("unpack layer {}", layer.digest),
                kind: e.kind(),
                reason: e.to_string(),
            })?;
        Ok(report.size)
    }
}
