//! Validation of one TOC entry and of a regular file's chunk list: the checks that turn
//! untrusted `reg`/`chunk` entries into [`Chunk`]s a reader can use without further checks.

use super::toc::{Chunk, TocEntry, clean_name};
use super::{EstargzError, MAX_CHUNK_SIZE};
use crate::Digest;

pub(super) fn check_entry_numbers(ent: &TocEntry, path: &str) -> Result<(), EstargzError> {
    let fields = [
        ("size", ent.size),
        ("uid", ent.uid),
        ("gid", ent.gid),
        ("mode", ent.mode),
        ("offset", ent.offset),
        ("innerOffset", ent.inner_offset),
        ("devMajor", ent.dev_major),
        ("devMinor", ent.dev_minor),
        ("chunkOffset", ent.chunk_offset),
        ("chunkSize", ent.chunk_size),
    ];
    for (field, v) in fields {
        if v < 0 {
            return Err(EstargzError::InvalidToc(format!(
                "entry {path:?}: negative {field} {v}"
            )));
        }
    }
    if ent.uid > i64::from(u32::MAX)
        || ent.gid > i64::from(u32::MAX)
        || ent.mode > i64::from(u32::MAX)
    {
        return Err(EstargzError::InvalidToc(format!(
            "entry {path:?}: uid, gid or mode out of range"
        )));
    }
    Ok(())
}

fn parse_digest(path: &str, field: &str, s: &str) -> Result<Digest, EstargzError> {
    s.parse()
        .map_err(|e| EstargzError::InvalidToc(format!("entry {path:?}: bad {field}: {e}")))
}

/// Checks a `reg` entry and its `chunk` entries and turns them into a chunk list.
pub(super) fn file_chunks(
    path: &str,
    ents: &[TocEntry],
    payload_end: u64,
) -> Result<(Vec<Chunk>, Option<Digest>), EstargzError> {
    let reg = &ents[0];
    let size = reg.size as u64;
    let file_digest = if reg.digest.is_empty() {
        None
    } else {
        Some(parse_digest(path, "digest", &reg.digest)?)
    };
    if size == 0 {
        if ents.len() > 1 {
            return Err(EstargzError::InvalidToc(format!(
                "empty file {path:?} has chunk entries"
            )));
        }
        return Ok((Vec::new(), file_digest));
    }
    let mut chunks = Vec::with_capacity(ents.len());
    let mut pos = 0u64;
    for (k, e) in ents.iter().enumerate() {
        if k > 0 {
            check_entry_numbers(e, path)?;
            if !e.name.is_empty() && clean_name(&e.name)? != path {
                return Err(EstargzError::InvalidToc(format!(
                    "chunk entry {:?} follows file {path:?}",
                    e.name
                )));
            }
        }
        let chunk_offset = e.chunk_offset as u64;
        if chunk_offset != pos {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?}: chunk at offset {chunk_offset}, expected {pos} (chunks must be contiguous)"
            )));
        }
        let last = k + 1 == ents.len();
        let chunk_size = match e.chunk_size as u64 {
            0 if last => size - pos,
            0 => {
                return Err(EstargzError::InvalidToc(format!(
                    "file {path:?}: chunk at {pos} has no chunkSize"
                )));
            }
            n => n,
        };
        if chunk_size == 0 || chunk_size > size - pos || (last && chunk_size != size - pos) {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?} of size {size}: chunk at {pos} has inconsistent size {chunk_size}"
            )));
        }
        if chunk_size > MAX_CHUNK_SIZE {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?}: chunk at {pos} is {chunk_size} bytes, more than {MAX_CHUNK_SIZE}"
            )));
        }
        // The reader decompresses and discards innerOffset bytes: bound that work too.
        if e.inner_offset as u64 > MAX_CHUNK_SIZE {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?}: chunk at {pos} has innerOffset {}, more than {MAX_CHUNK_SIZE}",
                e.inner_offset
            )));
        }
        let offset = e.offset as u64;
        if offset >= payload_end {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?}: chunk at {pos} has blob offset {offset}, past the payload end {payload_end}"
            )));
        }
        if e.chunk_digest.is_empty() {
            return Err(EstargzError::InvalidToc(format!(
                "file {path:?}: chunk at {pos} has no chunkDigest"
            )));
        }
        let digest = parse_digest(path, "chunkDigest", &e.chunk_digest)?;
        chunks.push(Chunk {
            offset,
            next_offset: payload_end,
            chunk_offset,
            chunk_size,
            inner_offset: e.inner_offset as u64,
            digest,
        });
        pos += chunk_size;
    }
    Ok((chunks, file_digest))
}
