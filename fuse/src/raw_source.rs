//! [`RawChunkSource`]: chunks of an uncompressed blob reachable through a [`ReadAt`] (a
//! model artifact's raw layer, served as one file by
//! [`strata_formats::layer_index::raw::RawBlobFile`]): each chunk's extent is read as it
//! is and hashed against the chunk's digest from the separate chunk index before any byte
//! of it is used. A mismatch is an error (`EIO` to the reader), never the wrong bytes.

use std::io;
use std::sync::Arc;

use strata_formats::layer_index::{Encoding, FileChunk};
use strata_formats::{Digest, ReadAt};

use crate::chunk_source::{ChunkSource, FileRef};
use crate::recent::RecentChunks;

/// Verified chunks of a raw blob. The last few chunks are kept in memory.
#[derive(Debug)]
pub struct RawChunkSource<R> {
    blob: R,
    recent: RecentChunks,
}

impl<R: ReadAt> RawChunkSource<R> {
    /// Serves chunks of `blob`.
    pub fn new(blob: R) -> Self {
        Self {
            blob,
            recent: RecentChunks::default(),
        }
    }
}

/// Checks that `chunk` of `file` is stored as it is (raw, its extent as long as the chunk):
/// what a source reading raw blobs can serve.
///
/// # Errors
///
/// InvalidInput naming the file and the chunk otherwise.
pub fn raw_extent(file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<()> {
    if chunk.extent.encoding != Encoding::Raw || chunk.extent.len != chunk.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: chunk at {} is not a raw extent of its size",
                file.path, chunk.offset
            ),
        ));
    }
    Ok(())
}

impl<R: ReadAt> ChunkSource for RawChunkSource<R> {
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        if let Some(data) = self.recent.get(&chunk.digest) {
            return Ok(data);
        }
        raw_extent(file, chunk)?;
        // The index bounds chunk sizes (MAX_CHUNK_SIZE), so this allocation is bounded.
        let len = usize::try_from(chunk.size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
        let mut data = strata_formats::buffer::zeroed_shared(len);
        let out = Arc::get_mut(&mut data).expect("invariant: a new buffer has one owner");
        self.blob.read_exact_at(out, chunk.extent.offset)?;
        let actual = Digest::of(out);
        if actual != chunk.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: chunk at {} (blob offset {}) has digest {actual}, expected {}",
                    file.path, chunk.offset, chunk.extent.offset, chunk.digest
                ),
            ));
        }
        self.recent
            .remember(chunk.digest.clone(), Arc::clone(&data));
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use strata_formats::layer_index::raw::RawBlobFile;

    use super::*;

    fn blob_and_index(
        len: usize,
        chunk: u64,
    ) -> (Vec<u8>, strata_formats::layer_index::LayerIndex) {
        let blob: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let digests = blob.chunks(chunk as usize).map(Digest::of).collect();
        let index = RawBlobFile {
            path: "w.bin".into(),
            size: len as u64,
            chunk_size: chunk,
            digests,
            mode: 0o644,
            mtime: 0,
        }
        .layer_index()
        .unwrap();
        (blob, index)
    }

    #[test]
    fn chunks_are_read_verified_and_a_flip_is_an_error() {
        let (mut blob, index) = blob_and_index(10_000, 4096);
        let f = &index.entries()[1];
        let file = FileRef {
            layer: "raw",
            path: &f.path,
            ino: 2,
            size: f.size,
            chunks: &f.chunks,
        };
        let source = RawChunkSource::new(blob.clone());
        let mut whole = Vec::new();
        for c in file.chunks {
            whole.extend_from_slice(&source.chunk(&file, c).unwrap());
        }
        assert_eq!(whole, blob);
        blob[5000] ^= 1;
        let source = RawChunkSource::new(blob);
        assert!(source.chunk(&file, &file.chunks[0]).is_ok());
        let err = source.chunk(&file, &file.chunks[1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A blob shorter than its index says is an error too.
        let source = RawChunkSource::new(vec![0u8; 100]);
        assert!(source.chunk(&file, &file.chunks[2]).is_err());
    }
}
