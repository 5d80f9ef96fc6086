//! The containers `strata run` made: `<root>/containers/<id>/` holds the runtime bundle
//! (`config.json`, `rootfs/` where the snapshot is mounted, `volumes/`) and
//! `container.json`, this record, rewritten atomically as the container goes through its
//! life. A record whose owner (the `strata run` process) is gone tells a later command
//! what to clean up after a `kill -9`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest record read back.
const MAX_RECORD: u64 = 1 << 20;

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Its id (also runc's).
    pub id: String,
    /// The image as given.
    pub image: String,
    /// The command it runs.
    pub command: Vec<String>,
    /// The snapshotter holding its rootfs.
    pub snapshotter: String,
    /// The active snapshot of its rootfs.
    pub snapshot_key: String,
    /// Remove everything when it exits (`--rm`).
    pub remove: bool,
    /// The pid of the `strata run` that owns it.
    pub owner_pid: u32,
    /// When it was created, seconds since the epoch.
    pub created: u64,
    /// Its exit status once it exited (128 + N for a signal).
    pub exit_code: Option<i32>,
    /// Image volumes mounted for it (host directories under its bundle).
    pub volumes: Vec<PathBuf>,
}

/// The containers under `<root>/containers`.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

impl ContainerStore {
    /// The containers of the Strata root `root`.
    pub fn new(root: &Path) -> ContainerStore {
        ContainerStore {
            dir: root.join("containers"),
        }
    }

    /// The Strata root the containers belong to.
    pub fn root(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The bundle directory of `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Writes `record`, creating its bundle directory.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn put(&self, record: &ContainerRecord) -> std::io::Result<()> {
        let dir = self.bundle(&record.id);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("container.json");
        let temp = dir.join("container.json.tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    }

    /// The record of `id`.
    ///
    /// # Errors
    ///
    /// NotFound when there is none; unreadable or malformed files.
    pub fn get(&self, id: &str) -> std::io::Result<ContainerRecord> {
        use std::io::Read as _;
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("container {id:?}"),
            ));
        }
        let mut text = Vec::new();
        std::fs::File::open(self.bundle(id).join("container.json"))?
            .take(MAX_RECORD)
            .read_to_end(&mut text)?;
        serde_json::from_slice(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Every readable record, by creation time.
    pub fn list(&self) -> Vec<ContainerRecord> {
        let mut all: Vec<ContainerRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// Removes the bundle directory of `id` (after its mounts are gone).
    ///
    /// # Errors
    ///
    /// The directory cannot be removed.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.bundle(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    let exists = i32::try_from(pid).is_ok_and(|pid| {
        rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
    });
    // A zombie (exited, not yet reaped: `strata run -d`'s process once its parent is
    // gone, until init reaps it) is not alive.
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
}
