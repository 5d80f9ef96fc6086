//! [`validate()`]: checks an EROFS image from an untrusted source before the kernel mounts
//! it (containerd mounts registry EROFS layers unchecked; its threat model says so).
//!
//! The superblock must be sane and use only features checked here (compression and long
//! xattr prefixes are refused, not skipped); then the tree is walked from the root: every
//! reached inode in bounds with a known format and layout, its xattrs inside their body
//! or the shared area, its data (plain blocks, inline tail, chunks) inside the image or a
//! declared device; every directory's dirents in bounds, names sane and sorted, `.` and
//! `..` right, no directory reached twice (loops, hard-linked directories). Work is bounded
//! by [`ValidateLimits`] whatever the image claims. Errors name the nid and path.

use std::collections::{HashMap, HashSet};

use super::ErofsError;
use super::ondisk::{
    CHUNK_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DIRENT_SIZE,
    Dirent, DiskInode, INCOMPAT_DEVICE_TABLE, INCOMPAT_UNDERSTOOD, LAYOUT_CHUNK_BASED,
    LAYOUT_COMPRESSED_COMPACT, LAYOUT_COMPRESSED_FULL, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN,
    NAME_MAX, NID_UNIT, NULL_ADDR, S_IFDIR, S_IFLNK, S_IFREG, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
    Superblock, XATTR_ENTRY_HEADER_SIZE, XATTR_IBODY_HEADER_SIZE, crc32c, file_type_of_mode,
    xattr_align, xattr_ibody_size, xattr_prefix,
};
use crate::read_at::ReadAt;

/// Bounds on the work [`validate_with`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateLimits {
    /// Most inodes checked.
    pub max_inodes: u64,
    /// Most directory entries read, all directories together.
    pub max_dirents: u64,
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// Most chunk index entries read, all files together.
    pub max_chunks: u64,
}

impl Default for ValidateLimits {
    fn default() -> Self {
        Self {
            max_inodes: 1 << 24,
            max_dirents: 1 << 26,
            max_depth: 4096,
            max_chunks: 1 << 28,
        }
    }
}

/// What a valid image holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks the superblock declares.
    pub blocks: u64,
    /// Distinct inodes reached from the root.
    pub inodes: u64,
    /// Directories among them.
    pub directories: u64,
    /// Regular files among them.
    pub files: u64,
    /// Directory entries read (`.` and `..` included).
    pub dirents: u64,
    /// Devices besides the image itself.
    pub extra_devices: u16,
    /// The volume UUID.
    pub uuid: [u8; 16],
}

/// Validates `image` with the default [`ValidateLimits`].
pub fn validate(image: &(impl ReadAt + ?Sized)) -> Result<Summary, ErofsError> {
    validate_with(image, &ValidateLimits::default())
}

/// Validates `image` within `limits`.
pub fn validate_with(
    image: &(impl ReadAt + ?Sized),
    limits: &ValidateLimits,
) -> Result<Summary, ErofsError> {
    let mut v = Validator::open(image, *limits)?;
    v.walk()?;
    Ok(v.summary)
}

/// A checked inode, what later references need.
#[derive(Debug, Clone)]
struct Checked {
    disk: DiskInode,
    /// Byte offset of the end of its xattrs: inline data or the chunk index.
    data_at: u64,
}

struct Validator<'a, I: ?Sized> {
    img: &'a I,
    size: u64,
    sb: Superblock,
    blksz: u64,
    meta: u64,
    /// Blocks of each extra device (index 1..), 0 when unknown.
    device_blocks: Vec<u64>,
    limits: ValidateLimits,
    checked: HashMap<u64, Checked>,
    summary: Summary,
}

fn corrupt(at: impl Into<String>, reason: impl Into<String>) -> ErofsError {
    ErofsError::Corrupt {
        at: at.into(),
        reason: reason.into(),
    }
}

fn at_nid(nid: u64, path: &str) -> String {
    format!("nid {nid} ({path})")
}

impl<'a, I: ReadAt + ?Sized> Validator<'a, I> {
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, ErofsError> {
        let mut buf = vec![0u8; len];
        self.img
            .read_exact_at(&mut buf, offset)
            .map_err(|source| ErofsError::ReadImage { offset, source })?;
        Ok(buf)
    }

    /// Whether `[offset, offset + len)` is inside the image.
    fn inside(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }

    fn open(img: &'a I, limits: ValidateLimits) -> Result<Self, ErofsError> {
        let size = img.size();
        let at = "superblock";
        if size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(corrupt(at, format!("image of {size} bytes is too small")));
        }
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        img.read_exact_at(&mut raw, SUPERBLOCK_OFFSET)
            .map_err(|source| ErofsError::ReadImage {
                offset: SUPERBLOCK_OFFSET,
                source,
            })?;
        let sb = Superblock::decode(&raw).ok_or_else(|| corrupt(at, "bad magic"))?;
        if !(9..=12).contains(&sb.blkszbits) {
            return Err(corrupt(
                at,
                format!(
                    "block size bits {} outside 9..=12 (what this kernel mounts)",
                    sb.blkszbits
                ),
            ));
        }
        let unknown = sb.feature_incompat & !INCOMPAT_UNDERSTOOD;
        if unknown != 0 {
            return Err(ErofsError::Unsupported {
                at: at.into(),
                reason: format!(
                    "incompatible features {unknown:#x} (compression, long xattr prefixes or newer) are not checked"
                ),
            });
        }
        if sb.dirblkbits != 0 {
            // The kernel refuses directory blocks of another size than the block.
            return Err(ErofsError::Unsupported {
                at: at.into(),
                reason: format!("directory block bits {}", sb.dirblkbits),
            });
        }
        let blksz = 1u64 << sb.blkszbits;
        let mut v = Self {
            img,
            size,
            blksz,
            meta: u64::from(sb.meta_blkaddr) * blksz,
            device_blocks: Vec::new(),
            limits,
            checked: HashMap::new(),
            summary: Summary {
                block_size: blksz as u32,
                blocks: u64::from(sb.blocks),
                extra_devices: sb.extra_devices,
                uuid: sb.uuid,
                ..Summary::default()
            },
            sb,
        };
        if v.sb.feature_compat & COMPAT_SB_CHKSUM != 0 {
            // The kernel's check: crc32c over the superblock's block from offset 1024 (at
            // most one block) with the checksum field zeroed.
            let len = if blksz > SUPERBLOCK_OFFSET {
                blksz - SUPERBLOCK_OFFSET
            } else {
                blksz
            };
            if !v.inside(SUPERBLOCK_OFFSET, len) {
                return Err(corrupt(at, "checksummed block is beyond the image"));
            }
            let mut block = v.read(SUPERBLOCK_OFFSET, len as usize)?;
            block[4..8].fill(0);
            let crc = crc32c(!0, &block);
            if crc != v.sb.checksum {
                return Err(corrupt(
                    at,
                    format!(
                        "checksum {:#010x} does not match the computed {crc:#010x}",
                        v.sb.checksum
                    ),
                ));
            }
        }
        let declared = u64::from(v.sb.blocks) * blksz;
        if declared > size {
            return Err(corrupt(
                at,
                format!(
                    "image of {size} bytes is shorter than the {} blocks it declares",
                    v.sb.blocks
                ),
            ));
        }
        if v.meta >= size {
            return Err(corrupt(
                at,
                format!("metadata block {} is beyond the image", v.sb.meta_blkaddr),
            ));
        }
        if v.sb.xattr_blkaddr != 0 && u64::from(v.sb.xattr_blkaddr) * blksz >= size {
            return Err(corrupt(
                at,
                format!(
                    "shared xattr block {} is beyond the image",
                    v.sb.xattr_blkaddr
                ),
            ));
        }
        if v.sb.extra_devices > 0 {
            if v.sb.feature_incompat & INCOMPAT_DEVICE_TABLE == 0 {
                return Err(corrupt(
                    at,
                    "extra devices without the device table feature",
                ));
            }
            let table = u64::from(v.sb.devt_slotoff) * DEVICE_SLOT_SIZE as u64;
            let len = u64::from(v.sb.extra_devices) * DEVICE_SLOT_SIZE as u64;
            if !v.inside(table, len) {
                return Err(corrupt(at, "device table is beyond the image"));
            }
            let slots = v.read(table, len as usize)?;
            v.device_blocks = slots
                .chunks(DEVICE_SLOT_SIZE)
                .map(|s| u64::from(u32::from_le_bytes(s[64..68].try_into().expect("4 bytes"))))
                .collect();
        }
        Ok(v)
    }

    /// Walks the tree from the root, depth first, checking every inode and dirent.
    fn walk(&mut self) -> Result<(), ErofsError> {
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

    /// Checks the inode at `nid` once (later references reuse the result).
    fn check_inode(&mut self, nid: u64, path: &str) -> Result<Checked, ErofsError> {
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
            check_xattr_index(at, h[1])?;
        }
        while pos < body.len() {
            if pos + XATTR_ENTRY_HEADER_SIZE > body.len() {
                return Err(corrupt(at, "xattr entry header overruns the xattr body"));
            }
            let name_len = usize::from(body[pos]);
            let value_len = usize::from(u16::from_le_bytes([body[pos + 2], body[pos + 3]]));
            check_xattr_index(at, body[pos + 1])?;
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

fn check_xattr_index(at: &str, index: u8) -> Result<(), ErofsError> {
    if index & 0x80 != 0 {
        return Err(ErofsError::Unsupported {
            at: at.into(),
            reason: "long xattr name prefix".into(),
        });
    }
    if xattr_prefix(index).is_none() && index != 5 {
        return Err(corrupt(at, format!("unknown xattr name index {index}")));
    }
    Ok(())
}
