//! The format-neutral layer index: what a lazily mounted layer holds — its entries
//! (paths, kinds, attributes, xattrs) and, for each regular file, its chunks: where each
//! chunk is in the file, where its bytes are in the blob, and its digest.
//!
//! It is the one shape every lazily readable format is turned into before it is mounted
//! (`strata-fuse` builds its tree from it and asks its chunk source for [`FileChunk`]s):
//! an eStargz TOC ([`crate::estargz::TocIndex::layer_index`]), a raw blob served as one
//! file ([`raw`]), and later model-artifact chunk indexes, EROFS and gzip indexes. It is
//! pure format data with no FUSE in it, so it lives here, next to the formats it is
//! derived from.
//!
//! An index is untrusted input (it comes from a registry): [`LayerIndex::new`] checks
//! every path, parent, hardlink and chunk list, so consumers can use it without further
//! checks. Entry ids are positions in the list the index was built from; an adapter keeps
//! them a pure function of its source (the FUSE tree numbers inodes from them, and a
//! restarted daemon must hand a live kernel connection the same numbers).

pub mod raw;

use std::collections::{BTreeMap, HashMap};

use crate::Digest;

/// The largest chunk accepted: bounds what reading one chunk allocates.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// The most entries an index may hold (ids are `u32`).
pub const MAX_ENTRIES: usize = u32::MAX as usize;
/// The longest path accepted, bytes.
pub const MAX_PATH: usize = 4096;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; its bytes are its chunks.
    Reg,
    /// A symbolic link to [`Entry::link_target`].
    Symlink,
    /// A second name of the entry at path [`Entry::link_target`].
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// How a chunk's bytes are stored in its extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The extent's bytes are the chunk's bytes, as they are (its length is the chunk's
    /// size).
    Raw,
    /// The extent is a compressed stream (in the layer's compression); the chunk starts
    /// `inner` bytes into its decompressed bytes (several chunks may share one stream).
    Compressed {
        /// Decompressed bytes to skip before the chunk starts.
        inner: u64,
    },
}

/// Where a chunk's bytes are in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Blob offset of the extent's first byte.
    pub offset: u64,
    /// Its length in the blob: exact for a raw extent; for a compressed one, an upper
    /// bound (up to where the next extent starts) that a fetch may read to.
    pub len: u64,
    /// How the chunk is stored in it.
    pub encoding: Encoding,
}

impl Extent {
    /// Where the extent ends in the blob.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Decompressed bytes before the chunk (0 for a raw extent).
    pub fn inner_offset(&self) -> u64 {
        match self.encoding {
            Encoding::Raw => 0,
            Encoding::Compressed { inner } => inner,
        }
    }
}

/// One piece of a regular file: where it is in the file, where its bytes are in the blob,
/// and the digest they must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    /// Where the chunk starts in the file.
    pub offset: u64,
    /// Its length in the file (never 0).
    pub size: u64,
    /// Where its bytes are in the blob.
    pub extent: Extent,
    /// sha256 of its bytes: checked before any of them is used.
    pub digest: Digest,
}

impl FileChunk {
    /// Where the chunk ends in the file.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// The chunk of `chunks` (contiguous, in file order, as a [`LayerIndex`] guarantees)
/// holding byte `offset` of the file, if the file is that long.
pub fn chunk_at(chunks: &[FileChunk], offset: u64) -> Option<&FileChunk> {
    let i = chunks.partition_point(|c| c.end() <= offset);
    chunks.get(i)
}

/// One path of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The normalised path: no leading `/`, no empty, `.` or `..` components; "" is the
    /// root.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// A regular file's size in bytes (0 for other kinds).
    pub size: u64,
    /// A symlink's target as written, or the path of the entry a hardlink names.
    pub link_target: String,
    /// A device's major number.
    pub dev_major: u32,
    /// A device's minor number.
    pub dev_minor: u32,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A regular file's chunks in file order, covering it exactly; empty otherwise.
    pub chunks: Box<[FileChunk]>,
    /// Kept for the format's own use and not listed in its directory (eStargz's prefetch
    /// landmarks): it keeps its id, so ids stay a function of the source.
    pub hidden: bool,
}

impl Entry {
    /// An entry of `kind` at `path` with every attribute zero or empty.
    pub fn new(path: impl Into<String>, kind: EntryKind) -> Self {
        Self {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link_target: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            chunks: Box::default(),
            hidden: false,
        }
    }
}

/// Why entries do not make a layer index.
#[derive(Debug, thiserror::Error)]
pub enum LayerIndexError {
    /// The index as a whole is malformed (no root, too many entries).
    #[error("invalid layer index: {0}")]
    Invalid(String),
    /// One entry is malformed.
    #[error("invalid layer index: entry {path:?}: {reason}")]
    Entry {
        /// The entry's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn entry_error(path: &str, reason: impl Into<String>) -> LayerIndexError {
    LayerIndexError::Entry {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A checked layer index: entry 0 is the root directory, every other entry's parent is a
/// directory of the index, paths are unique, hardlinks name a non-directory entry that is
/// not a hardlink, and every regular file's chunks cover it exactly.
#[derive(Debug, Clone)]
pub struct LayerIndex {
    entries: Vec<Entry>,
    /// Entry → its parent directory's id (the root: 0).
    parents: Vec<u32>,
    /// Hardlink entry → the id of the entry it names (others: their own id).
    targets: Vec<u32>,
}

impl LayerIndex {
    /// Checks `entries` (see the type's docs) and indexes them; entry ids are their
    /// positions.
    pub fn new(entries: Vec<Entry>) -> Result<Self, LayerIndexError> {
        if entries.len() > MAX_ENTRIES {
            return Err(LayerIndexError::Invalid(format!(
                "{} entries, more than {MAX_ENTRIES}",
                entries.len()
            )));
        }
        match entries.first() {
            Some(root) if root.path.is_empty() && root.kind == EntryKind::Dir => {}
            _ => {
                return Err(LayerIndexError::Invalid(
                    "entry 0 must be the root directory (path \"\")".into(),
                ));
            }
        }
        let mut by_path: HashMap<&str, u32> = HashMap::with_capacity(entries.len());
        for (id, e) in entries.iter().enumerate() {
            if id > 0 {
                check_path(&e.path)?;
            }
            check_entry(e)?;
            if by_path.insert(e.path.as_str(), id as u32).is_some() {
                return Err(entry_error(&e.path, "path appears twice"));
            }
        }
        let mut parents = vec![0u32; entries.len()];
        let mut targets: Vec<u32> = (0..entries.len() as u32).collect();
        for (id, e) in entries.iter().enumerate().skip(1) {
            let parent = e.path.rfind('/').map_or("", |i| &e.path[..i]);
            match by_path.get(parent) {
                Some(&p) if entries[p as usize].kind == EntryKind::Dir => parents[id] = p,
                _ => return Err(entry_error(&e.path, "its parent is not a directory")),
            }
            if e.kind == EntryKind::Hardlink {
                let t = by_path
                    .get(e.link_target.as_str())
                    .copied()
                    .ok_or_else(|| entry_error(&e.path, "hardlink names a missing entry"))?;
                if matches!(
                    entries[t as usize].kind,
                    EntryKind::Dir | EntryKind::Hardlink
                ) {
                    return Err(entry_error(
                        &e.path,
                        "hardlink names a directory or another hardlink",
                    ));
                }
                targets[id] = t;
            }
        }
        Ok(Self {
            entries,
            parents,
            targets,
        })
    }

    /// Every entry; id 0 is the root.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always `false`: an index holds at least its root.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id of entry `id`'s parent directory (the root's is 0).
    pub fn parent(&self, id: usize) -> usize {
        self.parents[id] as usize
    }

    /// The id of the entry whose data and attributes entry `id` presents: what a hardlink
    /// names, otherwise `id` itself.
    pub fn target(&self, id: usize) -> usize {
        self.targets[id] as usize
    }

    /// The entries, with each one's parent and target id (for consumers that take the
    /// entries over instead of copying them).
    pub fn into_parts(self) -> (Vec<Entry>, Vec<u32>, Vec<u32>) {
        (self.entries, self.parents, self.targets)
    }
}

/// A non-root path: normalised, bounded.
fn check_path(path: &str) -> Result<(), LayerIndexError> {
    if path.len() > MAX_PATH {
        let start: String = path.chars().take(64).collect();
        return Err(entry_error(&start, format!("path of {} bytes", path.len())));
    }
    if path.contains('\0') {
        return Err(entry_error(path, "path contains a NUL byte"));
    }
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(entry_error(path, "path is not normalised"));
        }
        if c.len() > 255 {
            return Err(entry_error(path, "path component longer than 255 bytes"));
        }
    }
    Ok(())
}

/// An entry's own fields: chunks only for regular files, and covering them exactly.
fn check_entry(e: &Entry) -> Result<(), LayerIndexError> {
    if e.kind != EntryKind::Reg {
        if !e.chunks.is_empty() {
            return Err(entry_error(&e.path, "only regular files have chunks"));
        }
        if matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) && e.link_target.is_empty() {
            return Err(entry_error(&e.path, "link without a target"));
        }
        return Ok(());
    }
    let mut pos = 0u64;
    for c in &e.chunks {
        if c.offset != pos {
            return Err(entry_error(
                &e.path,
                format!(
                    "chunk at {}, expected {pos} (chunks must be contiguous)",
                    c.offset
                ),
            ));
        }
        if c.size == 0 || c.size > MAX_CHUNK_SIZE {
            return Err(entry_error(
                &e.path,
                format!("chunk at {pos} has size {}", c.size),
            ));
        }
        if c.extent.offset.checked_add(c.extent.len).is_none() {
            return Err(entry_error(
                &e.path,
                format!("chunk at {pos}: extent overflows"),
            ));
        }
        match c.extent.encoding {
            Encoding::Raw if c.extent.len != c.size => {
                return Err(entry_error(
                    &e.path,
                    format!("chunk at {pos}: raw extent of {} bytes", c.extent.len),
                ));
            }
            // The reader decompresses and discards `inner` bytes: bound that work too.
            Encoding::Compressed { inner } if inner > MAX_CHUNK_SIZE => {
                return Err(entry_error(
                    &e.path,
                    format!("chunk at {pos}: inner offset {inner}"),
                ));
            }
            _ => {}
        }
        pos = c.end();
    }
    if pos != e.size {
        return Err(entry_error(
            &e.path,
            format!("chunks cover {pos} bytes of {}", e.size),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
