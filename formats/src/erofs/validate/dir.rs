//! The tree walk: directories read block by block, dirents in bounds, names sane and
//! sorted across blocks, `.` and `..` right, no directory reached twice.

use std::collections::HashSet;

use super::{Checked, Validator, at_nid, corrupt};
use crate::erofs::ErofsError;
use crate::erofs::ondisk::{
    CHUNK_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, DIRENT_SIZE, Dirent, LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN, NAME_MAX, NULL_ADDR, S_IFDIR, file_type_of_mode,
};
use crate::read_at::ReadAt;

impl<I: ReadAt + ?Sized> Validator<'_, I> {
    /// Walks the tree from the root, depth first, checking every inode and dirent.
    pub(super) fn walk(&mut self) -> Result<(), ErofsError> {
        let root = u64::from(self.sb.root_nid);
        let mut visited_dirs: HashSet<u64> = HashSet::new();
        // (dir nid, its parent's nid, its path, depth)
        let mut stack = vec![(root, root, "/".to_string(), 0usize)];
        let root_inode = self.check_inode(root, "/")?;
        if root_inode.disk.mode & 0o170000 != S_IFDIR {
            return Err(corrupt(at_nid(root, "/"), "the root is not a directory"));
        }
        visited_dirs.insert(root);
        while let Some((nid, parent, path, depth)) = stack.pop() {
            if depth > self.limits.max_depth {
                return Err(corrupt(
                    at_nid(nid, &path),
                    format!("directories nest deeper than {}", self.limits.max_depth),
                ));
            }
            for (name, child, ftype) in self.read_dir(nid, parent, &path)? {
                let child_path = if path == "/" {
                    format!("/{}", String::from_utf8_lossy(&name))
                } else {
                    format!("{path}/{}", String::from_utf8_lossy(&name))
                };
                let c = self.check_inode(child, &child_path)?;
                if file_type_of_mode(c.disk.mode) != ftype {
                    return Err(corrupt(
                        at_nid(child, &child_path),
                        format!(
                            "dirent type {ftype} does not match the inode's mode {:o}",
                            c.disk.mode
                        ),
                    ));
                }
                if c.disk.mode & 0o170000 == S_IFDIR {
                    if !visited_dirs.insert(child) {
                        return Err(corrupt(
                            at_nid(child, &child_path),
                            "directory reached twice (a loop or a hard-linked directory)",
                        ));
                    }
                    stack.push((child, nid, child_path, depth + 1));
                }
            }
        }
        Ok(())
    }

    /// Bytes `[offset, offset + len)` of a checked inode's data.
    fn read_data(
        &self,
        c: &Checked,
        offset: u64,
        len: u64,
        at: &str,
    ) -> Result<Vec<u8>, ErofsError> {
        let d = &c.disk;
        let blksz = self.blksz;
        let phys = match d.layout {
            LAYOUT_FLAT_PLAIN => u64::from(d.i_u) * blksz + offset,
            LAYOUT_FLAT_INLINE => {
                let blocks = d.size.div_ceil(blksz);
                if offset / blksz + 1 == blocks {
                    c.data_at + offset % blksz
                } else {
                    u64::from(d.i_u) * blksz + offset
                }
            }
            _ => {
                let format = d.i_u as u16;
                let chunk = blksz << (format & CHUNK_BLKBITS_MASK);
                let unit = if format & CHUNK_FORMAT_INDEXES != 0 {
                    8
                } else {
                    4
                };
                let idx_at = c.data_at.next_multiple_of(unit) + (offset / chunk) * unit;
                let e = self.read(idx_at, unit as usize)?;
                let (device, blkaddr) = if unit == 8 {
                    (
                        u16::from_le_bytes([e[2], e[3]]),
                        u32::from_le_bytes(e[4..8].try_into().expect("4 bytes")),
                    )
                } else {
                    (0, u32::from_le_bytes(e[..4].try_into().expect("4 bytes")))
                };
                if blkaddr == NULL_ADDR {
                    return Ok(vec![0; len as usize]);
                }
                if device != 0 {
                    return Err(ErofsError::Unsupported {
                        at: at.into(),
                        reason: "directory data on another device".into(),
                    });
                }
                u64::from(blkaddr) * blksz + offset % chunk
            }
        };
        if !self.inside(phys, len) {
            return Err(corrupt(at, "directory block is beyond the image"));
        }
        self.read(phys, len as usize)
    }

    /// The entries of directory `nid` other than `.` and `..`, which are checked here:
    /// names sane and strictly sorted across blocks, `.` to itself, `..` to `parent`.
    fn read_dir(
        &mut self,
        nid: u64,
        parent: u64,
        path: &str,
    ) -> Result<Vec<(Vec<u8>, u64, u8)>, ErofsError> {
        let at = at_nid(nid, path);
        let c = self
            .checked
            .get(&nid)
            .cloned()
            .expect("checked before its entries");
        let size = c.disk.size;
        let mut out = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        let (mut dot, mut dotdot) = (false, false);
        let mut block_start = 0;
        while block_start < size {
            let len = (size - block_start).min(self.blksz);
            let block = self.read_data(&c, block_start, len, &at)?;
            if block.len() < DIRENT_SIZE {
                return Err(corrupt(&at, "directory block smaller than a dirent"));
            }
            let first = Dirent::decode(&block, 0);
            let nameoff0 = usize::from(first.nameoff);
            if nameoff0 < DIRENT_SIZE || nameoff0 >= block.len() || nameoff0 % DIRENT_SIZE != 0 {
                return Err(corrupt(
                    &at,
                    format!("first nameoff {nameoff0} at offset {block_start} is invalid"),
                ));
            }
            let n = nameoff0 / DIRENT_SIZE;
            self.summary.dirents += n as u64;
            if self.summary.dirents > self.limits.max_dirents {
                return Err(corrupt(
                    &at,
                    format!("more than {} directory entries", self.limits.max_dirents),
                ));
            }
            for i in 0..n {
                let d = Dirent::decode(&block, i * DIRENT_SIZE);
                let start = usize::from(d.nameoff);
                let end = if i + 1 < n {
                    usize::from(Dirent::decode(&block, (i + 1) * DIRENT_SIZE).nameoff)
                } else {
                    // The last name runs to the block's end or its first NUL.
                    let tail = &block[start.min(block.len())..];
                    start + tail.iter().position(|&b| b == 0).unwrap_or(tail.len())
                };
                if start < nameoff0 || end <= start || end > block.len() || end - start > NAME_MAX {
                    return Err(corrupt(
                        &at,
                        format!(
                            "dirent {i} at offset {block_start} has a bad name range {start}..{end}"
                        ),
                    ));
                }
                let name = block[start..end].to_vec();
                if name.contains(&b'/') || name.contains(&0) {
                    return Err(corrupt(
                        &at,
                        format!("name {:?} holds '/' or NUL", String::from_utf8_lossy(&name)),
                    ));
                }
                if prev.as_ref().is_some_and(|p| *p >= name) {
                    return Err(corrupt(
                        &at,
                        format!("name {:?} is out of order", String::from_utf8_lossy(&name)),
                    ));
                }
                match name.as_slice() {
                    b"." => {
                        dot = true;
                        if d.nid != nid {
                            return Err(corrupt(&at, format!("`.` points to nid {}", d.nid)));
                        }
                    }
                    b".." => {
                        dotdot = true;
                        if d.nid != parent {
                            return Err(corrupt(
                                &at,
                                format!("`..` points to nid {}, not its parent {parent}", d.nid),
                            ));
                        }
                    }
                    _ => out.push((name.clone(), d.nid, d.file_type)),
                }
                prev = Some(name);
            }
            block_start += self.blksz;
        }
        if !dot || !dotdot {
            return Err(corrupt(&at, "directory lacks `.` or `..`"));
        }
        Ok(out)
    }
}
