//! The conformance suite every snapshotter passes: the checks containerd's
//! `snapshots/testsuite` makes (same scenarios, same expectations, our own code),
//! plus the error kinds, label limits, timestamps and usage rules containerd's
//! metadata layer enforces.
//!
//! A check takes a `&dyn Snapshotter` and a scratch directory it may mount into, so
//! the same checks run against an in-process snapshotter and against a client of the
//! socket. [`run_check`] gives each check a fresh root and a fresh snapshotter;
//! [`conformance_tests!`](crate::conformance_tests) turns the whole table into one
//! `#[test]` per check. Checks mount for real (they need root) and unmount on every
//! path, failures included.

pub(crate) mod fs_tree;
mod harness;
mod issues;
mod layers;
mod lifecycle;
mod metadata;

use std::fmt;
use std::path::Path;

use crate::{SnapshotError, Snapshotter};

/// Why a check failed: what was being checked and what happened instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailure(String);

impl CheckFailure {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The signature of every check: the snapshotter under test and a scratch directory
/// (empty, outside the snapshotter's root) for mount points and expected trees.
pub type CheckFn = fn(&dyn Snapshotter, &Path) -> Result<(), CheckFailure>;

/// One named check of the suite.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's name, also the name of its generated `#[test]`.
    pub name: &'static str,
    /// The check itself.
    pub run: CheckFn,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every check of the suite, in the order containerd's suite runs its own, then ours.
pub const CHECKS: &[Check] = &[
    Check {
        name: "basic",
        run: lifecycle::basic,
    },
    Check {
        name: "stat_active",
        run: lifecycle::stat_active,
    },
    Check {
        name: "stat_committed",
        run: lifecycle::stat_committed,
    },
    Check {
        name: "transitive_layers",
        run: layers::transitive_layers,
    },
    Check {
        name: "prepare_view_failures",
        run: lifecycle::prepare_view_failures,
    },
    Check {
        name: "update",
        run: metadata::update,
    },
    Check {
        name: "remove",
        run: lifecycle::remove,
    },
    Check {
        name: "walk",
        run: metadata::walk,
    },
    Check {
        name: "layer_file_update",
        run: issues::layer_file_update,
    },
    Check {
        name: "remove_directory_in_lower_layer",
        run: issues::remove_directory_in_lower_layer,
    },
    Check {
        name: "chown",
        run: issues::chown,
    },
    Check {
        name: "directory_permission_on_commit",
        run: issues::directory_permission_on_commit,
    },
    Check {
        name: "remove_intermediate_snapshot",
        run: lifecycle::remove_intermediate_snapshot,
    },
    Check {
        name: "deleted_files_in_child_snapshot",
        run: layers::deleted_files_in_child_snapshot,
    },
    Check {
        name: "move_file_from_lower_layer",
        run: layers::move_file_from_lower_layer,
    },
    Check {
        name: "view_readonly",
        run: layers::view_readonly,
    },
    Check {
        name: "stat_in_walk",
        run: metadata::stat_in_walk,
    },
    Check {
        name: "close_twice",
        run: lifecycle::close_twice,
    },
    Check {
        name: "root_permission",
        run: layers::root_permission,
    },
    Check {
        name: "rename",
        run: issues::rename,
    },
    Check {
        name: "layers_128_mount",
        run: layers::layers_128_mount,
    },
    Check {
        name: "error_kinds",
        run: lifecycle::error_kinds,
    },
    Check {
        name: "mounts",
        run: lifecycle::mounts,
    },
    Check {
        name: "label_size_limit",
        run: metadata::label_size_limit,
    },
    Check {
        name: "timestamps",
        run: metadata::timestamps,
    },
    Check {
        name: "walk_callback_error",
        run: metadata::walk_callback_error,
    },
    Check {
        name: "usage",
        run: metadata::usage,
    },
    Check {
        name: "commit_labels",
        run: lifecycle::commit_labels,
    },
    Check {
        name: "cleanup_keeps_live_snapshots",
        run: lifecycle::cleanup_keeps_live_snapshots,
    },
];

/// The check called `name`, if the suite has one.
pub fn find_check(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// What a snapshotter constructor may return: a concrete snapshotter or a boxed one.
pub trait AsSnapshotter {
    /// The snapshotter to check.
    fn as_snapshotter(&self) -> &dyn Snapshotter;
}

impl<S: Snapshotter> AsSnapshotter for S {
    fn as_snapshotter(&self) -> &dyn Snapshotter {
        self
    }
}

impl AsSnapshotter for Box<dyn Snapshotter> {
    fn as_snapshotter(&self) -> &dyn Snapshotter {
        self.as_ref()
    }
}

/// Runs `check` against a snapshotter `open` creates on a fresh root, in a fresh
/// temporary directory laid out as containerd's suite does (`root/` for the
/// snapshotter, `work/` for the check). The snapshotter is closed afterwards and
/// everything is removed; mounts the check made are undone by the check itself.
/// Sets the process umask to 0, as containerd's suite does.
pub fn run_check<S, F>(check: &Check, open: F) -> Result<(), CheckFailure>
where
    S: AsSnapshotter,
    F: FnOnce(&Path) -> Result<S, SnapshotError>,
{
    // containerd's suite clears the umask for the whole run, so that a snapshotter
    // relying on it for modes (a root directory left 0777) fails; every check wants
    // the same value, so checks running in parallel agree.
    // SAFETY: umask only swaps the process's file mode creation mask.
    unsafe { libc::umask(0) };
    let scratch = tempfile::Builder::new()
        .prefix(&format!("strata-suite-{}-", check.name))
        .tempdir()
        .map_err(|e| {
            CheckFailure::new(format!("{}: create a temporary directory: {e}", check.name))
        })?;
    let root = scratch.path().join("root");
    let work = scratch.path().join("work");
    for dir in [&root, &work] {
        std::fs::create_dir(dir).map_err(|e| {
            CheckFailure::new(format!("{}: create {}: {e}", check.name, dir.display()))
        })?;
    }
    let snapshotter = open(&root).map_err(|e| {
        CheckFailure::new(format!(
            "{}: open the snapshotter on {}: {e}",
            check.name,
            root.display()
        ))
    })?;
    let outcome = (check.run)(snapshotter.as_snapshotter(), &work);
    let closed = snapshotter.as_snapshotter().close();
    drop(snapshotter);
    outcome.map_err(|e| CheckFailure::new(format!("{}: {e}", check.name)))?;
    closed.map_err(|e| CheckFailure::new(format!("{}: close: {e}", check.name)))?;
    scratch.close().map_err(|e| {
        CheckFailure::new(format!("{}: remove the scratch directory: {e}", check.name))
    })
}

/// Runs the check called `name` (see [`run_check`]), panicking with the failure:
/// the body of each test [`conformance_tests!`](crate::conformance_tests) generates.
pub fn run_named_check<S, F>(name: &str, open: F)
where
    S: AsSnapshotter,
    F: FnOnce(&Path) -> Result<S, SnapshotError>,
{
    let Some(check) = find_check(name) else {
        panic!("the conformance suite has no check called {name}");
    };
    if let Err(failure) = run_check(check, open) {
        panic!("{failure}");
    }
}

/// Expands to `mod $module { … }` with one `#[test]` per check of the suite, each
/// running that check against a snapshotter `$open` (a `Fn(&Path) -> Result<S,
/// SnapshotError>`, where `S` is a snapshotter or a `Box<dyn Snapshotter>`) creates
/// on a fresh root. A further test fails when the suite has checks this list lacks.
///
/// ```ignore
/// strata_snapshotters::conformance_tests!(overlay, |root: &std::path::Path| OverlaySnapshotter::open(root));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $open:expr) => {
        $crate::conformance_tests!(@tests $module, $open, [
            basic,
            stat_active,
            stat_committed,
            transitive_layers,
            prepare_view_failures,
            update,
            remove,
            walk,
            layer_file_update,
            remove_directory_in_lower_layer,
            chown,
            directory_permission_on_commit,
            remove_intermediate_snapshot,
            deleted_files_in_child_snapshot,
            move_file_from_lower_layer,
            view_readonly,
            stat_in_walk,
            close_twice,
            root_permission,
            rename,
            layers_128_mount,
            error_kinds,
            mounts,
            label_size_limit,
            timestamps,
            walk_callback_error,
            usage,
            commit_labels,
            cleanup_keeps_live_snapshots,
        ]);
    };
    (@tests $module:ident, $open:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $check() {
                    $crate::testsuite::run_named_check(stringify!($check), $open);
                }
            )*

            #[test]
            fn every_check_has_a_test() {
                let generated: &[&str] = &[$(stringify!($check)),*];
                let missing: Vec<&str> = $crate::testsuite::CHECKS
                    .iter()
                    .map(|c| c.name)
                    .filter(|name| !generated.contains(name))
                    .collect();
                assert!(missing.is_empty(), "conformance_tests! lacks tests for {missing:?}");
            }
        }
    };
}
