//! [`validate()`]: checks an EROFS image from an untrusted source before the kernel mounts
//! it (containerd mounts registry EROFS layers unchecked; its threat model says so).
//!
//! The superblock must be sane (magic, block size, checksum when flagged, areas inside
//! the image, device table and long xattr prefix table in bounds) and use only features
//! checked here (compression is refused, not skipped); then the tree is walked from the
//! root (`dir`): every reached inode checked once (`inode`), every directory's dirents in
//! bounds, names sane and sorted, `.` and `..` right, no directory reached twice (loops,
//! hard-linked directories). Work is bounded by [`ValidateLimits`] whatever the image
//! claims. Errors name the nid and path.

use std::collections::HashMap;

mod dir;
mod inode;

use super::ErofsError;
use super::ondisk::{
    COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DiskInode, INCOMPAT_DEVICE_TABLE, INCOMPAT_UNDERSTOOD,
    INCOMPAT_XATTR_PREFIXES, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock, XATTR_LONG_PREFIX_MAX,
    crc32c, xattr_prefix,
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
    /// Long xattr prefixes the image declares (their table checked).
    long_prefixes: u8,
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
                    "incompatible features {unknown:#x} (compression or newer) are not checked"
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
            long_prefixes: 0,
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
        if v.sb.feature_incompat & INCOMPAT_XATTR_PREFIXES != 0 {
            v.check_long_prefixes()?;
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

    /// The long xattr prefix table: each record inside the image, naming a short prefix.
    /// (Without compressed fragments, which are refused, the kernel reads it from the
    /// device at `xattr_prefix_start * 4`, not from the packed inode.)
    fn check_long_prefixes(&mut self) -> Result<(), ErofsError> {
        let at = "superblock";
        let count = self.sb.xattr_prefix_count;
        if usize::from(count) > XATTR_LONG_PREFIX_MAX {
            return Err(corrupt(at, format!("{count} long xattr prefixes")));
        }
        let mut pos = u64::from(self.sb.xattr_prefix_start) * 4;
        for i in 0..count {
            pos = pos.next_multiple_of(4);
            if !self.inside(pos, 2) {
                return Err(corrupt(
                    at,
                    format!("long xattr prefix {i} is beyond the image"),
                ));
            }
            let len = self.read(pos, 2)?;
            let len = u64::from(u16::from_le_bytes([len[0], len[1]]));
            if len == 0 || !self.inside(pos + 2, len) {
                return Err(corrupt(
                    at,
                    format!("long xattr prefix {i} of {len} bytes is empty or beyond the image"),
                ));
            }
            let base = self.read(pos + 2, 1)?[0];
            if xattr_prefix(base).is_none() {
                return Err(corrupt(
                    at,
                    format!("long xattr prefix {i} has an unknown base index {base}"),
                ));
            }
            pos += 2 + len;
        }
        self.long_prefixes = count;
        Ok(())
    }
}
