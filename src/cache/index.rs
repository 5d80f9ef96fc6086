//! What one process knows of a chunk cache directory: each stored file's size and when it
//! was last used — by this process, or by another as the file's modification time tells —
//! which files this process wrote or checked, and how a scan of the directory is merged in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use strata_formats::Digest;

/// How stale a file's modification time may be against its last use by this process: a
/// use this long after the last one written is written to the file (the caller does it on
/// the file it opened), which is how other processes see it used.
pub(super) const STAMP_EVERY: Duration = Duration::from_secs(1);

/// A stored file as one process sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) size: u64,
    /// When last used (or stored), by this process or, as far as it knows, another.
    used: SystemTime,
    /// Orders uses at the same time.
    tick: u64,
    /// When this process last wrote a use to the file's modification time.
    stamped: SystemTime,
}

/// A file a directory scan found.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) modified: SystemTime,
    /// Under `files/` (an assembled copy), not a chunk.
    pub(super) assembled: bool,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) entries: HashMap<Digest, Entry>,
    /// (last use, tick) → digest, least recently used first
    order: BTreeMap<(SystemTime, u64), Digest>,
    /// Chunks whose file was written or checked by this process.
    pub(super) verified: HashSet<Digest>,
    /// Entries that are whole files assembled for passthrough (under `files/`, named by a
    /// digest of their chunks' digests), not chunks.
    pub(super) assembled: HashSet<Digest>,
    pub(super) total: u64,
    pub(super) tick: u64,
}

impl Index {
    /// The index of what a scan found, each file last used at its modification time.
    pub(super) fn from_scan(found: Vec<Found>) -> Index {
        let mut index = Index::default();
        index.merge_scan(found, 0);
        index
    }

    /// Marks `digest` used now; the time to set its file's modification time to when
    /// that is due (see [`STAMP_EVERY`]) — exactly the use's time, so that this process
    /// does not take its own stamp for another's later use.
    pub(super) fn touch(&mut self, digest: &Digest) -> Option<SystemTime> {
        let now = SystemTime::now();
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(digest)?;
        self.order.remove(&(entry.used, entry.tick));
        entry.used = now;
        entry.tick = tick;
        self.order.insert((now, tick), digest.clone());
        let stale = now
            .duration_since(entry.stamped)
            .map_or(true, |since| since >= STAMP_EVERY);
        if !stale {
            return None;
        }
        entry.stamped = now;
        Some(now)
    }

    /// Records a file of `size` bytes just stored (or stored again: then a use).
    pub(super) fn insert(&mut self, digest: Digest, size: u64) {
        if self.entries.contains_key(&digest) {
            self.touch(&digest);
            return;
        }
        self.insert_used(digest, size, SystemTime::now());
    }

    /// Takes in a file another process stored (of `size` bytes, last used at `modified`),
    /// not verified; nothing if it is already indexed.
    pub(super) fn adopt(&mut self, digest: Digest, size: u64, modified: SystemTime) {
        if !self.entries.contains_key(&digest) {
            self.insert_used(digest, size, modified);
        }
    }

    fn insert_used(&mut self, digest: Digest, size: u64, used: SystemTime) {
        self.tick += 1;
        let entry = Entry {
            size,
            used,
            tick: self.tick,
            stamped: used,
        };
        self.order.insert((used, entry.tick), digest.clone());
        self.entries.insert(digest, entry);
        self.total += size;
    }

    /// Another process used `digest` at `modified` (its file's modification time): moves
    /// it later if that is after the last use this index knows. True when it moved.
    pub(super) fn used_elsewhere(&mut self, digest: &Digest, modified: SystemTime) -> bool {
        let Some(entry) = self.entries.get_mut(digest) else {
            return false;
        };
        if modified <= entry.used {
            return false;
        }
        self.order.remove(&(entry.used, entry.tick));
        entry.used = modified;
        entry.stamped = entry.stamped.max(modified);
        self.order.insert((modified, entry.tick), digest.clone());
        true
    }

    /// The least recently used entry.
    pub(super) fn oldest(&self) -> Option<&Digest> {
        self.order.values().next()
    }

    pub(super) fn remove(&mut self, digest: &Digest) -> bool {
        self.verified.remove(digest);
        self.assembled.remove(digest);
        match self.entries.remove(digest) {
            Some(entry) => {
                self.order.remove(&(entry.used, entry.tick));
                self.total -= entry.size;
                true
            }
            None => false,
        }
    }

    /// Merges a scan of the directory begun when this index's tick was `scan_tick`: files
    /// gone from the directory are forgotten — unless stored or used after the scan began
    /// (the scan may have missed them) — files other processes stored are added (not
    /// verified), and a file used later elsewhere than here moves later.
    pub(super) fn merge_scan(&mut self, found: Vec<Found>, scan_tick: u64) {
        let mut present = HashSet::with_capacity(found.len());
        for f in found {
            present.insert(f.digest.clone());
            if self.entries.contains_key(&f.digest) {
                self.used_elsewhere(&f.digest, f.modified);
                continue;
            }
            if f.assembled {
                self.assembled.insert(f.digest.clone());
            }
            self.insert_used(f.digest, f.size, f.modified);
        }
        let gone: Vec<Digest> = self
            .entries
            .iter()
            .filter(|(d, e)| e.tick <= scan_tick && !present.contains(*d))
            .map(|(d, _)| d.clone())
            .collect();
        for digest in gone {
            self.remove(&digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(n: u8, size: u64, secs: u64) -> Found {
        Found {
            digest: Digest::of(&[n]),
            size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            assembled: false,
        }
    }

    #[test]
    fn a_scan_orders_by_modification_time() {
        let index = Index::from_scan(vec![found(1, 10, 300), found(2, 20, 100), found(3, 5, 200)]);
        assert_eq!(index.total, 35);
        assert_eq!(index.oldest(), Some(&Digest::of(&[2])));
    }

    #[test]
    fn a_use_elsewhere_moves_an_entry_later_and_never_earlier() {
        let mut index = Index::from_scan(vec![found(1, 1, 100), found(2, 1, 200)]);
        let one = Digest::of(&[1]);
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(300);
        assert!(index.used_elsewhere(&one, late));
        assert_eq!(index.oldest(), Some(&Digest::of(&[2])));
        assert!(!index.used_elsewhere(&one, SystemTime::UNIX_EPOCH));
        assert!(
            !index.used_elsewhere(&Digest::of(&[9]), late),
            "not indexed"
        );
    }

    #[test]
    fn a_touch_asks_for_a_stamp_at_most_every_period() {
        let mut index = Index::from_scan(vec![found(1, 1, 100)]);
        let one = Digest::of(&[1]);
        let when = index.touch(&one).expect("stamped long ago");
        assert!(index.touch(&one).is_none(), "stamped just now");
        index.insert(Digest::of(&[2]), 1);
        assert!(index.touch(&Digest::of(&[2])).is_none(), "just stored");
        // The stamp is the use's own time: this process's stamp is no later use elsewhere.
        let mut index = Index::from_scan(vec![found(1, 1, 100)]);
        let when_here = index.touch(&one).unwrap();
        assert!(when_here >= when);
        assert!(!index.used_elsewhere(&one, when_here));
    }

    #[test]
    fn a_merge_adds_others_files_and_forgets_only_what_was_there_before_the_scan() {
        let mut index = Index::default();
        index.insert(Digest::of(&[1]), 1);
        index.insert(Digest::of(&[2]), 1);
        index.verified.insert(Digest::of(&[1]));
        let scan_tick = index.tick;
        index.insert(Digest::of(&[3]), 1);
        index.merge_scan(vec![found(2, 1, 0), found(4, 7, 0)], scan_tick);
        let mut digests: Vec<_> = index.entries.keys().cloned().collect();
        digests.sort();
        let mut want = vec![Digest::of(&[2]), Digest::of(&[3]), Digest::of(&[4])];
        want.sort();
        assert_eq!(
            digests, want,
            "1 is gone; 3 came after the scan began; 4 is another's"
        );
        assert_eq!(index.total, 9);
        assert!(
            index.verified.is_empty(),
            "the forgotten one is no longer checked"
        );
        assert_eq!(
            index.oldest(),
            Some(&Digest::of(&[4])),
            "another's, used at the epoch"
        );
    }
}
