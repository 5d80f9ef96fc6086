//! The kernel's FUSE wire format (`include/uapi/linux/fuse.h`, protocol 7.40): the
//! `#[repr(C)]` structs this read-only server reads and writes, opcodes, flags and device
//! ioctls. Only what the server uses is defined; every struct is padding-free (checked by the
//! size assertions below), so it can be copied to and from the device bytes as is.

use std::mem::size_of;

/// The protocol major version spoken.
pub(crate) const KERNEL_VERSION: u32 = 7;
/// The newest minor version understood (7.40: passthrough, `FUSE_NOTIFY_RESEND`).
pub(crate) const KERNEL_MINOR_VERSION: u32 = 40;
/// The oldest minor version accepted: 7.31 has every struct at its full size and
/// `FUSE_MAX_PAGES`.
pub(crate) const MIN_KERNEL_MINOR_VERSION: u32 = 31;

pub(crate) mod opcode {
    pub(crate) const LOOKUP: u32 = 1;
    pub(crate) const FORGET: u32 = 2;
    pub(crate) const GETATTR: u32 = 3;
    pub(crate) const SETATTR: u32 = 4;
    pub(crate) const READLINK: u32 = 5;
    pub(crate) const SYMLINK: u32 = 6;
    pub(crate) const MKNOD: u32 = 8;
    pub(crate) const MKDIR: u32 = 9;
    pub(crate) const UNLINK: u32 = 10;
    pub(crate) const RMDIR: u32 = 11;
    pub(crate) const RENAME: u32 = 12;
    pub(crate) const LINK: u32 = 13;
    pub(crate) const OPEN: u32 = 14;
    pub(crate) const READ: u32 = 15;
    pub(crate) const WRITE: u32 = 16;
    pub(crate) const STATFS: u32 = 17;
    pub(crate) const RELEASE: u32 = 18;
    pub(crate) const FSYNC: u32 = 20;
    pub(crate) const SETXATTR: u32 = 21;
    pub(crate) const GETXATTR: u32 = 22;
    pub(crate) const LISTXATTR: u32 = 23;
    pub(crate) const REMOVEXATTR: u32 = 24;
    pub(crate) const FLUSH: u32 = 25;
    pub(crate) const INIT: u32 = 26;
    pub(crate) const OPENDIR: u32 = 27;
    pub(crate) const READDIR: u32 = 28;
    pub(crate) const RELEASEDIR: u32 = 29;
    pub(crate) const FSYNCDIR: u32 = 30;
    pub(crate) const ACCESS: u32 = 34;
    pub(crate) const CREATE: u32 = 35;
    pub(crate) const INTERRUPT: u32 = 36;
    pub(crate) const DESTROY: u32 = 38;
    pub(crate) const BATCH_FORGET: u32 = 42;
    pub(crate) const FALLOCATE: u32 = 43;
    pub(crate) const READDIRPLUS: u32 = 44;
    pub(crate) const RENAME2: u32 = 45;
    pub(crate) const COPY_FILE_RANGE: u32 = 47;
    pub(crate) const TMPFILE: u32 = 51;
}

/// INIT flags (the low 32 bits travel in `flags`, the high ones in `flags2`).
pub(crate) mod init_flag {
    pub(crate) const ASYNC_READ: u64 = 1 << 0;
    pub(crate) const EXPORT_SUPPORT: u64 = 1 << 4;
    pub(crate) const DO_READDIRPLUS: u64 = 1 << 13;
    pub(crate) const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub(crate) const PARALLEL_DIROPS: u64 = 1 << 18;
    pub(crate) const MAX_PAGES: u64 = 1 << 22;
    pub(crate) const CACHE_SYMLINKS: u64 = 1 << 23;
    pub(crate) const INIT_EXT: u64 = 1 << 30;
    pub(crate) const PASSTHROUGH: u64 = 1 << 37;
    pub(crate) const HAS_RESEND: u64 = 1 << 39;
}

/// `fuse_open_out.open_flags`.
pub(crate) const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub(crate) const FOPEN_CACHE_DIR: u32 = 1 << 3;
pub(crate) const FOPEN_NOFLUSH: u32 = 1 << 5;
pub(crate) const FOPEN_PASSTHROUGH: u32 = 1 << 7;

/// `fuse_notify_code::FUSE_NOTIFY_RESEND`: the kernel puts every request a server read but
/// never answered back on the pending queue. A resent request carries bit 63 in `unique`;
/// the reply echoes `unique` as read, so it needs no handling.
pub(crate) const NOTIFY_RESEND: i32 = 7;

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
pub(crate) const DEV_IOC_CLONE: libc::c_ulong = ioc(2, 229, 0, 4);
/// `FUSE_DEV_IOC_BACKING_OPEN`: `_IOW(229, 1, struct fuse_backing_map)`.
pub(crate) const DEV_IOC_BACKING_OPEN: libc::c_ulong =
    ioc(1, 229, 1, size_of::<BackingMap>() as u32);
/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
pub(crate) const DEV_IOC_BACKING_CLOSE: libc::c_ulong = ioc(1, 229, 2, 4);

/// Linux's generic `_IOC(dir, type, nr, size)` (dir: 1 write, 2 read).
const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> libc::c_ulong {
    ((dir << 30) | (size << 16) | (ty << 8) | nr) as libc::c_ulong
}

/// Marks the wire structs: `#[repr(C)]`, integers only, no implicit padding, so any byte
/// pattern is a valid value and a value's bytes are all initialised.
///
/// # Safety
/// Implement only for such structs.
pub(crate) unsafe trait Wire: Copy + 'static {}

/// Reads a `T` from the front of `bytes`, returning it and the rest; `None` if too short.
pub(crate) fn take<T: Wire>(bytes: &[u8]) -> Option<(T, &[u8])> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `T: Wire` accepts any bit pattern; unaligned read.
    let v = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) };
    Some((v, &bytes[size_of::<T>()..]))
}

/// The bytes of a wire value.
pub(crate) fn bytes_of<T: Wire>(v: &T) -> &[u8] {
    // SAFETY: `T: Wire` has no padding, so all `size_of::<T>()` bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InHeader {
    pub(crate) len: u32,
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
    pub(crate) nodeid: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: u32,
    pub(crate) total_extlen: u16,
    pub(crate) padding: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OutHeader {
    pub(crate) len: u32,
    pub(crate) error: i32,
    pub(crate) unique: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attr {
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) blocks: u64,
    pub(crate) atime: u64,
    pub(crate) mtime: u64,
    pub(crate) ctime: u64,
    pub(crate) atimensec: u32,
    pub(crate) mtimensec: u32,
    pub(crate) ctimensec: u32,
    pub(crate) mode: u32,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u32,
    pub(crate) blksize: u32,
    pub(crate) flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntryOut {
    pub(crate) nodeid: u64,
    pub(crate) generation: u64,
    pub(crate) entry_valid: u64,
    pub(crate) attr_valid: u64,
    pub(crate) entry_valid_nsec: u32,
    pub(crate) attr_valid_nsec: u32,
    pub(crate) attr: Attr,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttrOut {
    pub(crate) attr_valid: u64,
    pub(crate) attr_valid_nsec: u32,
    pub(crate) dummy: u32,
    pub(crate) attr: Attr,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InitIn {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) max_readahead: u32,
    pub(crate) flags: u32,
}

/// The 7.36+ tail of `fuse_init_in`, present when `FUSE_INIT_EXT` is set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InitInExt {
    pub(crate) flags2: u32,
    pub(crate) unused: [u32; 11],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InitOut {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) max_readahead: u32,
    pub(crate) flags: u32,
    pub(crate) max_background: u16,
    pub(crate) congestion_threshold: u16,
    pub(crate) max_write: u32,
    pub(crate) time_gran: u32,
    pub(crate) max_pages: u16,
    pub(crate) map_alignment: u16,
    pub(crate) flags2: u32,
    pub(crate) max_stack_depth: u32,
    pub(crate) unused: [u32; 6],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenIn {
    pub(crate) flags: u32,
    pub(crate) open_flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenOut {
    pub(crate) fh: u64,
    pub(crate) open_flags: u32,
    pub(crate) backing_id: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReleaseIn {
    pub(crate) fh: u64,
    pub(crate) flags: u32,
    pub(crate) release_flags: u32,
    pub(crate) lock_owner: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadIn {
    pub(crate) fh: u64,
    pub(crate) offset: u64,
    pub(crate) size: u32,
    pub(crate) read_flags: u32,
    pub(crate) lock_owner: u64,
    pub(crate) flags: u32,
    pub(crate) padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GetxattrIn {
    pub(crate) size: u32,
    pub(crate) padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GetxattrOut {
    pub(crate) size: u32,
    pub(crate) padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccessIn {
    pub(crate) mask: u32,
    pub(crate) padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Kstatfs {
    pub(crate) blocks: u64,
    pub(crate) bfree: u64,
    pub(crate) bavail: u64,
    pub(crate) files: u64,
    pub(crate) ffree: u64,
    pub(crate) bsize: u32,
    pub(crate) namelen: u32,
    pub(crate) frsize: u32,
    pub(crate) padding: u32,
    pub(crate) spare: [u32; 6],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dirent {
    pub(crate) ino: u64,
    pub(crate) off: u64,
    pub(crate) namelen: u32,
    pub(crate) typ: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BackingMap {
    pub(crate) fd: i32,
    pub(crate) flags: u32,
    pub(crate) padding: u64,
}

// SAFETY: each is #[repr(C)] with integer fields only and no implicit padding (the sizes
// below equal the sum of the fields, as in the kernel header).
unsafe impl Wire for InHeader {}
unsafe impl Wire for OutHeader {}
unsafe impl Wire for Attr {}
unsafe impl Wire for EntryOut {}
unsafe impl Wire for AttrOut {}
unsafe impl Wire for InitIn {}
unsafe impl Wire for InitInExt {}
unsafe impl Wire for InitOut {}
unsafe impl Wire for OpenIn {}
unsafe impl Wire for OpenOut {}
unsafe impl Wire for ReleaseIn {}
unsafe impl Wire for ReadIn {}
unsafe impl Wire for GetxattrIn {}
unsafe impl Wire for GetxattrOut {}
unsafe impl Wire for AccessIn {}
unsafe impl Wire for Kstatfs {}
unsafe impl Wire for Dirent {}
unsafe impl Wire for BackingMap {}

const _: () = {
    assert!(size_of::<InHeader>() == 40);
    assert!(size_of::<OutHeader>() == 16);
    assert!(size_of::<Attr>() == 88);
    assert!(size_of::<EntryOut>() == 128);
    assert!(size_of::<AttrOut>() == 104);
    assert!(size_of::<InitIn>() + size_of::<InitInExt>() == 64);
    assert!(size_of::<InitOut>() == 64);
    assert!(size_of::<OpenOut>() == 16);
    assert!(size_of::<ReleaseIn>() == 24);
    assert!(size_of::<ReadIn>() == 40);
    assert!(size_of::<Kstatfs>() == 80);
    assert!(size_of::<Dirent>() == 24);
    assert!(size_of::<BackingMap>() == 16);
};
