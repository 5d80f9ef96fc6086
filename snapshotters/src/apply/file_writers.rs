//! Threads that create small regular files while the applier reads on.
//!
//! Creating a file costs far more than writing a small payload: on ext4 most of an
//! unpack's time is the kernel allocating inodes, on the calling thread. The applier
//! reads each small file's payload into memory and queues it here; the writers create
//! the files in parallel. Confinement is unchanged: a job carries the already resolved
//! parent directory's fd and a single name component, and the writer uses only `*at`
//! calls with `O_NOFOLLOW`, exactly as the applier does inline.
//!
//! Order is kept by the applier: at any moment the queued jobs are distinct names in one
//! directory ([`FileWriters::conflicts`]); any entry that could touch what they write (a
//! name among them, another directory, a hard link, a whiteout…) waits for them first
//! ([`FileWriters::wait`]), so the result is what the archive order gives.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use strata_formats::tar_layer::Entry;

use super::ApplyError;
use super::entry::{AttrWriter, create_file};

/// Largest payload queued; bigger files are written inline, streamed from the layer.
pub(super) const MAX_QUEUED_FILE: u64 = 1 << 20;

/// Most writer threads (creating files in one directory scales little further).
const MAX_WRITERS: usize = 4;

/// One file to create.
#[derive(Debug)]
pub(super) struct FileJob {
    /// The parent directory, resolved inside the root.
    pub(super) dir: OwnedFd,
    /// The file's name in it (one component, never `..`).
    pub(super) name: OsString,
    /// The tar entry (attributes, and its name for messages).
    pub(super) entry: Entry,
    /// The whole payload.
    pub(super) payload: Vec<u8>,
}

/// What the writers share with the applier.
#[derive(Debug, Default)]
struct Shared {
    /// Jobs submitted and not yet finished.
    pending: Mutex<usize>,
    done: Condvar,
    /// The first error; later jobs are skipped once it is set.
    error: Mutex<Option<ApplyError>>,
    failed: AtomicBool,
    /// A job replaced something that was there.
    replaced: AtomicBool,
    /// The applier is gone: skip what is left.
    cancelled: AtomicBool,
}

/// A pool of file-writer threads and the names its queued jobs hold.
#[derive(Debug)]
pub(super) struct FileWriters {
    jobs: Option<SyncSender<FileJob>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    attrs: Arc<AttrWriter>,
    /// The directory of the jobs in flight (meaningful while `names` is not empty).
    dir: PathBuf,
    names: HashSet<OsString>,
}

impl FileWriters {
    /// Starts one writer per available CPU (at most [`MAX_WRITERS`]); `None` on a single
    /// CPU, or when no thread can be started, in which case the applier writes inline.
    pub(super) fn start(attrs: &Arc<AttrWriter>) -> Option<Self> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WRITERS);
        if n < 2 {
            return None;
        }
        Self::start_with(attrs, n)
    }

    /// Starts `n` writers.
    fn start_with(attrs: &Arc<AttrWriter>, n: usize) -> Option<Self> {
        let (tx, rx) = sync_channel::<FileJob>(4 * n);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (rx, shared, attrs) = (Arc::clone(&rx), Arc::clone(&shared), Arc::clone(attrs));
            let spawned = std::thread::Builder::new()
                .name(format!("apply-writer-{i}"))
                .spawn(move || work(&rx, &shared, &attrs));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(_) if threads.is_empty() => return None,
                Err(_) => break,
            }
        }
        Some(Self {
            jobs: Some(tx),
            threads,
            shared,
            attrs: Arc::clone(attrs),
            dir: PathBuf::new(),
            names: HashSet::new(),
        })
    }

    /// Whether an entry at `parent`/`name` must wait for the jobs in flight.
    pub(super) fn conflicts(&self, parent: &Path, name: &OsStr) -> bool {
        !self.names.is_empty() && (self.dir != parent || self.names.contains(name))
    }

    /// Queues `job` (in directory `parent`, which must not [conflict](Self::conflicts));
    /// fails with an earlier job's error, if any.
    pub(super) fn submit(&mut self, job: FileJob, parent: &Path) -> Result<(), ApplyError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return self.wait().map(drop);
        }
        if self.names.is_empty() {
            self.dir = parent.to_path_buf();
        }
        self.names.insert(job.name.clone());
        *self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        let unsent = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = unsent {
            // Every writer has exited: report it rather than lose the file.
            *self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner) -= 1;
            return Err(self.attrs.fail(&job.entry, "queueing the file")(
                std::io::Error::other("no file writer thread is running"),
            ));
        }
        Ok(())
    }

    /// Waits for every queued job; returns whether any replaced something, or the first
    /// error.
    pub(super) fn wait(&mut self) -> Result<bool, ApplyError> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *pending > 0 {
            pending = self
                .shared
                .done
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(pending);
        self.names.clear();
        if let Some(e) = self
            .shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        Ok(self.shared.replaced.swap(false, Ordering::AcqRel))
    }
}

impl Drop for FileWriters {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Release);
        self.jobs = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A writer thread: takes jobs until the queue closes.
fn work(jobs: &Mutex<Receiver<FileJob>>, shared: &Shared, attrs: &AttrWriter) {
    loop {
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        if !shared.failed.load(Ordering::Acquire) && !shared.cancelled.load(Ordering::Acquire) {
            let written = create_file(attrs, job.dir.as_fd(), &job.name, &job.entry, |mut file| {
                file.write_all(&job.payload)
                    .map_err(attrs.fail(&job.entry, "writing the file"))
            });
            match written {
                Ok(replaced) => {
                    if replaced {
                        shared.replaced.store(true, Ordering::Release);
                    }
                }
                Err(e) => {
                    let mut first = shared.error.lock().unwrap_or_else(PoisonError::into_inner);
                    if first.is_none() {
                        *first = Some(e);
                    }
                    shared.failed.store(true, Ordering::Release);
                }
            }
        }
        let mut pending = shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *pending -= 1;
        if *pending == 0 {
            shared.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::AtomicU64;

    use strata_formats::tar_layer::{EntryKind, Timestamp};

    use super::*;
    use crate::apply::{ApplyOptions, WhiteoutMode, apply_layer};

    fn append(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        if link.is_empty() {
            b.append_data(&mut h, name, data).expect("append");
        } else {
            b.append_link(&mut h, name, link).expect("append link");
        }
    }

    /// Many small files in one directory (queued), with names written twice, a file
    /// turned into a directory, a hard link to and a whiteout of queued files, a symlink
    /// alongside and another directory: the tree is what the archive order gives.
    #[test]
    fn archive_order_wins_with_queued_files() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, Directory, "d/", "", b"");
        for i in 0..300 {
            append(
                &mut b,
                Regular,
                &format!("d/f{i}"),
                "",
                format!("first {i}").as_bytes(),
            );
        }
        append(&mut b, Regular, "d/f7", "", b"second");
        append(&mut b, Symlink, "d/s", "f1", b"");
        append(&mut b, Directory, "d/f8/", "", b"");
        append(&mut b, Regular, "d/f8/inner", "", b"inner");
        append(&mut b, Regular, "e/x", "", b"x");
        append(&mut b, Link, "e/link", "d/f9", b"");
        append(&mut b, Regular, "d/.wh.f11", "", b"");
        append(&mut b, Regular, "d/f12", "", b"third");
        let layer = b.into_inner().expect("tar");

        let dir = tempfile::tempdir().expect("temp dir");
        let report = apply_layer(
            &layer[..],
            dir.path(),
            &ApplyOptions::new("test", WhiteoutMode::Delete),
        )
        .expect("apply");
        let d = dir.path().join("d");
        let read = |name: &str| fs::read_to_string(d.join(name)).expect(name);
        assert_eq!(read("f0"), "first 0");
        assert_eq!(read("f299"), "first 299");
        assert_eq!(read("f7"), "second");
        assert_eq!(read("f12"), "third");
        assert!(d.join("f8").is_dir());
        assert_eq!(read("f8/inner"), "inner");
        assert!(!d.join("f11").exists());
        assert_eq!(
            fs::read_link(d.join("s")).expect("symlink"),
            Path::new("f1")
        );
        let link = fs::metadata(dir.path().join("e/link")).expect("link");
        assert_eq!(link.ino(), fs::metadata(d.join("f9")).expect("f9").ino());
        assert_eq!(fs::read_to_string(dir.path().join("e/x")).expect("x"), "x");
        // f0..f299 less the whited-out f11, plus the symlink.
        assert_eq!(fs::read_dir(&d).expect("read d").count(), 300);
        assert_eq!(report.files, 300 + 4);
    }

    /// A job that cannot be written fails the next wait, naming its entry.
    #[test]
    fn a_writer_error_surfaces_at_the_next_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let gone = dir.path().join("gone");
        fs::create_dir(&gone).expect("mkdir");
        let fd: OwnedFd = fs::File::open(&gone).expect("open").into();
        fs::remove_dir(&gone).expect("rmdir");
        let attrs = Arc::new(AttrWriter {
            layer: "layer".into(),
            umask: 0,
            skipped_xattrs: AtomicU64::new(0),
        });
        let mut writers = FileWriters::start_with(&attrs, 2).expect("writers");
        let entry = Entry {
            path: PathBuf::from("gone/f"),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Timestamp { secs: 0, nanos: 0 },
            atime: None,
            size: 1,
            xattrs: Vec::new(),
            sparse: None,
        };
        assert!(!writers.conflicts(Path::new("gone"), OsStr::new("f")));
        writers
            .submit(
                FileJob {
                    dir: fd,
                    name: "f".into(),
                    entry,
                    payload: vec![1],
                },
                Path::new("gone"),
            )
            .expect("queued");
        assert!(writers.conflicts(Path::new("gone"), OsStr::new("f")));
        assert!(writers.conflicts(Path::new("other"), OsStr::new("g")));
        assert!(!writers.conflicts(Path::new("gone"), OsStr::new("g")));
        let err = writers.wait().expect_err("the directory is gone");
        assert!(err.to_string().contains("gone/f"), "{err}");
        assert!(!writers.conflicts(Path::new("other"), OsStr::new("g")));
    }
}
