//! The remote-snapshot seam: how a snapshotter asks whether a layer can be provided
//! without containerd fetching and unpacking it.
//!
//! containerd's unpacker (1.6 and later) prepares each layer as
//! `Prepare("extract-<n> <chainID>", parent, labels)` with
//! `containerd.io/snapshot.ref=<chainID>` and every layer annotation under
//! `containerd.io/snapshot/` (CRI adds `cri.image-ref`, `cri.layer-digest`,
//! `cri.image-layers`; `ctr-remote image rpull` adds `remote/stargz.reference`,
//! `remote/stargz.digest`, `remote/stargz.layers`). A snapshotter with a [`RemoteLayers`]
//! provider hands it the parsed [`LayerRequest`]; when the provider accepts, the
//! snapshotter commits `<chainID>` itself (parent = the Prepare's parent, labels = the
//! Prepare's plus [`LABEL_REMOTE`]) and answers AlreadyExists. containerd then finds the
//! committed snapshot (its metadata layer walks for `labels."containerd.io/snapshot.ref"`
//! and the parent) and neither fetches nor applies the layer. When the provider declines
//! or fails, the Prepare goes on as a normal one.
//!
//! Providers: the hub's local-content provider (a layer blob already in Strata's content
//! store is applied without a download, or streamed into an EROFS image for the erofs
//! snapshotter) and the lazy stargz layers (a FUSE mount of the layer at the target
//! directory). The snapshotter's side of the protocol is [`prepare`].

pub(crate) mod prepare;

use std::path::{Path, PathBuf};

use crate::apply::WhiteoutMode;
use crate::{Labels, SnapshotError, Usage};

/// The chainID the unpacker wants the prepared layer committed as.
pub const LABEL_TARGET_REF: &str = "containerd.io/snapshot.ref";
/// Set on a snapshot committed by a provider (the key stargz-snapshotter uses).
pub const LABEL_REMOTE: &str = "containerd.io/snapshot/remote";
/// The value of [`LABEL_REMOTE`] (stargz-snapshotter's).
pub const REMOTE_VALUE: &str = "remote snapshot";
/// Layer annotations with this prefix reach the snapshotter as Prepare labels.
pub const ANNOTATION_PREFIX: &str = "containerd.io/snapshot/";
/// CRI: the image reference.
pub const LABEL_CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
/// CRI: the layer's digest.
pub const LABEL_CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
/// CRI: the image's layer digests from this one up, comma-separated.
pub const LABEL_CRI_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";
/// `ctr-remote image rpull`: the image reference.
pub const LABEL_STARGZ_REFERENCE: &str = "containerd.io/snapshot/remote/stargz.reference";
/// `ctr-remote image rpull`: the layer's digest.
pub const LABEL_STARGZ_DIGEST: &str = "containerd.io/snapshot/remote/stargz.digest";
/// `ctr-remote image rpull`: the image's layer digests from this one up, comma-separated.
pub const LABEL_STARGZ_LAYERS: &str = "containerd.io/snapshot/remote/stargz.layers";

/// One layer a Prepare asks for, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRequest {
    /// The chainID to commit ([`LABEL_TARGET_REF`]).
    pub chain_id: String,
    /// The chainID of the parent snapshot (its [`LABEL_TARGET_REF`] label), when the
    /// Prepare has a parent that carries one; `None` for a base layer or an unlabelled
    /// parent. The snapshotter fills it in.
    pub parent_chain_id: Option<String>,
    /// Whether the Prepare has a parent at all.
    pub has_parent: bool,
    /// The layer blob's digest (CRI's label first, then ctr-remote's).
    pub layer_digest: Option<String>,
    /// The image reference (CRI's label first, then ctr-remote's).
    pub image_ref: Option<String>,
    /// The image's layer digests from this layer up (CRI's label first, then ctr-remote's).
    pub image_layers: Vec<String>,
    /// Every `containerd.io/snapshot/`-prefixed label, as given.
    pub annotations: Labels,
}

impl LayerRequest {
    /// The request in `labels`, or `None` when they carry no [`LABEL_TARGET_REF`] (not a
    /// layer unpack).
    pub fn from_labels(labels: &Labels) -> Option<LayerRequest> {
        let chain_id = labels
            .get(LABEL_TARGET_REF)
            .filter(|v| !v.is_empty())?
            .clone();
        let first = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        let image_layers = first([LABEL_CRI_IMAGE_LAYERS, LABEL_STARGZ_LAYERS])
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some(LayerRequest {
            chain_id,
            parent_chain_id: None,
            has_parent: false,
            layer_digest: first([LABEL_CRI_LAYER_DIGEST, LABEL_STARGZ_DIGEST]),
            image_ref: first([LABEL_CRI_IMAGE_REF, LABEL_STARGZ_REFERENCE]),
            image_layers,
            annotations: labels
                .iter()
                .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// Where a provided layer goes.
#[derive(Debug, Clone, Copy)]
pub struct LayerTarget<'a> {
    /// The new snapshot's `fs` directory: empty, owned like its parent's root. It becomes
    /// an overlay lower directory, so its content is the layer's diff, not the merged tree.
    pub fs: &'a Path,
    /// The parents' `fs` directories, nearest first (the layers below).
    pub parents: &'a [PathBuf],
    /// How whiteouts must be written in `fs`.
    pub whiteouts: WhiteoutMode,
    /// Set by a snapshotter whose layers are EROFS images (erofs): the provider may write
    /// the layer's image here (a new file; `fs` left empty) instead of filling `fs`.
    /// The image is mounted by the kernel as it is, so it must be one the provider wrote
    /// or validated. Layers written into `fs` are converted by the snapshotter.
    pub image: Option<&'a Path>,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provision {
    /// The layer is in the target directory; commit it.
    Provided,
    /// The layer is a filesystem the provider mounted on the target directory and keeps
    /// serving (a lazily fetched layer). The snapshotter records `usage` instead of walking
    /// the mount, and calls [`RemoteLayers::release`] before it deletes the directory.
    Mounted {
        /// What the snapshot reports as its usage.
        usage: Usage,
    },
    /// The provider cannot provide this layer; the reason is logged and a normal Prepare
    /// follows.
    Declined(String),
}

/// Something that can put a layer into a snapshot directory without containerd's help.
///
/// Called from [`crate::Snapshotter::prepare`] on a blocking thread, outside any metadata
/// transaction; the target is a `new-*` directory that the snapshotter renames into place
/// only after `provide` returns [`Provision::Provided`], so a crash or error at any point
/// leaves nothing that metadata names. An `Err` is treated as a decline (logged as a
/// failure): the snapshotter removes what was written and falls back to a normal Prepare.
pub trait RemoteLayers: Send + Sync {
    /// A short name for log lines (e.g. `local-content`).
    fn name(&self) -> &str;

    /// Provides `layer` into `target.fs`, or declines.
    ///
    /// # Errors
    ///
    /// Any failure while providing (the blob is corrupt, the layer does not match its
    /// chainID, the filesystem failed).
    fn provide(
        &self,
        layer: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError>;

    /// Called before the directory of a snapshot this provider provided is deleted
    /// (Remove, or a Prepare that failed after [`Provision::Mounted`]), with the snapshot's
    /// name (the chainID) and its `fs` directory, wherever it is now: unmount what was
    /// mounted there and forget it. An error is logged; the directory is deleted anyway
    /// (mounts left in it are detached).
    fn release(&self, name: &str, fs: &Path) -> Result<(), SnapshotError> {
        let _ = (name, fs);
        Ok(())
    }

    /// Called when the snapshotter opens, for each committed snapshot carrying
    /// [`LABEL_REMOTE`], with its name, labels and `fs` directory: bring back what the
    /// snapshot needs (resume serving a mount that outlived the previous process, or mount
    /// it again after a reboot). An error is logged; the snapshot stays.
    fn restore(&self, name: &str, labels: &Labels, fs: &Path) -> Result<(), SnapshotError> {
        let _ = (name, labels, fs);
        Ok(())
    }

    /// Called once every [`Self::restore`] of an open is done: state kept for snapshots
    /// that were not restored (removed while the provider was down) can go.
    fn restored(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_labels_win_over_stargz_and_annotations_are_kept() {
        let labels: Labels = [
            (LABEL_TARGET_REF, "sha256:c"),
            (LABEL_CRI_LAYER_DIGEST, "sha256:l1"),
            (LABEL_STARGZ_DIGEST, "sha256:other"),
            (LABEL_STARGZ_REFERENCE, "reg/img:1"),
            (LABEL_STARGZ_LAYERS, "sha256:l1, sha256:l2,"),
            ("containerd.io/snapshot/stargz/toc.digest", "sha256:t"),
            ("other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = LayerRequest::from_labels(&labels).unwrap();
        assert_eq!(r.chain_id, "sha256:c");
        assert_eq!(r.layer_digest.as_deref(), Some("sha256:l1"));
        assert_eq!(r.image_ref.as_deref(), Some("reg/img:1"));
        assert_eq!(r.image_layers, ["sha256:l1", "sha256:l2"]);
        assert_eq!(r.annotations.len(), 5);
        assert!(
            !r.annotations.contains_key("other") && !r.annotations.contains_key(LABEL_TARGET_REF)
        );
        assert_eq!(r.parent_chain_id, None);
    }

    #[test]
    fn no_target_ref_is_no_request() {
        assert_eq!(LayerRequest::from_labels(&Labels::new()), None);
        let empty: Labels = [(LABEL_TARGET_REF.to_owned(), String::new())].into();
        assert_eq!(LayerRequest::from_labels(&empty), None);
    }
}
