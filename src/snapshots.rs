//! The snapshotters of a Strata root, by name: `overlayfs` (the default), `native`,
//! `stargz` (overlayfs whose layers `strata serve` may mount lazily) and `erofs` (each
//! committed layer one EROFS image, stacked with overlayfs),
//! each with its own directory `<root>/snapshotters/<name>/` (metadata database and
//! snapshot directories), as containerd keeps one root per snapshotter plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_snapshotters::erofs::{ErofsOptions, ErofsSnapshotter};
use strata_snapshotters::native::NativeSnapshotter;
use strata_snapshotters::overlay::{OverlayOptions, OverlaySnapshotter};
use strata_snapshotters::{SnapshotError, Snapshotter};

/// The snapshotter used when none is named.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// The snapshotter names Strata knows.
pub const SNAPSHOTTERS: &[&str] = &["overlayfs", "native", "stargz", "erofs"];

/// The directory of snapshotter `name` under a Strata root.
pub fn snapshotter_root(root: &Path, name: &str) -> PathBuf {
    root.join("snapshotters").join(name)
}

/// The configuration of the implementations that have any (`strata serve`'s
/// `[overlayfs]` and `[erofs]` tables; defaults elsewhere).
#[derive(Debug, Clone, Default)]
pub struct SnapshotterOptions {
    /// Options of overlayfs (and stargz, which is overlayfs).
    pub overlay: OverlayOptions,
    /// Options of erofs.
    pub erofs: ErofsOptions,
}

/// Opens snapshotter `name` of the Strata root `root`.
///
/// # Errors
///
/// InvalidArgument for an unknown name; Unavailable when another process (e.g. `strata
/// serve`) holds it; anything opening its metadata or directories fails with.
pub fn open_snapshotter(
    root: &Path,
    name: &str,
    options: &SnapshotterOptions,
) -> Result<Arc<dyn Snapshotter>, SnapshotError> {
    let dir = snapshotter_root(root, name);
    match name {
        // Outside `strata serve`, stargz snapshots are listed and removed as overlayfs
        // ones (their lazily mounted layers are detached on removal).
        "overlayfs" | "stargz" => Ok(Arc::new(OverlaySnapshotter::with_options(
            &dir,
            options.overlay.clone(),
        )?)),
        "native" => Ok(Arc::new(NativeSnapshotter::open(&dir)?)),
        "erofs" => Ok(Arc::new(ErofsSnapshotter::with_options(
            &dir,
            options.erofs.clone(),
        )?)),
        other => Err(SnapshotError::invalid_argument(format!(
            "unknown snapshotter {other:?} (available: {})",
            SNAPSHOTTERS.join(", ")
        ))),
    }
}

/// A scratch directory for temporary mounts of snapshotter `name` (inside the root, so
/// it is on the same filesystem and private to root).
pub fn scratch_dir(root: &Path, name: &str) -> PathBuf {
    root.join("tmpmounts").join(name)
}
