//! The erofs snapshotter, behaving as containerd 2.x's `erofs` snapshotter: every
//! committed layer is one read-only EROFS image, `snapshots/<id>/layer.erofs`; active
//! snapshots are written through overlayfs (`fs` upper, `work`), marked with
//! `.erofslayer` for EROFS-aware differs; Commit converts the upper directory into
//! `layer.erofs` through a [`LayerImageBuilder`] (unless one was written there already,
//! as an EROFS differ or unpacker does) and empties it.
//!
//! With a remote-layer provider ([`ErofsSnapshotter::with_remote`], in `erofs/remote.rs`)
//! unpack Prepares may be answered by committing the layer directly, its image written by
//! the provider (containerd's remote-snapshot protocol).
//!
//! Mount shapes (what Prepare, View and Mounts return):
//! - no parent: a bind mount of the snapshot's own `fs` (`rw` active, `ro` view);
//! - a view of one layer: an `erofs` mount of the layer's `layer.erofs`, `ro,loop`
//!   (containerd's shape; `loop` lets a client without file-backed EROFS attach a loop
//!   device);
//! - otherwise one `overlay` whose lower directories are the parents' `fs` directories,
//!   on which the snapshotter keeps each parent's image mounted ([`layer_mounts`]).
//!   containerd 2.x instead returns one `erofs` mount per layer followed by a
//!   `format/mkdir/overlay` whose `lowerdir={{ overlay 0 N }}` its own mount manager
//!   resolves; containerd 1.6 and other clients perform mounts as given, so Strata mounts
//!   the layers itself, as containerd 2.1's first erofs snapshotter did.

pub mod builder;
mod layer_mounts;
pub mod mkfs;
mod remote;
pub mod writer;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk_usage::disk_usage;
use crate::metastore::snapshot_dirs::{
    SnapshotDirs, cleanup_dirs, make_dir, remove_snapshot_then, remove_tree, repair_missing_dirs,
};
use crate::metastore::{MetaStore, Snapshot};
use crate::remote::LayerRequest;
use crate::remote::prepare::{RemoteProvider, prepare_remote};
use crate::{Info, Kind, Labels, Mount, SnapshotError, Snapshotter, Usage};
pub use builder::{BuildError, LayerImageBuilder};
use layer_mounts::{LayerMounts, layer_mount};
pub use mkfs::MkfsErofs;
pub use writer::StrataErofsWriter;

/// A committed layer's image, in its snapshot directory.
pub const LAYER_IMAGE: &str = "layer.erofs";
/// The marker file of an active erofs snapshot (containerd's EROFS differ looks for it).
pub const LAYER_MARKER: &str = ".erofslayer";

/// Configuration of an [`ErofsSnapshotter`].
#[derive(Debug, Clone)]
pub struct ErofsOptions {
    /// Options added to every overlay mount (containerd's `ovl_mount_options`).
    pub mount_options: Vec<String>,
    /// What converts an upper directory into `layer.erofs` at Commit.
    pub builder: Arc<dyn LayerImageBuilder>,
}

impl Default for ErofsOptions {
    fn default() -> Self {
        ErofsOptions {
            mount_options: Vec::new(),
            // Strata's own writer: no process per layer, and it keeps what mkfs.erofs 1.5
            // cannot (255-byte names, the holes of sparse files).
            builder: Arc::new(StrataErofsWriter),
        }
    }
}

/// The erofs snapshotter over one root directory.
#[derive(Debug)]
pub struct ErofsSnapshotter {
    dirs: SnapshotDirs,
    store: MetaStore,
    overlay_options: Vec<String>,
    builder: Arc<dyn LayerImageBuilder>,
    layers: LayerMounts,
    /// The remote-layer provider offered each unpack Prepare ([`ErofsSnapshotter::with_remote`]).
    remote: Option<RemoteProvider>,
}

impl ErofsSnapshotter {
    /// Opens (creating if needed) the snapshotter at `root` with default options.
    ///
    /// # Errors
    ///
    /// As [`ErofsSnapshotter::with_options`].
    pub fn open(root: &Path) -> Result<ErofsSnapshotter, SnapshotError> {
        ErofsSnapshotter::with_options(root, ErofsOptions::default())
    }

    /// Opens (creating if needed) the snapshotter at `root`, and mounts again the layers
    /// that open snapshots stack (after a reboot nothing is mounted; a layer that fails
    /// to mount is logged here and reported by the Mounts call that needs it).
    ///
    /// # Errors
    ///
    /// NotImplemented when the kernel has no EROFS (containerd skips the plugin then);
    /// Unavailable when another process
    /// has `root/metadata.db` open; Internal when the root cannot be created.
    pub fn with_options(
        root: &Path,
        options: ErofsOptions,
    ) -> Result<ErofsSnapshotter, SnapshotError> {
        if !kernel_has_erofs() {
            return Err(SnapshotError::new(
                crate::ErrorKind::NotImplemented,
                "erofs snapshotter: the kernel has no EROFS filesystem (modprobe erofs)",
            ));
        }
        let dirs = SnapshotDirs::create(root)?;
        let store = MetaStore::open(&root.join("metadata.db"))?;
        repair_missing_dirs(&store, &dirs, |kind, dir| {
            make_dir(&dir.join("fs"), 0o755)?;
            if kind == Kind::Active {
                make_dir(&dir.join("work"), 0o711)?;
                write_marker(dir)?;
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
        if !has("userxattr") && crate::overlay::in_user_namespace() {
            overlay_options.push("userxattr".to_owned());
        }
        overlay_options.extend(options.mount_options.iter().cloned());
        let layers = LayerMounts::new(root.join("snapshots"));
        let snapshotter = ErofsSnapshotter {
            dirs,
            store,
            overlay_options,
            builder: options.builder,
            layers,
            remote: None,
        };
        snapshotter.remount_layers();
        Ok(snapshotter)
    }

    fn upper(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join("fs")
    }

    fn image(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join(LAYER_IMAGE)
    }

    /// Mounts the layers under every active snapshot and view (at open).
    fn remount_layers(&self) {
        let stacks = self.store.read(|t| {
            let mut stacks = Vec::new();
            for key in t.ids()?.into_values() {
                if let Ok(s) = t.snapshot(&key)
                    && (s.parent_ids.len() > 1 || s.kind == Kind::Active)
                {
                    stacks.push((key, s.parent_ids));
                }
            }
            Ok(stacks)
        });
        match stacks {
            Ok(stacks) => {
                for (key, ids) in stacks {
                    if let Err(e) = self.layers.ensure(&ids) {
                        tracing::error!(snapshot = key, error = %e, "erofs: mounting the layers of an open snapshot");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "erofs: listing open snapshots to mount their layers")
            }
        }
    }

    /// The mounts of an active snapshot or view (see the module documentation).
    fn mounts_of(&self, s: &Snapshot) -> Result<Vec<Mount>, SnapshotError> {
        match (s.kind, s.parent_ids.as_slice()) {
            (kind, []) => {
                let access = if kind == Kind::View { "ro" } else { "rw" };
                return Ok(vec![Mount {
                    kind: "bind".to_owned(),
                    source: self.upper(s.id).display().to_string(),
                    target: String::new(),
                    options: vec![access.to_owned(), "rbind".to_owned()],
                }]);
            }
            (Kind::View, [only]) => {
                let image = self.image(*only);
                if !image.exists() {
                    return Err(SnapshotError::failed_precondition(format!(
                        "layer {only}: {} is missing",
                        image.display()
                    )));
                }
                return Ok(vec![layer_mount(&image)]);
            }
            _ => {}
        }
        let lowers = self.layers.ensure(&s.parent_ids)?;
        let mut options = self.overlay_options.clone();
        if s.kind == Kind::Active {
            let dir = self.dirs.path(s.id);
            options.push(format!("workdir={}", dir.join("work").display()));
            options.push(format!("upperdir={}", dir.join("fs").display()));
        }
        let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        Ok(vec![Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: String::new(),
            options,
        }])
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
                write_marker(temp.path())?;
            }
            if let Some(&parent_id) = snapshot.parent_ids.first() {
                // The upper starts owned as the parent layer's root (its image mounted on
                // the parent's fs, or the emptied upper it was converted from, which kept
                // the owner), as in containerd.
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
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(e) => {
                if let Some(dir) = installed {
                    // The transaction did not commit: the directory belongs to nothing.
                    let _ = remove_tree(&dir);
                }
                return Err(e);
            }
        };
        match self.mounts_of(&snapshot) {
            Ok(mounts) => Ok(mounts),
            Err(e) => {
                // A snapshot whose mounts cannot be made is of no use to the caller, who
                // gets no key to remove: undo it.
                let _ = remove_snapshot_then(&self.store, &self.dirs, key, |_, _| {});
                Err(e)
            }
        }
    }

    /// Converts the upper directory of active snapshot `id` into its `layer.erofs`
    /// unless an image is there already. Returns whether it built one (to undo if the
    /// commit fails) and the inodes the layer holds.
    fn build_image(&self, key: &str, id: u64) -> Result<(bool, i64), SnapshotError> {
        let upper = self.upper(id);
        let inodes = disk_usage(&upper)
            .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))?
            .inodes;
        let image = self.image(id);
        if image.exists() {
            // Written by an EROFS applier: the layer's inodes are the image's.
            return Ok((false, image_inodes(&image).unwrap_or(inodes)));
        }
        self.convert_upper(key, &self.dirs.path(id))?;
        Ok((true, inodes))
    }

    /// Writes `dir/layer.erofs` from `dir/fs` through the builder, synced (the upper
    /// directory is emptied once the layer is committed, so the image must be on disk
    /// before the metadata says the layer is committed).
    fn convert_upper(&self, key: &str, dir: &Path) -> Result<(), SnapshotError> {
        let image = dir.join(LAYER_IMAGE);
        let partial = dir.join(format!("{LAYER_IMAGE}.partial"));
        let _ = std::fs::remove_file(&partial);
        if let Err(e) = self.builder.build_from_dir(&dir.join("fs"), &partial) {
            let _ = std::fs::remove_file(&partial);
            return Err(SnapshotError::internal(format!(
                "snapshot {key}: convert its upper directory to EROFS: {e}"
            )));
        }
        let sync = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
        sync(&partial)
            .and_then(|()| std::fs::rename(&partial, &image))
            .and_then(|()| sync(dir))
            .map_err(|e| {
                SnapshotError::io(
                    format_args!("snapshot {key}: put {} in place", image.display()),
                    e,
                )
            })
    }
}

impl Snapshotter for ErofsSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let (_, info, _) = self.store.read(|t| t.info(key))?;
        Ok(info)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        let (_, info) = self.store.write(|t| t.update(info, fieldpaths))?;
        Ok(info)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.store.read(|t| t.info(key))?;
        if info.kind != Kind::Active {
            return Ok(usage);
        }
        let measure = |path: &Path| {
            disk_usage(path)
                .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))
        };
        let mut usage = measure(&self.upper(id))?;
        let image = self.image(id);
        if image.exists() {
            usage.size += measure(&image)?.size;
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let snapshot = self.store.read(|t| t.snapshot(key))?;
        self.mounts_of(&snapshot)
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
        // Conversion can take long: outside the write transaction, as containerd does.
        let (id, info, _) = self.store.read(|t| t.info(key))?;
        let built = if info.kind == Kind::Active {
            Some(self.build_image(key, id)?)
        } else {
            None // commit_active reports the wrong kind
        };
        let image = self.image(id);
        let result = self.store.write(|t| {
            let mut usage = Usage::default();
            if let Some((_, inodes)) = built {
                usage.inodes = inodes;
                usage.size = disk_usage(&image)
                    .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: usage"), e))?
                    .size;
            }
            t.commit_active(key, name, usage, labels)?;
            Ok(())
        });
        if let Err(e) = result {
            if let Some((true, _)) = built {
                let _ = std::fs::remove_file(&image);
            }
            return Err(e);
        }
        // The layer lives in its image now: empty the upper (kept as the image's mount
        // point and for its owner) and the work directory.
        for dir in [self.upper(id), self.dirs.path(id).join("work")] {
            if let Err(e) = empty_dir(&dir) {
                tracing::warn!(snapshot = name, dir = %dir.display(), error = %e, "erofs: emptying a committed snapshot's directory");
            }
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        remove_snapshot_then(&self.store, &self.dirs, key, |info, dir| {
            if info.kind == Kind::Committed
                && let Err(e) = self.layers.release(&dir.join("fs"))
            {
                tracing::warn!(snapshot = info.name, error = %e, "erofs: unmounting a removed layer");
            }
        })
    }

    fn walk(
        &self,
        filters: &[String],
        f: &mut dyn FnMut(&Info) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let infos = self.store.read(|t| t.walk(filters))?;
        for (_, info) in infos {
            f(&info)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        cleanup_dirs(&self.store, &self.dirs)
    }

    fn close(&self) -> Result<(), SnapshotError> {
        let released = self
            .layers
            .release_all()
            .map_err(|e| SnapshotError::io("erofs: unmount the layers at close", e));
        self.store.close();
        released
    }
}

/// Where an applier that writes EROFS itself (containerd's EROFS differ; Strata's unpacker
/// once it streams tar into EROFS) puts the layer of the active snapshot `mounts`
/// describe: `<snapshot>/layer.erofs`, which Commit then takes as the layer instead of
/// converting the upper directory. `None` unless the mounts are an erofs snapshot's (its
/// directory holds [`LAYER_MARKER`]), as containerd's `MountsToLayer` decides.
pub fn staged_image_path(mounts: &[Mount]) -> Option<PathBuf> {
    let m = mounts.first()?;
    let upper = match m.kind.as_str() {
        "bind" => PathBuf::from(&m.source),
        "overlay" => PathBuf::from(m.options.iter().find_map(|o| o.strip_prefix("upperdir="))?),
        _ => return None,
    };
    let dir = upper.parent()?;
    dir.join(LAYER_MARKER)
        .is_file()
        .then(|| dir.join(LAYER_IMAGE))
}

/// The inode count an EROFS image's superblock records (`inos`, a little-endian u64 at
/// byte 16 of the superblock, which starts at 1024); `None` when it has no superblock.
fn image_inodes(image: &Path) -> Option<i64> {
    use std::io::{Read, Seek, SeekFrom};
    const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
    let mut sb = [0u8; 24];
    let mut file = std::fs::File::open(image).ok()?;
    file.seek(SeekFrom::Start(1024)).ok()?;
    file.read_exact(&mut sb).ok()?;
    let magic = u32::from_le_bytes(sb[0..4].try_into().ok()?);
    let inos = u64::from_le_bytes(sb[16..24].try_into().ok()?);
    (magic == EROFS_MAGIC)
        .then(|| i64::try_from(inos).ok())
        .flatten()
}

/// Whether the kernel has EROFS (`/proc/filesystems`), as containerd checks.
fn kernel_has_erofs() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|list| {
        list.lines()
            .any(|l| l.split_whitespace().last() == Some("erofs"))
    })
}

fn write_marker(dir: &Path) -> Result<(), SnapshotError> {
    let path = dir.join(LAYER_MARKER);
    std::fs::write(&path, b"")
        .map_err(|e| SnapshotError::io(format_args!("create {}", path.display()), e))
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        remove_tree(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
