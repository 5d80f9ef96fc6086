//! [`LayerFs`]: the answers to FUSE requests over one [`LayerTree`] and its
//! [`ChunkSource`]. Stateless on purpose: file and directory handles carry nothing the
//! server must remember (a handle is 0, or the passthrough backing id), and inode numbers
//! come from the layer index, so a restarted daemon can answer requests on a connection a previous
//! process initialised.
//!
//! Everything is read-only: operations that would change the tree answer `EROFS`, unknown
//! ones `ENOSYS`, malformed requests `EINVAL`. Timeouts are long: the layer never changes.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use strata_formats::layer_index::chunk_at;
use tracing::{error, warn};

use crate::abi::{
    self, AccessIn, Attr, AttrOut, Dirent, EntryOut, GetxattrIn, GetxattrOut, InHeader, Kstatfs,
    OpenIn, OpenOut, ReadIn, ReleaseIn, Wire, opcode, take,
};
use crate::chunk_source::{ChunkSource, FileRef};
use crate::layer::{Inode, InodeKind, LayerTree};

/// How long the kernel may cache entries and attributes: the layer is immutable.
const CACHE_TIMEOUT_SECS: u64 = 24 * 3600;
/// Handles for passthrough opens carry the backing id under this tag.
const PASSTHROUGH_FH_TAG: u64 = 1 << 32;

/// A reply under construction: room for the out header, then the payload.
#[derive(Debug)]
pub(crate) struct Reply {
    buf: Vec<u8>,
}

impl Reply {
    pub(crate) fn with_capacity(payload: usize) -> Self {
        let mut buf = Vec::with_capacity(size_of::<abi::OutHeader>() + payload);
        buf.resize(size_of::<abi::OutHeader>(), 0);
        Self { buf }
    }

    /// The reply's bytes so far, to append payload to.
    pub(crate) fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn push<T: Wire>(&mut self, v: &T) {
        self.buf.extend_from_slice(abi::bytes_of(v));
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn payload_len(&self) -> usize {
        self.buf.len() - size_of::<abi::OutHeader>()
    }

    /// The bytes to write to the device for request `unique`.
    pub(crate) fn finish(mut self, unique: u64) -> Vec<u8> {
        let header = abi::OutHeader {
            len: self.buf.len() as u32,
            error: 0,
            unique,
        };
        self.buf[..size_of::<abi::OutHeader>()].copy_from_slice(abi::bytes_of(&header));
        self.buf
    }
}

/// An error reply's bytes.
pub(crate) fn error_reply(unique: u64, errno: i32) -> Vec<u8> {
    let header = abi::OutHeader {
        len: size_of::<abi::OutHeader>() as u32,
        error: -errno,
        unique,
    };
    abi::bytes_of(&header).to_vec()
}

/// What a request gets back.
pub(crate) type Outcome = Result<Option<Reply>, i32>;

/// Settings of a [`LayerFs`] that the INIT negotiation decides.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Negotiated {
    /// Files the chunk source has whole locally are opened in passthrough mode.
    pub(crate) passthrough: bool,
}

/// One layer's filesystem: its tree and where file bytes come from.
pub struct LayerFs {
    tree: LayerTree,
    source: Arc<dyn ChunkSource>,
}

impl std::fmt::Debug for LayerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFs")
            .field("layer", &self.tree.name())
            .finish_non_exhaustive()
    }
}

/// The NUL-terminated string at the front of `body`.
fn c_name(body: &[u8]) -> Result<&[u8], i32> {
    let end = body.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
    Ok(&body[..end])
}

fn attr_of(inode: &Inode) -> Attr {
    let mtime = u64::try_from(inode.mtime).unwrap_or(0);
    Attr {
        ino: inode.ino,
        size: inode.size,
        blocks: inode.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        mode: inode.kind.file_type_bits() | inode.perm,
        nlink: inode.nlink.max(1),
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev,
        blksize: 4096,
        ..Attr::default()
    }
}

fn entry_of(inode: &Inode) -> EntryOut {
    EntryOut {
        nodeid: inode.ino,
        generation: 0,
        entry_valid: CACHE_TIMEOUT_SECS,
        attr_valid: CACHE_TIMEOUT_SECS,
        attr: attr_of(inode),
        ..EntryOut::default()
    }
}

impl LayerFs {
    /// The filesystem of `tree`, reading file data from `source`.
    pub fn new(tree: LayerTree, source: Arc<dyn ChunkSource>) -> Self {
        Self { tree, source }
    }

    /// The tree served.
    pub fn tree(&self) -> &LayerTree {
        &self.tree
    }

    fn inode(&self, ino: u64) -> Result<&Inode, i32> {
        self.tree.inode(ino).ok_or(libc::ENOENT)
    }

    /// Answers one request (`body` is what follows the header). `dev` is the device the
    /// request came from (passthrough registers backing files on it).
    pub(crate) fn handle(
        &self,
        h: &InHeader,
        body: &[u8],
        dev: BorrowedFd<'_>,
        neg: Negotiated,
    ) -> Outcome {
        match h.opcode {
            opcode::LOOKUP => self.lookup(h.nodeid, c_name(body)?),
            opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT => Ok(None),
            opcode::GETATTR => {
                let inode = self.inode(h.nodeid)?;
                let mut r = Reply::with_capacity(size_of::<AttrOut>());
                r.push(&AttrOut {
                    attr_valid: CACHE_TIMEOUT_SECS,
                    attr: attr_of(inode),
                    ..AttrOut::default()
                });
                Ok(Some(r))
            }
            opcode::READLINK => {
                let inode = self.inode(h.nodeid)?;
                if inode.kind != InodeKind::Symlink {
                    return Err(libc::EINVAL);
                }
                let mut r = Reply::with_capacity(inode.link_target.len());
                r.extend(&inode.link_target);
                Ok(Some(r))
            }
            opcode::OPEN => self.open(h.nodeid, body, dev, neg),
            opcode::READ => self.read(h.nodeid, body),
            opcode::RELEASE => {
                let (rel, _) = take::<ReleaseIn>(body).ok_or(libc::EINVAL)?;
                if rel.fh & PASSTHROUGH_FH_TAG != 0 {
                    let id = (rel.fh & 0xffff_ffff) as u32;
                    // SAFETY: the ioctl reads one u32 from a valid pointer.
                    unsafe { libc::ioctl(dev.as_raw_fd(), abi::DEV_IOC_BACKING_CLOSE, &id) };
                }
                Ok(Some(Reply::with_capacity(0)))
            }
            opcode::OPENDIR => {
                if self.inode(h.nodeid)?.kind != InodeKind::Directory {
                    return Err(libc::ENOTDIR);
                }
                let mut r = Reply::with_capacity(size_of::<OpenOut>());
                r.push(&OpenOut {
                    fh: 0,
                    open_flags: abi::FOPEN_KEEP_CACHE | abi::FOPEN_CACHE_DIR,
                    backing_id: 0,
                });
                Ok(Some(r))
            }
            opcode::READDIR => self.readdir(h.nodeid, body, false),
            opcode::READDIRPLUS => self.readdir(h.nodeid, body, true),
            opcode::RELEASEDIR | opcode::FLUSH | opcode::FSYNC | opcode::FSYNCDIR => {
                Ok(Some(Reply::with_capacity(0)))
            }
            opcode::GETXATTR => self.getxattr(h.nodeid, body),
            opcode::LISTXATTR => self.listxattr(h.nodeid, body),
            opcode::STATFS => {
                let mut r = Reply::with_capacity(size_of::<Kstatfs>());
                r.push(&Kstatfs {
                    blocks: self.tree.total_file_bytes().div_ceil(4096),
                    files: self.tree.inode_count(),
                    bsize: 4096,
                    frsize: 4096,
                    namelen: 255,
                    ..Kstatfs::default()
                });
                Ok(Some(r))
            }
            opcode::ACCESS => {
                self.inode(h.nodeid)?;
                let (access, _) = take::<AccessIn>(body).ok_or(libc::EINVAL)?;
                if access.mask & libc::W_OK as u32 != 0 {
                    return Err(libc::EROFS);
                }
                Ok(Some(Reply::with_capacity(0)))
            }
            opcode::DESTROY => Ok(Some(Reply::with_capacity(0))),
            opcode::SETATTR
            | opcode::SYMLINK
            | opcode::MKNOD
            | opcode::MKDIR
            | opcode::UNLINK
            | opcode::RMDIR
            | opcode::RENAME
            | opcode::RENAME2
            | opcode::LINK
            | opcode::WRITE
            | opcode::SETXATTR
            | opcode::REMOVEXATTR
            | opcode::CREATE
            | opcode::TMPFILE
            | opcode::FALLOCATE
            | opcode::COPY_FILE_RANGE => Err(libc::EROFS),
            _ => Err(libc::ENOSYS),
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Outcome {
        let dir = self.inode(parent)?;
        if dir.kind != InodeKind::Directory {
            return Err(libc::ENOTDIR);
        }
        let found = match name {
            // Only asked for with FUSE_EXPORT_SUPPORT.
            b"." => Some(dir),
            b".." => self.tree.inode(dir.parent),
            _ => std::str::from_utf8(name)
                .ok()
                .and_then(|n| self.tree.lookup(dir, n)),
        };
        let mut r = Reply::with_capacity(size_of::<EntryOut>());
        r.push(&match found {
            Some(inode) => entry_of(inode),
            // Node id 0 with a timeout: the kernel caches the miss (the layer never gains
            // the name), which spares the daemon every later probe of it.
            None => EntryOut {
                entry_valid: CACHE_TIMEOUT_SECS,
                ..EntryOut::default()
            },
        });
        Ok(Some(r))
    }

    fn file_ref<'a>(&'a self, inode: &'a Inode) -> FileRef<'a> {
        FileRef {
            layer: self.tree.name(),
            path: &inode.path,
            ino: inode.ino,
            size: inode.size,
            chunks: &inode.chunks,
        }
    }

    fn open(&self, ino: u64, body: &[u8], dev: BorrowedFd<'_>, neg: Negotiated) -> Outcome {
        let (open, _) = take::<OpenIn>(body).ok_or(libc::EINVAL)?;
        let inode = self.inode(ino)?;
        if open.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
            || open.flags & libc::O_TRUNC as u32 != 0
        {
            return Err(libc::EROFS);
        }
        if inode.kind != InodeKind::RegularFile {
            return Err(if inode.kind == InodeKind::Directory {
                libc::EISDIR
            } else {
                libc::EINVAL
            });
        }
        let mut out = OpenOut {
            fh: 0,
            open_flags: abi::FOPEN_KEEP_CACHE | abi::FOPEN_NOFLUSH,
            backing_id: 0,
        };
        if neg.passthrough
            && let Some(file) = self.source.backing_file(&self.file_ref(inode))
        {
            let map = abi::BackingMap {
                fd: file.as_raw_fd(),
                flags: 0,
                padding: 0,
            };
            // SAFETY: the ioctl reads one fuse_backing_map from a valid pointer.
            let id = unsafe { libc::ioctl(dev.as_raw_fd(), abi::DEV_IOC_BACKING_OPEN, &map) };
            if id >= 0 {
                out = OpenOut {
                    fh: PASSTHROUGH_FH_TAG | id as u64,
                    open_flags: abi::FOPEN_PASSTHROUGH,
                    backing_id: id,
                };
            } else {
                warn!(layer = self.tree.name(), ino, error = %io::Error::last_os_error(), "passthrough open refused; serving reads through the daemon");
            }
        }
        let mut r = Reply::with_capacity(size_of::<OpenOut>());
        r.push(&out);
        Ok(Some(r))
    }

    fn read(&self, ino: u64, body: &[u8]) -> Outcome {
        let (rd, _) = take::<ReadIn>(body).ok_or(libc::EINVAL)?;
        let inode = self.inode(ino)?;
        if inode.kind != InodeKind::RegularFile {
            return Err(libc::EINVAL);
        }
        let end = rd.offset.saturating_add(u64::from(rd.size)).min(inode.size);
        let len = end.saturating_sub(rd.offset) as usize;
        let mut r = Reply::with_capacity(len);
        if len == 0 {
            return Ok(Some(r));
        }
        let file = self.file_ref(inode);
        // The access trace (`--log-level strata_fuse::access=trace`): what the fetch policy
        // is tuned and tested against.
        tracing::trace!(target: "strata_fuse::access", layer = file.layer, file = file.path, offset = rd.offset, len, "read");
        let mut pos = rd.offset;
        while pos < end {
            let chunk = chunk_at(file.chunks, pos).ok_or_else(|| {
                error!(
                    layer = file.layer,
                    file = file.path,
                    offset = pos,
                    "no chunk covers this offset"
                );
                libc::EIO
            })?;
            if chunk.offset > pos {
                error!(
                    layer = file.layer,
                    file = file.path,
                    offset = pos,
                    "chunk list has a gap; read fails with EIO"
                );
                return Err(libc::EIO);
            }
            let from = (pos - chunk.offset) as usize;
            let to = (end.min(chunk.end()) - chunk.offset) as usize;
            let before = r.payload().len();
            self.source.read_chunk(&file, chunk, from..to, r.payload()).map_err(|e| {
                error!(layer = file.layer, file = file.path, chunk_offset = chunk.offset, error = %e, "chunk unavailable; read fails with EIO");
                libc::EIO
            })?;
            if r.payload().len() - before != to - from {
                error!(
                    layer = file.layer,
                    file = file.path,
                    chunk_offset = chunk.offset,
                    "chunk source returned the wrong number of bytes; read fails with EIO"
                );
                return Err(libc::EIO);
            }
            pos = chunk.offset + to as u64;
        }
        Ok(Some(r))
    }

    fn readdir(&self, ino: u64, body: &[u8], plus: bool) -> Outcome {
        let (rd, _) = take::<ReadIn>(body).ok_or(libc::EINVAL)?;
        let dir = self.inode(ino)?;
        if dir.kind != InodeKind::Directory {
            return Err(libc::ENOTDIR);
        }
        let max = rd.size as usize;
        let mut r = Reply::with_capacity(max.min(64 << 10));
        let total = dir.entries.len() as u64 + 2;
        let mut off = rd.offset;
        while off < total {
            let (name, child): (&str, Option<&Inode>) = match off {
                0 => (".", None),
                1 => ("..", None),
                i => {
                    let (name, cino) = &dir.entries[(i - 2) as usize];
                    (
                        name.as_str(),
                        Some(self.inode(*cino).map_err(|_| libc::EIO)?),
                    )
                }
            };
            let (dino, dtype) = match (off, child) {
                (0, _) => (dir.ino, libc::DT_DIR.into()),
                (1, _) => (dir.parent, libc::DT_DIR.into()),
                (_, Some(c)) => (c.ino, c.kind.dirent_type()),
                (_, None) => return Err(libc::EIO),
            };
            let head = if plus { size_of::<EntryOut>() } else { 0 } + size_of::<Dirent>();
            let rec = (head + name.len()).next_multiple_of(8);
            if r.payload_len() + rec > max {
                break;
            }
            if plus {
                r.push(&child.map(entry_of).unwrap_or_default());
            }
            r.push(&Dirent {
                ino: dino,
                off: off + 1,
                namelen: name.len() as u32,
                typ: dtype,
            });
            r.extend(name.as_bytes());
            r.extend(&[0u8; 8][..rec - head - name.len()]);
            off += 1;
        }
        Ok(Some(r))
    }

    fn getxattr(&self, ino: u64, body: &[u8]) -> Outcome {
        let (gx, rest) = take::<GetxattrIn>(body).ok_or(libc::EINVAL)?;
        let inode = self.inode(ino)?;
        let name = std::str::from_utf8(c_name(rest)?).map_err(|_| libc::ENODATA)?;
        let value = inode.xattrs.get(name).ok_or(libc::ENODATA)?;
        sized_reply(gx.size, value)
    }

    fn listxattr(&self, ino: u64, body: &[u8]) -> Outcome {
        let (gx, _) = take::<GetxattrIn>(body).ok_or(libc::EINVAL)?;
        let inode = self.inode(ino)?;
        let mut list = Vec::new();
        for name in inode.xattrs.keys() {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        sized_reply(gx.size, &list)
    }
}

/// The xattr reply convention: size 0 asks for the length, a too small buffer is `ERANGE`.
fn sized_reply(size: u32, value: &[u8]) -> Outcome {
    if size == 0 {
        let mut r = Reply::with_capacity(size_of::<GetxattrOut>());
        r.push(&GetxattrOut {
            size: value.len() as u32,
            padding: 0,
        });
        return Ok(Some(r));
    }
    if (size as usize) < value.len() {
        return Err(libc::ERANGE);
    }
    let mut r = Reply::with_capacity(value.len());
    r.extend(value);
    Ok(Some(r))
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
