//! The EROFS mounts the erofs snapshotter keeps itself: each committed layer that an
//! overlay needs as a lower directory has its `layer.erofs` mounted read-only on its own
//! `snapshots/<id>/fs` (as containerd 2.1's first erofs snapshotter did), so the mount
//! list handed to clients is one plain `overlay` that any client — containerd 1.6's
//! `mount.All` included — can perform. Mounts are made when a Mounts/Prepare/View needs
//! them and again when the snapshotter is opened (after a reboot or restart), and undone
//! when the layer is removed or the snapshotter closed. Overlayfs holds private clones of
//! its lower mounts, so unmounting these never disturbs an overlay already mounted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Mount, SnapshotError, mount};

/// The layer mounts under one `snapshots/` directory.
#[derive(Debug)]
pub(crate) struct LayerMounts {
    snapshots: PathBuf,
    /// Serializes check-then-mount so two callers never stack two mounts on one layer.
    lock: Mutex<()>,
}

impl LayerMounts {
    pub(crate) fn new(snapshots: PathBuf) -> Self {
        LayerMounts {
            snapshots,
            lock: Mutex::new(()),
        }
    }

    fn layer_dir(&self, id: u64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    /// Makes sure each layer in `ids` is mounted on its `fs` directory; returns those
    /// directories in the same order.
    pub(crate) fn ensure(&self, ids: &[u64]) -> Result<Vec<PathBuf>, SnapshotError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mounted = erofs_mount_points();
        let mut dirs = Vec::with_capacity(ids.len());
        for &id in ids {
            let dir = self.layer_dir(id);
            let fs = dir.join("fs");
            if !mounted.contains(&fs) {
                let image = dir.join("layer.erofs");
                if !image.exists() {
                    return Err(SnapshotError::failed_precondition(format!(
                        "layer {}: {} is missing (a layer committed by another snapshotter?)",
                        id,
                        image.display()
                    )));
                }
                layer_mount(&image).mount(&fs).map_err(|e| {
                    SnapshotError::io(format_args!("layer {id}: mount its EROFS image"), e)
                })?;
            }
            dirs.push(fs);
        }
        Ok(dirs)
    }

    /// Unmounts the layer mounted on `fs` (a layer being removed; its directory may
    /// already be renamed). Nothing mounted there is not an error.
    pub(crate) fn release(&self, fs: &Path) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        mount::unmount_all(fs, true)
    }

    /// Unmounts every layer mounted under `snapshots/` (close).
    pub(crate) fn release_all(&self) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        for point in erofs_mount_points() {
            if point.starts_with(&self.snapshots) {
                mount::unmount_all(&point, true)?;
            }
        }
        Ok(())
    }
}

/// How a layer image is mounted, by the snapshotter on a layer's `fs` and by clients for
/// a view of one layer: read-only, `loop` so that a client without file-backed EROFS
/// (containerd 1.6 on an older kernel) attaches a loop device.
pub(crate) fn layer_mount(image: &Path) -> Mount {
    Mount {
        kind: "erofs".to_owned(),
        source: image.display().to_string(),
        target: String::new(),
        options: vec!["ro".to_owned(), "loop".to_owned()],
    }
}

/// The mount points of every `erofs` mount this process sees.
fn erofs_mount_points() -> HashSet<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return HashSet::new();
    };
    info.lines()
        .filter_map(|line| {
            // `id parent dev root point options [optional…] - fstype source super`
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let mut rest = fields.skip_while(|f| *f != "-");
            rest.next()?;
            (rest.next()? == "erofs").then(|| PathBuf::from(mount::unescape_mount_point(point)))
        })
        .collect()
}
