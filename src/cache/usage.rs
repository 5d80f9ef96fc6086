//! The bytes a chunk cache directory holds, as every process using the directory sees
//! them: a counter in `<dir>/usage` (8 bytes, little-endian), changed under an exclusive
//! `flock` of that file, so that several processes (a daemon, each lazy volume's serving
//! process) keep one directory under one bound.
//!
//! The counter is an estimate kept honest from both sides: a writer adds a chunk's size
//! *before* renaming it into place and only the process whose `unlink` succeeded takes it
//! off, so a crash or a race leaves it too high, never too low. Too high costs a rescan
//! ([`super::ChunkCache`] rescans the directory when the counter passes the bound, and the
//! rescan writes the true total back); too low would let the directory outgrow the bound.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The shared byte counter of one cache directory.
#[derive(Debug)]
pub(super) struct SharedUsage {
    // flock is per open file description: the mutex keeps this process's threads apart,
    // the flock other processes.
    file: Mutex<File>,
}

/// The counter, locked against every other thread and process until dropped.
pub(super) struct UsageGuard<'a> {
    file: MutexGuard<'a, File>,
}

impl SharedUsage {
    /// Opens (creating) the counter of cache directory `dir`.
    pub(super) fn open(dir: &Path) -> io::Result<SharedUsage> {
        let path = dir.join("usage");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Ok(SharedUsage {
            file: Mutex::new(file),
        })
    }

    /// Waits for the counter's lock.
    pub(super) fn lock(&self) -> UsageGuard<'_> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // Only EINTR or EWOULDBLOCK can fail a blocking flock of an open file; retrying
        // the first is right, the second cannot happen.
        while let Err(e) = rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive) {
            if e != rustix::io::Errno::INTR {
                tracing::warn!(error = %e, "chunk cache: locking the usage counter");
                break;
            }
        }
        UsageGuard { file }
    }
}

impl UsageGuard<'_> {
    /// The counter (0 for a new or torn file).
    pub(super) fn read(&self) -> u64 {
        let mut bytes = [0u8; 8];
        match self.file.read_exact_at(&mut bytes, 0) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => 0,
        }
    }

    /// Sets the counter. A failed write leaves the old value: the next rescan corrects it.
    pub(super) fn write(&self, total: u64) {
        if let Err(e) = self.file.write_all_at(&total.to_le_bytes(), 0) {
            tracing::warn!(error = %e, "chunk cache: writing the usage counter");
        }
    }
}

impl Drop for UsageGuard<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&*self.file, rustix::fs::FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_openers_of_one_directory_share_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let a = SharedUsage::open(dir.path()).unwrap();
        let b = SharedUsage::open(dir.path()).unwrap();
        assert_eq!(a.lock().read(), 0, "a new counter");
        a.lock().write(100);
        assert_eq!(b.lock().read(), 100);
        b.lock().write(7);
        assert_eq!(a.lock().read(), 7);
    }

    #[test]
    fn the_lock_excludes_another_opener() {
        let dir = tempfile::tempdir().unwrap();
        let a = std::sync::Arc::new(SharedUsage::open(dir.path()).unwrap());
        let b = SharedUsage::open(dir.path()).unwrap();
        let guard = b.lock();
        let adder = {
            let a = std::sync::Arc::clone(&a);
            std::thread::spawn(move || {
                let counter = a.lock();
                counter.write(counter.read() + 1);
                counter.read()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!adder.is_finished(), "the other opener waits for the lock");
        guard.write(41);
        drop(guard);
        assert_eq!(adder.join().unwrap(), 42);
    }
}
