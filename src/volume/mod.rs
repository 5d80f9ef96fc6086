//! Image volumes: an image's rootfs, or a directory inside it, mounted **read-only** on a
//! directory of the host, as Kubernetes image volumes (KEP-4639) present an image to a
//! pod. `strata volume mount` is the command; this module is the mechanism:
//!
//! - the image's layers are unpacked into a snapshotter (by the caller) and a View
//!   snapshot is taken over its chainID, keyed by the target directory ([`snapshot_key`]);
//! - the View's mounts are mounted on a private staging directory, the sub path is
//!   resolved *inside* that root (symlinks cannot leave it; it must exist and be a
//!   directory, as KEP-4639 asks), bound read-only onto the target, and the staging mount
//!   is detached — the target's bind mount keeps the filesystem alive by itself;
//! - a model artifact (ModelPack, ORAS, …) is a tree of its blobs instead ([`artifact`]);
//! - for an eStargz image on the `stargz` snapshotter, the layers are mounted lazily by
//!   `strata serve` instead of unpacked ([`lazy`]);
//! - an artifact with a chunk index is mounted lazily too: its raw layers are read by
//!   range and verified chunk by chunk, by a serving process of its own
//!   ([`lazy_artifact`]);
//! - a [`VolumeRecord`] in `<root>/volumes/` remembers what is mounted where, so that
//!   `volume ls` and `volume umount` work from any later process: the mount itself is
//!   the kernel's and survives Strata's restarts.

pub mod artifact;
pub mod lazy;
pub mod lazy_artifact;
pub mod range_source;
pub mod readahead;
mod record;
mod subpath;

use std::path::{Path, PathBuf};

use strata_snapshotters::{Snapshotter, mount};

pub use record::{VolumeRecord, VolumeStore};
pub use subpath::{SubpathError, bind_read_only, open_subpath};

/// Errors of image volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The target directory is not usable.
    #[error("target {path}: {reason}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A volume is already mounted on the target.
    #[error("target {0}: a volume is mounted there already (`strata volume umount` it first)")]
    Busy(PathBuf),
    /// No volume is recorded on the target.
    #[error("target {0}: no volume is mounted there (see `strata volume ls`)")]
    NotAVolume(PathBuf),
    /// The sub path cannot be used.
    #[error(transparent)]
    Subpath(#[from] SubpathError),
    /// The snapshotter failed.
    #[error("snapshot {key}: {source}")]
    Snapshot {
        /// The snapshot key.
        key: String,
        /// The snapshotter's error.
        source: strata_snapshotters::SnapshotError,
    },
    /// The image could not be resolved, or a layer not mounted lazily.
    #[error("{0}")]
    Remote(String),
    /// A mount or unmount failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl VolumeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
        let context = context.into();
        move |source| VolumeError::Io { context, source }
    }
}

/// The mode of an artifact volume whose blobs were all downloaded and verified first.
pub const MODE_WHOLE_BLOBS: &str = "whole-blobs";

/// The mode of a volume whose bytes are fetched on first read: an eStargz image through
/// `strata serve`, or an artifact with a chunk index through its own serving process.
pub const MODE_LAZY: &str = "lazy";

/// The snapshot key of the volume on `target` (absolute).
pub fn snapshot_key(target: &Path) -> String {
    format!("strata-volume:{}", target.display())
}

/// What to mount: the image's top chainID in `snapshotter`, and a sub path.
#[derive(Debug, Clone)]
pub struct VolumeSpec<'a> {
    /// The chainID of the image's top layer (empty for an image without layers).
    pub chain_id: &'a str,
    /// A directory inside the image to mount instead of its root (`None`: the root).
    pub subpath: Option<&'a str>,
}

/// Mounts the View of `spec.chain_id` read-only on `target` (an existing directory, made
/// absolute by the caller), staging it under `staging` (created; removed again once the
/// target holds the mount). On failure nothing is left: no snapshot, no mount.
///
/// # Errors
///
/// The View cannot be made or mounted, the sub path is missing, escapes or is no directory,
/// or the bind mount fails.
pub fn mount_volume(
    sn: &dyn Snapshotter,
    spec: &VolumeSpec<'_>,
    staging: &Path,
    target: &Path,
) -> Result<(), VolumeError> {
    let key = snapshot_key(target);
    let mounts = sn
        .view(&key, spec.chain_id, Default::default())
        .map_err(|source| VolumeError::Snapshot {
            key: key.clone(),
            source,
        })?;
    let result = (|| {
        std::fs::create_dir_all(staging)
            .map_err(VolumeError::io(format!("create {}", staging.display())))?;
        mount::mount_all(&mounts, staging).map_err(VolumeError::io(format!(
            "mount the image on {}",
            staging.display()
        )))?;
        let bound = open_subpath(staging, spec.subpath.unwrap_or("."))
            .map_err(VolumeError::from)
            .and_then(|dir| {
                bind_read_only(&dir, target).map_err(VolumeError::io(format!(
                    "bind {} read-only on {}",
                    spec.subpath.unwrap_or("/"),
                    target.display()
                )))
            });
        // The target's bind mount holds the filesystem now (or nothing does).
        let _ = mount::unmount_all(staging, true);
        bound
    })();
    let _ = std::fs::remove_dir(staging);
    if let Err(e) = result {
        let _ = sn.remove(&key);
        return Err(e);
    }
    Ok(())
}

/// Unmounts the volume on `target` and removes its View snapshot from `sn`.
///
/// # Errors
///
/// The unmount fails (e.g. busy), or the snapshot cannot be removed.
pub fn unmount_volume(sn: &dyn Snapshotter, target: &Path) -> Result<(), VolumeError> {
    if mount::is_mounted(target) {
        mount::unmount_all(target, false)
            .map_err(VolumeError::io(format!("unmount {}", target.display())))?;
    }
    let key = snapshot_key(target);
    match sn.remove(&key) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == strata_snapshotters::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VolumeError::Snapshot { key, source }),
    }
}
