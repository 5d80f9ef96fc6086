//! [`RecentChunks`]: the last few verified chunks a direct chunk source read, kept in
//! memory — the kernel reads a file in pieces smaller than a chunk, so the last few chunks
//! are what the next reads need, and each is read and verified once, not once per piece.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use strata_formats::Digest;

/// How many chunks are kept.
const RECENT_CHUNKS: usize = 8;

/// The last [`RECENT_CHUNKS`] chunks, by digest.
#[derive(Debug)]
pub(crate) struct RecentChunks {
    chunks: Mutex<VecDeque<(Digest, Arc<[u8]>)>>,
}

impl Default for RecentChunks {
    fn default() -> Self {
        Self {
            chunks: Mutex::new(VecDeque::with_capacity(RECENT_CHUNKS)),
        }
    }
}

impl RecentChunks {
    /// The chunk with `digest`, if it is one of the last few.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        let recent = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, data)| Arc::clone(data))
    }

    /// Keeps `data` (verified against `digest`), dropping the oldest.
    pub(crate) fn remember(&self, digest: Digest, data: Arc<[u8]>) {
        let mut recent = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CHUNKS {
            recent.pop_front();
        }
        recent.push_back((digest, data));
    }
}
