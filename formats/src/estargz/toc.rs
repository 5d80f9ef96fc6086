//! The eStargz table of contents: its JSON types ([`Jtoc`], [`TocEntry`]) with the field
//! names and `omitempty` rules of stargz-snapshotter's `estargz/types.go`, and the
//! [`TocIndex`] built from it: path → node (metadata, chunk list, children), with hardlinks
//! resolved.
//!
//! The TOC comes from an untrusted blob, so [`TocIndex::build`] checks everything a reader
//! later relies on: version 1, names normalised, chunk lists contiguous and summing to the
//! file size, payload offsets inside the blob's payload area and never overlapping.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::toc_check::{check_entry_numbers, file_chunks};
use super::toc_json::{self, marshal_indent_go, xattrs_base64};
use super::{EstargzError, MAX_TOC_SIZE, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use crate::Digest;

/// The TOC JSON document: `{"version": 1, "entries": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jtoc {
    /// Always 1.
    pub version: i64,
    /// Entries in blob order; a large file is one `reg` entry followed by `chunk` entries.
    #[serde(deserialize_with = "null_as_empty")]
    pub entries: Vec<TocEntry>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TocEntry>, D::Error> {
    Ok(Option::<Vec<TocEntry>>::deserialize(d)?.unwrap_or_default())
}

/// The type of a TOC entry, spelled as in the JSON `type` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A directory.
    Dir,
    /// A regular file (or its first chunk).
    #[default]
    Reg,
    /// A symbolic link; `linkName` is the target.
    Symlink,
    /// A hard link; `linkName` is the path of the linked entry.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// The second and later chunks of a regular file.
    Chunk,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One TOC entry. Field names, order and `omitempty` follow Go's `TOCEntry`, so a TOC we
/// marshal has the bytes (and so the digest) stargz-snapshotter would produce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TocEntry {
    /// The tar path, as stored in the tar header.
    pub name: String,
    /// The entry type.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// The logical size of a regular file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// Modification time, RFC 3339 UTC; empty means zero/unknown.
    #[serde(rename = "modtime", default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    /// Target of a symlink or hardlink.
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// Permission and mode bits, as in the tar header.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    /// Owner user id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    /// Owner group id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    /// Owner user name; stargz only writes it on the first entry with a given uid.
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// Owner group name; only on the first entry with a given gid.
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    /// Compressed blob offset of the member holding this payload (`reg`/`chunk`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    /// Uncompressed offset of this payload within the member at `offset`.
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero")]
    pub inner_offset: i64,
    /// Device major number (`char`/`block`).
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    /// Device minor number (`char`/`block`).
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    /// Extended attributes; values are base64 in JSON.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "xattrs_base64"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// sha256 of the whole regular file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Where this chunk starts in the uncompressed file.
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: i64,
    /// This chunk's size; 0 on the last (or only) chunk means "to the end of the file".
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: i64,
    /// sha256 of this chunk's uncompressed bytes.
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
}

impl TocEntry {
    /// The modification time as Unix seconds; `None` when empty or unparsable.
    pub fn mtime_unix(&self) -> Option<i64> {
        toc_json::parse_modtime(&self.modtime)
    }
}

impl Jtoc {
    /// Parses TOC JSON, refusing documents over [`MAX_TOC_SIZE`] bytes. Only the JSON is
    /// checked here; [`TocIndex::build`] checks the content.
    pub fn parse(json: &[u8]) -> Result<Self, EstargzError> {
        if json.len() as u64 > MAX_TOC_SIZE {
            return Err(EstargzError::InvalidToc(format!(
                "TOC JSON is {} bytes, more than the {MAX_TOC_SIZE}-byte limit",
                json.len()
            )));
        }
        serde_json::from_slice(json)
            .map_err(|e| EstargzError::InvalidToc(format!("malformed TOC JSON: {e}")))
    }

    /// Serializes like Go's `json.MarshalIndent(toc, "", "\t")`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs and maps with string keys cannot fail.
        marshal_indent_go(self).unwrap_or_default()
    }
}

/// Normalises a tar path like Go's `strings.TrimPrefix(path.Clean("/"+name), "/")`:
/// no leading `/`, no `.` or empty components, `..` never escapes the root. The root is "".
pub fn clean_name(name: &str) -> Result<String, EstargzError> {
    if name.contains('\0') {
        return Err(EstargzError::InvalidToc(format!(
            "entry name {name:?} contains a NUL byte"
        )));
    }
    if name.len() > 4096 {
        return Err(EstargzError::InvalidToc(format!(
            "entry name of {} bytes exceeds 4096",
            name.len()
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c if c.len() > 255 => {
                return Err(EstargzError::InvalidToc(format!(
                    "entry name {name:?}: component longer than 255 bytes"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// One file's payload piece: where its compressed member is and which bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Blob offset of the compressed member holding this chunk.
    pub offset: u64,
    /// Blob offset where the next payload member (or the TOC) starts: an upper bound of
    /// the compressed bytes needed for this chunk.
    pub next_offset: u64,
    /// Where the chunk starts in the uncompressed file.
    pub chunk_offset: u64,
    /// The chunk's uncompressed size (never 0).
    pub chunk_size: u64,
    /// Uncompressed bytes to skip in the member before the chunk starts.
    pub inner_offset: u64,
    /// sha256 of the chunk's bytes.
    pub digest: Digest,
}

/// A path in the layer: its TOC entry, chunks (regular files), children (directories).
#[derive(Debug, Clone)]
pub struct Node {
    /// The normalised path ("" for the root).
    pub path: String,
    /// The TOC entry (the first one for a chunked file). Implicit parent directories get a
    /// synthetic `dir` entry with mode 0o755.
    pub entry: TocEntry,
    /// Chunks in file order; empty for everything but non-empty regular files.
    pub chunks: Vec<Chunk>,
    /// The whole file's digest, when the TOC gives one.
    pub file_digest: Option<Digest>,
    /// Directory children by base name → node id.
    pub children: BTreeMap<String, usize>,
    /// For a hardlink, the node id of the entry it names.
    pub link_target: Option<usize>,
}

impl Node {
    /// The entry type.
    pub fn entry_type(&self) -> EntryType {
        self.entry.entry_type
    }

    /// The chunk holding byte `offset` of the file, if the file is that long.
    pub fn chunk_for(&self, offset: u64) -> Option<&Chunk> {
        // Chunks are contiguous and sorted by chunk_offset (checked at build).
        let i = self
            .chunks
            .partition_point(|c| c.chunk_offset + c.chunk_size <= offset);
        self.chunks.get(i)
    }
}

/// The validated index over a TOC. Node 0 is the root directory.
#[derive(Debug, Clone)]
pub struct TocIndex {
    nodes: Vec<Node>,
    by_path: HashMap<String, usize>,
    payload_end: u64,
}

impl TocIndex {
    /// Validates `toc` against a blob whose payload (everything before the TOC) ends at
    /// `payload_end`, and builds the index. Later entries with the same path replace
    /// earlier ones, as when extracting the tar.
    pub fn build(toc: &Jtoc, payload_end: u64) -> Result<Self, EstargzError> {
        if toc.version != 1 {
            return Err(EstargzError::InvalidToc(format!(
                "unsupported TOC version {} (expected 1)",
                toc.version
            )));
        }
        let mut idx = Self {
            nodes: Vec::new(),
            by_path: HashMap::new(),
            payload_end,
        };
        idx.nodes.push(Node {
            path: String::new(),
            entry: implicit_dir(""),
            chunks: Vec::new(),
            file_digest: None,
            children: BTreeMap::new(),
            link_target: None,
        });
        idx.by_path.insert(String::new(), 0);

        let mut i = 0;
        while i < toc.entries.len() {
            let ent = &toc.entries[i];
            let path = clean_name(&ent.name)?;
            check_entry_numbers(ent, &path)?;
            // A `reg` entry swallows the `chunk` entries that follow it.
            let mut end = i + 1;
            while end < toc.entries.len() && toc.entries[end].entry_type == EntryType::Chunk {
                end += 1;
            }
            let (chunks, file_digest) = match ent.entry_type {
                EntryType::Chunk => {
                    return Err(EstargzError::InvalidToc(format!(
                        "chunk entry {path:?} does not follow a reg entry"
                    )));
                }
                EntryType::Reg => file_chunks(&path, &toc.entries[i..end], payload_end)?,
                _ => {
                    if end != i + 1 {
                        return Err(EstargzError::InvalidToc(format!(
                            "chunk entries follow non-reg entry {path:?}"
                        )));
                    }
                    (Vec::new(), None)
                }
            };
            match ent.entry_type {
                EntryType::Symlink | EntryType::Hardlink if ent.link_name.is_empty() => {
                    return Err(EstargzError::InvalidToc(format!(
                        "link {path:?} has no linkName"
                    )));
                }
                EntryType::Dir => {}
                _ if path.is_empty() => {
                    return Err(EstargzError::InvalidToc(
                        "the root must be a directory".into(),
                    ));
                }
                _ => {}
            }
            idx.insert(path, ent.clone(), chunks, file_digest)?;
            i = end;
        }
        idx.resolve_hardlinks()?;
        idx.check_overlaps_and_bounds()?;
        Ok(idx)
    }

    fn insert(
        &mut self,
        path: String,
        entry: TocEntry,
        chunks: Vec<Chunk>,
        file_digest: Option<Digest>,
    ) -> Result<(), EstargzError> {
        if let Some(&id) = self.by_path.get(&path) {
            let node = &mut self.nodes[id];
            if entry.entry_type != EntryType::Dir && !node.children.is_empty() {
                return Err(EstargzError::InvalidToc(format!(
                    "non-directory {path:?} replaces a directory with entries"
                )));
            }
            node.entry = entry;
            node.chunks = chunks;
            node.file_digest = file_digest;
            node.link_target = None;
            return Ok(());
        }
        let parent = self.ensure_dir(parent_of(&path))?;
        let id = self.nodes.len();
        self.nodes[parent]
            .children
            .insert(base_of(&path).to_owned(), id);
        self.by_path.insert(path.clone(), id);
        self.nodes.push(Node {
            path,
            entry,
            chunks,
            file_digest,
            children: BTreeMap::new(),
            link_target: None,
        });
        Ok(())
    }

    /// The id of directory `path`, creating it (and its parents) implicitly when missing.
    fn ensure_dir(&mut self, path: &str) -> Result<usize, EstargzError> {
        if let Some(&id) = self.by_path.get(path) {
            if self.nodes[id].entry.entry_type != EntryType::Dir {
                return Err(EstargzError::InvalidToc(format!(
                    "{path:?} is used as a directory but is not one"
                )));
            }
            return Ok(id);
        }
        let parent = self.ensure_dir(parent_of(path))?;
        let id = self.nodes.len();
        self.nodes[parent]
            .children
            .insert(base_of(path).to_owned(), id);
        self.by_path.insert(path.to_owned(), id);
        self.nodes.push(Node {
            path: path.to_owned(),
            entry: implicit_dir(path),
            chunks: Vec::new(),
            file_digest: None,
            children: BTreeMap::new(),
            link_target: None,
        });
        Ok(id)
    }

    fn resolve_hardlinks(&mut self) -> Result<(), EstargzError> {
        for id in 0..self.nodes.len() {
            if self.nodes[id].entry.entry_type != EntryType::Hardlink {
                continue;
            }
            let mut target = self.nodes[id].entry.link_name.clone();
            // Follow link-to-link chains; the bound stops cycles.
            for _ in 0..=self.nodes.len().min(64) {
                let t = clean_name(&target)?;
                let Some(&tid) = self.by_path.get(&t) else {
                    return Err(EstargzError::InvalidToc(format!(
                        "hardlink {:?} names missing entry {target:?}",
                        self.nodes[id].path
                    )));
                };
                match self.nodes[tid].entry.entry_type {
                    EntryType::Hardlink if tid != id => {
                        target = self.nodes[tid].entry.link_name.clone()
                    }
                    EntryType::Dir | EntryType::Hardlink => {
                        return Err(EstargzError::InvalidToc(format!(
                            "hardlink {:?} names a directory or itself ({target:?})",
                            self.nodes[id].path
                        )));
                    }
                    _ => {
                        self.nodes[id].link_target = Some(tid);
                        break;
                    }
                }
            }
            if self.nodes[id].link_target.is_none() {
                return Err(EstargzError::InvalidToc(format!(
                    "hardlink {:?}: link chain too long",
                    self.nodes[id].path
                )));
            }
        }
        Ok(())
    }

    /// Payloads must lie before the TOC; two payloads sharing a member must not share bytes.
    fn check_overlaps_and_bounds(&mut self) -> Result<(), EstargzError> {
        let mut all: Vec<(u64, u64, u64, usize, usize)> = Vec::new();
        for (nid, n) in self.nodes.iter().enumerate() {
            for (cid, c) in n.chunks.iter().enumerate() {
                all.push((c.offset, c.inner_offset, c.chunk_size, nid, cid));
            }
        }
        all.sort_unstable();
        for w in all.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0 == b.0 && a.1.saturating_add(a.2) > b.1 {
                return Err(EstargzError::InvalidToc(format!(
                    "payloads of {:?} and {:?} overlap at blob offset {}",
                    self.nodes[a.3].path, self.nodes[b.3].path, a.0
                )));
            }
        }
        // next_offset: the next distinct member offset, or the TOC.
        let mut next = self.payload_end;
        for i in (0..all.len()).rev() {
            let (off, _, _, nid, cid) = all[i];
            if i + 1 < all.len() && all[i + 1].0 != off {
                next = all[i + 1].0;
            }
            self.nodes[nid].chunks[cid].next_offset = next;
        }
        Ok(())
    }

    /// All nodes; index 0 is the root.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: usize) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// The node id of `path` (normalised first), without following hardlinks.
    pub fn lookup_id(&self, path: &str) -> Option<usize> {
        let p = clean_name(path).ok()?;
        self.by_path.get(&p).copied()
    }

    /// The node at `path`, without following hardlinks.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.lookup_id(path).map(|id| &self.nodes[id])
    }

    /// The node at `path` with a hardlink replaced by the entry it names (for data and
    /// attributes; the hardlink node keeps its own path).
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let n = self.get(path)?;
        Some(n.link_target.map_or(n, |t| &self.nodes[t]))
    }

    /// Blob offset where the payload area ends (the TOC or zstd skippable frame starts).
    pub fn payload_end(&self) -> u64 {
        self.payload_end
    }

    /// The offset of `.prefetch.landmark`'s payload: prefetching `[0, offset)` fetches the
    /// prioritized files. `None` without that landmark.
    pub fn prefetch_landmark_offset(&self) -> Option<u64> {
        self.get(PREFETCH_LANDMARK)
            .and_then(|n| n.chunks.first())
            .map(|c| c.offset)
    }

    /// Whether the blob says no files are prioritized (`.no.prefetch.landmark`).
    pub fn has_no_prefetch_landmark(&self) -> bool {
        self.get(NO_PREFETCH_LANDMARK).is_some()
    }
}

fn implicit_dir(path: &str) -> TocEntry {
    TocEntry {
        name: path.to_owned(),
        entry_type: EntryType::Dir,
        mode: 0o755,
        ..TocEntry::default()
    }
}

fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn base_of(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

#[cfg(test)]
#[path = "toc_tests.rs"]
mod tests;
