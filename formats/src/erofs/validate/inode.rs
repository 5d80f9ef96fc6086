//! Per-inode checks: the inode in bounds with a known format and layout, its xattrs
//! inside their body, the shared area or the long prefix table, its data (plain blocks,
//! inline tail, chunks) inside the image or a declared device.

use super::{Checked, Validator, at_nid, corrupt};
use crate::erofs::ErofsError;
use crate::erofs::ondisk::{
    CHUNK_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, DIRENT_SIZE, DiskInode, LAYOUT_CHUNK_BASED,
    LAYOUT_COMPRESSED_COMPACT, LAYOUT_COMPRESSED_FULL, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN,
    NID_UNIT, NULL_ADDR, S_IFDIR, S_IFLNK, S_IFREG, XATTR_ENTRY_HEADER_SIZE,
    XATTR_IBODY_HEADER_SIZE, XATTR_LONG_PREFIX, file_type_of_mode, xattr_align, xattr_ibody_size,
    xattr_prefix,
};
use crate::read_at::ReadAt;

impl<I: ReadAt + ?Sized> Validator<'_, I> {
    /// Checks the inode at `nid` once (later references reuse the result).
    pub(super) fn check_inode(&mut self, nid: u64, path: &str) -> Result<Checked, ErofsError> {
        if let Some(c) = self.checked.get(&nid) {
            return Ok(c.clone());
        }
        let at = at_nid(nid, path);
        if self.checked.len() as u64 >= self.limits.max_inodes {
            return Err(corrupt(
                at,
                format!("more than {} inodes", self.limits.max_inodes),
            ));
        }
        let off = nid
            .checked_mul(NID_UNIT)
            .and_then(|o| o.checked_add(self.meta))
            .filter(|&o| self.inside(o, 32))
            .ok_or_else(|| corrupt(&at, "inode is beyond the image"))?;
        let head = self.read(off, (self.size - off).min(64) as usize)?;
        let disk = DiskInode::decode(&head, &self.sb)
            .map_err(|_| corrupt(&at, "extended inode is cut by the image's end"))?;
        let format = u16::from_le_bytes([head[0], head[1]]);
        if format & !0xF != 0 {
            return Err(ErofsError::Unsupported {
                at,
                reason: format!("inode format bits {format:#x}"),
            });
        }
        match disk.layout {
            LAYOUT_FLAT_PLAIN | LAYOUT_FLAT_INLINE | LAYOUT_CHUNK_BASED => {}
            LAYOUT_COMPRESSED_FULL | LAYOUT_COMPRESSED_COMPACT => {
                return Err(ErofsError::Unsupported {
                    at,
                    reason: "compressed inode".into(),
                });
            }
            other => return Err(corrupt(at, format!("unknown data layout {other}"))),
        }
        let ftype = file_type_of_mode(disk.mode);
        if ftype == 0 {
            return Err(corrupt(at, format!("invalid mode {:o}", disk.mode)));
        }
        let xattr_size = xattr_ibody_size(disk.xattr_icount) as u64;
        let xattr_at = off + disk.disk_size() as u64;
        if !self.inside(xattr_at, xattr_size) {
            return Err(corrupt(at, "xattrs are beyond the image"));
        }
        if xattr_size > 0 {
            self.check_xattrs(&at, xattr_at, xattr_size)?;
        }
        let data_at = xattr_at + xattr_size;
        let mode_type = disk.mode & 0o170000;
        if mode_type == S_IFLNK && (disk.size == 0 || disk.size > 4095) {
            return Err(corrupt(
                at,
                format!("symlink of {} bytes (1..=4095 allowed)", disk.size),
            ));
        }
        if mode_type == S_IFDIR && disk.size < 2 * DIRENT_SIZE as u64 + 3 {
            return Err(corrupt(
                at,
                format!("directory of {} bytes cannot hold `.` and `..`", disk.size),
            ));
        }
        if matches!(mode_type, S_IFREG | S_IFDIR | S_IFLNK) {
            self.check_data(&at, &disk, data_at)?;
        }
        let c = Checked { disk, data_at };
        match mode_type {
            S_IFDIR => self.summary.directories += 1,
            S_IFREG => self.summary.files += 1,
            _ => {}
        }
        self.summary.inodes += 1;
        self.checked.insert(nid, c.clone());
        Ok(c)
    }

    fn check_xattrs(&self, at: &str, body_at: u64, size: u64) -> Result<(), ErofsError> {
        if size < XATTR_IBODY_HEADER_SIZE as u64 {
            return Err(corrupt(at, "xattr body is smaller than its header"));
        }
        let body = self.read(body_at, size as usize)?;
        let shared = usize::from(body[4]);
        let mut pos = XATTR_IBODY_HEADER_SIZE + 4 * shared;
        if pos > body.len() {
            return Err(corrupt(
                at,
                format!("{shared} shared xattr ids overrun the xattr body"),
            ));
        }
        for k in 0..shared {
            let p = XATTR_IBODY_HEADER_SIZE + 4 * k;
            let id = u32::from_le_bytes(body[p..p + 4].try_into().expect("4 bytes"));
            let entry_at = u64::from(self.sb.xattr_blkaddr) * self.blksz + u64::from(id) * 4;
            if !self.inside(entry_at, XATTR_ENTRY_HEADER_SIZE as u64) {
                return Err(corrupt(
                    at,
                    format!("shared xattr {id} is beyond the image"),
                ));
            }
            let h = self.read(entry_at, XATTR_ENTRY_HEADER_SIZE)?;
            let len = xattr_align(
                XATTR_ENTRY_HEADER_SIZE
                    + usize::from(h[0])
                    + usize::from(u16::from_le_bytes([h[2], h[3]])),
            );
            if !self.inside(entry_at, len as u64) {
                return Err(corrupt(
                    at,
                    format!("shared xattr {id} is cut by the image's end"),
                ));
            }
            check_xattr_index(at, h[1], self.long_prefixes)?;
        }
        while pos < body.len() {
            if pos + XATTR_ENTRY_HEADER_SIZE > body.len() {
                return Err(corrupt(at, "xattr entry header overruns the xattr body"));
            }
            let name_len = usize::from(body[pos]);
            let value_len = usize::from(u16::from_le_bytes([body[pos + 2], body[pos + 3]]));
            check_xattr_index(at, body[pos + 1], self.long_prefixes)?;
            let len = xattr_align(XATTR_ENTRY_HEADER_SIZE + name_len + value_len);
            if pos + len > body.len() {
                return Err(corrupt(at, "xattr entry overruns the xattr body"));
            }
            pos += len;
        }
        Ok(())
    }

    /// Checks that the inode's data are where its layout says and inside the image.
    fn check_data(&mut self, at: &str, disk: &DiskInode, data_at: u64) -> Result<(), ErofsError> {
        let size = disk.size;
        let blksz = self.blksz;
        let in_image = |v: &Self, blk: u64, bytes: u64| {
            blk.checked_mul(blksz)
                .is_some_and(|start| v.inside(start, bytes))
        };
        match disk.layout {
            LAYOUT_FLAT_PLAIN => {
                if size > 0 && !in_image(self, u64::from(disk.i_u), size) {
                    return Err(corrupt(
                        at,
                        format!("{size} bytes at block {} are beyond the image", disk.i_u),
                    ));
                }
            }
            LAYOUT_FLAT_INLINE => {
                let blocks = size.div_ceil(blksz);
                let tail = size - blocks.saturating_sub(1) * blksz;
                if data_at % blksz + tail > blksz {
                    return Err(corrupt(
                        at,
                        format!("inline tail of {tail} bytes crosses a block boundary"),
                    ));
                }
                if !self.inside(data_at, tail) {
                    return Err(corrupt(at, "inline tail is beyond the image"));
                }
                let full = (blocks.saturating_sub(1)) * blksz;
                if full > 0 && !in_image(self, u64::from(disk.i_u), full) {
                    return Err(corrupt(
                        at,
                        format!("{full} bytes at block {} are beyond the image", disk.i_u),
                    ));
                }
            }
            _ => self.check_chunks(at, disk, data_at)?,
        }
        Ok(())
    }

    fn check_chunks(&mut self, at: &str, disk: &DiskInode, data_at: u64) -> Result<(), ErofsError> {
        let format = disk.i_u as u16;
        if disk.i_u & !u32::from(CHUNK_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(ErofsError::Unsupported {
                at: at.into(),
                reason: format!("chunk format {:#x}", disk.i_u),
            });
        }
        let chunkbits = self.sb.blkszbits + (format & CHUNK_BLKBITS_MASK) as u8;
        if chunkbits > 40 {
            return Err(corrupt(
                at,
                format!("chunk size 2^{chunkbits} is implausible"),
            ));
        }
        let chunk = 1u64 << chunkbits;
        let nchunks = disk.size.div_ceil(chunk);
        let indexes = format & CHUNK_FORMAT_INDEXES != 0;
        let unit = if indexes { 8 } else { 4 };
        let start = data_at.next_multiple_of(unit);
        let total = nchunks
            .checked_mul(unit)
            .filter(|&t| self.inside(start, t))
            .ok_or_else(|| corrupt(at, format!("index of {nchunks} chunks is beyond the image")))?;
        let budget = &mut self.limits.max_chunks;
        if nchunks > *budget {
            return Err(corrupt(at, "more chunk indexes than the validation budget"));
        }
        *budget -= nchunks;
        let mut offset = 0;
        let mut c = 0u64;
        while offset < total {
            let piece = (total - offset).min(1 << 16);
            let bytes = self.read(start + offset, piece as usize)?;
            for e in bytes.chunks(unit as usize) {
                let (device, blkaddr) = if indexes {
                    (
                        u16::from_le_bytes([e[2], e[3]]),
                        u32::from_le_bytes(e[4..8].try_into().expect("4 bytes")),
                    )
                } else {
                    (0, u32::from_le_bytes(e[..4].try_into().expect("4 bytes")))
                };
                let bytes_in_chunk = chunk.min(disk.size - c * chunk);
                if blkaddr != NULL_ADDR {
                    let blk = u64::from(blkaddr);
                    let ok = if device == 0 {
                        self.inside(blk * self.blksz, bytes_in_chunk)
                    } else {
                        match self.device_blocks.get(usize::from(device) - 1) {
                            None => false,
                            Some(0) => true,
                            Some(&blocks) => {
                                blk * self.blksz + bytes_in_chunk <= blocks * self.blksz
                            }
                        }
                    };
                    if !ok {
                        return Err(corrupt(
                            at,
                            format!(
                                "chunk {c} at block {blkaddr} of device {device} is out of bounds"
                            ),
                        ));
                    }
                }
                c += 1;
            }
            offset += piece;
        }
        Ok(())
    }
}

fn check_xattr_index(at: &str, index: u8, long_prefixes: u8) -> Result<(), ErofsError> {
    if index & XATTR_LONG_PREFIX != 0 {
        if index & !XATTR_LONG_PREFIX >= long_prefixes {
            return Err(corrupt(
                at,
                format!(
                    "xattr uses long prefix {} of {long_prefixes}",
                    index & !XATTR_LONG_PREFIX
                ),
            ));
        }
        return Ok(());
    }
    if xattr_prefix(index).is_none() && index != 5 {
        return Err(corrupt(at, format!("unknown xattr name index {index}")));
    }
    Ok(())
}
