//! What the checks share: turning errors into [`CheckFailure`]s, mounting a
//! snapshot with a guard that always unmounts, and building a chain of committed
//! layers from lists of [`Change`]s while checking each against a plain directory.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::CheckFailure;
use super::fs_tree::{self, Change};
use crate::{ErrorKind, Labels, Mount, SnapshotError, Snapshotter, mount};

pub(crate) type CheckResult<T = ()> = Result<T, CheckFailure>;

/// Adds what was being done to any error.
pub(crate) trait Context<T> {
    fn context(self, what: impl Display) -> CheckResult<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> CheckResult<T> {
        self.map_err(|e| CheckFailure::new(format!("{what}: {e}")))
    }
}

/// Fails with `message` unless `condition` holds.
pub(crate) fn ensure(condition: bool, message: impl FnOnce() -> String) -> CheckResult {
    if condition {
        Ok(())
    } else {
        Err(CheckFailure::new(message()))
    }
}

/// Fails unless `actual == expected`, naming `what`.
pub(crate) fn ensure_eq<T: PartialEq + std::fmt::Debug>(
    actual: T,
    expected: T,
    what: impl Display,
) -> CheckResult {
    ensure(actual == expected, || {
        format!("{what}: expected {expected:?}, got {actual:?}")
    })
}

/// Fails unless `result` is an error of `kind`, naming `what`.
pub(crate) fn expect_error<T: std::fmt::Debug>(
    result: Result<T, SnapshotError>,
    kind: ErrorKind,
    what: impl Display,
) -> CheckResult {
    match result {
        Ok(value) => Err(CheckFailure::new(format!(
            "{what}: expected a {kind:?} error, but it succeeded ({value:?})"
        ))),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(CheckFailure::new(format!(
            "{what}: expected a {kind:?} error, got {:?}: {e}",
            e.kind()
        ))),
    }
}

/// The labels containerd's suite puts on every snapshot (a GC root, so that a
/// snapshotter behind containerd's metadata layer keeps them).
pub(crate) fn gc_labels() -> Labels {
    Labels::from([("containerd.io/gc.root".to_owned(), "conformance".to_owned())])
}

/// `work/name` as a string: containerd's suite uses such absolute paths as keys,
/// which also proves a snapshotter does not treat keys as paths.
pub(crate) fn key_in(work: &Path, name: &str) -> String {
    work.join(name).to_string_lossy().into_owned()
}

/// A name no other snapshot of this process has.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A directory with a snapshot's mounts on it; unmounts on drop, so a failing check
/// leaves nothing mounted.
pub(crate) struct MountedDir {
    path: PathBuf,
    mounted: bool,
}

impl MountedDir {
    /// Creates `path` if needed and performs `mounts` on it.
    pub(crate) fn mount(mounts: &[Mount], path: &Path) -> CheckResult<MountedDir> {
        std::fs::create_dir_all(path).context(format!("create mount point {}", path.display()))?;
        ensure(!mounts.is_empty(), || {
            format!(
                "mount on {}: the snapshotter returned no mounts",
                path.display()
            )
        })?;
        // The guard exists before mounting so that a partial mount_all is undone too.
        let guard = MountedDir {
            path: path.to_owned(),
            mounted: true,
        };
        mount::mount_all(mounts, path)
            .context(format!("mount {mounts:?} on {}", path.display()))?;
        Ok(guard)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now, reporting failure (dropping also unmounts, but silently).
    pub(crate) fn unmount(mut self) -> CheckResult {
        self.mounted = false;
        mount::unmount_all(&self.path, false).context(format!("unmount {}", self.path.display()))
    }
}

impl Drop for MountedDir {
    fn drop(&mut self) {
        if self.mounted && mount::unmount_all(&self.path, false).is_err() {
            // Busy: detach, so the scratch directory can still be removed.
            let _ = mount::unmount_all(&self.path, true);
        }
    }
}

/// Prepares the active snapshot `work/name` over `parent` and mounts it on the
/// directory of the same path (containerd's `snapshotterPrepareMount`).
pub(crate) fn prepare_mounted(
    sn: &dyn Snapshotter,
    work: &Path,
    name: &str,
    parent: &str,
) -> CheckResult<(String, MountedDir)> {
    let key = key_in(work, name);
    let mounts = sn
        .prepare(&key, parent, gc_labels())
        .context(format!("prepare {key} over {parent:?}"))?;
    let mounted = MountedDir::mount(&mounts, Path::new(&key))?;
    Ok((key, mounted))
}

/// Creates a committed snapshot over `parent` holding `changes`: prepare, mount,
/// apply, unmount, commit. Returns its name.
pub(crate) fn create_layer(
    sn: &dyn Snapshotter,
    work: &Path,
    parent: &str,
    changes: &[Change],
) -> CheckResult<String> {
    let name = unique_name("layer");
    let key = format!("{name}-prepare");
    let mounts = sn
        .prepare(&key, parent, gc_labels())
        .context(format!("prepare {key} over {parent:?}"))?;
    let mounted = MountedDir::mount(&mounts, &work.join(&key))?;
    fs_tree::apply(mounted.path(), changes).context(format!("apply changes to {key}"))?;
    mounted.unmount()?;
    std::fs::remove_dir(work.join(&key)).context(format!("remove mount point of {key}"))?;
    sn.commit(&name, &key, gc_labels())
        .context(format!("commit {key} as {name}"))?;
    Ok(name)
}

/// Mounts a view of the committed `name` and compares it with the tree at
/// `expected`; removes the view afterwards.
pub(crate) fn verify_layer(
    sn: &dyn Snapshotter,
    work: &Path,
    name: &str,
    expected: &Path,
) -> CheckResult {
    let view = format!("{name}-view");
    let mounts = sn
        .view(&view, name, gc_labels())
        .context(format!("view {view} of {name}"))?;
    let mounted = MountedDir::mount(&mounts, &work.join(&view))?;
    let compared = fs_tree::compare_trees(expected, mounted.path())
        .map_err(|e| CheckFailure::new(format!("view of {name}: {e}")));
    mounted.unmount()?;
    std::fs::remove_dir(work.join(&view)).context(format!("remove mount point of {view}"))?;
    sn.remove(&view).context(format!("remove view {view}"))?;
    compared
}

/// Builds a chain of committed snapshots, one per entry of `layers`, and after each
/// checks a view of it against the same changes applied, in order, to one plain
/// directory (containerd's `checkSnapshots`). Returns the chain's names.
pub(crate) fn verify_chain(
    sn: &dyn Snapshotter,
    work: &Path,
    layers: &[Vec<Change>],
) -> CheckResult<Vec<String>> {
    let flat = work.join(unique_name("flat"));
    std::fs::create_dir(&flat).context(format!("create {}", flat.display()))?;
    let mut names: Vec<String> = Vec::new();
    for (i, changes) in layers.iter().enumerate() {
        let parent = names.last().map(String::as_str).unwrap_or("");
        let name = create_layer(sn, work, parent, changes).context(format!("layer {}", i + 1))?;
        fs_tree::apply(&flat, changes).context(format!(
            "layer {}: apply to {}",
            i + 1,
            flat.display()
        ))?;
        verify_layer(sn, work, &name, &flat).context(format!("layer {}", i + 1))?;
        names.push(name);
    }
    std::fs::remove_dir_all(&flat).context(format!("remove {}", flat.display()))?;
    Ok(names)
}
