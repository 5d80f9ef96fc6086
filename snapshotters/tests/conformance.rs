//! The conformance suite (`strata_snapshotters::testsuite`) against every
//! snapshotter of this crate: one test per check, each on a fresh root.
//! Needs root: the checks mount overlayfs and bind mounts (and EROFS images, built by
//! `mkfs.erofs`, for `erofs`).

use std::path::Path;

use std::sync::Arc;

use strata_snapshotters::erofs::{ErofsOptions, ErofsSnapshotter, MkfsErofs};
use strata_snapshotters::native::NativeSnapshotter;
use strata_snapshotters::overlay::OverlaySnapshotter;

strata_snapshotters::conformance_tests!(overlay, |root: &Path| OverlaySnapshotter::open(root));
strata_snapshotters::conformance_tests!(native, |root: &Path| NativeSnapshotter::open(root));
// The default builder at Commit is Strata's writer; mkfs.erofs (erofs-utils) is the other.
strata_snapshotters::conformance_tests!(erofs, |root: &Path| ErofsSnapshotter::open(root));
strata_snapshotters::conformance_tests!(erofs_mkfs, |root: &Path| {
    ErofsSnapshotter::with_options(
        root,
        ErofsOptions {
            builder: Arc::new(MkfsErofs::default()),
            ..ErofsOptions::default()
        },
    )
});
