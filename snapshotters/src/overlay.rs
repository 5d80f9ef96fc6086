//! The overlayfs snapshotter (Strata's default), behaving as containerd's `overlayfs`
//! snapshotter: each snapshot is `snapshots/<id>/fs` (its upper directory) and, when
//! active, `snapshots/<id>/work`; mounts stack the parents' `fs` directories as lower
//! layers. A snapshot without parents is a bind mount of its own `fs`, a view of one
//! parent a read-only bind of that parent's `fs`. With a remote-layer provider
//! ([`OverlaySnapshotter::with_remote`], in `overlay/remote.rs`) unpack Prepares may be
//! answered by committing the layer directly (containerd's remote-snapshot protocol).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::disk_usage::disk_usage;
use crate::metastore::snapshot_dirs::{
    SnapshotDirs, cleanup_dirs, make_dir, remove_snapshot, remove_snapshot_then, remove_tree,
    repair_missing_dirs,
};
use crate::metastore::{MetaStore, Snapshot};
use crate::remote::prepare::{RemoteProvider, prepare_remote};
use crate::remote::{LABEL_REMOTE, LayerRequest};
use crate::{Info, Kind, Labels, Mount, SnapshotError, Snapshotter, Usage};

/// The label that exposes a snapshot's upper directory when
/// [`OverlayOptions::upperdir_label`] is set (containerd's `upperdir_label`).
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// Configuration of an [`OverlaySnapshotter`] (containerd's overlayfs plugin config).
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// Options added to every overlay mount (not to bind mounts), e.g. `volatile`.
    pub mount_options: Vec<String>,
    /// Report each snapshot's upper directory in the [`UPPERDIR_LABEL`] label.
    pub upperdir_label: bool,
}

/// The overlayfs snapshotter over one root directory.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    dirs: SnapshotDirs,
    store: MetaStore,
    /// Options of every overlay mount before the layer directories.
    overlay_options: Vec<String>,
    upperdir_label: bool,
    /// The remote-layer provider offered each unpack Prepare ([`OverlaySnapshotter::with_remote`]).
    remote: Option<RemoteProvider>,
}

impl OverlaySnapshotter {
    /// Opens (creating if needed) the snapshotter at `root` with default options.
    ///
    /// # Errors
    ///
    /// Unavailable when another process has `root/metadata.db` open; Internal when the
    /// root cannot be created.
    pub fn open(root: &Path) -> Result<OverlaySnapshotter, SnapshotError> {
        OverlaySnapshotter::with_options(root, OverlayOptions::default())
    }

    /// Opens (creating if needed) the snapshotter at `root`.
    ///
    /// Like containerd, adds `userxattr` to overlay mounts when running in a user
    /// namespace (unless configured), and `index=off` when the kernel has the overlay
    /// `index` feature (unless an `index` option is configured).
    ///
    /// # Errors
    ///
    /// As [`OverlaySnapshotter::open`].
    pub fn with_options(
        root: &Path,
        options: OverlayOptions,
    ) -> Result<OverlaySnapshotter, SnapshotError> {
        let dirs = SnapshotDirs::create(root)?;
        let store = MetaStore::open(&root.join("metadata.db"))?;
        repair_missing_dirs(&store, &dirs, |kind, dir| {
            make_dir(&dir.join("fs"), 0o755)?;
            if kind == Kind::Active {
                make_dir(&dir.join("work"), 0o711)?;
            }
            Ok(())
        })?;
        let mut overlay_options = Vec::new();
        let has = |name: &str| {
            options
                .mount_options
                .iter()
                .any(|o| o == name || o.starts_with(&format!("{name}=")))
        };
        if !has("index") && Path::new("/sys/module/overlay/parameters/index").exists() {
            overlay_options.push("index=off".to_owned());
        }
        if !has("userxattr") && in_user_namespace() {
            overlay_options.push("userxattr".to_owned());
        }
        overlay_options.extend(options.mount_options.iter().cloned());
        Ok(OverlaySnapshotter {
            dirs,
            store,
            overlay_options,
            upperdir_label: options.upperdir_label,
            remote: None,
        })
    }

    fn upper(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join("fs")
    }

    fn work(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join("work")
    }

    fn with_upperdir(&self, id: u64, mut info: Info) -> Info {
        if self.upperdir_label {
            info.labels.insert(
                UPPERDIR_LABEL.to_owned(),
                self.upper(id).display().to_string(),
            );
        }
        info
    }

    /// The mounts of an active snapshot or view, as containerd's overlay snapshotter
    /// returns them.
    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount> {
        let bind = |source: PathBuf, ro: bool| Mount {
            kind: "bind".to_owned(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.to_owned(), "rbind".to_owned()],
        };
        match (s.kind, s.parent_ids.as_slice()) {
            (_, []) => return vec![bind(self.upper(s.id), s.kind == Kind::View)],
            (Kind::View, [only]) => return vec![bind(self.upper(*only), true)],
            _ => {}
        }
        let mut options = self.overlay_options.clone();
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", self.work(s.id).display()));
            options.push(format!("upperdir={}", self.upper(s.id).display()));
        }
        let lowers: Vec<String> = s
            .parent_ids
            .iter()
            .map(|id| self.upper(*id).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        vec![Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: String::new(),
            options,
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
            let temp = self.dirs.temp()?;
            let fs = temp.path().join("fs");
            make_dir(&fs, 0o755)?;
            if kind == Kind::Active {
                make_dir(&temp.path().join("work"), 0o711)?;
            }
            if let Some(&parent_id) = snapshot.parent_ids.first() {
                // The new upper starts owned as its parent's root, as in containerd, so a
                // rootfs owned by a mapped user stays so.
                let parent_fs = self.upper(parent_id);
                let meta = std::fs::metadata(&parent_fs).map_err(|e| {
                    SnapshotError::io(
                        format_args!("snapshot {key}: stat parent {}", parent_fs.display()),
                        e,
                    )
                })?;
                std::os::unix::fs::lchown(&fs, Some(meta.uid()), Some(meta.gid())).map_err(
                    |e| {
                        SnapshotError::io(format_args!("snapshot {key}: chown {}", fs.display()), e)
                    },
                )?;
            }
            installed = Some(self.dirs.install_unsynced(temp, snapshot.id)?);
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

/// Whether this process runs in a user namespace other than the initial one (containerd's
/// `userns.RunningInUserNS`): the initial namespace maps all 2³² − 1 ids from 0.
pub(crate) fn in_user_namespace() -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return false;
    };
    let fields: Vec<&str> = map.split_whitespace().collect();
    !(fields.len() == 3 && fields[0] == "0" && fields[1] == "0" && fields[2] == "4294967295")
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let (id, info, _) = self.store.read(|t| t.info(key))?;
        Ok(self.with_upperdir(id, info))
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        let (id, info) = self.store.write(|t| t.update(info, fieldpaths))?;
        Ok(self.with_upperdir(id, info))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.store.read(|t| t.info(key))?;
        if info.kind != Kind::Active {
            return Ok(usage);
        }
        let upper = self.upper(id);
        disk_usage(&upper).map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))
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
        if let Some(remote) = &self.remote
            && let Some(request) = LayerRequest::from_labels(&labels)
            && let Some(answer) =
                prepare_remote(self, remote.0.as_ref(), key, parent, &labels, request)
        {
            return Err(answer);
        }
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
                usage = disk_usage(&self.upper(id))
                    .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))?;
            }
            t.commit_active(key, name, usage, labels)?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let Some(remote) = &self.remote else {
            return remove_snapshot(&self.store, &self.dirs, key);
        };
        remove_snapshot_then(&self.store, &self.dirs, key, |info, dir| {
            if info.labels.contains_key(LABEL_REMOTE)
                && let Err(e) = remote.0.release(&info.name, &dir.join("fs"))
            {
                tracing::warn!(provider = remote.0.name(), snapshot = info.name, error = %e, "releasing a remote snapshot's layer");
            }
        })
    }

    fn walk(
        &self,
        filters: &[String],
        f: &mut dyn FnMut(&Info) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let infos = self.store.read(|t| t.walk(filters))?;
        for (id, info) in infos {
            f(&self.with_upperdir(id, info))?;
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

mod remote;

#[cfg(test)]
mod tests;
