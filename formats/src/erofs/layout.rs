//! [`Builder::finish`]: the tree becomes directories, shared xattrs, inodes and the
//! superblock, written after the streamed file data.
//!
//! The image is laid out as
//! `[superblock block(s)][file data][directory and long-symlink blocks][shared xattrs][inodes]`.
//! Two passes over the inodes in a fixed order (breadth first, children by name): the
//! first sizes every inode (which depends on names, xattrs and data placement, never on
//! addresses), places it in the inode area and gives directory blocks their addresses;
//! the second encodes and writes, now that every nid and block is known. Nothing iterates
//! a hash map, so the bytes depend on the entries alone.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};

use super::ErofsError;
use super::builder::{
    Body, BuildReport, Builder, DataMode, Node, OVERLAY_OPAQUE_XATTR, OVERLAY_ORIGIN_XATTR,
};
use super::data::FileData;
use super::ondisk::{
    DIRENT_SIZE, Dirent, DiskInode, INCOMPAT_CHUNKED_FILE, INCOMPAT_XATTR_PREFIXES,
    LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, NID_UNIT, NULL_ADDR,
    SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock, XATTR_IBODY_HEADER_SIZE, encode_xattr_entry,
    file_type_of_mode, split_xattr_name_long, xattr_entry_size, xattr_icount,
};

/// Where the long xattr prefix table starts: right after the superblock.
const PREFIX_TABLE_OFFSET: u64 = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;

/// One inode as sized by the first pass.
struct Shape {
    node: usize,
    disk: DiskInode,
    /// Shared xattr ids and inline xattrs (indexes into the node's list).
    shared: Vec<u32>,
    inline_xattrs: Vec<usize>,
    xattr_size: usize,
    /// Bytes after the xattrs: an inline tail or the chunk index.
    inline_len: usize,
    /// Blocks in the late area (directory blocks, long symlinks) and where they start.
    late_blocks: u64,
    late_start: u64,
    /// Byte offset in the inode area.
    pos: u64,
}

impl Shape {
    fn footprint(&self) -> u64 {
        (self.disk.disk_size() + self.xattr_size + self.inline_len) as u64
    }
}

/// A directory's entries, `.` and `..` included, sorted by name as lookups expect: name
/// and node id.
fn listing(nodes: &[Node], dir: usize, parent: usize) -> Vec<(&[u8], usize)> {
    let Body::Dir { children, .. } = &nodes[dir].body else {
        return Vec::new();
    };
    let mut list: Vec<(&[u8], usize)> = Vec::with_capacity(children.len() + 2);
    list.push((b".", dir));
    list.push((b"..", parent));
    list.extend(children.iter().map(|(n, &id)| (n.as_slice(), id)));
    list.sort_by(|a, b| a.0.cmp(b.0));
    list
}

/// Splits sorted entries into directory blocks: `(first, end, used bytes)` per block.
fn pack_dirents(names: &[(&[u8], usize)], blksz: usize) -> Vec<(usize, usize, usize)> {
    let mut blocks = Vec::new();
    let (mut first, mut used) = (0, 0);
    for (i, (name, _)) in names.iter().enumerate() {
        let need = DIRENT_SIZE + name.len();
        if used + need > blksz {
            blocks.push((first, i, used));
            first = i;
            used = 0;
        }
        used += need;
    }
    blocks.push((first, names.len(), used));
    blocks
}

impl<W> Builder<W> {
    /// The first block free for data: the one after the superblock and the long xattr
    /// prefix table.
    pub(crate) fn first_data_block(&self) -> u64 {
        (PREFIX_TABLE_OFFSET + self.prefix_table.len() as u64).div_ceil(self.blksz)
    }

    /// An xattr name's index and stored rest, long prefixes first.
    fn split_name<'n>(&self, name: &'n [u8]) -> (u8, &'n [u8]) {
        split_xattr_name_long(name, &self.opts.xattr_prefixes).expect("checked at add")
    }
}

impl<W: Write + Seek> Builder<W> {
    /// Writes directories, xattrs, inodes and the superblock; returns the output and what
    /// was written.
    pub fn finish(self) -> Result<(W, BuildReport), ErofsError> {
        if self.mode != DataMode::Copy {
            return Err(ErofsError::InvalidOptions(
                "a tar-index builder is finished with finish_tar_index".into(),
            ));
        }
        let data_end = self.next_blk;
        self.write_metadata(data_end, None)
    }

    /// Writes a tar-index image for a tar of `tar_size` bytes that the caller appends
    /// right after it (the image's length is a multiple of 512).
    pub fn finish_tar_index(self, tar_size: u64) -> Result<(W, BuildReport), ErofsError> {
        if self.mode != DataMode::TarIndex {
            return Err(ErofsError::InvalidOptions(
                "only a tar-index builder is finished with finish_tar_index".into(),
            ));
        }
        let start = self.first_data_block();
        self.write_metadata(start, Some(tar_size.div_ceil(512)))
    }

    fn write_metadata(
        mut self,
        data_end: u64,
        tar_blocks: Option<u64>,
    ) -> Result<(W, BuildReport), ErofsError> {
        let blksz = self.blksz;
        // Inode order: breadth first from the root, children by name; parents of dirs.
        let mut order = vec![0usize];
        let mut index_of = vec![usize::MAX; self.nodes.len()];
        let mut parent = vec![0usize; self.nodes.len()];
        let mut nlink = vec![0u32; self.nodes.len()];
        index_of[0] = 0;
        let mut next = 0;
        while next < order.len() {
            let dir = order[next];
            next += 1;
            let Body::Dir { children, .. } = &self.nodes[dir].body else {
                continue;
            };
            let mut subdirs = 0u32;
            for &child in children.values() {
                let child_is_dir = matches!(self.nodes[child].body, Body::Dir { .. });
                if child_is_dir {
                    subdirs += 1;
                    parent[child] = dir;
                } else {
                    nlink[child] = nlink[child].saturating_add(1);
                }
                if index_of[child] == usize::MAX {
                    index_of[child] = order.len();
                    order.push(child);
                }
            }
            nlink[dir] = 2u32.saturating_add(subdirs);
        }

        // Overlay marks become xattrs now, so a directory replaced by a later entry for
        // the same path keeps them.
        for &id in &order {
            if let Body::Dir {
                opaque, whiteouts, ..
            } = self.nodes[id].body
            {
                let xattrs = &mut self.nodes[id].xattrs;
                for (on, name, value) in [
                    (opaque, OVERLAY_OPAQUE_XATTR, &b"y"[..]),
                    (whiteouts, OVERLAY_ORIGIN_XATTR, &b""[..]),
                ] {
                    if on && !xattrs.iter().any(|(n, _)| n == name) {
                        xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }

        // Shared xattrs: every (name, value) found on two inodes or more, ids in the order
        // first met. The map is only looked up, never iterated.
        let mut counts: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
        for &id in &order {
            for (n, v) in &self.nodes[id].xattrs {
                *counts.entry((n.as_slice(), v.as_slice())).or_default() += 1;
            }
        }
        let mut shared_ids: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
        let mut shared_area: Vec<u8> = Vec::new();
        for &id in &order {
            for (n, v) in &self.nodes[id].xattrs {
                let key = (n.as_slice(), v.as_slice());
                if counts[&key] >= 2 && !shared_ids.contains_key(&key) {
                    shared_ids.insert(key, (shared_area.len() / 4) as u32);
                    let (index, rest) = self.split_name(n);
                    encode_xattr_entry(&mut shared_area, index, rest, v);
                }
            }
        }

        // Pass 1: shapes, nids and late blocks.
        let build_secs = self.opts.build_time.secs as u64;
        let build_nsec = self.opts.build_time.nanos;
        let mut shapes = Vec::with_capacity(order.len());
        let mut any_chunked = false;
        for (i, &id) in order.iter().enumerate() {
            let node = &self.nodes[id];
            let mut shared = Vec::new();
            let mut inline_xattrs = Vec::new();
            let mut xattr_size = 0;
            if !node.xattrs.is_empty() {
                xattr_size = XATTR_IBODY_HEADER_SIZE;
                for (k, (n, v)) in node.xattrs.iter().enumerate() {
                    // `h_shared_count` is one byte: past 255, xattrs stay inline.
                    match shared_ids.get(&(n.as_slice(), v.as_slice())) {
                        Some(&sid) if shared.len() < 255 => {
                            shared.push(sid);
                            xattr_size += 4;
                        }
                        _ => {
                            inline_xattrs.push(k);
                            let rest = self.split_name(n).1;
                            xattr_size += xattr_entry_size(rest.len(), v.len());
                        }
                    }
                }
            }
            let mut disk = DiskInode {
                extended: false,
                layout: LAYOUT_FLAT_PLAIN,
                xattr_icount: xattr_icount(xattr_size).ok_or_else(|| {
                    ErofsError::TooLarge(format!("inode {i}: xattrs exceed EROFS's body size"))
                })?,
                mode: node.mode,
                nlink: nlink[id],
                size: 0,
                i_u: 0,
                ino: (i + 1) as u32,
                uid: node.uid,
                gid: node.gid,
                mtime: node.mtime.secs as u64,
                mtime_nsec: node.mtime.nanos,
            };
            let mut inline_len = 0;
            let mut late_blocks = 0;
            // The tail-inline test needs the inode's form, which depends on its size.
            let size_of_data = |disk: &mut DiskInode, size: u64| {
                disk.size = size;
                disk.extended = !disk.fits_compact(build_secs, build_nsec);
                disk.disk_size() + xattr_size
            };
            match &node.body {
                Body::File { size, data } => {
                    size_of_data(&mut disk, *size);
                    match data {
                        FileData::Empty => {}
                        FileData::Blocks { start, tail } => {
                            disk.i_u = *start;
                            if let Some(tail) = tail {
                                disk.layout = LAYOUT_FLAT_INLINE;
                                inline_len = tail.len();
                            }
                        }
                        FileData::Chunks { chunkbits, addrs } => {
                            any_chunked = true;
                            disk.layout = LAYOUT_CHUNK_BASED;
                            disk.i_u = u32::from(*chunkbits);
                            inline_len = addrs.len() * 4;
                        }
                        FileData::TarChunks { chunkbits, .. } => {
                            any_chunked = true;
                            disk.layout = LAYOUT_CHUNK_BASED;
                            disk.i_u = u32::from(*chunkbits);
                            inline_len = size.div_ceil(512 << chunkbits) as usize * 4;
                        }
                    }
                }
                Body::Symlink(target) => {
                    let head = size_of_data(&mut disk, target.len() as u64);
                    if head + target.len() <= blksz as usize {
                        disk.layout = LAYOUT_FLAT_INLINE;
                        inline_len = target.len();
                    } else {
                        late_blocks = (target.len() as u64).div_ceil(blksz);
                    }
                }
                Body::Dir { .. } => {
                    let list = listing(&self.nodes, id, parent[id]);
                    let blocks = pack_dirents(&list, blksz as usize);
                    let last_used = blocks.last().map_or(0, |b| b.2);
                    let size = (blocks.len() as u64 - 1) * blksz + last_used as u64;
                    let head = size_of_data(&mut disk, size);
                    if head + last_used <= blksz as usize {
                        disk.layout = LAYOUT_FLAT_INLINE;
                        inline_len = last_used;
                        late_blocks = blocks.len() as u64 - 1;
                    } else {
                        late_blocks = blocks.len() as u64;
                    }
                }
                Body::Device(rdev) => {
                    size_of_data(&mut disk, 0);
                    disk.i_u = *rdev;
                }
                Body::Special => {
                    size_of_data(&mut disk, 0);
                }
            }
            shapes.push(Shape {
                node: id,
                disk,
                shared,
                inline_xattrs,
                xattr_size,
                inline_len,
                late_blocks,
                late_start: 0,
                pos: 0,
            });
        }

        // Places: inodes on 32-byte slots from slot 1 (nid 0 would be inode number 0,
        // which readdir callers treat as a deleted entry), never straddling a block when
        // they fit in one (the kernel requires it of inline data); late blocks in order.
        let mut cursor = NID_UNIT;
        let mut late = data_end;
        for s in &mut shapes {
            cursor = cursor.div_ceil(NID_UNIT) * NID_UNIT;
            let fp = s.footprint();
            if fp <= blksz && cursor % blksz + fp > blksz {
                cursor = cursor.div_ceil(blksz) * blksz;
            }
            s.pos = cursor;
            cursor += fp;
            s.late_start = late;
            late += s.late_blocks;
        }
        let xattr_blk = if shared_area.is_empty() { 0 } else { late };
        let meta_blk = late + (shared_area.len() as u64).div_ceil(blksz);
        let total = meta_blk + cursor.div_ceil(blksz);
        let image_blocks = total + tar_blocks.unwrap_or(0);
        if image_blocks > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge(format!(
                "{image_blocks} blocks exceed EROFS's 32-bit block count"
            )));
        }
        let nid_of = |node: usize| shapes[index_of[node]].pos / NID_UNIT;

        // Pass 2: write.
        let out_err = ErofsError::Write;
        if self.mode == DataMode::TarIndex {
            self.out.seek(SeekFrom::Start(0)).map_err(out_err)?;
            write_zeros(&mut self.out, data_end * blksz)?;
        }
        self.out
            .seek(SeekFrom::Start(data_end * blksz))
            .map_err(out_err)?;
        let mut block = Vec::with_capacity(blksz as usize);
        let mut inline_tails: Vec<Vec<u8>> = vec![Vec::new(); shapes.len()];
        for (i, s) in shapes.iter().enumerate() {
            match &self.nodes[s.node].body {
                Body::Dir { .. } => {
                    let list = listing(&self.nodes, s.node, parent[s.node]);
                    let blocks = pack_dirents(&list, blksz as usize);
                    for (k, &(first, end, _)) in blocks.iter().enumerate() {
                        block.clear();
                        let mut nameoff = DIRENT_SIZE * (end - first);
                        for &(name, id) in &list[first..end] {
                            Dirent {
                                nid: nid_of(id),
                                nameoff: nameoff as u16,
                                file_type: file_type_of_mode(self.nodes[id].mode),
                            }
                            .encode(&mut block);
                            nameoff += name.len();
                        }
                        for &(name, _) in &list[first..end] {
                            block.extend_from_slice(name);
                        }
                        if (k as u64) < s.late_blocks {
                            block.resize(blksz as usize, 0);
                            self.out.write_all(&block).map_err(out_err)?;
                        } else {
                            inline_tails[i] = block.clone();
                        }
                    }
                }
                Body::Symlink(target) if s.late_blocks > 0 => {
                    self.out.write_all(target).map_err(out_err)?;
                    write_zeros(&mut self.out, s.late_blocks * blksz - target.len() as u64)?;
                }
                _ => {}
            }
        }
        if !shared_area.is_empty() {
            self.out.write_all(&shared_area).map_err(out_err)?;
            write_zeros(
                &mut self.out,
                (meta_blk - xattr_blk) * blksz - shared_area.len() as u64,
            )?;
        }
        let mut pos = 0u64;
        let mut buf = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            let node = &self.nodes[s.node];
            buf.clear();
            let mut disk = s.disk.clone();
            if s.late_blocks > 0 {
                disk.i_u = s.late_start as u32;
            }
            disk.encode(&mut buf);
            if s.xattr_size > 0 {
                buf.extend_from_slice(&0u32.to_le_bytes());
                buf.push(s.shared.len() as u8);
                buf.extend_from_slice(&[0u8; 7]);
                for id in &s.shared {
                    buf.extend_from_slice(&id.to_le_bytes());
                }
                for &k in &s.inline_xattrs {
                    let (n, v) = &node.xattrs[k];
                    let (index, rest) = self.split_name(n);
                    encode_xattr_entry(&mut buf, index, rest, v);
                }
            }
            match &node.body {
                Body::File { data, .. } => match data {
                    FileData::Blocks {
                        tail: Some(tail), ..
                    } => buf.extend_from_slice(tail),
                    FileData::Chunks { addrs, .. } => {
                        for a in addrs {
                            buf.extend_from_slice(&a.to_le_bytes());
                        }
                    }
                    FileData::TarChunks { chunkbits, tar_blk } => {
                        let per_chunk = 1u64 << chunkbits;
                        for c in 0..(s.inline_len / 4) as u64 {
                            let addr = total + tar_blk + c * per_chunk;
                            let addr = u32::try_from(addr).unwrap_or(NULL_ADDR);
                            buf.extend_from_slice(&addr.to_le_bytes());
                        }
                    }
                    _ => {}
                },
                Body::Symlink(target) if s.late_blocks == 0 => buf.extend_from_slice(target),
                Body::Dir { .. } if s.disk.layout == LAYOUT_FLAT_INLINE => {
                    buf.extend_from_slice(&inline_tails[i]);
                }
                _ => {}
            }
            debug_assert_eq!(buf.len() as u64, s.footprint());
            write_zeros(&mut self.out, s.pos - pos)?;
            self.out.write_all(&buf).map_err(out_err)?;
            pos = s.pos + buf.len() as u64;
        }
        write_zeros(&mut self.out, (total - meta_blk) * blksz - pos)?;

        let sb = Superblock {
            blkszbits: self.opts.block_size_bits,
            root_nid: nid_of(0) as u16,
            inos: shapes.len() as u64,
            build_time: build_secs,
            build_time_nsec: build_nsec,
            blocks: image_blocks as u32,
            meta_blkaddr: meta_blk as u32,
            xattr_blkaddr: xattr_blk as u32,
            uuid: self.opts.uuid,
            feature_incompat: if any_chunked {
                INCOMPAT_CHUNKED_FILE
            } else {
                0
            } | if self.prefix_table.is_empty() {
                0
            } else {
                INCOMPAT_XATTR_PREFIXES
            },
            xattr_prefix_count: self.opts.xattr_prefixes.len() as u8,
            xattr_prefix_start: if self.prefix_table.is_empty() {
                0
            } else {
                (PREFIX_TABLE_OFFSET / 4) as u32
            },
            ..Superblock::default()
        };
        self.out
            .seek(SeekFrom::Start(SUPERBLOCK_OFFSET))
            .map_err(out_err)?;
        self.out.write_all(&sb.encode()).map_err(out_err)?;
        self.out.write_all(&self.prefix_table).map_err(out_err)?;
        self.out
            .seek(SeekFrom::Start(total * blksz))
            .map_err(out_err)?;
        self.out.flush().map_err(out_err)?;
        let report = BuildReport {
            blocks: image_blocks,
            block_size: blksz as u32,
            bytes: total * blksz,
            inodes: shapes.len() as u64,
        };
        Ok((self.out, report))
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> Result<(), ErofsError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k]).map_err(ErofsError::Write)?;
        n -= k as u64;
    }
    Ok(())
}
