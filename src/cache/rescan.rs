//! The chunk cache's directory as a whole: scanning it (at open, and whenever the shared
//! usage counter passes the bound) and evicting across every process that uses it.
//!
//! Each process keeps its own recency in memory and writes a use to the file's
//! modification time when the last one it wrote is a second old
//! ([`super::index::STAMP_EVERY`]). A rescan lists the directory, evicts the files least
//! recently used by any process (as their modification times tell) down to a low
//! watermark, writes the true total to the counter and merges what it found into the
//! process's index. A chunk another process evicts while this one reads it: the open
//! descriptor keeps working, and the next miss fetches the chunk again — an eviction
//! costs a fetch, never a wrong byte.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use strata_formats::Digest;

use super::ChunkCache;
use super::index::Found;

/// A temporary file of a live writer is left alone unless it is this old.
const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// Lists the chunks (`sha256/`) and assembled copies (`files/`) of cache directory `dir`,
/// removing temporary files their writers left behind (a writer that is gone, or a file
/// older than [`STALE_TEMPORARY`]).
pub(super) fn scan(dir: &Path) -> io::Result<Vec<Found>> {
    let context = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("chunk cache: {what} {}: {e}", p.display()),
        )
    };
    let mut found = Vec::new();
    let mut list = |d: &Path, assembled: bool| -> io::Result<()> {
        let entries = match std::fs::read_dir(d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(context("list", d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| context("list", d, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Removed meanwhile by another process: not there.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            match format!("sha256:{name}").parse::<Digest>() {
                Ok(digest) => found.push(Found {
                    digest,
                    size: meta.len(),
                    modified,
                    assembled,
                }),
                Err(_) => {
                    if abandoned(&name, modified) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(())
    };
    let chunks = dir.join("sha256");
    match std::fs::read_dir(&chunks) {
        Ok(fans) => {
            for fan in fans {
                let fan = fan.map_err(|e| context("list", &chunks, e))?.path();
                if fan.is_dir() {
                    list(&fan, false)?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("list", &chunks, e)),
    }
    list(&dir.join("files"), true)?;
    Ok(found)
}

/// Whether temporary file `name` (`.tmp-<pid>-<n>`) was left by a writer that is gone.
fn abandoned(name: &str, modified: SystemTime) -> bool {
    let old = SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age > STALE_TEMPORARY);
    let writer = name
        .strip_prefix(".tmp-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    match writer {
        // Signal 0 checks the process exists; EPERM means it does (another user's).
        Some(pid) if pid != rustix::process::getpid() => {
            old || rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
        }
        // This process's own temporary files are its writes in progress.
        Some(_) => old,
        None => true,
    }
}

/// How far below the bound a rescan evicts, so that the next one is some writes away.
fn slack(max_size: u64) -> u64 {
    (max_size / 16).min(64 << 20)
}

impl ChunkCache {
    /// When the shared counter says the directory holds more than the bound: rescans the
    /// directory, evicts the least recently used files of every process below the bound and merges
    /// the scan into this process's index. Does nothing while the directory fits.
    pub(super) fn rescan_if_over(&self) {
        let usage = self.usage.lock();
        if usage.read() <= self.max_size {
            return;
        }
        let scan_tick = self.lock().tick;
        let found = match scan(&self.dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "chunk cache: rescanning the directory");
                return;
            }
        };
        // Exact: every store and removal holds the counter's lock, held here throughout.
        let mut total: u64 = found.iter().map(|f| f.size).sum();
        let low = self.max_size - slack(self.max_size);
        let victims: Vec<(PathBuf, u64)> = {
            let mut index = self.lock();
            index.merge_scan(found, scan_tick);
            let mut victims = Vec::new();
            let mut left = total;
            while left > low {
                let Some(digest) = index.oldest().cloned() else {
                    break;
                };
                let size = index.entries[&digest].size;
                victims.push((self.entry_path(&index, &digest), size));
                index.remove(&digest);
                left = left.saturating_sub(size);
            }
            victims
        };
        for (path, size) in &victims {
            match std::fs::remove_file(path) {
                Ok(()) => total = total.saturating_sub(*size),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    total = total.saturating_sub(*size)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "chunk cache: evicting")
                }
            }
        }
        self.evictions
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        usage.write(total);
        drop(usage);
        tracing::debug!(
            bytes = total,
            evicted = victims.len(),
            "chunk cache: directory rescanned"
        );
    }
}
