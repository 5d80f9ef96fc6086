//! What `strata volume mount` mounted where: one JSON file per volume in
//! `<root>/volumes/`, named by a hash of the target directory, written atomically (temp
//! file, fsync, rename), so that `volume ls` and `volume umount` work from any later
//! process and a crash never leaves a half-written record.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_formats::Digest;

/// Largest record file read back (they are a few hundred bytes).
const MAX_RECORD: u64 = 64 << 10;

/// One mounted volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The directory the volume is mounted on (absolute).
    pub target: PathBuf,
    /// The image reference as given.
    pub reference: String,
    /// The image's manifest digest.
    pub manifest: String,
    /// The snapshotter holding the volume's View snapshot.
    pub snapshotter: String,
    /// The directory of the image mounted (`None`: its root).
    pub subpath: Option<String>,
    /// How its bytes are served: `snapshot` (unpacked into the snapshotter before the
    /// mount), `lazy` (fetched on first read by `strata serve`'s stargz snapshotter) or
    /// `whole-blobs` (an artifact whose blobs were all downloaded and verified first).
    pub mode: String,
    /// When it was mounted, seconds since the epoch.
    pub mounted_at: u64,
    /// The process serving a lazy artifact volume's filesystems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
}

/// The records under `<root>/volumes`.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// The records of the Strata root `root` (the directory is created on first write).
    pub fn new(root: &Path) -> VolumeStore {
        VolumeStore {
            dir: root.join("volumes"),
        }
    }

    /// The record file of `target`.
    fn path(&self, target: &Path) -> PathBuf {
        let id = Digest::of(target.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{}.json", &id.encoded()[..16]))
    }

    /// The tree of an artifact volume on `target`.
    pub fn tree(&self, target: &Path) -> PathBuf {
        self.path(target).with_extension("tree")
    }

    /// The directories of a lazy artifact volume on `target`.
    pub fn lazy_dirs(&self, target: &Path) -> super::lazy_artifact::LazyDirs {
        super::lazy_artifact::LazyDirs {
            root: self.path(target).with_extension("lazy"),
        }
    }

    /// The volumes' chunk cache (lazy artifact volumes share it).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// A private scratch directory for staging the mount on `target`.
    pub fn staging(&self, target: &Path) -> PathBuf {
        self.path(target).with_extension("staging")
    }

    /// Writes `record` (replacing any for the same target).
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn put(&self, record: &VolumeRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&record.target);
        let temp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The record of the volume on `target`, if any.
    ///
    /// # Errors
    ///
    /// The file exists and cannot be read or parsed.
    pub fn get(&self, target: &Path) -> std::io::Result<Option<VolumeRecord>> {
        match read_record(&self.path(target)) {
            Ok(r) if r.target == target => Ok(Some(r)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record of `target` (no error if there is none).
    ///
    /// # Errors
    ///
    /// The file exists and cannot be removed.
    pub fn remove(&self, target: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(target)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, sorted by target; unreadable files are returned as errors beside
    /// them, naming the file.
    pub fn list(&self) -> (Vec<VolumeRecord>, Vec<String>) {
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (records, errors);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match read_record(&path) {
                    Ok(r) => records.push(r),
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
            }
        }
        records.sort_by(|a, b| a.target.cmp(&b.target));
        (records, errors)
    }
}

fn read_record(path: &Path) -> std::io::Result<VolumeRecord> {
    use std::io::Read as _;
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_RECORD)
        .read_to_end(&mut text)?;
    serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_found_by_target() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(root.path());
        let record = |target: &str| VolumeRecord {
            target: PathBuf::from(target),
            reference: "reg/app:1".into(),
            manifest: "sha256:00".into(),
            snapshotter: "overlayfs".into(),
            subpath: Some("models".into()),
            mode: "snapshot".into(),
            mounted_at: 1,
            server_pid: None,
        };
        assert_eq!(store.get(Path::new("/mnt/a")).unwrap(), None);
        store.put(&record("/mnt/b")).unwrap();
        store.put(&record("/mnt/a")).unwrap();
        assert_eq!(
            store.get(Path::new("/mnt/a")).unwrap(),
            Some(record("/mnt/a"))
        );
        let (all, errors) = store.list();
        assert!(errors.is_empty());
        assert_eq!(all, [record("/mnt/a"), record("/mnt/b")]);
        store.remove(Path::new("/mnt/a")).unwrap();
        store.remove(Path::new("/mnt/a")).unwrap();
        assert_eq!(store.list().0, [record("/mnt/b")]);
        std::fs::write(root.path().join("volumes/broken.json"), b"{").unwrap();
        assert_eq!(store.list().1.len(), 1);
    }
}
