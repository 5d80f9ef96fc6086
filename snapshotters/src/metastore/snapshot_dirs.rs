//! The `snapshots/` directory of a local snapshotter root, in containerd's layout: one
//! directory per snapshot named by its id, `new-*` while a snapshot is being prepared,
//! `rm-*` while one is being removed. Anything not named by a live id is garbage that
//! `Cleanup` removes, so a crash at any point leaves nothing that metadata relies on
//! half-made.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::MetaStore;
use crate::SnapshotError;

/// The `snapshots/` directory under a snapshotter root.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotDirs {
    dir: PathBuf,
}

impl SnapshotDirs {
    /// Creates `root` (0700) and `root/snapshots` (0700: unprivileged host users must not
    /// reach setuid files inside) when missing.
    pub(crate) fn create(root: &Path) -> Result<SnapshotDirs, SnapshotError> {
        let dir = root.join("snapshots");
        for d in [root, dir.as_path()] {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
            {
                Ok(()) => {}
                Err(e) => return Err(SnapshotError::io(format_args!("create {}", d.display()), e)),
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SnapshotError::io(format_args!("chmod {}", dir.display()), e))?;
        Ok(SnapshotDirs { dir })
    }

    /// The directory of snapshot `id`.
    pub(crate) fn path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Creates a fresh `new-*` directory (mode 0700), removed again when the returned
    /// guard is dropped without [`TempDir::persist`].
    pub(crate) fn temp(&self) -> Result<TempDir, SnapshotError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = self
                .dir
                .join(format!("new-{}-{n}-{nanos:08x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir { path: Some(path) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(SnapshotError::io(
                        format_args!("create a directory in {}", self.dir.display()),
                        e,
                    ));
                }
            }
        }
    }

    /// Moves `temp` into place as the directory of snapshot `id`. Called inside the write
    /// transaction that records `id`, so a directory already there belongs to no
    /// snapshot (left by a crash before an earlier commit) and is replaced. The metadata
    /// commit that follows is durable, so the directory it names is made durable first:
    /// its entries, then the rename.
    pub(crate) fn install(&self, temp: TempDir, id: u64) -> Result<PathBuf, SnapshotError> {
        self.install_with(temp, id, true)
    }

    /// [`SnapshotDirs::install`] without the two directory syncs, for snapshotters whose
    /// new directories are empty (overlayfs) and can be recreated by
    /// [`repair_missing_dirs`] should a power loss drop the rename: what containerd's
    /// overlayfs does (it syncs nothing but its database), and a third of our
    /// Prepare+Commit latency on this disk.
    pub(crate) fn install_unsynced(
        &self,
        temp: TempDir,
        id: u64,
    ) -> Result<PathBuf, SnapshotError> {
        self.install_with(temp, id, false)
    }

    fn install_with(
        &self,
        mut temp: TempDir,
        id: u64,
        sync: bool,
    ) -> Result<PathBuf, SnapshotError> {
        let target = self.path(id);
        let from = temp.path().to_path_buf();
        if std::fs::symlink_metadata(&target).is_ok() {
            remove_tree(&target).map_err(|e| {
                SnapshotError::io(format_args!("remove stale {}", target.display()), e)
            })?;
        }
        if sync {
            sync_dir(&from)?;
        }
        std::fs::rename(&from, &target).map_err(|e| {
            SnapshotError::io(
                format_args!("rename {} to {}", from.display(), target.display()),
                e,
            )
        })?;
        temp.persist();
        if sync {
            sync_dir(&self.dir)?;
        }
        Ok(target)
    }

    /// Renames the directory of `id` to `rm-<id>` and returns the new path; `None` when
    /// the snapshot has no directory (a native view).
    pub(crate) fn trash(&self, id: u64) -> Result<Option<PathBuf>, SnapshotError> {
        let from = self.path(id);
        let to = self.dir.join(format!("rm-{id}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SnapshotError::io(
                format_args!("rename {} to {}", from.display(), to.display()),
                e,
            )),
        }
    }

    /// Undoes [`SnapshotDirs::trash`] after the transaction failed to commit.
    pub(crate) fn untrash(&self, id: u64, trashed: &Path) -> io::Result<()> {
        std::fs::rename(trashed, self.path(id))
    }

    /// Entries of `snapshots/` that are not the directory of a snapshot in `ids`.
    pub(crate) fn unreferenced(
        &self,
        ids: impl Fn(u64) -> bool,
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| SnapshotError::io(format_args!("list {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| SnapshotError::io(format_args!("list {}", self.dir.display()), e))?;
            let name = entry.file_name();
            let live = name
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| ids(id) && name.to_str() == Some(id.to_string().as_str()));
            if !live {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
}

/// Remove as both local snapshotters do it: in one write transaction the record goes and
/// the directory is renamed to `rm-<id>`; only after the commit is it deleted. A crash
/// leaves either the old state or an `rm-*` directory for Cleanup.
pub(crate) fn remove_snapshot(
    store: &MetaStore,
    dirs: &SnapshotDirs,
    key: &str,
) -> Result<(), SnapshotError> {
    remove_snapshot_then(store, dirs, key, |_, _| {})
}

/// [`remove_snapshot`], calling `before_delete(info, trashed_dir)` once the removal is
/// committed and before the directory is deleted (a remote snapshot's provider unmounts
/// what it mounted there).
pub(crate) fn remove_snapshot_then(
    store: &MetaStore,
    dirs: &SnapshotDirs,
    key: &str,
    before_delete: impl FnOnce(&crate::Info, &Path),
) -> Result<(), SnapshotError> {
    let mut trashed: Option<(u64, PathBuf)> = None;
    let mut removed: Option<crate::Info> = None;
    let result = store.write(|t| {
        let (_, info, _) = t.info(key)?;
        let (id, _) = t.remove(key)?;
        removed = Some(info);
        if let Some(path) = dirs.trash(id)? {
            trashed = Some((id, path));
        }
        Ok(())
    });
    match (result, trashed) {
        (Ok(()), Some((_, path))) => {
            if let Some(info) = &removed {
                before_delete(info, &path);
            }
            // The snapshot is gone; a failure here only leaves garbage for Cleanup.
            let _ = remove_tree(&path);
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(e), Some((id, path))) => {
            dirs.untrash(id, &path).map_err(|re| {
                SnapshotError::io(
                    format_args!("snapshot {key}: {e}; restoring {}", path.display()),
                    re,
                )
            })?;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// Cleanup as both local snapshotters do it: list, under the write lock (so no snapshot
/// is being created or removed meanwhile), the directories no record names; delete them.
pub(crate) fn cleanup_dirs(store: &MetaStore, dirs: &SnapshotDirs) -> Result<(), SnapshotError> {
    let garbage = store.write(|t| {
        let ids = t.ids()?;
        dirs.unreferenced(|id| ids.contains_key(&id))
    })?;
    for path in garbage {
        remove_tree(&path).map_err(|e| {
            SnapshotError::io(format_args!("cleanup: remove {}", path.display()), e)
        })?;
    }
    Ok(())
}

/// For snapshotters installing with [`SnapshotDirs::install_unsynced`]: after a power
/// loss, an active snapshot or view whose directory never reached the disk gets it back
/// through `recreate(kind, dir)` (its content was empty at Prepare and nothing written
/// since was synced either); a committed snapshot without its directory is logged (its
/// layer must be pulled again), not hidden. Returns the keys repaired.
pub(crate) fn repair_missing_dirs(
    store: &MetaStore,
    dirs: &SnapshotDirs,
    recreate: impl Fn(crate::Kind, &Path) -> Result<(), SnapshotError>,
) -> Result<Vec<String>, SnapshotError> {
    store.write(|t| {
        let mut repaired = Vec::new();
        for (id, key) in t.ids()? {
            let dir = dirs.path(id);
            if dir.join("fs").exists() {
                continue;
            }
            let (_, info, _) = t.info(&key)?;
            if info.kind == crate::Kind::Committed {
                tracing::error!(
                    snapshot = key,
                    dir = %dir.display(),
                    "committed snapshot has no directory (lost in a crash?): remove it and pull its layer again"
                );
                continue;
            }
            let temp = dirs.temp()?;
            recreate(info.kind, temp.path())?;
            dirs.install(temp, id)?;
            tracing::warn!(snapshot = key, dir = %dir.display(), "recreated the missing directory of an uncommitted snapshot");
            repaired.push(key);
        }
        Ok(repaired)
    })
}

fn sync_dir(path: &Path) -> Result<(), SnapshotError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| SnapshotError::io(format_args!("sync {}", path.display()), e))
}

/// Removes a directory tree; a mount left inside (a crashed container) is detached first.
/// Creates the directory `path` with exactly `mode` (the umask notwithstanding).
pub(crate) fn make_dir(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| SnapshotError::io(format_args!("create {}", path.display()), e))
}

pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            // A mount inside (EBUSY; or a FUSE layer mount, whose files cannot be deleted
            // and which may be dead: ENOTCONN) is detached, then the removal is retried.
            let mounts = detach_mounts_under(path)?;
            if mounts == 0 {
                return Err(e);
            }
            std::fs::remove_dir_all(path)
        }
    }
}

/// Lazily unmounts every mount at or below `path`, deepest first; returns how many.
fn detach_mounts_under(path: &Path) -> io::Result<usize> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(path))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in &points {
        crate::mount::unmount_all(p, true)?;
    }
    Ok(points.len())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `new-*` directory that is removed unless persisted.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn persist(&mut self) {
        self.path = None;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: Cleanup removes whatever is left.
            let _ = remove_tree(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_install_trash_and_unreferenced() {
        let root = tempfile::tempdir().unwrap();
        let dirs = SnapshotDirs::create(root.path()).unwrap();
        let mode = std::fs::metadata(root.path().join("snapshots"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let dropped = dirs.temp().unwrap();
        let dropped_path = dropped.path().to_path_buf();
        assert!(dropped_path.is_dir());
        drop(dropped);
        assert!(!dropped_path.exists());

        let t = dirs.temp().unwrap();
        std::fs::create_dir(t.path().join("fs")).unwrap();
        // A stale directory with the same id (crash before an earlier commit) is replaced.
        std::fs::create_dir_all(dirs.path(1).join("junk")).unwrap();
        let p = dirs.install(t, 1).unwrap();
        assert!(p.join("fs").is_dir() && !p.join("junk").exists());

        std::fs::create_dir(dirs.path(2)).unwrap();
        std::fs::create_dir(root.path().join("snapshots/new-x")).unwrap();
        let mut garbage = dirs.unreferenced(|id| id == 1).unwrap();
        garbage.sort();
        assert_eq!(
            garbage,
            vec![dirs.path(2), root.path().join("snapshots/new-x")]
        );

        let trashed = dirs.trash(1).unwrap().unwrap();
        assert_eq!(trashed, root.path().join("snapshots/rm-1"));
        assert_eq!(dirs.trash(1).unwrap(), None);
        dirs.untrash(1, &trashed).unwrap();
        assert!(dirs.path(1).join("fs").is_dir());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo(r"/plain\04"), r"/plain\04");
    }
}
