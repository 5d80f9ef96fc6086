//! The chunk cache: decompressed file chunks of lazily mounted layers, on disk, addressed by
//! their digest — identical chunks of different layers and images are stored once — and
//! shared by every mount of the process.
//!
//! - A chunk is stored only after its bytes hash to its digest, written to a temporary file
//!   and renamed into place. Checked chunks are read in the ranges asked for
//!   ([`ChunkCache::read_range`]), through the page cache; a source can keep chunks it just
//!   fetched in memory until they are read through ([`HotChunks`], bounded by bytes).
//! - The total size is bounded (`max_size`): the least recently used chunks are evicted.
//!   A reader that already opened an evicted chunk finishes with its descriptor.
//! - Several processes can share one directory (a lazy volume's serving process each, a
//!   daemon) under one bound: a counter in `usage`, changed under a file lock by every
//!   store and removal ([`usage`]), says what the directory holds; when it passes the
//!   bound, the directory is rescanned and the least recently used files of all the
//!   processes are evicted ([`rescan`]).
//! - Recency lives in memory, and reaches the files' modification times (at most a second
//!   late), which is how other processes and a restart see it; at open, recency is rebuilt
//!   from them and temporary files of writers that are gone are removed, so the cache
//!   survives a restart or a crash.
//! - Whole files assembled from chunks for FUSE passthrough ([`ChunkCache::backing_file`])
//!   live under `files/` and count in the same bound.
//! - [`CachedChunkSource`] puts the cache in front of any [`strata_fuse::ChunkSource`].
//!
//! # What is verified when
//!
//! Nothing on disk is trusted because it is there: a power cut, a bit flip or another
//! writer can leave a file of the right size with the wrong bytes.
//!
//! - **Chunk files** (`sha256/`): hashed while written (a mismatch is not stored), or
//!   written as a chunk source returned them, which it did only after hashing them against
//!   their digest ([`ChunkCache::put_verified`], what [`CachedChunkSource`] uses). A file
//!   this process did not write is hashed whole, size and digest, at its first use by the
//!   process — [`ChunkCache::read_range`], [`ChunkCache::get`] (which hashes every time),
//!   an assembly, or a one-chunk file's passthrough — and only then remembered as checked.
//! - **Assembled files** (`files/`): built from checked chunks. A copy this process did not
//!   build is hashed at its first use by the process, each chunk's range against that
//!   chunk's digest, before it is handed to the kernel for passthrough (the kernel never
//!   checks it); a copy that fails is removed and built again from the chunks, or, with
//!   a chunk damaged too, the file is served through the daemon, which fetches it again.
//!   The price: after a restart, the first open of a large cached file reads and hashes
//!   it whole once before the open returns (building the copy afresh costs as much).
//! - A file that fails a check is removed and reported as a miss (counted in `corrupt`);
//!   the caller fetches again. Wrong bytes are never served; `EIO` only if the fetch fails.
//! - Not covered: a file that changes *after* this process checked or wrote it (another
//!   writer on the cache directory, a bit flip on disk later) is served as it then is —
//!   re-hashing on every use would cost what the cache saves. The processes sharing a
//!   directory are Strata's, each storing only what it verified; nothing else may write
//!   there.
//! - No fsync before the rename: a file a crash tore is caught by the first-use hash above,
//!   so an fsync would buy nothing but a lost chunk's re-fetch, and it costs every miss
//!   (about 4 ms per chunk on a virtual disk, against 0.02 ms for a 4 KiB chunk without).
//!
//! Elsewhere, bytes saved on disk and reused are checked too: the stargz provider's saved
//! TOCs ([`crate::stargz`]) are hashed against the layer's TOC digest when a restarted
//! daemon resumes a layer, and fetched again when they fail; a resumed content-store
//! ingest ([`crate::content`]) is re-hashed from its first byte and committed only if the
//! whole blob matches its digest.

mod flight;
mod hot;
mod index;
mod rescan;
mod source;
mod usage;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use strata_formats::Digest;
use strata_formats::layer_index::FileChunk;

pub use flight::ChunkFlights;
pub use hot::HotChunks;
pub use source::CachedChunkSource;
pub use writer::ChunkWriter;

use index::Index;
use usage::SharedUsage;

/// Counters of a [`ChunkCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Chunks served from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Chunks stored.
    pub stored: u64,
    /// Chunks evicted to stay under the size bound.
    pub evictions: u64,
    /// Stored files found torn or corrupt on read, and removed.
    pub corrupt: u64,
    /// Bytes currently held.
    pub bytes: u64,
}

/// Decompressed chunks on disk by digest, bounded, least recently used evicted first.
#[derive(Debug)]
pub struct ChunkCache {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    temp_seq: AtomicU64,
    staging: crate::direct_io::StagingBuffers,
    usage: SharedUsage,
}

impl ChunkCache {
    /// Opens (creating) the cache in `dir`, holding at most `max_size` bytes: removes
    /// temporary files writers left behind, rebuilds recency from the files' modification
    /// times and sets the directory's shared usage counter (see [`usage`]).
    pub fn open(dir: &Path, max_size: u64) -> io::Result<ChunkCache> {
        let root = dir.join("sha256");
        std::fs::create_dir_all(&root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("chunk cache: create {}: {e}", root.display()),
            )
        })?;
        let usage = SharedUsage::open(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("chunk cache: {e}")))?;
        let index = {
            // Held through the scan: no other process adds or removes a file meanwhile.
            let counter = usage.lock();
            let index = Index::from_scan(rescan::scan(dir)?);
            counter.write(index.total);
            index
        };
        let cache = ChunkCache {
            dir: dir.to_path_buf(),
            max_size,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            temp_seq: AtomicU64::new(0),
            staging: crate::direct_io::StagingBuffers::default(),
            usage,
        };
        cache.evict();
        Ok(cache)
    }

    fn assembled_path(&self, key: &Digest) -> PathBuf {
        self.dir.join("files").join(key.encoded())
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.encoded();
        self.dir.join("sha256").join(&hex[..2]).join(hex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Self::get`] into a buffer that can be shared without a copy.
    pub fn get_shared(&self, digest: &Digest) -> Option<std::sync::Arc<[u8]>> {
        self.load(digest, strata_formats::buffer::zeroed_shared, |b| {
            std::sync::Arc::get_mut(b).expect("invariant: a new buffer has one owner")
        })
    }

    /// Appends bytes `range` of chunk `digest` to `out`, read from its file; false (and
    /// `out` unchanged) when the chunk is not stored, or its file is gone or fails the
    /// check a file from before this process gets before its first use.
    pub fn read_range(
        &self,
        digest: &Digest,
        range: std::ops::Range<u64>,
        out: &mut Vec<u8>,
    ) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(file) = self.checked_file(digest) else {
            return false;
        };
        let start = out.len();
        let Ok(len) = usize::try_from(range.end.saturating_sub(range.start)) else {
            return false;
        };
        out.resize(start + len, 0);
        if let Err(e) = file.read_exact_at(&mut out[start..], range.start) {
            out.truncate(start);
            tracing::warn!(chunk = %digest, error = %e, "chunk cache: reading a stored chunk");
            self.misses.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Marks chunk `digest` used: its size, whether this process wrote or checked its file,
    /// and whether to stamp the file's time ([`Index::touch`]). A chunk the index does not
    /// hold but whose file is there (another process stored it since this one scanned the
    /// directory) is taken in, not checked: its first use hashes it.
    fn use_chunk(&self, digest: &Digest) -> Option<(u64, bool, Option<std::time::SystemTime>)> {
        {
            let mut index = self.lock();
            if let Some(size) = index.entries.get(digest).map(|e| e.size) {
                let stamp = index.touch(digest);
                return Some((size, index.verified.contains(digest), stamp));
            }
        }
        let meta = std::fs::metadata(self.path(digest))
            .ok()
            .filter(std::fs::Metadata::is_file)?;
        let mut index = self.lock();
        index.adopt(
            digest.clone(),
            meta.len(),
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        );
        let size = index.entries.get(digest)?.size;
        let stamp = index.touch(digest);
        Some((size, index.verified.contains(digest), stamp))
    }

    /// The open file of chunk `digest`, if stored and known good: written by this process,
    /// or checked now (size and a streamed digest) and remembered as checked. A file that
    /// fails the check is removed; misses are counted.
    fn checked_file(&self, digest: &Digest) -> Option<std::fs::File> {
        let Some((size, verified, stamp)) = self.use_chunk(digest) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let path = self.path(digest);
        let Ok(mut file) = std::fs::File::open(&path) else {
            // Evicted or removed meanwhile.
            self.forget(digest, &path);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if !verified {
            let intact = file.metadata().is_ok_and(|m| m.len() == size) && {
                let mut digester = strata_formats::Digester::new();
                let mut buf = vec![0; 64 << 10];
                loop {
                    match io::Read::read(&mut file, &mut buf) {
                        Ok(0) => break digester.digest() == *digest,
                        Ok(n) => digester.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break false,
                    }
                }
            };
            // Whoever reads the file next (an assembly, a caller) starts at its start.
            let intact = intact && io::Seek::rewind(&mut file).is_ok();
            if !intact {
                tracing::warn!(chunk = %digest, path = %path.display(), "cached chunk is torn or corrupt: removed");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.forget(digest, &path);
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.lock().verified.insert(digest.clone());
        }
        if let Some(when) = stamp {
            stamp_used(&file, when);
        }
        Some(file)
    }

    /// A file holding exactly the bytes of the regular file `file`, when every chunk of it
    /// is cached, for FUSE passthrough (the kernel then reads it directly): a file of one
    /// chunk is that chunk's file; a larger one is assembled once from its chunks into
    /// `files/`, named by its chunks' digests. Chunks, and a copy this process did not
    /// build, are checked before their first use (see the module docs). Copies under
    /// `files/` count in the size bound and are evicted like chunks.
    pub fn backing_file(&self, file: &strata_fuse::FileRef<'_>) -> Option<std::fs::File> {
        let size = file.size;
        let covered: u64 = file.chunks.iter().map(|c| c.size).sum();
        if file.chunks.is_empty()
            || covered != size
            || !file.chunks.iter().all(|c| self.contains(&c.digest))
        {
            return None;
        }
        if let [only] = file.chunks {
            return self.checked_file(&only.digest);
        }
        // Keyed by the chunks (each verified when stored), not by a file digest the index
        // may give: another layer could claim the same file digest for different chunks.
        let mut all = String::new();
        for c in file.chunks {
            all.push_str(c.digest.encoded());
            all.push(':');
            all.push_str(&c.size.to_string());
            all.push('\n');
        }
        let key = Digest::of(all.as_bytes());
        let path = self.assembled_path(&key);
        if let Some(f) = self.checked_assembled(&key, &path, file) {
            return Some(f);
        }
        let temp = self.dir.join("files").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let assembled = (|| -> io::Result<()> {
            std::fs::create_dir_all(self.dir.join("files"))?;
            let mut out = std::fs::File::create(&temp)?;
            for c in file.chunks {
                let mut chunk = self.checked_file(&c.digest).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("chunk {} is gone or damaged", c.digest),
                    )
                })?;
                if io::copy(&mut chunk, &mut out)? != c.size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("chunk {} changed size", c.digest),
                    ));
                }
            }
            // No fsync: a copy a crash tore is hashed and dropped before a later process
            // uses it, and the fsync would cost every passthrough open (see the module docs).
            self.publish(&temp, &path)
        })();
        if let Err(e) = assembled {
            let _ = std::fs::remove_file(&temp);
            tracing::debug!(file = file.path, error = %e, "chunk cache: no backing file for passthrough");
            return None;
        }
        let file = std::fs::File::open(&path).ok();
        {
            // Written by this process from checked chunks: trusted while it runs.
            let mut index = self.lock();
            index.insert(key.clone(), size);
            index.assembled.insert(key.clone());
            index.verified.insert(key);
        }
        // Opened first: evicting it (or its chunks) now leaves this descriptor working.
        self.evict();
        file
    }

    /// The copy at `path` (key `key`) of `file`, if it is there and
    /// known good: written by this process, or hashed now, each chunk's range against its
    /// chunk digest, and remembered as checked. Passthrough hands the file to the kernel,
    /// which never checks it, so this is the last chance. A copy that fails is removed.
    fn checked_assembled(
        &self,
        key: &Digest,
        path: &Path,
        of: &strata_fuse::FileRef<'_>,
    ) -> Option<std::fs::File> {
        let size = of.size;
        let file = std::fs::File::open(path).ok()?;
        let (verified, stamp) = {
            let mut index = self.lock();
            if !index.entries.contains_key(key) {
                // Left by a process that did not index it (or evicted meanwhile): checked
                // like any other, then counted in the bound.
                index.insert(key.clone(), size);
                index.assembled.insert(key.clone());
            }
            (index.verified.contains(key), index.touch(key))
        };
        let intact = file.metadata().is_ok_and(|m| m.len() == size)
            && (verified || chunks_match(&file, of.chunks));
        if !intact {
            tracing::warn!(file = of.path, path = %path.display(), "assembled copy is torn or corrupt: removed");
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            self.forget(key, path);
            return None;
        }
        if !verified {
            let mut index = self.lock();
            // Not if evicted while it was hashed: a later copy at this path is checked anew.
            if index.entries.contains_key(key) {
                index.verified.insert(key.clone());
            }
        }
        if let Some(when) = stamp {
            stamp_used(&file, when);
        }
        Some(file)
    }

    /// The size bound, bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Asks the kernel to read chunk `digest`'s file into the page cache in the background
    /// (a sequential reader will want it next: its reads then find it in memory instead of
    /// each waiting for the disk); false when it is not stored. Serves nothing: the reads
    /// still go through [`Self::read_range`] and its checks.
    pub fn prefetch(&self, digest: &Digest) -> bool {
        if !self.contains(digest) {
            return false;
        }
        match std::fs::File::open(self.path(digest)) {
            Ok(file) => {
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::WillNeed);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether chunk `digest` is stored (by the index; the file is checked on [`Self::get`]).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.lock().entries.contains_key(digest)
    }

    /// The chunk `digest`, if stored and intact (size and digest checked); a damaged file
    /// is removed and counts as a miss.
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.load(digest, |len| vec![0; len], Vec::as_mut_slice)
    }

    /// [`Self::get`] into a buffer from `alloc` (given the stored size), written through `buf`.
    fn load<B: std::ops::Deref<Target = [u8]>>(
        &self,
        digest: &Digest,
        alloc: impl FnOnce(usize) -> B,
        buf: impl FnOnce(&mut B) -> &mut [u8],
    ) -> Option<B> {
        let Some((expected, _, stamp)) = self.use_chunk(digest) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let path = self.path(digest);
        let read = std::fs::File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            if len != expected {
                return Ok(None);
            }
            if let Some(when) = stamp {
                stamp_used(&f, when);
            }
            let mut bytes = alloc(usize::try_from(len).map_err(io::Error::other)?);
            io::Read::read_exact(&mut f, buf(&mut bytes))?;
            Ok((Digest::of(&bytes) == *digest).then_some(bytes))
        });
        match read {
            Ok(Some(bytes)) => {
                self.lock().verified.insert(digest.clone());
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            Ok(None) => {
                tracing::warn!(chunk = %digest, path = %path.display(), "cached chunk is torn or corrupt: removed");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.forget(digest, &path);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => {
                // Evicted or removed meanwhile.
                self.forget(digest, &path);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn forget(&self, digest: &Digest, path: &Path) {
        self.lock().remove(digest);
        self.remove_files(&[path.to_path_buf()]);
    }

    /// Renames the finished temporary file `temp` to `path`, counting it in the shared
    /// usage (and taking off a file it replaces).
    fn publish(&self, temp: &Path, path: &Path) -> io::Result<()> {
        let usage = self.usage.lock();
        let size = std::fs::metadata(temp)?.len();
        let replaced = std::fs::metadata(path).map_or(0, |m| m.len());
        std::fs::rename(temp, path)?;
        usage.write(usage.read().saturating_sub(replaced).saturating_add(size));
        Ok(())
    }

    /// Removes `paths`, taking each file this call removed off the shared usage.
    fn remove_files(&self, paths: &[PathBuf]) {
        let usage = self.usage.lock();
        let mut freed = 0;
        for path in paths {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if std::fs::remove_file(path).is_ok() {
                freed += meta.len();
            }
        }
        usage.write(usage.read().saturating_sub(freed));
    }

    /// Stores `bytes` as chunk `digest` after checking they hash to it, then evicts the
    /// least recently used chunks beyond the size bound.
    ///
    /// # Errors
    ///
    /// InvalidData when the bytes do not match the digest (nothing is stored); I/O errors
    /// writing the file.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.put_from(digest, bytes.len() as u64, &mut &bytes[..])
    }

    /// Stores chunk `digest` of `size` bytes from `bytes`, streamed: written to a temporary
    /// file while hashed, renamed into place only when exactly `size` bytes came and they
    /// hash to `digest` (so a chunk never has to be held whole in memory). Already stored:
    /// nothing is read.
    ///
    /// # Errors
    ///
    /// A short or long stream or a digest mismatch (nothing stored), or the file's I/O.
    pub fn put_from(&self, digest: &Digest, size: u64, bytes: &mut dyn io::Read) -> io::Result<()> {
        self.store(digest, size, &mut |temp| {
            let file = &mut std::fs::File::create(temp)?;
            let mut digester = strata_formats::Digester::new();
            let mut buf = vec![0; 64 << 10];
            let mut limited = io::Read::take(&mut *bytes, size + 1);
            loop {
                let n = match io::Read::read(&mut limited, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                digester.update(&buf[..n]);
                io::Write::write_all(file, &buf[..n])?;
            }
            let actual = digester.digest();
            if digester.len() != size || actual != *digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "chunk cache: chunk {digest}: {} bytes hashing to {actual}, expected {size}; not stored",
                        digester.len()
                    ),
                ));
            }
            Ok(())
        })
    }

    /// Stores `bytes` as chunk `digest` **without hashing them again**: for a chunk source's
    /// output, which the [`strata_fuse::ChunkSource`] contract says was just verified
    /// against `digest` (hashing 4 MiB twice was 40 % of a lazy volume's CPU).
    ///
    /// # Errors
    ///
    /// I/O errors writing the file (nothing stored).
    pub fn put_verified(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        // With O_DIRECT: a buffered write of fresh chunks was most of a lazy volume's
        // time on the project's VMs (see `crate::direct_io`).
        self.store(digest, bytes.len() as u64, &mut |temp| {
            self.staging.write_new_file(temp, bytes)
        })
    }

    /// Writes a chunk of `size` bytes with `fill` into a new temporary file (the path it
    /// is given), renames it into place, records it and evicts beyond the bound. `fill`
    /// fails (InvalidData) for bytes that are not the chunk: nothing is stored. Already
    /// stored: nothing is written.
    fn store(
        &self,
        digest: &Digest,
        size: u64,
        fill: &mut dyn FnMut(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.lock().verified.contains(digest) && self.path(digest).exists() {
            self.lock().touch(digest);
            return Ok(());
        }
        let path = self.path(digest);
        let parent = path
            .parent()
            .expect("invariant: chunk paths have a fan-out directory");
        std::fs::create_dir_all(parent)?;
        let temp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> io::Result<()> {
            fill(&temp)?;
            // No fsync: a chunk a crash tore is hashed and dropped before a later process
            // uses it, and the fsync would cost every miss (see the module docs).
            self.publish(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            if e.kind() == io::ErrorKind::InvalidData {
                return Err(e);
            }
            return Err(io::Error::new(
                e.kind(),
                format!("chunk cache: store {}: {e}", path.display()),
            ));
        }
        {
            let mut index = self.lock();
            index.insert(digest.clone(), size);
            index.verified.insert(digest.clone());
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.evict();
        Ok(())
    }

    /// Removes the least recently used files until this process's index fits
    /// `max_size` — a file another process used later than this one knows (its
    /// modification time) moves later instead — then rescans the directory if the files
    /// of every process using it do not fit ([`Self::rescan_if_over`]).
    fn evict(&self) {
        let victims: Vec<PathBuf> = {
            let mut index = self.lock();
            let mut victims = Vec::new();
            while index.total > self.max_size {
                let Some(digest) = index.oldest().cloned() else {
                    break;
                };
                let path = self.entry_path(&index, &digest);
                if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified())
                    && index.used_elsewhere(&digest, modified)
                {
                    continue;
                }
                index.remove(&digest);
                victims.push(path);
            }
            victims
        };
        if !victims.is_empty() {
            self.evictions
                .fetch_add(victims.len() as u64, Ordering::Relaxed);
            self.remove_files(&victims);
        }
        self.rescan_if_over();
    }

    /// The file of index entry `digest`: a chunk, or an assembled copy.
    fn entry_path(&self, index: &Index, digest: &Digest) -> PathBuf {
        if index.assembled.contains(digest) {
            self.assembled_path(digest)
        } else {
            self.path(digest)
        }
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            bytes: self.lock().total,
        }
    }
}

/// Sets `file`'s modification time to `when`, a use's time: how a use reaches other processes' rescans
/// ([`rescan`]). Best effort: a file that keeps an old time is evicted sooner.
fn stamp_used(file: &std::fs::File, when: std::time::SystemTime) {
    let _ = file.set_modified(when);
}

/// Whether `file` holds exactly `chunks`, in order, each hashing to its digest (read with
/// positioned reads: the file's offset stays at the start for whoever reads it next).
fn chunks_match(file: &std::fs::File, chunks: &[FileChunk]) -> bool {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; 64 << 10];
    let mut at = 0u64;
    for c in chunks {
        let mut digester = strata_formats::Digester::new();
        let end = at + c.size;
        while at < end {
            let want = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
            match file.read_at(&mut buf[..want], at) {
                Ok(0) => return false,
                Ok(n) => {
                    digester.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if digester.digest() != c.digest {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests;
