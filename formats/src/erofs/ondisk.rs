//! The EROFS on-disk format: constants and the byte layout of the superblock, inodes,
//! directory entries and xattr entries, encoded and decoded in one place so the writer and
//! the validator cannot disagree. Everything is little-endian, as the kernel's
//! `fs/erofs/erofs_fs.h` defines it.

/// Where the superblock starts in the image (room for a boot sector before it).
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// The superblock's size without extension slots.
pub const SUPERBLOCK_SIZE: usize = 128;
/// The superblock magic.
pub const MAGIC: u32 = 0xE0F5_E1E2;

/// `feature_compat`: the superblock carries a crc32c of its block from offset 1024.
pub const COMPAT_SB_CHKSUM: u32 = 0x1;
/// `feature_compat`: compact inodes carry an mtime relative to the build time.
pub const COMPAT_MTIME: u32 = 0x2;
/// `feature_compat`: xattr bodies carry a bloom filter of their names.
pub const COMPAT_XATTR_FILTER: u32 = 0x4;

/// `feature_incompat`: compressed-inode padding (only meaningful with compression).
pub const INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// `feature_incompat`: chunk-based files.
pub const INCOMPAT_CHUNKED_FILE: u32 = 0x4;
/// `feature_incompat`: a device table (extra devices) follows the superblock.
pub const INCOMPAT_DEVICE_TABLE: u32 = 0x8;
/// `feature_incompat`: long xattr name prefixes.
pub const INCOMPAT_XATTR_PREFIXES: u32 = 0x40;
/// The incompat bits the validator understands. Compression (0x2, 0x10, 0x20 and the
/// compressed layouts) is not among them: an image using it is refused rather than
/// half-checked.
pub const INCOMPAT_UNDERSTOOD: u32 =
    INCOMPAT_ZERO_PADDING | INCOMPAT_CHUNKED_FILE | INCOMPAT_DEVICE_TABLE | INCOMPAT_XATTR_PREFIXES;

/// Inode `i_format` bit 0: 0 compact (32 bytes), 1 extended (64 bytes).
pub const FORMAT_EXTENDED: u16 = 0x1;
/// Data layouts (`i_format` bits 1..=3).
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
/// Compressed, full indexes (not written, refused by the validator).
pub const LAYOUT_COMPRESSED_FULL: u16 = 1;
/// Whole blocks at `raw_blkaddr`, the tail right after the inode and its xattrs.
pub const LAYOUT_FLAT_INLINE: u16 = 2;
/// Compressed, compact indexes (not written, refused by the validator).
pub const LAYOUT_COMPRESSED_COMPACT: u16 = 3;
/// Fixed-size chunks, each a block address (or a hole) in an array after the inode.
pub const LAYOUT_CHUNK_BASED: u16 = 4;

/// Chunk format: `chunk size = block size << (format & CHUNK_BLKBITS_MASK)`.
pub const CHUNK_BLKBITS_MASK: u16 = 0x1F;
/// Chunk format: 8-byte chunk indexes (with a device id) instead of 4-byte addresses.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x20;
/// A chunk address meaning "a hole, read as zeros".
pub const NULL_ADDR: u32 = u32::MAX;

/// Compact and extended inode sizes; inodes sit on 32-byte slots (`nid * 32`).
pub const COMPACT_INODE_SIZE: usize = 32;
/// See [`COMPACT_INODE_SIZE`].
pub const EXTENDED_INODE_SIZE: usize = 64;
/// Bytes per nid.
pub const NID_UNIT: u64 = 32;

/// A directory entry's fixed part; the names follow the entries of each block.
pub const DIRENT_SIZE: usize = 12;
/// Longest file name.
pub const NAME_MAX: usize = 255;
/// The xattr body header (`h_name_filter`, `h_shared_count`, reserved).
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
/// An xattr entry's fixed part (`e_name_len`, `e_name_index`, `e_value_size`).
pub const XATTR_ENTRY_HEADER_SIZE: usize = 4;
/// A device slot in the device table.
pub const DEVICE_SLOT_SIZE: usize = 128;

/// Directory entry file types (the generic `FT_*` values).
pub mod file_type {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REGULAR: u8 = 1;
    /// Directory.
    pub const DIRECTORY: u8 = 2;
    /// Character device.
    pub const CHAR_DEVICE: u8 = 3;
    /// Block device.
    pub const BLOCK_DEVICE: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCKET: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// File type bits of `st_mode`.
pub const S_IFMT: u16 = 0o170000;
/// See [`S_IFMT`].
pub const S_IFSOCK: u16 = 0o140000;
/// See [`S_IFMT`].
pub const S_IFLNK: u16 = 0o120000;
/// See [`S_IFMT`].
pub const S_IFREG: u16 = 0o100000;
/// See [`S_IFMT`].
pub const S_IFBLK: u16 = 0o060000;
/// See [`S_IFMT`].
pub const S_IFDIR: u16 = 0o040000;
/// See [`S_IFMT`].
pub const S_IFCHR: u16 = 0o020000;
/// See [`S_IFMT`].
pub const S_IFIFO: u16 = 0o010000;

/// The dirent file type for a mode's type bits (`UNKNOWN` for an invalid type).
pub fn file_type_of_mode(mode: u16) -> u8 {
    match mode & S_IFMT {
        S_IFREG => file_type::REGULAR,
        S_IFDIR => file_type::DIRECTORY,
        S_IFCHR => file_type::CHAR_DEVICE,
        S_IFBLK => file_type::BLOCK_DEVICE,
        S_IFIFO => file_type::FIFO,
        S_IFSOCK => file_type::SOCKET,
        S_IFLNK => file_type::SYMLINK,
        _ => file_type::UNKNOWN,
    }
}

/// Linux's `new_encode_dev`: how device inodes store their number in `i_u`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The inverse of [`encode_dev`]: `(major, minor)`.
pub fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// The superblock fields Strata reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Superblock {
    /// crc32c of the superblock's block from offset 1024 with this field zeroed, when
    /// [`COMPAT_SB_CHKSUM`] is set.
    pub checksum: u32,
    /// Compatible features.
    pub feature_compat: u32,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Superblock extension slots (16 bytes each) after the 128 bytes.
    pub sb_extslots: u8,
    /// The root directory's nid.
    pub root_nid: u16,
    /// Number of inodes.
    pub inos: u64,
    /// Build time: compact inodes' mtime.
    pub build_time: u64,
    /// Build time nanoseconds.
    pub build_time_nsec: u32,
    /// Blocks in the primary device.
    pub blocks: u32,
    /// First block of the metadata (inode) area.
    pub meta_blkaddr: u32,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name (NUL padded).
    pub volume_name: [u8; 16],
    /// Incompatible features.
    pub feature_incompat: u32,
    /// Compression algorithms, or the LZ4 window.
    pub available_compr_algs: u16,
    /// Devices besides the primary one.
    pub extra_devices: u16,
    /// Device table offset, in 128-byte slots.
    pub devt_slotoff: u16,
    /// log2 of the directory block size minus the block size bits (0: same).
    pub dirblkbits: u8,
    /// Long xattr prefixes.
    pub xattr_prefix_count: u8,
    /// Where the long prefixes start, in 4-byte units.
    pub xattr_prefix_start: u32,
    /// The packed inode (fragments), 0 if none.
    pub packed_nid: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    /// The 128 on-disk bytes.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.checksum.to_le_bytes());
        b[8..12].copy_from_slice(&self.feature_compat.to_le_bytes());
        b[12] = self.blkszbits;
        b[13] = self.sb_extslots;
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        b[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        b[32..36].copy_from_slice(&self.build_time_nsec.to_le_bytes());
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        b[44..48].copy_from_slice(&self.xattr_blkaddr.to_le_bytes());
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        b[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        b[84..86].copy_from_slice(&self.available_compr_algs.to_le_bytes());
        b[86..88].copy_from_slice(&self.extra_devices.to_le_bytes());
        b[88..90].copy_from_slice(&self.devt_slotoff.to_le_bytes());
        b[90] = self.dirblkbits;
        b[91] = self.xattr_prefix_count;
        b[92..96].copy_from_slice(&self.xattr_prefix_start.to_le_bytes());
        b[96..104].copy_from_slice(&self.packed_nid.to_le_bytes());
        b
    }

    /// Decodes 128 bytes; `None` if the magic is wrong.
    pub fn decode(b: &[u8; SUPERBLOCK_SIZE]) -> Option<Self> {
        if le32(b, 0) != MAGIC {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[48..64]);
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(&b[64..80]);
        Some(Self {
            checksum: le32(b, 4),
            feature_compat: le32(b, 8),
            blkszbits: b[12],
            sb_extslots: b[13],
            root_nid: le16(b, 14),
            inos: le64(b, 16),
            build_time: le64(b, 24),
            build_time_nsec: le32(b, 32),
            blocks: le32(b, 36),
            meta_blkaddr: le32(b, 40),
            xattr_blkaddr: le32(b, 44),
            uuid,
            volume_name,
            feature_incompat: le32(b, 80),
            available_compr_algs: le16(b, 84),
            extra_devices: le16(b, 86),
            devt_slotoff: le16(b, 88),
            dirblkbits: b[90],
            xattr_prefix_count: b[91],
            xattr_prefix_start: le32(b, 92),
            packed_nid: le64(b, 96),
        })
    }
}

/// An inode's on-disk fields, either form. Which form is written follows
/// [`DiskInode::fits_compact`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskInode {
    /// Extended (64-byte) form.
    pub extended: bool,
    /// The data layout (`LAYOUT_*`).
    pub layout: u16,
    /// `i_xattr_icount`: 0 without xattrs, else `(body size - 12) / 4 + 1`.
    pub xattr_icount: u16,
    /// Type and permission bits.
    pub mode: u16,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// The `i_u` union: block address, device number or chunk format.
    pub i_u: u32,
    /// 32-bit inode number for old `stat` callers.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (extended form only; compact inodes take the build time).
    pub mtime: u64,
    /// Modification time nanoseconds.
    pub mtime_nsec: u32,
}

impl DiskInode {
    /// Whether the compact form holds this inode exactly, given the image's build time.
    pub fn fits_compact(&self, build_time: u64, build_time_nsec: u32) -> bool {
        self.size <= u64::from(u32::MAX)
            && self.uid <= u32::from(u16::MAX)
            && self.gid <= u32::from(u16::MAX)
            && self.nlink <= u32::from(u16::MAX)
            && self.mtime == build_time
            && self.mtime_nsec == build_time_nsec
    }

    /// The on-disk size of this inode's form.
    pub fn disk_size(&self) -> usize {
        if self.extended {
            EXTENDED_INODE_SIZE
        } else {
            COMPACT_INODE_SIZE
        }
    }

    /// Appends the inode's bytes (32 or 64) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let format = (self.layout << 1) | u16::from(self.extended);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&self.xattr_icount.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        if self.extended {
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&self.uid.to_le_bytes());
            out.extend_from_slice(&self.gid.to_le_bytes());
            out.extend_from_slice(&self.mtime.to_le_bytes());
            out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
            out.extend_from_slice(&self.nlink.to_le_bytes());
            out.extend_from_slice(&[0u8; 16]);
        } else {
            out.extend_from_slice(&(self.nlink as u16).to_le_bytes());
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
            // i_reserved: the mtime delta of COMPAT_MTIME, zero as we only write compact
            // inodes whose mtime is the build time.
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&(self.uid as u16).to_le_bytes());
            out.extend_from_slice(&(self.gid as u16).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }

    /// Decodes the inode at the start of `b` (which holds at least 32 bytes, 64 when the
    /// format bit says extended). Compact inodes get the build time as mtime.
    /// `Err` names a too-short buffer for the extended form.
    pub fn decode(b: &[u8], sb: &Superblock) -> Result<Self, usize> {
        if b.len() < COMPACT_INODE_SIZE {
            return Err(COMPACT_INODE_SIZE);
        }
        let format = le16(b, 0);
        let extended = format & FORMAT_EXTENDED != 0;
        if extended && b.len() < EXTENDED_INODE_SIZE {
            return Err(EXTENDED_INODE_SIZE);
        }
        let layout = (format >> 1) & 0x7;
        Ok(if extended {
            Self {
                extended,
                layout,
                xattr_icount: le16(b, 2),
                mode: le16(b, 4),
                size: le64(b, 8),
                i_u: le32(b, 16),
                ino: le32(b, 20),
                uid: le32(b, 24),
                gid: le32(b, 28),
                mtime: le64(b, 32),
                mtime_nsec: le32(b, 40),
                nlink: le32(b, 44),
            }
        } else {
            let delta = if sb.feature_compat & COMPAT_MTIME != 0 {
                u64::from(le32(b, 12))
            } else {
                0
            };
            Self {
                extended,
                layout,
                xattr_icount: le16(b, 2),
                mode: le16(b, 4),
                nlink: u32::from(le16(b, 6)),
                size: u64::from(le32(b, 8)),
                i_u: le32(b, 16),
                ino: le32(b, 20),
                uid: u32::from(le16(b, 24)),
                gid: u32::from(le16(b, 26)),
                mtime: sb.build_time.wrapping_add(delta),
                mtime_nsec: sb.build_time_nsec,
            }
        })
    }
}

/// Size of an inode's xattr body for an `i_xattr_icount`.
pub fn xattr_ibody_size(icount: u16) -> usize {
    if icount == 0 {
        0
    } else {
        XATTR_IBODY_HEADER_SIZE + 4 * (usize::from(icount) - 1)
    }
}

/// The `i_xattr_icount` for an xattr body of `size` bytes (a multiple of 4, ≥ 12, or 0).
pub fn xattr_icount(size: usize) -> Option<u16> {
    if size == 0 {
        return Some(0);
    }
    u16::try_from((size - XATTR_IBODY_HEADER_SIZE) / 4 + 1).ok()
}

/// One directory entry's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent {
    /// The inode.
    pub nid: u64,
    /// Where its name starts in the directory block.
    pub nameoff: u16,
    /// Its `file_type`.
    pub file_type: u8,
}

impl Dirent {
    /// Appends the 12 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nid.to_le_bytes());
        out.extend_from_slice(&self.nameoff.to_le_bytes());
        out.push(self.file_type);
        out.push(0);
    }

    /// Decodes the 12 bytes at `b[at..]`.
    pub fn decode(b: &[u8], at: usize) -> Self {
        Self {
            nid: le64(b, at),
            nameoff: le16(b, at + 8),
            file_type: b[at + 10],
        }
    }
}

/// `round_up(n, 4)`: xattr entries and shared xattrs are 4-byte aligned.
pub fn xattr_align(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Appends one xattr entry (`e_name_len`, `e_name_index`, `e_value_size`, name, value)
/// padded to 4 bytes. The caller bounds the name to 255 bytes and the value to 64 KiB.
pub fn encode_xattr_entry(out: &mut Vec<u8>, index: u8, name: &[u8], value: &[u8]) {
    let start = out.len();
    out.push(name.len() as u8);
    out.push(index);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out.resize(start + xattr_align(out.len() - start), 0);
}

/// The byte size of an xattr entry with this name and value, padding included.
pub fn xattr_entry_size(name_len: usize, value_len: usize) -> usize {
    xattr_align(XATTR_ENTRY_HEADER_SIZE + name_len + value_len)
}

/// The short xattr name prefixes, by index: an xattr is stored as (index, rest of name).
pub const XATTR_PREFIXES: [(u8, &[u8]); 5] = [
    (1, b"user."),
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (4, b"trusted."),
    (6, b"security."),
];

/// Splits a full xattr name into its prefix index and the rest; `None` if no prefix
/// EROFS knows covers it (Linux itself only accepts these namespaces).
pub fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    // The ACL names are whole names: "system.posix_acl_access" with an empty rest.
    for (index, prefix) in XATTR_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix)
            && (prefix.ends_with(b".") || rest.is_empty())
        {
            return Some((index, rest));
        }
    }
    None
}

/// `e_name_index` bit 7: the low bits index the long prefix table.
pub const XATTR_LONG_PREFIX: u8 = 0x80;
/// Most long prefixes an image may declare (the index has 7 bits).
pub const XATTR_LONG_PREFIX_MAX: usize = 0x7f;

/// Splits a full xattr name using the image's long prefixes (full prefixes such as
/// `trusted.overlay.`; the longest match wins, then the lowest index) before the short
/// ones: `(e_name_index, rest of the name)`.
pub fn split_xattr_name_long<'n>(name: &'n [u8], long: &[Vec<u8>]) -> Option<(u8, &'n [u8])> {
    let best = long
        .iter()
        .enumerate()
        .filter(|(_, p)| name.starts_with(p))
        .max_by_key(|&(i, p)| (p.len(), usize::MAX - i));
    match best {
        Some((i, p)) => Some((XATTR_LONG_PREFIX | i as u8, &name[p.len()..])),
        None => split_xattr_name(name),
    }
}

/// The long prefix table as stored from `xattr_prefix_start * 4`: per prefix, at a
/// 4-byte aligned offset, a 16-bit length then the short prefix index and the infix.
/// `None` if a prefix does not start with a short prefix (or is nothing more).
pub fn encode_long_prefixes(long: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for p in long {
        let (base, infix) = split_xattr_name(p)?;
        if infix.is_empty() || !xattr_prefix(base)?.ends_with(b".") {
            return None;
        }
        out.extend_from_slice(&(1 + infix.len() as u16).to_le_bytes());
        out.push(base);
        out.extend_from_slice(infix);
        out.resize(xattr_align(out.len()), 0);
    }
    Some(out)
}

/// The prefix of a short prefix index, `None` for unknown indexes.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    XATTR_PREFIXES
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, p)| *p)
}

/// crc32c (Castagnoli), as the superblock checksum uses it: `crc32c(!0, data)` with no
/// final inversion, matching the kernel's `crc32c(~0, ...)`.
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    const POLY: u32 = 0x82F6_3B78;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock {
            blkszbits: 12,
            root_nid: 36,
            inos: 9,
            build_time: 1_700_000_000,
            build_time_nsec: 5,
            blocks: 77,
            meta_blkaddr: 3,
            xattr_blkaddr: 2,
            uuid: [7; 16],
            feature_incompat: INCOMPAT_CHUNKED_FILE,
            ..Superblock::default()
        };
        let bytes = sb.encode();
        assert_eq!(&bytes[..4], &MAGIC.to_le_bytes());
        assert_eq!(Superblock::decode(&bytes), Some(sb));
    }

    #[test]
    fn inodes_round_trip_in_both_forms() {
        let sb = Superblock {
            build_time: 100,
            ..Superblock::default()
        };
        for extended in [false, true] {
            let inode = DiskInode {
                extended,
                layout: LAYOUT_FLAT_INLINE,
                xattr_icount: 3,
                mode: S_IFREG | 0o4755,
                nlink: 2,
                size: 5000,
                i_u: 17,
                ino: 4,
                uid: 1000,
                gid: 100,
                mtime: 100,
                mtime_nsec: 0,
            };
            let mut b = Vec::new();
            inode.encode(&mut b);
            assert_eq!(b.len(), inode.disk_size());
            assert_eq!(DiskInode::decode(&b, &sb), Ok(inode));
        }
    }

    #[test]
    fn devices_and_xattr_names() {
        for (major, minor) in [(0, 0), (1, 3), (259, 70000), (4095, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(major, minor)), (major, minor));
        }
        assert_eq!(
            split_xattr_name(b"trusted.overlay.opaque"),
            Some((4, &b"overlay.opaque"[..]))
        );
        assert_eq!(
            split_xattr_name(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(split_xattr_name(b"system.posix_acl_accessx"), None);
        assert_eq!(split_xattr_name(b"other.x"), None);
        let long = vec![b"trusted.over".to_vec(), b"trusted.overlay.".to_vec()];
        assert_eq!(
            split_xattr_name_long(b"trusted.overlay.opaque", &long),
            Some((0x81, &b"opaque"[..]))
        );
        assert_eq!(
            split_xattr_name_long(b"user.x", &long),
            Some((1, &b"x"[..]))
        );
        let table = encode_long_prefixes(&long).unwrap();
        assert_eq!(&table[..8], b"\x05\x00\x04over\x00");
        assert_eq!(table.len(), 8 + 12);
        assert!(encode_long_prefixes(&[b"user.".to_vec()]).is_none());
        assert!(encode_long_prefixes(&[b"bogus.x".to_vec()]).is_none());
        // The check value of crc32c("123456789") is 0xE3069283 (with final inversion).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }
}
