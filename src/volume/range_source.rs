//! [`RangeChunkSource`]: the chunks of one raw blob (a model artifact's weight file)
//! fetched from its registry by HTTP range, each hashed against its digest from the
//! artifact's chunk index before any byte of it is returned. A blob whose bytes in the
//! registry are not what the index says gives an error (`EIO` to the reader), never the
//! wrong bytes. Put the chunk cache ([`crate::cache::CachedChunkSource`]) in front of it,
//! so each chunk is fetched once.

use std::io;
use std::sync::Arc;

use strata_formats::layer_index::FileChunk;
use strata_fuse::{ChunkSource, FileRef};
use tokio::runtime::Handle;

use crate::registry::range::RangeFetcher;

/// Verified chunks of a raw blob, by range request.
#[derive(Debug)]
pub struct RangeChunkSource {
    fetcher: Arc<dyn RangeFetcher>,
    runtime: Handle,
}

impl RangeChunkSource {
    /// Fetches chunks with `fetcher`, blocking on `runtime` (callers are FUSE or
    /// read-ahead threads, never the runtime's own).
    pub fn new(fetcher: Arc<dyn RangeFetcher>, runtime: Handle) -> Self {
        Self { fetcher, runtime }
    }
}

impl ChunkSource for RangeChunkSource {
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        strata_fuse::raw_extent(file, chunk)?;
        let range = chunk.extent.offset..chunk.extent.offset + chunk.extent.len;
        // The index bounds chunk sizes (MAX_CHUNK_SIZE), so this allocation is bounded.
        let len = usize::try_from(chunk.size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
        // The body streams straight into the chunk's buffer and is hashed as it comes:
        // one buffer per chunk in flight, and the hash overlaps the transfer.
        let mut data = strata_formats::buffer::zeroed_shared(len);
        let out = Arc::get_mut(&mut data).expect("invariant: a new buffer has one owner");
        let (fetched, filled) = self.runtime.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
            let fetch = self.fetcher.fetch_stream(range.clone(), tx);
            let fill = async {
                let mut digester = strata_formats::Digester::new();
                let mut at = 0usize;
                while let Some(piece) = rx.recv().await {
                    let Some(dst) = out.get_mut(at..at + piece.len()) else {
                        return Err(at + piece.len());
                    };
                    dst.copy_from_slice(&piece);
                    digester.update(&piece);
                    at += piece.len();
                }
                Ok((at, digester.digest()))
            };
            tokio::join!(fetch, fill)
        });
        fetched.map_err(|e| Arc::new(e).into_io())?;
        let (got, actual) = filled.map_err(|too_many| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {too_many} or more bytes for the chunk at {} of {} bytes",
                    file.path, chunk.offset, chunk.size
                ),
            )
        })?;
        if got != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {got} bytes for the chunk at {} of {} bytes",
                    file.path, chunk.offset, chunk.size
                ),
            ));
        }
        if actual != chunk.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: bytes {}..{} of {} have digest {actual}, the chunk index says {}",
                    file.path,
                    range.start,
                    range.end,
                    self.fetcher.describe(),
                    chunk.digest
                ),
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use strata_formats::Digest;
    use strata_formats::layer_index::raw::RawBlobFile;

    use super::*;
    use crate::registry::range::RangeError;

    /// A blob in memory, as a registry would serve it.
    #[derive(Debug)]
    struct Memory(Vec<u8>);

    impl RangeFetcher for Memory {
        fn fetch<'a>(
            &'a self,
            ranges: &'a [std::ops::Range<u64>],
        ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
            Box::pin(async move {
                Ok(ranges
                    .iter()
                    .map(|r| Bytes::copy_from_slice(&self.0[r.start as usize..r.end as usize]))
                    .collect())
            })
        }
    }

    #[test]
    fn chunks_are_verified_and_a_changed_byte_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let index = RawBlobFile {
            path: "w.safetensors".into(),
            size: blob.len() as u64,
            chunk_size: 1 << 16,
            digests: blob.chunks(1 << 16).map(Digest::of).collect(),
            mode: 0o444,
            mtime: 0,
        }
        .layer_index()
        .unwrap();
        let entry = &index.entries()[1];
        let file = FileRef {
            layer: "l",
            path: &entry.path,
            ino: 2,
            size: entry.size,
            chunks: &entry.chunks,
        };
        let source =
            RangeChunkSource::new(Arc::new(Memory(blob.clone())), runtime.handle().clone());
        let whole: Vec<u8> = file
            .chunks
            .iter()
            .flat_map(|c| source.chunk(&file, c).unwrap().to_vec())
            .collect();
        assert_eq!(whole, blob);
        let mut bad = blob.clone();
        bad[70_000] ^= 0x20;
        let source = RangeChunkSource::new(Arc::new(Memory(bad)), runtime.handle().clone());
        assert!(source.chunk(&file, &file.chunks[0]).is_ok());
        let err = source.chunk(&file, &file.chunks[1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("chunk index says"), "{err}");
    }
}
