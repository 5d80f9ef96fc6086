//! The smallest adapter: an uncompressed blob presented as one regular file (a model
//! artifact's raw weight layer), read in fixed-size chunks, each with its own SHA-256
//! digest from a separate chunk index — a raw blob's own digest covers it whole, so lazy,
//! verified reads need one per chunk.

use super::{Encoding, Entry, EntryKind, Extent, FileChunk, LayerIndex, LayerIndexError};
use crate::Digest;

/// A raw blob as one file: where it appears and how it is cut.
#[derive(Debug, Clone)]
pub struct RawBlobFile {
    /// The file's path in the layer (normalised; its parent directories are created).
    pub path: String,
    /// The blob's size in bytes: the file's size.
    pub size: u64,
    /// Every chunk's size but the last one's (which is what remains).
    pub chunk_size: u64,
    /// Each chunk's digest, in file order.
    pub digests: Vec<Digest>,
    /// The file's permission bits.
    pub mode: u32,
    /// Its modification time, Unix seconds (directories get it too).
    pub mtime: i64,
}

impl RawBlobFile {
    /// The index of a layer holding just this file (and its directories, mode 0o755).
    /// Fails when the digests do not match the cut: one per `chunk_size` bytes.
    pub fn layer_index(self) -> Result<LayerIndex, LayerIndexError> {
        let bad = |reason: String| LayerIndexError::Entry {
            path: self.path.clone(),
            reason,
        };
        if self.chunk_size == 0 || self.chunk_size > super::MAX_CHUNK_SIZE {
            return Err(bad(format!("chunk size {}", self.chunk_size)));
        }
        let expected = self.size.div_ceil(self.chunk_size);
        if self.digests.len() as u64 != expected {
            return Err(bad(format!(
                "{} chunk digests for {expected} chunks of {} bytes",
                self.digests.len(),
                self.chunk_size
            )));
        }
        let dir = |path: &str| Entry {
            mode: 0o755,
            mtime: self.mtime,
            ..Entry::new(path, EntryKind::Dir)
        };
        let mut entries = vec![dir("")];
        let mut at = 0;
        while let Some(i) = self.path[at..].find('/') {
            at += i;
            entries.push(dir(&self.path[..at]));
            at += 1;
        }
        let chunks = self
            .digests
            .into_iter()
            .enumerate()
            .map(|(i, digest)| {
                let offset = i as u64 * self.chunk_size;
                let size = self.chunk_size.min(self.size - offset);
                FileChunk {
                    offset,
                    size,
                    extent: Extent {
                        offset,
                        len: size,
                        encoding: Encoding::Raw,
                    },
                    digest,
                }
            })
            .collect();
        entries.push(Entry {
            mode: self.mode & 0o7777,
            mtime: self.mtime,
            size: self.size,
            chunks,
            ..Entry::new(self.path, EntryKind::Reg)
        });
        LayerIndex::new(entries)
    }
}
