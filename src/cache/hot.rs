//! [`HotChunks`]: chunks just fetched, kept in memory until their reader has read them.
//!
//! A fetched chunk is written to the cache with `O_DIRECT` (see [`crate::direct_io`]), so
//! it is not in the page cache: without this, the reads of a chunk after the one that
//! fetched it (the kernel asks for at most 1 MiB at a time) would each go to the disk for
//! bytes that were in memory a moment before, and so would every chunk the read-ahead
//! fetched. A chunk stays here until every byte of it has been served once (a sequential
//! reader is done with it) or, bounded by bytes, until newer chunks push it out (a random
//! reader touched part of it); either way the chunk file on disk serves it afterwards.
//! The bytes here were verified by the source that fetched them.
//!
//! A chunk whose file is still being written ([`super::ChunkWriter`]) is pinned: it stays
//! here, even beyond the bound, until the write is done, so that no reader misses both.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use strata_formats::Digest;

/// Recently fetched chunks in memory, at most `max_bytes` of them.
#[derive(Debug)]
pub struct HotChunks {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    chunks: HashMap<Digest, Hot>,
    /// Recency: tick → digest, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Hot {
    data: Arc<[u8]>,
    tick: u64,
    /// Bytes served from it so far; at its length, the chunk has been read through.
    served: usize,
    /// Its file is being written: not let go until it is.
    pinned: bool,
}

impl Inner {
    fn remove(&mut self, digest: &Digest) {
        if let Some(hot) = self.chunks.remove(digest) {
            self.order.remove(&hot.tick);
            self.bytes -= hot.data.len();
        }
    }

    /// Lets the least recently used unpinned chunks go until `incoming` more bytes fit.
    fn make_room(&mut self, max_bytes: usize, incoming: usize) {
        let mut victims = Vec::new();
        let mut bytes = self.bytes;
        for digest in self.order.values() {
            if bytes + incoming <= max_bytes {
                break;
            }
            let hot = &self.chunks[digest];
            if !hot.pinned {
                bytes -= hot.data.len();
                victims.push(digest.clone());
            }
        }
        for digest in victims {
            self.remove(&digest);
        }
    }
}

impl HotChunks {
    /// Holds at most `max_bytes` of chunks (0: none).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `data`, the verified bytes of chunk `digest`, pushing out the least recently
    /// used chunks beyond the bound. A chunk larger than the bound is not kept.
    pub fn insert(&self, digest: &Digest, data: Arc<[u8]>) {
        if data.len() > self.max_bytes {
            return;
        }
        self.keep(digest, data, false);
    }

    /// Keeps `data` until [`Self::unpin`] (its file is being written), even beyond the
    /// bound: the writer's queue bounds how many are pinned.
    pub fn insert_pinned(&self, digest: &Digest, data: Arc<[u8]>) {
        self.keep(digest, data, true);
    }

    fn keep(&self, digest: &Digest, data: Arc<[u8]>, pinned: bool) {
        let mut inner = self.lock();
        inner.remove(digest);
        inner.make_room(self.max_bytes, data.len());
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += data.len();
        inner.order.insert(tick, digest.clone());
        inner.chunks.insert(
            digest.clone(),
            Hot {
                data,
                tick,
                served: 0,
                pinned,
            },
        );
    }

    /// The file of chunk `digest` is written: it may go now (at once if read through).
    pub fn unpin(&self, digest: &Digest) {
        let mut inner = self.lock();
        let Some(hot) = inner.chunks.get_mut(digest) else {
            return;
        };
        hot.pinned = false;
        if hot.served >= hot.data.len() {
            inner.remove(digest);
        }
        inner.make_room(self.max_bytes, 0);
    }

    /// The whole chunk `digest`, if held (it stays held).
    pub fn get(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let hot = inner.chunks.get_mut(digest)?;
        inner.order.remove(&hot.tick);
        inner.tick += 1;
        hot.tick = inner.tick;
        inner.order.insert(hot.tick, digest.clone());
        Some(Arc::clone(&hot.data))
    }

    /// Appends bytes `range` of chunk `digest` to `out` if it is held; counts them as
    /// served, and lets the chunk go once all of it has been.
    pub fn read(&self, digest: &Digest, range: Range<usize>, out: &mut Vec<u8>) -> bool {
        let data = {
            let inner = self.lock();
            match inner.chunks.get(digest) {
                Some(hot) if range.end <= hot.data.len() => Arc::clone(&hot.data),
                _ => return false,
            }
        };
        out.extend_from_slice(&data[range.clone()]);
        self.served(digest, range.len());
        true
    }

    /// Counts `len` bytes of chunk `digest` as served (read by a reader from a copy it
    /// had); the chunk goes once all of it has been.
    pub fn served(&self, digest: &Digest, len: usize) {
        let mut inner = self.lock();
        let Some(hot) = inner.chunks.get_mut(digest) else {
            return;
        };
        hot.served += len;
        if hot.served >= hot.data.len() && !hot.pinned {
            inner.remove(digest);
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8, len: usize) -> (Digest, Arc<[u8]>) {
        let data: Arc<[u8]> = vec![byte; len].into();
        (Digest::of(&data), data)
    }

    #[test]
    fn a_chunk_read_through_is_let_go() {
        let hot = HotChunks::new(100);
        let (d, data) = chunk(1, 40);
        hot.insert(&d, data);
        let mut out = Vec::new();
        assert!(hot.read(&d, 0..30, &mut out));
        assert_eq!(hot.bytes(), 40, "10 bytes not read yet");
        assert!(hot.read(&d, 30..40, &mut out));
        assert_eq!(out, vec![1; 40]);
        assert_eq!(hot.bytes(), 0);
        assert!(!hot.read(&d, 0..1, &mut out), "read through: gone");
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_out_first() {
        let hot = HotChunks::new(100);
        let (a, da) = chunk(1, 40);
        let (b, db) = chunk(2, 40);
        let (c, dc) = chunk(3, 40);
        hot.insert(&a, da);
        hot.insert(&b, db);
        assert!(hot.get(&a).is_some(), "a is now the most recent");
        hot.insert(&c, dc);
        assert_eq!(hot.bytes(), 80);
        assert!(hot.get(&b).is_none(), "b was least recently used");
        assert!(hot.get(&a).is_some() && hot.get(&c).is_some());
        let (big, dbig) = chunk(4, 101);
        hot.insert(&big, dbig);
        assert!(hot.get(&big).is_none(), "larger than the bound: not kept");
        assert_eq!(hot.bytes(), 80);
    }

    #[test]
    fn a_pinned_chunk_stays_until_unpinned() {
        let hot = HotChunks::new(50);
        let (a, da) = chunk(1, 40);
        let (b, db) = chunk(2, 40);
        hot.insert_pinned(&a, da);
        hot.insert(&b, db);
        assert_eq!(hot.bytes(), 80, "beyond the bound while a is pinned");
        let mut out = Vec::new();
        assert!(hot.read(&a, 0..40, &mut out));
        assert!(
            hot.get(&a).is_some(),
            "read through but still being written"
        );
        hot.unpin(&a);
        assert!(hot.get(&a).is_none(), "read through and written: gone");
        assert_eq!(hot.bytes(), 40);
        let (c, dc) = chunk(3, 40);
        hot.insert_pinned(&c, dc);
        hot.unpin(&c);
        assert!(hot.get(&b).is_none(), "b made room once c was unpinned");
        assert!(hot.get(&c).is_some());
    }

    #[test]
    fn a_range_outside_the_chunk_is_not_served() {
        let hot = HotChunks::new(100);
        let (d, data) = chunk(1, 40);
        hot.insert(&d, data);
        let mut out = Vec::new();
        assert!(!hot.read(&d, 30..41, &mut out));
        assert!(out.is_empty());
    }
}
