//! [`EstargzChunkSource`]: chunks of an eStargz blob reachable through a [`ReadAt`] — each
//! neutral chunk mapped back to its TOC chunk, its compressed member read, decompressed and
//! checked against its `chunkDigest` by [`EstargzReader::read_chunk_shared`].

use std::io;
use std::sync::Arc;

use strata_formats::ReadAt;
use strata_formats::estargz::{Chunk, EstargzReader};
use strata_formats::layer_index::FileChunk;

use crate::chunk_source::{ChunkSource, FileRef};
use crate::recent::RecentChunks;

/// Chunks read from an eStargz blob (see the module docs). The last few chunks are kept
/// in memory.
#[derive(Debug)]
pub struct EstargzChunkSource<R> {
    reader: Arc<EstargzReader<R>>,
    recent: RecentChunks,
}

impl<R: ReadAt> EstargzChunkSource<R> {
    /// Serves chunks of the opened blob `reader`.
    pub fn new(reader: Arc<EstargzReader<R>>) -> Self {
        Self {
            reader,
            recent: RecentChunks::default(),
        }
    }

    /// The blob's reader (its index is the layer's TOC).
    pub fn reader(&self) -> &Arc<EstargzReader<R>> {
        &self.reader
    }
}

impl<R: ReadAt> ChunkSource for EstargzChunkSource<R> {
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        if let Some(data) = self.recent.get(&chunk.digest) {
            return Ok(data);
        }
        let toc_chunk = Chunk::from_file_chunk(chunk).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a raw extent in an eStargz layer", file.path),
            )
        })?;
        let data = self
            .reader
            .read_chunk_shared(file.path, &toc_chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.recent
            .remember(chunk.digest.clone(), Arc::clone(&data));
        Ok(data)
    }
}
