//! Ingests: resumable, locked, verify-then-rename writes into the content store.
//!
//! An ingest of ref `R` lives in `ingest/<sha256(R)>/` (hashing makes any ref a safe
//! file name, as containerd does) and holds:
//! - `ref`: the ref itself; `total`: the expected size, if given; `startedat`: unix nanos;
//! - `data`: the bytes so far; its length is the resume offset, its mtime the last update;
//! - `lock`: `flock`ed by the one live writer. The kernel drops the lock when the writer's
//!   process dies, however it dies, so a SIGKILLed ingest can be resumed at once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, RenameFlags};
use strata_formats::filters::Adaptor;
use strata_formats::{Digest, Digester};

use super::error::{ContentError, IoContext};
use super::label_store::BlobRecord;
use super::store::LocalContentStore;

/// The state of an in-progress ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The ingest's ref.
    pub reference: String,
    /// Bytes written so far: where a resumed writer continues.
    pub offset: u64,
    /// The expected total size, if it was given.
    pub total: Option<u64>,
    /// When the ingest started.
    pub started: SystemTime,
    /// When data was last written.
    pub updated: SystemTime,
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "ref" => Some(self.reference.clone()),
            _ => None,
        }
    }
}

/// Buffer size for copies; large enough that syscalls and channel hops are noise.
const COPY_BUF: usize = 4 << 20;
/// Buffers in flight between the reading and the hashing thread.
const COPY_BUFS: usize = 4;
/// Start write-back every this many bytes, so the fsync at commit has little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;
use crate::direct_io::{AlignedBuf, DIRECT_ALIGN};

/// A writer holding the lock on one ingest ref. Dropping it without committing keeps the
/// data for a later resume; [`LocalContentStore::abort`] discards it.
#[derive(Debug)]
pub struct IngestWriter {
    store: LocalContentStore,
    reference: String,
    dir: PathBuf,
    data: File,
    // Held for the flock; closing it releases the ref.
    _lock: File,
    digester: Digester,
    offset: u64,
    synced_to: u64,
    total: Option<u64>,
    expected: Option<Digest>,
    started: SystemTime,
    // Set when a write failed half-way: the file and the digest may disagree.
    poisoned: bool,
}

pub(super) fn ingest_dir(store: &LocalContentStore, reference: &str) -> PathBuf {
    store
        .ingest_root()
        .join(Digest::of(reference.as_bytes()).encoded())
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn from_nanos(s: &str) -> Option<SystemTime> {
    let n: u64 = s.trim().parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(n))
}

fn read_opt(path: &Path) -> Result<Option<String>, ContentError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContentError::io(format!("read {}", path.display()), e)),
    }
}

/// Opens `dir/lock` and takes its flock; `None` if the directory vanished under us (a
/// committing writer removed it), so the caller retries.
fn lock_dir(dir: &Path, reference: &str) -> Result<Option<File>, ContentError> {
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let path = dir.join("lock");
    let lock = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ContentError::io(format!("open {}", path.display()), e)),
    };
    match rustix::fs::flock(lock.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(ContentError::Locked(reference.to_owned()));
        }
        Err(e) => {
            return Err(ContentError::io(
                format!("lock {}", path.display()),
                e.into(),
            ));
        }
    }
    // The lock is ours, but is it still the ingest's lock file, or one a committing writer
    // unlinked while we waited to open it?
    let ours = lock
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .ino();
    match fs::metadata(&path) {
        Ok(m) if m.ino() == ours => Ok(Some(lock)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContentError::io(format!("stat {}", path.display()), e)),
    }
}

fn lock_ingest(dir: &Path, reference: &str) -> Result<File, ContentError> {
    for _ in 0..16 {
        if let Some(lock) = lock_dir(dir, reference)? {
            return Ok(lock);
        }
    }
    Err(ContentError::Locked(reference.to_owned()))
}

pub(super) fn open(
    store: &LocalContentStore,
    reference: &str,
    total: Option<u64>,
    expected: Option<&Digest>,
) -> Result<IngestWriter, ContentError> {
    if reference.is_empty() {
        return Err(ContentError::InvalidArgument(
            "ingest ref must not be empty".into(),
        ));
    }
    let dir = ingest_dir(store, reference);
    let lock = lock_ingest(&dir, reference)?;
    let ref_path = dir.join("ref");
    let data_path = dir.join("data");
    let existing = read_opt(&ref_path)?;
    let (data, digester, started, total) = match existing {
        Some(recorded_ref) => {
            if recorded_ref != reference {
                return Err(ContentError::InvalidArgument(format!(
                    "ingest {}: holds ref {recorded_ref:?}, not {reference:?}",
                    dir.display()
                )));
            }
            let recorded_total =
                read_opt(&dir.join("total"))?.and_then(|s| s.trim().parse::<u64>().ok());
            if let (Some(p), Some(r)) = (total, recorded_total)
                && p != r
            {
                return Err(ContentError::TotalMismatch {
                    reference: reference.to_owned(),
                    provided: p,
                    recorded: r,
                });
            }
            let started = read_opt(&dir.join("startedat"))?
                .and_then(|s| from_nanos(&s))
                .unwrap_or_else(SystemTime::now);
            let mut data = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&data_path)
                .ctx(|| format!("open {}", data_path.display()))?;
            // The digest state died with the old writer: rebuild it from what is on disk.
            let mut digester = Digester::new();
            io::copy(&mut &data, &mut digester)
                .ctx(|| format!("re-hash {} to resume", data_path.display()))?;
            data.seek(io::SeekFrom::End(0))
                .ctx(|| format!("seek {}", data_path.display()))?;
            (data, digester, started, total.or(recorded_total))
        }
        None => {
            let started = SystemTime::now();
            let data =
                File::create(&data_path).ctx(|| format!("create {}", data_path.display()))?;
            if let Some(t) = total {
                fs::write(dir.join("total"), t.to_string())
                    .ctx(|| format!("write {}/total", dir.display()))?;
            }
            fs::write(dir.join("startedat"), nanos(started).to_string())
                .ctx(|| format!("write {}/startedat", dir.display()))?;
            // `ref` last: an ingest directory without it is incomplete and is started afresh.
            fs::write(&ref_path, reference).ctx(|| format!("write {}", ref_path.display()))?;
            (data, Digester::new(), started, total)
        }
    };
    let offset = digester.len();
    Ok(IngestWriter {
        store: store.clone(),
        reference: reference.to_owned(),
        dir,
        data,
        _lock: lock,
        digester,
        offset,
        synced_to: offset,
        total,
        expected: expected.cloned(),
        started,
        poisoned: false,
    })
}

pub(super) fn status(
    store: &LocalContentStore,
    reference: &str,
) -> Result<IngestStatus, ContentError> {
    let dir = ingest_dir(store, reference);
    match read_opt(&dir.join("ref"))? {
        Some(r) if r == reference => status_of(&dir, r),
        _ => Err(ContentError::IngestNotFound(reference.to_owned())),
    }
}

fn status_of(dir: &Path, reference: String) -> Result<IngestStatus, ContentError> {
    let data = dir.join("data");
    let meta = match fs::metadata(&data) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(ContentError::io(format!("stat {}", data.display()), e)),
    };
    let started = read_opt(&dir.join("startedat"))?
        .and_then(|s| from_nanos(&s))
        .unwrap_or(UNIX_EPOCH);
    Ok(IngestStatus {
        reference,
        offset: meta.as_ref().map_or(0, |m| m.len()),
        total: read_opt(&dir.join("total"))?.and_then(|s| s.trim().parse().ok()),
        started,
        updated: meta.and_then(|m| m.modified().ok()).unwrap_or(started),
    })
}

pub(super) fn list(store: &LocalContentStore) -> Result<Vec<IngestStatus>, ContentError> {
    let root = store.ingest_root();
    let mut out = Vec::new();
    for entry in fs::read_dir(&root).ctx(|| format!("list {}", root.display()))? {
        let entry = entry.ctx(|| format!("list {}", root.display()))?;
        let dir = entry.path();
        // Only `<64 hex>` directories are ingests; `*.removing-*` are being deleted.
        if entry
            .file_name()
            .to_str()
            .is_none_or(|n| Digest::from_hex(n).is_err())
        {
            continue;
        }
        if let Some(r) = read_opt(&dir.join("ref"))? {
            out.push(status_of(&dir, r)?);
        }
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(out)
}

/// Directories of ingests whose ref file was never written (a writer died while creating
/// them) or that were being removed: safe to delete when not locked.
pub(super) fn leftovers(store: &LocalContentStore) -> Result<Vec<PathBuf>, ContentError> {
    let root = store.ingest_root();
    let mut out = Vec::new();
    for entry in fs::read_dir(&root).ctx(|| format!("list {}", root.display()))? {
        let entry = entry.ctx(|| format!("list {}", root.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".removing-")
            || (Digest::from_hex(&name).is_ok() && !entry.path().join("ref").exists())
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

static REMOVALS: AtomicU64 = AtomicU64::new(0);

/// Removes an ingest directory whose lock the caller holds: rename it aside first, so a new
/// writer of the same ref starts in a fresh directory and never sees a half-deleted one.
pub(super) fn remove_locked_dir(dir: &Path) -> Result<(), ContentError> {
    let n = REMOVALS.fetch_add(1, Ordering::Relaxed);
    let aside = dir.with_extension(format!("removing-{}-{n}", std::process::id()));
    match fs::rename(dir, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ContentError::io(format!("rename {}", dir.display()), e)),
    }
    fs::remove_dir_all(&aside).ctx(|| format!("remove {}", aside.display()))
}

pub(super) fn abort(store: &LocalContentStore, reference: &str) -> Result<(), ContentError> {
    let dir = ingest_dir(store, reference);
    if !dir.join("ref").exists() && !dir.exists() {
        return Err(ContentError::IngestNotFound(reference.to_owned()));
    }
    let _lock = lock_ingest(&dir, reference)?;
    remove_locked_dir(&dir)
}

/// Removes a leftover directory if no writer holds its lock.
pub(super) fn remove_if_unlocked(dir: &Path) -> Result<bool, ContentError> {
    match lock_dir(dir, "") {
        Ok(Some(_lock)) => remove_locked_dir(dir).map(|()| true),
        Ok(None) | Err(ContentError::Locked(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

impl IngestWriter {
    /// The ref this writer holds.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The ingest's current state.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            started: self.started,
            updated: SystemTime::now(),
        }
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.digester.digest()
    }

    fn check_room(&self, n: usize) -> Result<(), ContentError> {
        if self.poisoned {
            return Err(ContentError::InvalidArgument(format!(
                "ref {:?}: an earlier write failed; abort or resume the ingest",
                self.reference
            )));
        }
        let end = self.offset + n as u64;
        match self.total {
            Some(total) if end > total => Err(ContentError::Overflow {
                reference: self.reference.clone(),
                total,
                offset: end,
            }),
            _ => Ok(()),
        }
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<(), ContentError> {
        self.check_room(buf.len())?;
        if let Err(e) = self.data.write_all(buf) {
            self.poisoned = true;
            return Err(ContentError::io(
                format!("write {}/data", self.dir.display()),
                e,
            ));
        }
        self.offset += buf.len() as u64;
        if self.offset - self.synced_to >= WRITEBACK_EVERY {
            writeback(&self.data, self.synced_to, self.offset - self.synced_to);
            self.synced_to = self.offset;
        }
        Ok(())
    }

    /// Appends `buf`, hashing it on the way.
    pub fn write_chunk(&mut self, buf: &[u8]) -> Result<(), ContentError> {
        self.write_data(buf)?;
        self.digester.update(buf);
        Ok(())
    }

    /// Copies `src` to the end of the ingest until EOF, hashing on a second thread so
    /// that reading, writing and hashing overlap. Returns the bytes copied.
    ///
    /// Full buffers are written with `O_DIRECT` where the file system allows it: a blob
    /// streaming in at disk speed then costs no page-cache churn (on a VM, fresh page-cache
    /// pages are expensive to fault in), and there is nothing dirty left for the fsync at
    /// commit. The tail, and everything on file systems without `O_DIRECT`, goes through
    /// the page cache with bounded write-back.
    pub fn copy_from(&mut self, src: &mut dyn Read) -> Result<u64, ContentError> {
        let (full_tx, full_rx) = sync_channel::<(AlignedBuf, usize)>(COPY_BUFS);
        let (empty_tx, empty_rx) = sync_channel::<AlignedBuf>(COPY_BUFS);
        for _ in 0..COPY_BUFS {
            empty_tx
                .send(AlignedBuf::new(COPY_BUF))
                .expect("invariant: receiver alive");
        }
        let direct = self.open_direct();
        let mut direct_used = false;
        let mut digester = std::mem::take(&mut self.digester);
        let reference = self.reference.clone();
        let result = std::thread::scope(|s| {
            let hasher = s.spawn(move || {
                for (buf, n) in full_rx {
                    digester.update(&buf.as_slice()[..n]);
                    // The copy loop may have stopped; then nobody needs the buffer back.
                    let _ = empty_tx.send(buf);
                }
                digester
            });
            let mut copied = 0u64;
            let result = loop {
                let Ok(mut buf) = empty_rx.recv() else {
                    break Err(ContentError::InvalidArgument(format!(
                        "ref {reference:?}: hashing thread stopped"
                    )));
                };
                let n = match read_full(src, buf.as_mut_slice()) {
                    Ok(n) => n,
                    Err(e) => {
                        break Err(ContentError::io(
                            format!("ref {reference:?}: read source at {copied}"),
                            e,
                        ));
                    }
                };
                if n == 0 {
                    break Ok(copied);
                }
                let written = match &direct {
                    Some(fd) if n == COPY_BUF && self.offset.is_multiple_of(DIRECT_ALIGN) => {
                        direct_used = true;
                        self.write_direct(fd, &buf.as_slice()[..n])
                    }
                    _ => {
                        if direct_used {
                            // Buffered writes continue where the direct ones stopped.
                            if let Err(e) = self.data.seek(io::SeekFrom::Start(self.offset)) {
                                break Err(ContentError::io(
                                    format!("seek {}/data", self.dir.display()),
                                    e,
                                ));
                            }
                            direct_used = false;
                        }
                        self.write_data(&buf.as_slice()[..n])
                    }
                };
                if let Err(e) = written {
                    break Err(e);
                }
                copied += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    break Err(ContentError::InvalidArgument(format!(
                        "ref {reference:?}: hashing thread stopped"
                    )));
                }
            };
            drop(full_tx);
            self.digester = hasher
                .join()
                .expect("invariant: the hashing thread does not panic");
            result
        });
        if direct_used {
            self.data
                .seek(io::SeekFrom::Start(self.offset))
                .ctx(|| format!("seek {}/data", self.dir.display()))?;
        }
        result
    }

    /// A second descriptor on the data file with `O_DIRECT`, if the file system supports it.
    fn open_direct(&self) -> Option<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(self.dir.join("data"))
            .ok()
    }

    fn write_direct(&mut self, fd: &File, buf: &[u8]) -> Result<(), ContentError> {
        use std::os::unix::fs::FileExt;
        self.check_room(buf.len())?;
        if let Err(e) = fd.write_all_at(buf, self.offset) {
            self.poisoned = true;
            return Err(ContentError::io(
                format!("write {}/data", self.dir.display()),
                e,
            ));
        }
        self.offset += buf.len() as u64;
        self.synced_to = self.offset;
        Ok(())
    }

    /// Discards everything written (containerd supports truncating to 0 only).
    pub fn truncate(&mut self, size: u64) -> Result<(), ContentError> {
        if size != 0 {
            return Err(ContentError::InvalidArgument(format!(
                "ref {:?}: truncate to {size} is unsupported (only 0)",
                self.reference
            )));
        }
        self.data
            .set_len(0)
            .ctx(|| format!("truncate {}/data", self.dir.display()))?;
        self.data
            .seek(io::SeekFrom::Start(0))
            .ctx(|| format!("seek {}/data", self.dir.display()))?;
        self.digester = Digester::new();
        self.offset = 0;
        self.synced_to = 0;
        self.poisoned = false;
        Ok(())
    }

    /// Verifies and publishes the blob: size (if given) and digest (if given here or at
    /// open) must match; then fsync, rename into `blobs/` without replacing, fsync the
    /// directory, record labels, remove the ingest. A mismatch leaves the ingest in place
    /// (the caller may truncate and retry, or abort). If the blob exists already, the
    /// ingest is discarded and [`ContentError::AlreadyExists`] returned.
    pub fn commit(
        self,
        size: Option<u64>,
        expected: Option<&Digest>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Digest, ContentError> {
        for (k, v) in &labels {
            strata_formats::labels::validate_label(k, v).map_err(|e| {
                ContentError::InvalidArgument(format!("ref {:?}: {e}", self.reference))
            })?;
        }
        self.check_room(0)?;
        if let Some(expected) = size.filter(|&s| s != self.offset) {
            return Err(ContentError::SizeMismatch {
                reference: self.reference.clone(),
                expected,
                actual: self.offset,
            });
        }
        let actual = self.digester.digest();
        if let Some(expected) = expected
            .or(self.expected.as_ref())
            .filter(|&e| *e != actual)
        {
            return Err(ContentError::DigestMismatch {
                reference: self.reference.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        let data_path = self.dir.join("data");
        self.data
            .sync_all()
            .ctx(|| format!("fsync {}", data_path.display()))?;
        let target = self.store.blob_path(&actual);
        if target.exists() {
            remove_locked_dir(&self.dir)?;
            return Err(ContentError::AlreadyExists(actual));
        }
        // Blobs are immutable: make that visible in their mode, as containerd does.
        self.data
            .set_permissions(fs::Permissions::from_mode(0o444))
            .ctx(|| format!("chmod {}", data_path.display()))?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &data_path,
            rustix::fs::CWD,
            &target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                remove_locked_dir(&self.dir)?;
                return Err(ContentError::AlreadyExists(actual));
            }
            Err(e) => {
                return Err(ContentError::io(
                    format!("rename {} to {}", data_path.display(), target.display()),
                    e.into(),
                ));
            }
        }
        let blobs = self.store.blobs_dir();
        File::open(&blobs)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("fsync {}", blobs.display()))?;
        let now = SystemTime::now();
        self.store
            .label_store()
            .put(
                &actual,
                &BlobRecord {
                    created: now,
                    updated: now,
                    labels,
                },
            )
            .map_err(|message| ContentError::LabelStore {
                digest: actual.clone(),
                message,
            })?;
        remove_locked_dir(&self.dir)?;
        Ok(actual)
    }
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads until `buf` is full or the source ends.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Keeps dirty pages bounded while a large blob streams in: starts write-back of the range
/// just written, and waits for the range written one window earlier. Disk writes then
/// overlap with reading and hashing, and the fsync at commit has almost nothing left to do
/// (the pages stay cached, clean, for whoever reads the blob next).
fn writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open fd and plain integer arguments. Failure is harmless: the fsync
    // at commit still makes the data durable, so results are ignored.
    unsafe {
        libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WRITE);
        let earlier = off - 2 * len;
        if earlier >= 0 {
            libc::sync_file_range(
                fd,
                earlier,
                len,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::metadata::MetadataDb;

    fn store(dir: &tempfile::TempDir) -> LocalContentStore {
        let db = MetadataDb::open(dir.path().join("metadata.db")).unwrap();
        LocalContentStore::open(dir.path().join("content"), Arc::new(db)).unwrap()
    }

    fn blob() -> Vec<u8> {
        (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    /// An ingest that stopped at `at`, then had one byte of its saved part flipped (same
    /// size: a power cut, a bit flip).
    fn damaged_partial(s: &LocalContentStore, reference: &str, data: &[u8], at: usize) {
        let mut w = s.writer(reference, None, None).unwrap();
        w.write_all(&data[..at]).unwrap();
        drop(w);
        let path = ingest_dir(s, reference).join("data");
        let mut saved = fs::read(&path).unwrap();
        saved[at / 2] ^= 0x01;
        fs::write(&path, saved).unwrap();
    }

    #[test]
    fn a_resumed_ingest_with_a_flipped_saved_byte_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let data = blob();
        let want = Digest::of(&data);
        damaged_partial(&s, "r", &data, 120_000);
        let mut w = s.writer("r", None, Some(&want)).unwrap();
        assert_eq!(w.status().offset, 120_000, "resumed");
        w.write_all(&data[120_000..]).unwrap();
        let err = w
            .commit(Some(data.len() as u64), None, BTreeMap::new())
            .unwrap_err();
        assert!(
            matches!(err, ContentError::DigestMismatch { ref expected, .. } if *expected == want),
            "{err}"
        );
        assert!(!s.blob_path(&want).exists());
    }

    #[test]
    fn ingest_from_a_seekable_source_refuses_a_damaged_resume_then_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let data = blob();
        let want = Digest::of(&data);
        damaged_partial(&s, "r", &data, 77_777);
        let src_path = dir.path().join("src");
        fs::write(&src_path, &data).unwrap();
        let ingest = |s: &LocalContentStore| {
            let mut src = File::open(&src_path).unwrap();
            s.ingest(
                "r",
                &mut src,
                Some(data.len() as u64),
                Some(&want),
                BTreeMap::new(),
                Duration::from_secs(1),
            )
        };
        // The resume reads only the rest from the source; the whole blob is hashed.
        let err = ingest(&s).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!s.blob_path(&want).exists());
        assert!(
            !ingest_dir(&s, "r").exists(),
            "the damaged ingest is dropped"
        );
        // So the next attempt fetches everything again.
        assert_eq!(ingest(&s).unwrap(), (want.clone(), data.len() as u64));
        assert_eq!(fs::read(s.blob_path(&want)).unwrap(), data);
    }
}
