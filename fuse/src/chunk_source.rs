//! The seam for file data: [`ChunkSource`] hands the filesystem the verified bytes of one
//! chunk of one file, in the neutral shape of [`strata_formats::layer_index`] — whatever
//! format the layer is. The hub's chunk cache implements it (cache on disk, range
//! fetching); [`crate::EstargzChunkSource`] reads an eStargz blob and
//! [`crate::RawChunkSource`] a raw one, each through a [`strata_formats::ReadAt`] (a local
//! file, or anything the hub wraps as one), for `strata mount --lazy` and the tests.
//!
//! Contract: a chunk is returned only whole and verified against its digest; any failure
//! (fetch, decompression, digest) is an error, which the filesystem turns into `EIO` and a
//! log line naming the layer, the file and the cause. Wrong bytes are never returned.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use strata_formats::layer_index::FileChunk;

/// The file a chunk is asked for: enough to fetch it and to name it in a log line.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    /// The layer's name (e.g. its digest).
    pub layer: &'a str,
    /// The file's path in the layer.
    pub path: &'a str,
    /// The file's inode number.
    pub ino: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Its chunks, in file order, covering it exactly.
    pub chunks: &'a [FileChunk],
}

/// Where the bytes of regular files come from. Called from many FUSE threads at once.
pub trait ChunkSource: Send + Sync {
    /// The bytes of `chunk` of `file` (exactly `chunk.size` of them), verified against
    /// `chunk.digest`.
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>>;

    /// Appends bytes `range` of `chunk` (offsets inside the chunk, within its size) to
    /// `out`. The default takes them from [`Self::chunk`]; a source holding verified chunks
    /// on disk reads just the range, so a FUSE read never needs the whole chunk in memory.
    fn read_chunk(
        &self,
        file: &FileRef<'_>,
        chunk: &FileChunk,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let data = self.chunk(file, chunk)?;
        if data.len() as u64 != chunk.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "chunk source returned {} bytes for a chunk of {}",
                    data.len(),
                    chunk.size
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
