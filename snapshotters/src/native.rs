//! The native snapshotter, for hosts without overlayfs, behaving as containerd's
//! `native` snapshotter: every active snapshot is a full copy of its parent
//! (`snapshots/<id>`, reflinked where the filesystem allows, see [`crate::copy_tree`]),
//! mounted with a bind. A view of a parent binds the parent's directory read-only and
//! copies nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::copy_tree::copy_tree;
use crate::disk_usage::disk_usage;
use crate::metastore::snapshot_dirs::{SnapshotDirs, cleanup_dirs, remove_snapshot, remove_tree};
use crate::metastore::{MetaStore, Snapshot};
use crate::{Info, Kind, Labels, Mount, SnapshotError, Snapshotter, Usage};

/// The native (copying) snapshotter over one root directory.
#[derive(Debug)]
pub struct NativeSnapshotter {
    dirs: SnapshotDirs,
    store: MetaStore,
}

impl NativeSnapshotter {
    /// Opens (creating if needed) the snapshotter at `root`.
    ///
    /// # Errors
    ///
    /// Unavailable when another process has `root/metadata.db` open; Internal when the
    /// root cannot be created.
    pub fn open(root: &Path) -> Result<NativeSnapshotter, SnapshotError> {
        let dirs = SnapshotDirs::create(root)?;
        let store = MetaStore::open(&root.join("metadata.db"))?;
        Ok(NativeSnapshotter { dirs, store })
    }

    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount> {
        let source = match (s.kind, s.parent_ids.first()) {
            (Kind::View, Some(&parent)) => self.dirs.path(parent),
            _ => self.dirs.path(s.id),
        };
        let access = if s.kind == Kind::View { "ro" } else { "rw" };
        vec![Mount {
            kind: "bind".to_owned(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec!["rbind".to_owned(), access.to_owned()],
        }]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let mut installed: Option<PathBuf> = None;
        let result = self.store.write(|txn| {
            let (snapshot, _) = txn.create(kind, key, parent, labels)?;
            let parent_dir = snapshot.parent_ids.first().map(|&id| self.dirs.path(id));
            if kind == Kind::View && parent_dir.is_some() {
                return Ok(snapshot);
            }
            let temp = self.dirs.temp()?;
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).map_err(
                |e| {
                    SnapshotError::io(
                        format_args!("snapshot {key}: chmod {}", temp.path().display()),
                        e,
                    )
                },
            )?;
            if let Some(parent_dir) = parent_dir {
                copy_tree(&parent_dir, temp.path()).map_err(|e| {
                    SnapshotError::io(format_args!("snapshot {key}: copy parent {parent}"), e)
                })?;
            }
            installed = Some(self.dirs.install(temp, snapshot.id)?);
            Ok(snapshot)
        });
        match result {
            Ok(snapshot) => Ok(self.mounts_of(&snapshot)),
            Err(e) => {
                if let Some(dir) = installed {
                    // The transaction did not commit: the directory belongs to nothing.
                    let _ = remove_tree(&dir);
                }
                Err(e)
            }
        }
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.store.read(|t| t.info(key))?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        Ok(self.store.write(|t| t.update(info, fieldpaths))?.1)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.store.read(|t| t.info(key))?;
        if info.kind != Kind::Active {
            return Ok(usage);
        }
        disk_usage(&self.dirs.path(id))
            .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let snapshot = self.store.read(|t| t.snapshot(key))?;
        Ok(self.mounts_of(&snapshot))
    }

    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<(), SnapshotError> {
        self.store.write(|t| {
            let (id, info, _) = t.info(key)?;
            let mut usage = Usage::default();
            if info.kind == Kind::Active {
                usage = disk_usage(&self.dirs.path(id))
                    .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))?;
            }
            t.commit_active(key, name, usage, labels)?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        remove_snapshot(&self.store, &self.dirs, key)
    }

    fn walk(
        &self,
        filters: &[String],
        f: &mut dyn FnMut(&Info) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        for (_, info) in self.store.read(|t| t.walk(filters))? {
            f(&info)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        cleanup_dirs(&self.store, &self.dirs)
    }

    fn close(&self) -> Result<(), SnapshotError> {
        self.store.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::ErrorKind;
    use crate::mount::{mount_all, unmount_all};

    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            if let Err(e) = unmount_all(&self.0, true) {
                // Panicking while unwinding would abort and hide the first failure.
                eprintln!("unmount {}: {e}", self.0.display());
            }
        }
    }

    fn mounted(mounts: &[Mount], target: &Path) -> Mounted {
        std::fs::create_dir_all(target).unwrap();
        let guard = Mounted(target.to_path_buf());
        mount_all(mounts, target).expect("mount");
        guard
    }

    #[test]
    fn children_are_copies_and_views_bind_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let s = NativeSnapshotter::open(&root).unwrap();
        let snapshots = root.join("snapshots");
        let m = s.prepare("a", "", Labels::new()).unwrap();
        assert_eq!(
            m,
            vec![Mount {
                kind: "bind".into(),
                source: snapshots.join("1").display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()]
            }]
        );
        assert_eq!(
            std::fs::metadata(snapshots.join("1")).unwrap().mode() & 0o7777,
            0o755
        );
        let mnt = dir.path().join("mnt");
        {
            let g = mounted(&m, &mnt);
            std::fs::write(g.0.join("file"), b"base").unwrap();
        }
        s.commit("base", "a", Labels::new()).unwrap();
        let m = s.prepare("b", "base", Labels::new()).unwrap();
        {
            let g = mounted(&m, &mnt);
            assert_eq!(std::fs::read(g.0.join("file")).unwrap(), b"base");
            std::fs::write(g.0.join("file"), b"changed").unwrap();
        }
        assert_eq!(
            std::fs::read(snapshots.join("1/file")).unwrap(),
            b"base",
            "the parent is untouched"
        );
        let usage = s.usage("b").unwrap();
        assert_eq!(usage.inodes, 2);
        s.commit("top", "b", Labels::new()).unwrap();
        assert_eq!(s.usage("top").unwrap(), usage);

        let v = s.view("v", "top", Labels::new()).unwrap();
        assert_eq!(v[0].source, snapshots.join("2").display().to_string());
        assert_eq!(v[0].options, vec!["rbind", "ro"]);
        assert!(
            !snapshots.join("3").exists(),
            "a view of a parent copies nothing"
        );
        {
            let g = mounted(&v, &mnt);
            assert_eq!(std::fs::read(g.0.join("file")).unwrap(), b"changed");
            assert_eq!(
                std::fs::write(g.0.join("x"), b"")
                    .unwrap_err()
                    .raw_os_error(),
                Some(libc::EROFS)
            );
        }
        assert_eq!(
            s.commit("n", "v", Labels::new()).unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
        s.remove("v").unwrap();
        assert_eq!(
            s.remove("base").unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
        s.remove("top").unwrap();
        s.remove("base").unwrap();
        std::fs::create_dir(snapshots.join("new-junk")).unwrap();
        s.cleanup().unwrap();
        assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0);
        s.close().unwrap();
        s.close().unwrap();
        assert!(s.stat("a").is_err());
    }

    #[test]
    fn empty_view_is_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = NativeSnapshotter::open(dir.path()).unwrap();
        let v = s.view("v", "", Labels::new()).unwrap();
        assert_eq!(
            v[0].source,
            dir.path().join("snapshots/1").display().to_string()
        );
        assert_eq!(v[0].options, vec!["rbind", "ro"]);
        assert!(dir.path().join("snapshots/1").is_dir());
    }
}
