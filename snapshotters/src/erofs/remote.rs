//! The erofs snapshotter as a host of the remote-snapshot protocol
//! ([`crate::remote::prepare`]): a provided layer is the new snapshot's `layer.erofs`,
//! written by the provider ([`crate::remote::LayerTarget::image`]) or converted here from
//! what the provider wrote into `fs`, as Commit converts an upper directory. Layers a
//! provider mounts and keeps serving are declined: this snapshotter's layers are images.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ErofsOptions, ErofsSnapshotter, LAYER_IMAGE, empty_dir, image_inodes};
use crate::apply::WhiteoutMode;
use crate::disk_usage::disk_usage;
use crate::metastore::MetaStore;
use crate::metastore::snapshot_dirs::SnapshotDirs;
use crate::remote::RemoteLayers;
use crate::remote::prepare::{RemoteHost, RemoteProvider, restore_remote};
use crate::{SnapshotError, Usage};

impl ErofsSnapshotter {
    /// Opens the snapshotter at `root` (as [`ErofsSnapshotter::with_options`]) with
    /// `remote` consulted on every Prepare that carries `containerd.io/snapshot.ref`.
    ///
    /// # Errors
    ///
    /// As [`ErofsSnapshotter::with_options`].
    pub fn with_remote(
        root: &Path,
        options: ErofsOptions,
        remote: Arc<dyn RemoteLayers>,
    ) -> Result<ErofsSnapshotter, SnapshotError> {
        let mut s = ErofsSnapshotter::with_options(root, options)?;
        restore_remote(&s, remote.as_ref())?;
        s.remote = Some(RemoteProvider(remote));
        Ok(s)
    }
}

impl RemoteHost for ErofsSnapshotter {
    fn store(&self) -> &MetaStore {
        &self.store
    }

    fn dirs(&self) -> &SnapshotDirs {
        &self.dirs
    }

    fn whiteouts(&self) -> WhiteoutMode {
        WhiteoutMode::Overlay {
            userxattr: self.overlay_options.iter().any(|o| o == "userxattr"),
        }
    }

    fn layer_image(&self, dir: &Path) -> Option<PathBuf> {
        Some(dir.join(LAYER_IMAGE))
    }

    fn takes_mounted_layers(&self) -> bool {
        false
    }

    fn finish_provided(&self, key: &str, dir: &Path) -> Result<Usage, SnapshotError> {
        let image = dir.join(LAYER_IMAGE);
        let fs = dir.join("fs");
        if !image.exists() {
            self.convert_upper(key, dir)?;
        } else {
            std::fs::File::open(&image)
                .and_then(|f| f.sync_all())
                .map_err(|e| SnapshotError::io(format_args!("sync {}", image.display()), e))?;
        }
        // `fs` is the image's mount point from now on.
        empty_dir(&fs).map_err(|e| SnapshotError::io(format_args!("empty {}", fs.display()), e))?;
        let size = disk_usage(&image)
            .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))?
            .size;
        let inodes = image_inodes(&image).ok_or_else(|| {
            SnapshotError::new(
                crate::ErrorKind::DataCorrupt,
                format!(
                    "snapshot {key}: {} has no EROFS superblock",
                    image.display()
                ),
            )
        })?;
        Ok(Usage { size, inodes })
    }
}

#[cfg(test)]
mod tests;
