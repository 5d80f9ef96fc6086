//! The seam for file data: [`ChunkSource`] hands the filesystem the verified bytes of one
//! chunk of one file. The hub's chunk cache implements it (cache on disk, range fetching);
//! [`EstargzChunkSource`] implements it over an eStargz blob reachable through a
//! [`ReadAt`] (a local file, or anything the hub wraps as one), for `strata mount --lazy`
//! and the tests.
//!
//! Contract: a chunk is returned only whole and verified against its TOC digest; any failure
//! (fetch, decompression, digest) is an error, which the filesystem turns into `EIO` and a
//! log line naming the layer, the file and the cause. Wrong bytes are never returned.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use strata_formats::estargz::{Chunk, EstargzReader, Node};
use strata_formats::{Digest, ReadAt};

/// The file a chunk is asked for: enough to fetch it and to name it in a log line.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    /// The layer's name (e.g. its digest).
    pub layer: &'a str,
    /// The file's path in the layer.
    pub path: &'a str,
    /// The file's inode number.
    pub ino: u64,
    /// The file's TOC node: size, digest and chunk list.
    pub node: &'a Node,
}

/// Where the bytes of regular files come from. Called from many FUSE threads at once.
pub trait ChunkSource: Send + Sync {
    /// The bytes of `chunk` of `file` (exactly `chunk.chunk_size` of them), verified against
    /// `chunk.digest`.
    fn chunk(&self, file: &FileRef<'_>, chunk: &Chunk) -> io::Result<Arc<[u8]>>;

    /// Appends bytes `range` of `chunk` (offsets inside the chunk, within its size) to
    /// `out`. The default takes them from [`Self::chunk`]; a source holding verified chunks
    /// on disk reads just the range, so a FUSE read never needs the whole chunk in memory.
    fn read_chunk(
        &self,
        file: &FileRef<'_>,
        chunk: &Chunk,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let data = self.chunk(file, chunk)?;
        if data.len() as u64 != chunk.chunk_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "chunk source returned {} bytes for a chunk of {}",
                    data.len(),
                    chunk.chunk_size
                ),
            ));
        }
        let bytes = data.get(range).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "range outside the chunk")
        })?;
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// A file holding exactly the whole file's bytes, when they are all available locally:
    /// with passthrough on, the kernel then reads it directly. `None` (the default) serves
    /// the file through [`Self::chunk`].
    fn backing_file(&self, file: &FileRef<'_>) -> Option<File> {
        let _ = file;
        None
    }
}

/// How many decompressed chunks [`EstargzChunkSource`] keeps: the kernel reads a file in
/// pieces smaller than a chunk, so the last few chunks are what the next reads need.
const RECENT_CHUNKS: usize = 8;

/// Chunks read from an eStargz blob: each compressed member is read through the blob's
/// [`ReadAt`], decompressed and checked against its `chunkDigest` by
/// [`EstargzReader::read_chunk`]. The last few chunks are kept in memory.
#[derive(Debug)]
pub struct EstargzChunkSource<R> {
    reader: Arc<EstargzReader<R>>,
    recent: Mutex<VecDeque<(Digest, Arc<[u8]>)>>,
}

impl<R: ReadAt> EstargzChunkSource<R> {
    /// Serves chunks of the opened blob `reader`.
    pub fn new(reader: Arc<EstargzReader<R>>) -> Self {
        Self {
            reader,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_CHUNKS)),
        }
    }

    /// The blob's reader (its index is the layer's TOC).
    pub fn reader(&self) -> &Arc<EstargzReader<R>> {
        &self.reader
    }

    fn recent_chunk(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, data)| Arc::clone(data))
    }

    fn remember(&self, digest: Digest, data: Arc<[u8]>) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CHUNKS {
            recent.pop_front();
        }
        recent.push_back((digest, data));
    }
}

impl<R: ReadAt> ChunkSource for EstargzChunkSource<R> {
    fn chunk(&self, file: &FileRef<'_>, chunk: &Chunk) -> io::Result<Arc<[u8]>> {
        if let Some(data) = self.recent_chunk(&chunk.digest) {
            return Ok(data);
        }
        let data = self
            .reader
            .read_chunk_shared(file.path, chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.remember(chunk.digest.clone(), Arc::clone(&data));
        Ok(data)
    }
}
