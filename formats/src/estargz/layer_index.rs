//! The eStargz adapter of the neutral layer index: a [`TocIndex`] as a [`LayerIndex`],
//! and a neutral [`FileChunk`] back as the eStargz [`Chunk`] it stands for.
//!
//! Entry ids are the TOC index's node ids, so whatever is numbered from them (FUSE inode
//! numbers) stays what it was when the tree was built from the TOC itself: a restarted
//! daemon resuming a live connection hands out the same numbers. The prefetch landmarks
//! keep their ids but are hidden.

use super::toc::{Chunk, EntryType, Node, TocIndex};
use super::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use crate::layer_index::{
    Encoding, Entry, EntryKind, Extent, FileChunk, LayerIndex, LayerIndexError,
};

impl TocIndex {
    /// The layer's neutral index: one entry per node, in node order.
    pub fn layer_index(&self) -> Result<LayerIndex, LayerIndexError> {
        let nodes = self.nodes();
        let entries = nodes
            .iter()
            .map(|node| entry_of(nodes, node))
            .collect::<Result<Vec<_>, _>>()?;
        LayerIndex::new(entries)
    }
}

fn entry_of(nodes: &[Node], node: &Node) -> Result<Entry, LayerIndexError> {
    let e = &node.entry;
    let number = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| LayerIndexError::Entry {
            path: node.path.clone(),
            reason: format!("{what} {v} is out of range"),
        })
    };
    let kind = match e.entry_type {
        EntryType::Dir => EntryKind::Dir,
        EntryType::Reg | EntryType::Chunk => EntryKind::Reg,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Hardlink => EntryKind::Hardlink,
        EntryType::Char => EntryKind::Char,
        EntryType::Block => EntryKind::Block,
        EntryType::Fifo => EntryKind::Fifo,
    };
    let (dev_major, dev_minor) = match kind {
        EntryKind::Char | EntryKind::Block => (
            number(e.dev_major, "device major")?,
            number(e.dev_minor, "device minor")?,
        ),
        _ => (0, 0),
    };
    let link_target = match kind {
        EntryKind::Symlink => e.link_name.clone(),
        // The entry the link chain ends at (the TOC index resolved it).
        EntryKind::Hardlink => node
            .link_target
            .and_then(|t| nodes.get(t))
            .map_or_else(|| e.link_name.clone(), |t| t.path.clone()),
        _ => String::new(),
    };
    Ok(Entry {
        path: node.path.clone(),
        kind,
        mode: (e.mode & 0o7777) as u32,
        uid: number(e.uid, "uid")?,
        gid: number(e.gid, "gid")?,
        mtime: e.mtime_unix().unwrap_or(0),
        size: if kind == EntryKind::Reg {
            u64::try_from(e.size).unwrap_or(0)
        } else {
            0
        },
        link_target,
        dev_major,
        dev_minor,
        xattrs: e.xattrs.clone(),
        chunks: node.chunks.iter().map(file_chunk).collect(),
        hidden: node.path == PREFETCH_LANDMARK || node.path == NO_PREFETCH_LANDMARK,
    })
}

/// A TOC chunk as a neutral one: its compressed member is the extent, up to where the
/// next member starts.
fn file_chunk(c: &Chunk) -> FileChunk {
    FileChunk {
        offset: c.chunk_offset,
        size: c.chunk_size,
        extent: Extent {
            offset: c.offset,
            len: c.next_offset.saturating_sub(c.offset),
            encoding: Encoding::Compressed {
                inner: c.inner_offset,
            },
        },
        digest: c.digest.clone(),
    }
}

impl Chunk {
    /// The eStargz chunk a neutral chunk of [`TocIndex::layer_index`] stands for; `None`
    /// for a raw extent, which no eStargz blob has.
    pub fn from_file_chunk(c: &FileChunk) -> Option<Chunk> {
        let Encoding::Compressed { inner } = c.extent.encoding else {
            return None;
        };
        Some(Chunk {
            offset: c.extent.offset,
            next_offset: c.extent.end(),
            chunk_offset: c.offset,
            chunk_size: c.size,
            inner_offset: inner,
            digest: c.digest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::estargz::{Jtoc, TocEntry};

    fn entry(name: &str, t: EntryType) -> TocEntry {
        TocEntry {
            name: name.into(),
            entry_type: t,
            mode: 0o644,
            ..TocEntry::default()
        }
    }

    #[test]
    fn ids_kinds_links_and_chunks_follow_the_toc() {
        let mut file = entry("a/f", EntryType::Reg);
        file.size = 10;
        file.offset = 100;
        file.chunk_size = 6;
        file.chunk_digest = crate::Digest::of(b"0").to_string();
        file.xattrs = BTreeMap::from([("user.k".to_owned(), b"v".to_vec())]);
        let mut chunk = entry("a/f", EntryType::Chunk);
        chunk.offset = 100;
        chunk.inner_offset = 6;
        chunk.chunk_offset = 6;
        chunk.chunk_size = 4;
        chunk.chunk_digest = crate::Digest::of(b"1").to_string();
        let mut hard = entry("h", EntryType::Hardlink);
        hard.link_name = "a/f".into();
        let mut dev = entry("d", EntryType::Char);
        dev.dev_major = 1;
        dev.dev_minor = 3;
        let toc = Jtoc {
            version: 1,
            entries: vec![
                file,
                chunk,
                hard,
                dev,
                entry(PREFETCH_LANDMARK, EntryType::Reg),
            ],
        };
        let toc = TocIndex::build(&toc, 500).unwrap();
        let index = toc.layer_index().unwrap();
        assert_eq!(index.len(), toc.nodes().len());
        for (id, node) in toc.nodes().iter().enumerate() {
            let e = &index.entries()[id];
            assert_eq!(e.path, node.path);
            for (n, c) in e.chunks.iter().zip(&node.chunks) {
                assert_eq!(Chunk::from_file_chunk(n).as_ref(), Some(c));
            }
        }
        let f = toc.lookup_id("a/f").unwrap();
        let e = &index.entries()[f];
        assert_eq!((e.kind, e.size, e.chunks.len()), (EntryKind::Reg, 10, 2));
        assert_eq!(e.chunks[1].extent.inner_offset(), 6);
        assert_eq!(e.xattrs.len(), 1);
        let h = toc.lookup_id("h").unwrap();
        assert_eq!(index.target(h), f);
        assert_eq!(index.parent(f), toc.lookup_id("a").unwrap());
        let d = &index.entries()[toc.lookup_id("d").unwrap()];
        assert_eq!((d.kind, d.dev_major, d.dev_minor), (EntryKind::Char, 1, 3));
        assert!(index.entries()[toc.lookup_id(PREFETCH_LANDMARK).unwrap()].hidden);
    }

    #[test]
    fn out_of_range_device_numbers_are_refused() {
        let mut dev = entry("d", EntryType::Block);
        dev.dev_major = i64::from(u32::MAX) + 1;
        let toc = Jtoc {
            version: 1,
            entries: vec![dev],
        };
        let err = TocIndex::build(&toc, 0).unwrap().layer_index().unwrap_err();
        assert!(err.to_string().contains("device major"), "{err}");
    }
}
