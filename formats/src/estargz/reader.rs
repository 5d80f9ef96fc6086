//! Opens an eStargz blob through a [`ReadAt`]: one tail read finds the footer, the TOC is
//! fetched, decompressed, checked against the annotated digest and indexed; chunks are
//! then read (one compressed member each) and verified against their `chunkDigest`.
//!
//! Every size and offset comes from the untrusted blob and is checked before use; reads are
//! bounded by the TOC's own limits ([`MAX_TOC_SIZE`], [`super::MAX_CHUNK_SIZE`]).

use std::io::{self, BufReader, Read};
use std::sync::Arc;

use super::footer::{Footer, FooterKind, MAX_FOOTER_SIZE, SKIPPABLE_FRAME_MAGIC};
use super::tar_src::SourceTar;
use super::toc::{Chunk, EntryType, Jtoc, Node, TocIndex, clean_name};
use super::{EstargzError, MAX_TOC_SIZE, TOC_TAR_NAME};
use crate::{Digest, Digester, ReadAt};

/// An opened eStargz blob: its footer, TOC and index, and the blob to read chunks from.
#[derive(Debug)]
pub struct EstargzReader<R> {
    blob: R,
    footer: Footer,
    toc: Jtoc,
    toc_digest: Digest,
    index: std::sync::Arc<TocIndex>,
}

/// Marks errors of the underlying [`ReadAt`], so they are reported as I/O failures rather
/// than as corrupt compressed data.
#[derive(Debug)]
struct BlobReadError(io::Error);

impl std::fmt::Display for BlobReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BlobReadError {}

/// A `Read` over `[pos, end)` of a blob.
struct RangeReader<'a, R: ?Sized> {
    blob: &'a R,
    pos: u64,
    end: u64,
}

impl<R: ReadAt + ?Sized> Read for RangeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let k = self
            .blob
            .read_at(&mut buf[..n], self.pos)
            .map_err(|e| io::Error::new(e.kind(), BlobReadError(e)))?;
        self.pos += k as u64;
        Ok(k)
    }
}

/// Maps an error met while decompressing from `offset`.
/// A chunk's size as a buffer length (the TOC check bounds it by `MAX_CHUNK_SIZE`).
fn chunk_len(chunk: &Chunk) -> Result<usize, EstargzError> {
    usize::try_from(chunk.chunk_size).map_err(|_| EstargzError::Decompress {
        offset: chunk.offset,
        reason: format!("chunk of {} bytes does not fit in memory", chunk.chunk_size),
    })
}

fn decompress_error(offset: u64, context: &str, e: io::Error) -> EstargzError {
    if e.get_ref().is_some_and(|inner| inner.is::<BlobReadError>()) {
        EstargzError::io(
            format!("reading the blob at offset {offset} ({context})"),
            e,
        )
    } else {
        EstargzError::Decompress {
            offset,
            reason: format!("{context}: {e}"),
        }
    }
}

/// The decompressed bytes of `chunk` read from `member`: the blob's bytes from
/// `chunk.offset` on (its compressed member; what follows it is not read past the chunk),
/// for a blob whose footer is of `kind`. At most `chunk.chunk_size` bytes come out, **not
/// verified**: the caller checks the count and the digest before using them. For callers
/// that fetch the bytes themselves, e.g. streamed from a range request.
pub fn chunk_reader<'a>(
    kind: FooterKind,
    member: impl io::BufRead + Send + 'a,
    chunk: &Chunk,
) -> Result<Box<dyn Read + Send + 'a>, EstargzError> {
    let mut dec: Box<dyn Read + Send + 'a> = match kind {
        FooterKind::Gzip | FooterKind::LegacyGzip => {
            Box::new(flate2::bufread::MultiGzDecoder::new(member))
        }
        FooterKind::ZstdChunked => Box::new(
            zstd::stream::read::Decoder::with_buffer(member)
                .map_err(|e| decompress_error(chunk.offset, "starting zstd", e))?,
        ),
    };
    let skipped = io::copy(&mut (&mut dec).take(chunk.inner_offset), &mut io::sink())
        .map_err(|e| decompress_error(chunk.offset, "skipping to the chunk", e))?;
    if skipped != chunk.inner_offset {
        return Err(EstargzError::Decompress {
            offset: chunk.offset,
            reason: format!(
                "member holds {skipped} bytes, fewer than the chunk's inner offset {}",
                chunk.inner_offset
            ),
        });
    }
    Ok(Box::new(dec.take(chunk.chunk_size)))
}

impl<R: ReadAt> EstargzReader<R> {
    /// Opens `blob`: parses the footer and TOC and builds the index. With
    /// `expected_toc_digest` (the layer's `containerd.io/snapshot/stargz/toc.digest`), a
    /// TOC with another digest is refused before it is parsed.
    pub fn open(blob: R, expected_toc_digest: Option<&Digest>) -> Result<Self, EstargzError> {
        let size = blob.size();
        let tail_len = size.min(MAX_FOOTER_SIZE as u64);
        let tail = blob
            .read_range(size - tail_len, tail_len)
            .map_err(|e| EstargzError::io("reading the blob footer", e))?;
        let footer = Footer::parse(&tail)?;
        let footer_start = size - footer.size() as u64;
        let (json, payload_end) = match footer.kind {
            FooterKind::Gzip | FooterKind::LegacyGzip => (
                read_gzip_toc(&blob, footer.toc_offset, footer_start)?,
                footer.toc_offset,
            ),
            FooterKind::ZstdChunked => read_zstd_toc(&blob, &footer, footer_start)?,
        };
        let toc_digest = Digest::of(&json);
        if let Some(expected) = expected_toc_digest
            && *expected != toc_digest
        {
            return Err(EstargzError::TocDigestMismatch {
                expected: expected.clone(),
                actual: toc_digest,
            });
        }
        let toc = Jtoc::parse(&json)?;
        let index = TocIndex::build(&toc, payload_end)?;
        Ok(Self {
            blob,
            footer,
            toc,
            toc_digest,
            index: std::sync::Arc::new(index),
        })
    }

    /// The parsed footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The TOC as parsed.
    pub fn toc(&self) -> &Jtoc {
        &self.toc
    }

    /// sha256 of the uncompressed TOC JSON.
    pub fn toc_digest(&self) -> &Digest {
        &self.toc_digest
    }

    /// The path index.
    pub fn index(&self) -> &TocIndex {
        &self.index
    }

    /// The path index, shared (e.g. with a filesystem built on it) instead of copied.
    pub fn shared_index(&self) -> std::sync::Arc<TocIndex> {
        std::sync::Arc::clone(&self.index)
    }

    /// Drops the parsed TOC document, keeping the index (all that reading chunks needs):
    /// for long-lived readers of large layers, where the document would be a second copy
    /// of every entry. [`Self::toc`] is empty afterwards.
    #[must_use]
    pub fn without_toc(mut self) -> Self {
        self.toc = Jtoc::default();
        self
    }

    /// The blob.
    pub fn blob(&self) -> &R {
        &self.blob
    }

    /// Decompresses one chunk of file `path` and verifies its digest.
    pub fn read_chunk(&self, path: &str, chunk: &Chunk) -> Result<Vec<u8>, EstargzError> {
        let mut data = vec![0; chunk_len(chunk)?];
        self.read_chunk_into(path, chunk, &mut data)?;
        Ok(data)
    }

    /// [`Self::read_chunk`], decompressed straight into a shared buffer (no copy for
    /// callers that hand the chunk to several readers).
    pub fn read_chunk_shared(&self, path: &str, chunk: &Chunk) -> Result<Arc<[u8]>, EstargzError> {
        let mut data = crate::buffer::zeroed_shared(chunk_len(chunk)?);
        let out = Arc::get_mut(&mut data).expect("invariant: a new buffer has one owner");
        self.read_chunk_into(path, chunk, out)?;
        Ok(data)
    }

    /// The decompressed bytes of `chunk` as a stream, from its first byte: at most
    /// `chunk.chunk_size` of them, **not verified** — the caller checks the count and the
    /// digest (as [`Self::read_chunk`] does) before using them, e.g. while writing them
    /// to a file it renames into place only if they match.
    pub fn chunk_stream(&self, chunk: &Chunk) -> Result<Box<dyn Read + Send + '_>, EstargzError> {
        let src = RangeReader {
            blob: &self.blob,
            pos: chunk.offset,
            end: chunk.next_offset.max(chunk.offset),
        };
        chunk_reader(
            self.footer.kind,
            BufReader::with_capacity(64 << 10, src),
            chunk,
        )
    }

    /// Decompresses chunk `chunk` of `path` into `out` (its exact size) and verifies it.
    fn read_chunk_into(
        &self,
        path: &str,
        chunk: &Chunk,
        out: &mut [u8],
    ) -> Result<(), EstargzError> {
        let mut dec = self.chunk_stream(chunk)?;
        let mut filled = 0;
        while filled < out.len() {
            match dec.read(&mut out[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(decompress_error(
                        chunk.offset,
                        &format!("chunk of {path:?} at file offset {}", chunk.chunk_offset),
                        e,
                    ));
                }
            }
        }
        if filled as u64 != chunk.chunk_size {
            return Err(EstargzError::Decompress {
                offset: chunk.offset,
                reason: format!(
                    "chunk of {path:?} at file offset {}: member holds {} of {} bytes",
                    chunk.chunk_offset,
                    chunk.inner_offset + filled as u64,
                    chunk.inner_offset + chunk.chunk_size
                ),
            });
        }
        let actual = Digest::of(out);
        if actual != chunk.digest {
            return Err(EstargzError::ChunkDigestMismatch {
                name: path.to_owned(),
                chunk_offset: chunk.chunk_offset,
                expected: chunk.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The regular file at `path` (hardlinks followed), every chunk and the whole-file
    /// digest verified. The file is held in memory: for large files use
    /// [`Self::read_chunk`] over the node's chunks.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, EstargzError> {
        let node = self
            .index
            .resolve(path)
            .ok_or_else(|| EstargzError::NotFound(path.to_owned()))?;
        if node.entry_type() != EntryType::Reg {
            return Err(EstargzError::NotRegular(path.to_owned()));
        }
        let mut out = Vec::new();
        self.for_each_chunk(node, |data| {
            out.extend_from_slice(data);
        })?;
        Ok(out)
    }

    fn for_each_chunk(&self, node: &Node, mut f: impl FnMut(&[u8])) -> Result<(), EstargzError> {
        let mut whole = Digester::new();
        for chunk in &node.chunks {
            let data = self.read_chunk(&node.path, chunk)?;
            whole.update(&data);
            f(&data);
        }
        if let Some(expected) = &node.file_digest {
            let actual = whole.digest();
            if actual != *expected {
                return Err(EstargzError::FileDigestMismatch {
                    name: node.path.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Reads and verifies every chunk and every regular file's digest.
    pub fn verify_all(&self) -> Result<(), EstargzError> {
        for node in self.index.nodes() {
            if node.entry_type() == EntryType::Reg {
                self.for_each_chunk(node, |_| {})?;
            }
        }
        Ok(())
    }
}

/// Reads the gzip TOC member at `toc_offset`: a tar header for `stargz.index.json`, then
/// the JSON.
fn read_gzip_toc<R: ReadAt + ?Sized>(
    blob: &R,
    toc_offset: u64,
    footer_start: u64,
) -> Result<Vec<u8>, EstargzError> {
    if toc_offset >= footer_start {
        return Err(EstargzError::InvalidFooter(format!(
            "TOC offset {toc_offset} is not before the footer at {footer_start}"
        )));
    }
    let src = BufReader::new(RangeReader {
        blob,
        pos: toc_offset,
        end: footer_start,
    });
    // Header, JSON, padding and the end marker: nothing else belongs in this member.
    let bound = MAX_TOC_SIZE + 4096;
    let dec = flate2::bufread::GzDecoder::new(src).take(bound);
    let mut tar = SourceTar::new(dec);
    let (_, meta) = tar
        .next_entry()
        .map_err(|e| match e {
            EstargzError::Io { source, .. } => decompress_error(toc_offset, "TOC member", source),
            EstargzError::InvalidTar(m) => {
                EstargzError::InvalidToc(format!("TOC member at offset {toc_offset}: {m}"))
            }
            other => other,
        })?
        .ok_or_else(|| {
            EstargzError::InvalidToc(format!(
                "TOC member at offset {toc_offset} holds no tar entry"
            ))
        })?;
    if clean_name(&meta.name).ok().as_deref() != Some(TOC_TAR_NAME) {
        return Err(EstargzError::InvalidToc(format!(
            "TOC tar entry is named {:?}, expected {TOC_TAR_NAME:?}",
            meta.name
        )));
    }
    if meta.size > MAX_TOC_SIZE {
        return Err(EstargzError::InvalidToc(format!(
            "TOC of {} bytes exceeds the {MAX_TOC_SIZE}-byte limit",
            meta.size
        )));
    }
    // Grow with what actually decompresses, so a lying size field costs nothing.
    let mut json = Vec::with_capacity(meta.size.min(1 << 20) as usize);
    let mut buf = vec![0u8; 64 << 10];
    while (json.len() as u64) < meta.size {
        let n = tar.read_payload(&mut buf).map_err(|e| match e {
            EstargzError::Io { source, .. } => decompress_error(toc_offset, "TOC JSON", source),
            EstargzError::InvalidTar(m) => {
                EstargzError::InvalidToc(format!("TOC member at offset {toc_offset}: {m}"))
            }
            other => other,
        })?;
        json.extend_from_slice(&buf[..n]);
    }
    Ok(json)
}

/// Reads stargz's zstd:chunked TOC: zstd-compressed JSON in a skippable frame.
fn read_zstd_toc<R: ReadAt + ?Sized>(
    blob: &R,
    footer: &Footer,
    footer_start: u64,
) -> Result<(Vec<u8>, u64), EstargzError> {
    let (off, clen, ulen) = (
        footer.toc_offset,
        footer.toc_compressed_len,
        footer.toc_uncompressed_len,
    );
    let frame_start = off.checked_sub(8).ok_or_else(|| {
        EstargzError::InvalidFooter(format!(
            "TOC offset {off} leaves no room for its frame header"
        ))
    })?;
    if off.checked_add(clen).is_none_or(|end| end > footer_start) {
        return Err(EstargzError::InvalidFooter(format!(
            "TOC [{off}, +{clen}) runs past the footer at {footer_start}"
        )));
    }
    if clen > MAX_TOC_SIZE || ulen > MAX_TOC_SIZE {
        return Err(EstargzError::InvalidToc(format!(
            "TOC of {clen} compressed / {ulen} uncompressed bytes exceeds the {MAX_TOC_SIZE}-byte limit"
        )));
    }
    let frame = blob
        .read_range(frame_start, 8 + clen)
        .map_err(|e| EstargzError::io("reading the TOC", e))?;
    if frame.len() as u64 != 8 + clen
        || frame[..4] != SKIPPABLE_FRAME_MAGIC
        || u64::from(u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]])) != clen
    {
        return Err(EstargzError::InvalidToc(format!(
            "no skippable frame of {clen} bytes holds the TOC at offset {frame_start}"
        )));
    }
    let json = zstd::bulk::decompress(&frame[8..], ulen as usize)
        .map_err(|e| decompress_error(off, "TOC", e))?;
    if json.len() as u64 != ulen {
        return Err(EstargzError::InvalidToc(format!(
            "TOC decompresses to {} bytes, footer says {ulen}",
            json.len()
        )));
    }
    Ok((json, frame_start))
}
