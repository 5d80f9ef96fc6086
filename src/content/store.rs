//! [`LocalContentStore`]: blobs as files under `<root>/content/blobs/sha256/<hex>`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use strata_formats::filters::{Adaptor, Filter};
use strata_formats::{Digest, FileReadAt};

use super::error::{ContentError, IoContext};
use super::ingest::{self, IngestStatus, IngestWriter};
use super::label_store::{BlobRecord, LabelStore};

/// What the store knows of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed.
    pub created: SystemTime,
    /// When its labels last changed.
    pub updated: SystemTime,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A content store on the local file system. Cheap to clone; safe to share across threads
/// and to use from several processes on the same root at once.
#[derive(Clone)]
pub struct LocalContentStore {
    root: PathBuf,
    labels: Arc<dyn LabelStore>,
}

impl std::fmt::Debug for LocalContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalContentStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl LocalContentStore {
    /// Opens (creating if needed) the store under `root` (blobs go to
    /// `root/blobs/sha256`, ingests to `root/ingest`).
    pub fn open(
        root: impl Into<PathBuf>,
        labels: Arc<dyn LabelStore>,
    ) -> Result<Self, ContentError> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        }
        Ok(Self { root, labels })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.encoded())
    }

    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join(Digest::SHA256)
    }

    pub(super) fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(super) fn label_store(&self) -> &dyn LabelStore {
        &*self.labels
    }

    /// Whether the blob is committed.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Info about a committed blob.
    pub fn info(&self, digest: &Digest) -> Result<BlobInfo, ContentError> {
        let path = self.blob_path(digest);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(digest.clone()));
            }
            Err(e) => return Err(ContentError::io(format!("stat {}", path.display()), e)),
        };
        let record = self.record(digest)?;
        // A blob placed without a record (e.g. by an older version) still has a sensible age.
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(BlobInfo {
            digest: digest.clone(),
            size: meta.len(),
            created: record.as_ref().map_or(mtime, |r| r.created),
            updated: record.as_ref().map_or(mtime, |r| r.updated),
            labels: record.map(|r| r.labels).unwrap_or_default(),
        })
    }

    fn record(&self, digest: &Digest) -> Result<Option<BlobRecord>, ContentError> {
        self.labels
            .get(digest)
            .map_err(|message| ContentError::LabelStore {
                digest: digest.clone(),
                message,
            })
    }

    /// Random access to a committed blob.
    pub fn reader_at(&self, digest: &Digest) -> Result<FileReadAt, ContentError> {
        let path = self.blob_path(digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(digest.clone()));
            }
            Err(e) => return Err(ContentError::io(format!("open {}", path.display()), e)),
        };
        FileReadAt::new(file).ctx(|| format!("stat {}", path.display()))
    }

    /// Reads a whole committed blob into memory, refusing blobs over `max` bytes (manifests
    /// and configs are small; a huge one is hostile).
    pub fn read_all(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ContentError> {
        use strata_formats::ReadAt as _;
        let r = self.reader_at(digest)?;
        if r.size() > max {
            return Err(ContentError::InvalidArgument(format!(
                "content {digest}: {} bytes is more than the {max} bytes allowed here",
                r.size()
            )));
        }
        r.read_range(0, r.size())
            .ctx(|| format!("read {}", self.blob_path(digest).display()))
    }

    /// Changes a blob's labels: `Some(v)` sets, `None` removes. Returns the new info.
    pub fn update_labels(
        &self,
        digest: &Digest,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<BlobInfo, ContentError> {
        for (k, v) in changes {
            if let Some(v) = v {
                strata_formats::labels::validate_label(k, v)
                    .map_err(|e| ContentError::InvalidArgument(format!("content {digest}: {e}")))?;
            }
        }
        let info = self.info(digest)?;
        let mut labels = info.labels;
        for (k, v) in changes {
            match v {
                Some(v) => labels.insert(k.clone(), v.clone()),
                None => labels.remove(k),
            };
        }
        let record = BlobRecord {
            created: info.created,
            updated: SystemTime::now(),
            labels,
        };
        self.labels
            .put(digest, &record)
            .map_err(|message| ContentError::LabelStore {
                digest: digest.clone(),
                message,
            })?;
        self.info(digest)
    }

    /// Every committed blob that matches `filter`, in digest order.
    pub fn walk(&self, filter: &Filter) -> Result<Vec<BlobInfo>, ContentError> {
        let mut out = Vec::new();
        for digest in self.list_digests()? {
            let info = match self.info(&digest) {
                Ok(i) => i,
                // Deleted between listing and stat: not an error for a walk.
                Err(ContentError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The digests of every committed blob, sorted. Files under `blobs/sha256` whose names
    /// are not digests (temp files, strays) are skipped.
    pub fn list_digests(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("list {}", dir.display()))? {
            let entry = entry.ctx(|| format!("list {}", dir.display()))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes a committed blob and its record.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(digest.clone()));
            }
            Err(e) => return Err(ContentError::io(format!("remove {}", path.display()), e)),
        }
        self.labels
            .remove(digest)
            .map_err(|message| ContentError::LabelStore {
                digest: digest.clone(),
                message,
            })
    }

    /// Opens a writer for `reference`, resuming an interrupted ingest of the same ref.
    ///
    /// `total` is the expected size, if known; `expected` the expected digest, if known. If
    /// `expected` is committed already this fails with [`ContentError::AlreadyExists`]
    /// before anything is written. If another writer holds the ref it fails at once with
    /// [`ContentError::Locked`].
    pub fn writer(
        &self,
        reference: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<IngestWriter, ContentError> {
        if let Some(d) = expected
            && self.exists(d)
        {
            return Err(ContentError::AlreadyExists(d.clone()));
        }
        ingest::open(self, reference, total, expected)
    }

    /// The status of an in-progress ingest.
    pub fn status(&self, reference: &str) -> Result<IngestStatus, ContentError> {
        ingest::status(self, reference)
    }

    /// Every in-progress ingest (whose ref matches `filter`; the field is `ref`).
    pub fn list_statuses(&self, filter: &Filter) -> Result<Vec<IngestStatus>, ContentError> {
        Ok(ingest::list(self)?
            .into_iter()
            .filter(|s| filter.matches(s))
            .collect())
    }

    /// Abandons an ingest, removing its data. Fails with [`ContentError::Locked`] if a
    /// writer is active on it.
    pub fn abort(&self, reference: &str) -> Result<(), ContentError> {
        ingest::abort(self, reference)
    }

    /// Ingests `src` under `reference` and commits it: the one-call form of
    /// [`writer`](Self::writer) + [`IngestWriter::copy_from`] + [`IngestWriter::commit`].
    ///
    /// - A ref locked by another writer is waited for (up to `lock_wait`), as containerd's
    ///   `content.OpenWriter` does; then it fails with [`ContentError::Locked`].
    /// - An interrupted ingest of the same ref is resumed at its offset when `src` can seek
    ///   there ([`IngestSource::resume_at`]), and restarted from 0 otherwise.
    /// - An existing blob with the same digest counts as success (the ingest is discarded),
    ///   as in containerd's `content.WriteBlob`.
    /// - On any other failure the ingest is aborted, so nothing is left behind.
    ///
    /// Returns the digest and size.
    pub fn ingest(
        &self,
        reference: &str,
        src: &mut dyn IngestSource,
        total: Option<u64>,
        expected: Option<&Digest>,
        labels: BTreeMap<String, String>,
        lock_wait: std::time::Duration,
    ) -> Result<(Digest, u64), ContentError> {
        let mut writer = match self.writer_wait(reference, total, expected, lock_wait) {
            Ok(w) => w,
            Err(ContentError::AlreadyExists(d)) => return Ok((d.clone(), self.info(&d)?.size)),
            Err(e) => return Err(e),
        };
        let result = (|| {
            let offset = writer.status().offset;
            if offset > 0 {
                let resumed = src
                    .resume_at(offset)
                    .ctx(|| format!("ingest ref {reference:?}: seek source to {offset}"))?;
                if resumed {
                    tracing::info!(reference, offset, "resuming ingest");
                } else {
                    tracing::info!(
                        reference,
                        offset,
                        "source cannot seek: restarting ingest from 0"
                    );
                    writer.truncate(0)?;
                }
            }
            writer.copy_from(src)?;
            writer.commit(total, expected, labels)
        })();
        match result {
            Ok(d) | Err(ContentError::AlreadyExists(d)) => {
                let size = self.info(&d)?.size;
                Ok((d, size))
            }
            Err(e) => {
                if !matches!(e, ContentError::Locked(_)) {
                    let _ = self.abort(reference);
                }
                Err(e)
            }
        }
    }

    /// [`writer`](Self::writer), retrying with backoff while the ref is locked, for at most
    /// `wait`.
    pub fn writer_wait(
        &self,
        reference: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
        wait: std::time::Duration,
    ) -> Result<IngestWriter, ContentError> {
        let deadline = std::time::Instant::now() + wait;
        let mut backoff = std::time::Duration::from_millis(5);
        loop {
            match self.writer(reference, total, expected) {
                Err(ContentError::Locked(r)) if std::time::Instant::now() < deadline => {
                    tracing::debug!(reference = %r, "ref locked, waiting");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }
}

/// A source of bytes to ingest that may be able to skip what a resumed ingest already has.
pub trait IngestSource: io::Read {
    /// Positions the source at `offset`; returns false if it cannot (the ingest then
    /// restarts from 0).
    fn resume_at(&mut self, offset: u64) -> io::Result<bool>;
}

impl IngestSource for fs::File {
    fn resume_at(&mut self, offset: u64) -> io::Result<bool> {
        use io::Seek;
        // A pipe or character device cannot seek: start over instead.
        match self.seek(io::SeekFrom::Start(offset)) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(29 /* ESPIPE */) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A forward-only stream (stdin, an HTTP body): a resumed ingest restarts from 0.
#[derive(Debug)]
pub struct StreamSource<R>(pub R);

impl<R: io::Read> io::Read for StreamSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: io::Read> IngestSource for StreamSource<R> {
    fn resume_at(&mut self, _offset: u64) -> io::Result<bool> {
        Ok(false)
    }
}

impl Adaptor for BlobInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" if path.len() == 1 => Some(self.digest.to_string()),
            "size" if path.len() == 1 => Some(self.size.to_string()),
            "labels" if path.len() == 2 => self.labels.get(&path[1]).cloned(),
            // containerd joins the rest of the path for dotted label keys given unquoted.
            "labels" if path.len() > 2 => self.labels.get(&path[1..].join(".")).cloned(),
            _ => None,
        }
    }
}

impl LocalContentStore {
    /// Removes every ingest for which `stale` says yes and that no writer holds, and the
    /// directories of writers that died before recording their ref or while removing one.
    /// Returns the refs removed and the bytes freed.
    pub fn sweep_ingests(
        &self,
        stale: impl Fn(&IngestStatus) -> bool,
    ) -> Result<(Vec<String>, u64), ContentError> {
        let mut removed = Vec::new();
        let mut freed = 0;
        for status in ingest::list(self)? {
            if stale(&status)
                && ingest::remove_if_unlocked(&ingest::ingest_dir(self, &status.reference))?
            {
                freed += status.offset;
                removed.push(status.reference);
            }
        }
        for dir in ingest::leftovers(self)? {
            ingest::remove_if_unlocked(&dir)?;
        }
        Ok((removed, freed))
    }
}
