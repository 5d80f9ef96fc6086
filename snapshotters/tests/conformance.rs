//! The conformance suite (`strata_snapshotters::testsuite`) against every
//! snapshotter of this crate: one test per check, each on a fresh root.
//! Needs root: the checks mount overlayfs and bind mounts.

use std::path::Path;

use strata_snapshotters::native::NativeSnapshotter;
use strata_snapshotters::overlay::OverlaySnapshotter;

strata_snapshotters::conformance_tests!(overlay, |root: &Path| OverlaySnapshotter::open(root));
strata_snapshotters::conformance_tests!(native, |root: &Path| NativeSnapshotter::open(root));
