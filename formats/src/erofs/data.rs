//! Where a regular file's bytes go, decided and written as the file is added.
//!
//! - Whole blocks are streamed to the next free blocks of the image; the last partial
//!   block either stays in memory to go inline after the inode (when the inode's block
//!   has room: FLAT_INLINE) or is written zero-padded (FLAT_PLAIN).
//! - A sparse file becomes CHUNK_BASED: only chunks holding data are written, holes are
//!   null chunks, so a sparse giant costs its data, not its size. The chunk size is chosen
//!   per file to minimise data written plus the chunk index; when no hole is worth a
//!   null chunk the file is written plain.
//! - In a tar-index image a file is one or a few chunks pointing at its payload in the
//!   tar appended after the index (tar payloads start on 512-byte boundaries).

use std::io::{Read, Seek, Write};

use super::ErofsError;
use super::builder::Builder;
use super::ondisk::{CHUNK_BLKBITS_MASK, NULL_ADDR};
use crate::tar_layer::SparseSegment;

/// Largest copy buffer.
const COPY_CHUNK: usize = 1 << 20;

/// A regular file's data as placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileData {
    /// No data (size 0).
    Empty,
    /// `size / blksz` whole blocks from `start`; the remainder inline (`Some`) or in one
    /// more zero-padded block after them (`None`).
    Blocks { start: u32, tail: Option<Vec<u8>> },
    /// Chunks of `blksz << chunkbits` bytes at these block addresses (`NULL_ADDR`: hole).
    Chunks { chunkbits: u8, addrs: Vec<u32> },
    /// Tar-index: the payload starts at 512-byte block `tar_blk` of the appended tar, in
    /// chunks of `512 << chunkbits`, contiguous.
    TarChunks { chunkbits: u8, tar_blk: u64 },
}

impl FileData {
    /// A file of `size` bytes at `tar_offset` of the appended tar.
    pub(crate) fn tar_reference(
        path: &[u8],
        size: u64,
        tar_offset: u64,
    ) -> Result<Self, ErofsError> {
        if size == 0 {
            return Ok(Self::Empty);
        }
        if !tar_offset.is_multiple_of(512) {
            return Err(ErofsError::entry(
                path,
                format!("payload at tar offset {tar_offset} is not 512-byte aligned"),
            ));
        }
        // One chunk covering the file when the format allows (2^31 blocks of 512 bytes),
        // as few as possible otherwise.
        let needed = 64 - (size.div_ceil(512) - 1).leading_zeros();
        let chunkbits = needed.min(u32::from(CHUNK_BLKBITS_MASK)) as u8;
        Ok(Self::TarChunks {
            chunkbits,
            tar_blk: tar_offset / 512,
        })
    }
}

impl<W: Write + Seek> Builder<W> {
    /// Allocates `n` blocks of streamed data, returning the first.
    fn alloc(&mut self, path: &[u8], n: u64) -> Result<u32, ErofsError> {
        let start = self.next_blk;
        let end = start.saturating_add(n);
        if end > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge(format!(
                "entry {:?} needs blocks beyond EROFS's 32-bit block addresses",
                String::from_utf8_lossy(path)
            )));
        }
        self.next_blk = end;
        Ok(start as u32)
    }

    /// Copies exactly `n` bytes from `data` to the output.
    fn copy(&mut self, path: &[u8], data: &mut dyn Read, mut n: u64) -> Result<(), ErofsError> {
        if self.buf.len() < COPY_CHUNK {
            self.buf.resize(COPY_CHUNK, 0);
        }
        while n > 0 {
            let want = (n.min(COPY_CHUNK as u64)) as usize;
            read_exact(path, data, &mut self.buf[..want])?;
            self.out
                .write_all(&self.buf[..want])
                .map_err(ErofsError::Write)?;
            n -= want as u64;
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<(), ErofsError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..k]).map_err(ErofsError::Write)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Writes a plain file's data: whole blocks now, the tail inline if it is at most
    /// `inline_max` bytes, else padded to a block.
    pub(crate) fn write_file(
        &mut self,
        path: &[u8],
        size: u64,
        data: &mut dyn Read,
        inline_max: usize,
    ) -> Result<FileData, ErofsError> {
        if size == 0 {
            return Ok(FileData::Empty);
        }
        let full = size / self.blksz;
        let tail_len = (size % self.blksz) as usize;
        let inline = tail_len > 0 && tail_len <= inline_max;
        let start = self.alloc(path, full + u64::from(tail_len > 0 && !inline))?;
        self.copy(path, data, full * self.blksz)?;
        let tail = if inline {
            let mut tail = vec![0u8; tail_len];
            read_exact(path, data, &mut tail)?;
            Some(tail)
        } else {
            if tail_len > 0 {
                self.copy(path, data, tail_len as u64)?;
                self.zeros(self.blksz - tail_len as u64)?;
            }
            None
        };
        Ok(FileData::Blocks { start, tail })
    }

    /// Writes a sparse file: chunk-based with null chunks for holes, or plain with the
    /// holes written as zeros when that is no larger.
    pub(crate) fn write_sparse(
        &mut self,
        path: &[u8],
        size: u64,
        segments: &[SparseSegment],
        data: &mut dyn Read,
    ) -> Result<FileData, ErofsError> {
        check_segments(path, size, segments)?;
        if size == 0 {
            return Ok(FileData::Empty);
        }
        let plain_cost = size.div_ceil(self.blksz) * self.blksz;
        let (chunkbits, chunk_cost) = (0..=20u8)
            .map(|bits| (bits, chunk_cost(size, segments, self.blksz << bits)))
            .min_by_key(|&(bits, cost)| (cost, bits))
            .expect("a non-empty range");
        let mut segs = SegmentReader {
            segments,
            index: 0,
            data,
        };
        if chunk_cost >= plain_cost {
            let blocks = size.div_ceil(self.blksz);
            let start = self.alloc(path, blocks)?;
            self.emit(path, &mut segs, 0, blocks * self.blksz)?;
            return Ok(FileData::Blocks { start, tail: None });
        }
        let chunk = self.blksz << chunkbits;
        let mut addrs = vec![NULL_ADDR; size.div_ceil(chunk) as usize];
        for c in touched_chunks(segments, chunk) {
            let begin = c * chunk;
            let end = (begin + chunk).min(size).div_ceil(self.blksz) * self.blksz;
            addrs[c as usize] = self.alloc(path, (end - begin) / self.blksz)?;
            self.emit(path, &mut segs, begin, end)?;
        }
        Ok(FileData::Chunks { chunkbits, addrs })
    }

    /// Writes the file's logical bytes `[begin, end)`: segment data where there is some,
    /// zeros elsewhere (holes and padding past the end).
    fn emit(
        &mut self,
        path: &[u8],
        segs: &mut SegmentReader<'_, '_>,
        begin: u64,
        end: u64,
    ) -> Result<(), ErofsError> {
        let mut at = begin;
        while at < end {
            // Skip segments that ended before `at` (all their bytes were emitted).
            while segs.index < segs.segments.len() {
                let s = segs.segments[segs.index];
                if s.offset + s.length <= at {
                    segs.index += 1;
                } else {
                    break;
                }
            }
            match segs.segments.get(segs.index) {
                Some(s) if s.offset <= at => {
                    let n = (s.offset + s.length).min(end) - at;
                    self.copy(path, segs.data, n)?;
                    at += n;
                }
                Some(s) => {
                    let n = s.offset.min(end) - at;
                    self.zeros(n)?;
                    at += n;
                }
                None => {
                    self.zeros(end - at)?;
                    at = end;
                }
            }
        }
        Ok(())
    }
}

/// The segments' data, read in order.
struct SegmentReader<'a, 'r> {
    segments: &'a [SparseSegment],
    index: usize,
    data: &'r mut dyn Read,
}

fn check_segments(path: &[u8], size: u64, segments: &[SparseSegment]) -> Result<(), ErofsError> {
    let mut end = 0;
    for s in segments {
        let seg_end = s.offset.checked_add(s.length);
        if s.offset < end || seg_end.is_none_or(|e| e > size) {
            return Err(ErofsError::entry(
                path,
                format!(
                    "sparse segment {}+{} is out of order or beyond the size {size}",
                    s.offset, s.length
                ),
            ));
        }
        end = seg_end.unwrap_or(end);
    }
    Ok(())
}

/// The chunks (of `chunk` bytes) that hold data, in order, each once.
fn touched_chunks(segments: &[SparseSegment], chunk: u64) -> impl Iterator<Item = u64> + '_ {
    let mut last: Option<u64> = None;
    segments
        .iter()
        .filter(|s| s.length > 0)
        .flat_map(move |s| s.offset / chunk..=(s.offset + s.length - 1) / chunk)
        .filter(move |&c| {
            let new = last.is_none_or(|l| c > l);
            if new {
                last = Some(c);
            }
            new
        })
}

/// Bytes a chunk-based layout with this chunk size costs: the chunks written plus the
/// 4-byte index.
fn chunk_cost(size: u64, segments: &[SparseSegment], chunk: u64) -> u64 {
    let index = size.div_ceil(chunk) * 4;
    index + touched_chunks(segments, chunk).count() as u64 * chunk
}

fn read_exact(path: &[u8], data: &mut dyn Read, buf: &mut [u8]) -> Result<(), ErofsError> {
    data.read_exact(buf).map_err(|source| ErofsError::ReadData {
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, length: u64) -> SparseSegment {
        SparseSegment { offset, length }
    }

    #[test]
    fn touched_chunks_are_each_listed_once() {
        let segs = [seg(0, 10), seg(100, 5000), seg(8190, 4), seg(1 << 30, 1)];
        let c: Vec<u64> = touched_chunks(&segs, 4096).collect();
        assert_eq!(c, vec![0, 1, 2, (1 << 30) / 4096]);
    }

    #[test]
    fn tar_references_are_one_chunk_when_possible() {
        let r = FileData::tar_reference(b"f", 1, 1024).unwrap();
        assert_eq!(
            r,
            FileData::TarChunks {
                chunkbits: 0,
                tar_blk: 2
            }
        );
        let r = FileData::tar_reference(b"f", 513, 0).unwrap();
        assert!(matches!(r, FileData::TarChunks { chunkbits: 1, .. }));
        assert!(FileData::tar_reference(b"f", 1, 100).is_err());
    }
}
