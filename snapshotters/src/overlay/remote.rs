//! The overlayfs snapshotter as a host of the remote-snapshot protocol
//! ([`crate::remote::prepare`]): a provided layer is its `fs` directory, written by the
//! provider or mounted there by it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::OverlaySnapshotter;
use crate::apply::WhiteoutMode;
use crate::disk_usage::disk_usage;
use crate::metastore::MetaStore;
use crate::metastore::snapshot_dirs::SnapshotDirs;
use crate::remote::RemoteLayers;
use crate::remote::prepare::{RemoteHost, RemoteProvider, restore_remote};
use crate::{SnapshotError, Usage};

impl OverlaySnapshotter {
    /// Opens the snapshotter at `root` (as [`OverlaySnapshotter::with_options`]) with
    /// `remote` consulted on every Prepare that carries `containerd.io/snapshot.ref`.
    ///
    /// # Errors
    ///
    /// As [`OverlaySnapshotter::open`].
    pub fn with_remote(
        root: &Path,
        options: super::OverlayOptions,
        remote: Arc<dyn RemoteLayers>,
    ) -> Result<OverlaySnapshotter, SnapshotError> {
        let mut s = OverlaySnapshotter::with_options(root, options)?;
        restore_remote(&s, remote.as_ref())?;
        s.remote = Some(RemoteProvider(remote));
        Ok(s)
    }
}

impl RemoteHost for OverlaySnapshotter {
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

    fn layer_image(&self, _dir: &Path) -> Option<PathBuf> {
        None
    }

    fn takes_mounted_layers(&self) -> bool {
        true
    }

    fn finish_provided(&self, key: &str, dir: &Path) -> Result<Usage, SnapshotError> {
        disk_usage(&dir.join("fs"))
            .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))
    }
}

#[cfg(test)]
mod tests;
