//! [`Builder`]: the entry-based EROFS writer and the in-memory tree it keeps.
//!
//! Entries arrive in any order a tar allows: a later entry for a path replaces the earlier
//! one (a directory over a directory only updates its metadata), parents that no entry
//! names are created as root-owned 0755 directories, and hard links name an existing
//! inode. File data go to the output at once (see `data`); the tree holds metadata only,
//! and [`Builder::finish`] (in `layout`) turns it into directories, xattrs and inodes.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};

use super::data::FileData;
use super::ondisk::{
    EXTENDED_INODE_SIZE, NAME_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK,
    XATTR_IBODY_HEADER_SIZE, XATTR_LONG_PREFIX_MAX, encode_dev, encode_long_prefixes,
    split_xattr_name, xattr_entry_size,
};
use super::{BuildOptions, Entry, EntryKind, ErofsError, Xattrs};
use crate::tar_layer::Timestamp;

/// The xattr overlayfs reads to hide a lower directory's contents.
pub const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// The xattr erofs-utils' `--aufs` puts on directories holding whiteouts: overlayfs then
/// treats them as copied up and never lists them directly, so the whiteouts stay hidden
/// (kernel commit b79e05aaa166, "ovl: no direct iteration for dir with origin xattr").
pub const OVERLAY_ORIGIN_XATTR: &[u8] = b"trusted.overlay.origin";
/// Longest symlink target (Linux's `PATH_MAX` less the NUL).
pub const SYMLINK_MAX: usize = 4095;
/// Largest xattr value EROFS stores (`e_value_size` is 16 bits).
pub const XATTR_VALUE_MAX: usize = u16::MAX as usize;

/// What a node is, with what each kind keeps.
#[derive(Debug)]
pub(crate) enum Body {
    Dir {
        /// Children by name: a `BTreeMap` so iteration (and thus the image) is ordered.
        children: BTreeMap<Vec<u8>, usize>,
        /// `.wh..wh..opq` seen for it.
        opaque: bool,
        /// It holds whiteouts.
        whiteouts: bool,
    },
    File {
        size: u64,
        data: FileData,
    },
    Symlink(Vec<u8>),
    /// A device number in `new_encode_dev` form.
    Device(u32),
    /// FIFOs and sockets.
    Special,
}

/// One inode of the tree.
#[derive(Debug)]
pub(crate) struct Node {
    /// Type and permission bits.
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: Timestamp,
    /// Full names, unique, in the order given.
    pub(crate) xattrs: Xattrs,
    pub(crate) body: Body,
}

/// Where file data go: copied into the image, or referenced in a tar appended after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataMode {
    Copy,
    TarIndex,
}

/// What [`Builder::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// Blocks in the image (in tar-index mode: the index and the tar).
    pub blocks: u64,
    /// The block size.
    pub block_size: u32,
    /// Bytes written (in tar-index mode: the index only).
    pub bytes: u64,
    /// Inodes in the image.
    pub inodes: u64,
}

/// Builds an EROFS image from entries, streaming file data to `W` as they are added.
///
/// ```no_run
/// # use strata_formats::erofs::{Builder, BuildOptions, Entry, EntryKind};
/// let out = std::fs::File::create("layer.erofs")?;
/// let mut b = Builder::new(out, BuildOptions::default())?;
/// let entry = Entry {
///     path: b"etc/hostname".to_vec(),
///     kind: EntryKind::File { size: 5 },
///     mode: 0o644, uid: 0, gid: 0,
///     mtime: Default::default(),
///     xattrs: vec![],
/// };
/// b.add(entry, &mut &b"host\n"[..])?;
/// b.finish()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Builder<W> {
    pub(crate) out: W,
    pub(crate) opts: BuildOptions,
    pub(crate) blksz: u64,
    pub(crate) mode: DataMode,
    /// The tree; `nodes[0]` is the root. Replaced nodes stay (unreachable) until finish.
    pub(crate) nodes: Vec<Node>,
    /// The next free block for streamed file data.
    pub(crate) next_blk: u64,
    /// A reused copy buffer.
    pub(crate) buf: Vec<u8>,
    /// Approximate metadata bytes held, against [`BuildOptions::max_metadata_bytes`].
    metadata_bytes: u64,
    /// The long xattr prefix table, written right after the superblock.
    pub(crate) prefix_table: Vec<u8>,
}

/// The fixed in-memory cost charged per entry (node, map slot, bookkeeping).
const ENTRY_COST: u64 = 160;

impl<W: Write + Seek> Builder<W> {
    /// A builder writing a self-contained image to `out` (positioned at its start).
    pub fn new(out: W, opts: BuildOptions) -> Result<Self, ErofsError> {
        if !(9..=12).contains(&opts.block_size_bits) {
            return Err(ErofsError::InvalidOptions(format!(
                "block size bits {} is outside 9..=12",
                opts.block_size_bits
            )));
        }
        let mut b = Self::with_mode(out, opts, DataMode::Copy)?;
        // The superblock's block(s) are written last; data start after them.
        let first = b.first_data_block();
        let zeros = vec![0u8; (first * b.blksz) as usize];
        b.out.write_all(&zeros).map_err(ErofsError::Write)?;
        b.next_blk = first;
        Ok(b)
    }

    /// A builder for a tar-index image: 512-byte blocks, files added with
    /// [`Builder::add_tar_reference`], nothing written until [`Builder::finish_tar_index`].
    pub fn new_tar_index(out: W, mut opts: BuildOptions) -> Result<Self, ErofsError> {
        opts.block_size_bits = 9;
        Self::with_mode(out, opts, DataMode::TarIndex)
    }

    fn with_mode(out: W, opts: BuildOptions, mode: DataMode) -> Result<Self, ErofsError> {
        let prefix_table = (opts.xattr_prefixes.len() <= XATTR_LONG_PREFIX_MAX)
            .then(|| encode_long_prefixes(&opts.xattr_prefixes))
            .flatten()
            .ok_or_else(|| {
                ErofsError::InvalidOptions(format!(
                    "xattr prefixes must be at most {XATTR_LONG_PREFIX_MAX}, each a user., trusted. or security. prefix and more"
                ))
            })?;
        let root = Node {
            mode: S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
            mtime: opts.build_time,
            xattrs: Vec::new(),
            body: Body::Dir {
                children: BTreeMap::new(),
                opaque: false,
                whiteouts: false,
            },
        };
        Ok(Self {
            blksz: 1 << opts.block_size_bits,
            out,
            opts,
            mode,
            nodes: vec![root],
            next_blk: 0,
            buf: Vec::new(),
            metadata_bytes: 0,
            prefix_table,
        })
    }

    /// Adds one entry. For [`EntryKind::File`] and [`EntryKind::SparseFile`], `data`
    /// yields the file's bytes (exactly the size, or the segments' total) and is read now;
    /// it is not touched for other kinds.
    pub fn add(&mut self, entry: Entry, data: &mut dyn Read) -> Result<(), ErofsError> {
        let body = match &entry.kind {
            EntryKind::File { size } => {
                if self.mode == DataMode::TarIndex {
                    return Err(ErofsError::entry(
                        &entry.path,
                        "a tar-index image references file data; use add_tar_reference",
                    ));
                }
                let inline_max = self.inline_max(&entry.xattrs);
                let data = self.write_file(&entry.path, *size, data, inline_max)?;
                Body::File { size: *size, data }
            }
            EntryKind::SparseFile { size, segments } => {
                if self.mode == DataMode::TarIndex {
                    return Err(ErofsError::entry(
                        &entry.path,
                        "a sparse file cannot be referenced in place in a tar-index image",
                    ));
                }
                let data = self.write_sparse(&entry.path, *size, segments, data)?;
                Body::File { size: *size, data }
            }
            _ => self.body_of(&entry)?,
        };
        self.insert(entry, body)
    }

    /// Adds a regular file whose `size` bytes start at `tar_offset` of the tar that
    /// follows a tar-index image (a multiple of 512, as tar payloads are).
    pub fn add_tar_reference(&mut self, entry: Entry, tar_offset: u64) -> Result<(), ErofsError> {
        let EntryKind::File { size } = entry.kind else {
            return Err(ErofsError::entry(
                &entry.path,
                "only regular files are tar references",
            ));
        };
        if self.mode != DataMode::TarIndex {
            return Err(ErofsError::entry(&entry.path, "not a tar-index builder"));
        }
        let data = FileData::tar_reference(&entry.path, size, tar_offset)?;
        self.insert(entry, Body::File { size, data })
    }

    /// Marks the directory at `path` opaque (`trusted.overlay.opaque=y`), creating it
    /// (and its parents) if no entry made it yet.
    pub fn mark_opaque(&mut self, path: &[u8]) -> Result<(), ErofsError> {
        let comps = components(path)?;
        let dir = self.dir_at(path, &comps)?;
        if let Body::Dir { opaque, .. } = &mut self.nodes[dir].body {
            *opaque = true;
        }
        Ok(())
    }

    /// The body of a non-file entry (hard links resolved by `insert`).
    fn body_of(&self, entry: &Entry) -> Result<Body, ErofsError> {
        Ok(match &entry.kind {
            EntryKind::Dir => Body::Dir {
                children: BTreeMap::new(),
                opaque: false,
                whiteouts: false,
            },
            EntryKind::Symlink { target } => {
                if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
                    return Err(ErofsError::entry(
                        &entry.path,
                        format!(
                            "symlink target of {} bytes is empty, longer than {SYMLINK_MAX} or holds a NUL",
                            target.len()
                        ),
                    ));
                }
                Body::Symlink(target.clone())
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                if *major > 0xfff || *minor > 0xfffff {
                    return Err(ErofsError::entry(
                        &entry.path,
                        format!("device {major}:{minor} is out of Linux's range"),
                    ));
                }
                Body::Device(encode_dev(*major, *minor))
            }
            EntryKind::Whiteout => Body::Device(0),
            EntryKind::Fifo | EntryKind::Socket | EntryKind::Hardlink { .. } => Body::Special,
            EntryKind::File { .. } | EntryKind::SparseFile { .. } => {
                unreachable!("files are written by add")
            }
        })
    }

    /// Most bytes of a file tail that may go inline after an inode with these xattrs:
    /// what is left of a block after the larger inode form and the xattrs unshared, so
    /// the tail fits whatever form and sharing `finish` picks.
    fn inline_max(&self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> usize {
        if !self.opts.inline_data {
            return 0;
        }
        let used = EXTENDED_INODE_SIZE + xattr_body_size(xattrs);
        (self.blksz as usize).saturating_sub(used)
    }

    /// Validates the entry's metadata and binds its name to `body` (or, for a hard link,
    /// to the target's node).
    fn insert(&mut self, entry: Entry, body: Body) -> Result<(), ErofsError> {
        let path = entry.path.as_slice();
        let held = match &body {
            Body::Symlink(t) => t.len(),
            Body::File { data, .. } => match data {
                FileData::Blocks { tail: Some(t), .. } => t.len(),
                FileData::Chunks { addrs, .. } => addrs.len() * 4,
                _ => 0,
            },
            _ => 0,
        };
        let xattr_bytes: usize = entry.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.charge(path, (path.len() + held + xattr_bytes) as u64)?;
        let comps = components(path)?;
        let xattrs = check_xattrs(path, entry.xattrs)?;
        let type_bits = match &entry.kind {
            EntryKind::File { .. } | EntryKind::SparseFile { .. } => S_IFREG,
            EntryKind::Dir => S_IFDIR,
            EntryKind::Symlink { .. } => S_IFLNK,
            EntryKind::CharDevice { .. } | EntryKind::Whiteout => S_IFCHR,
            EntryKind::BlockDevice { .. } => S_IFBLK,
            EntryKind::Fifo => S_IFIFO,
            EntryKind::Socket => S_IFSOCK,
            EntryKind::Hardlink { .. } => 0,
        };
        let node = Node {
            mode: type_bits | (entry.mode & 0o7777) as u16,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
            xattrs,
            body,
        };
        let Some((name, parent_comps)) = comps.split_last() else {
            // The root itself: only its metadata can change.
            if !matches!(node.body, Body::Dir { .. }) {
                return Err(ErofsError::entry(path, "the root must be a directory"));
            }
            self.update_dir(0, node);
            return Ok(());
        };
        let parent = self.dir_at(path, parent_comps)?;
        let existing = self.child(parent, name);
        if let EntryKind::Hardlink { target } = &entry.kind {
            let target_comps = components(target)?;
            let Some(target_id) = self.lookup(&target_comps) else {
                return Err(ErofsError::entry(
                    path,
                    format!(
                        "hard link target {:?} does not exist",
                        String::from_utf8_lossy(target)
                    ),
                ));
            };
            if matches!(self.nodes[target_id].body, Body::Dir { .. }) {
                return Err(ErofsError::entry(path, "hard link to a directory"));
            }
            self.bind(parent, name, target_id);
            return Ok(());
        }
        if let (Some(old), Body::Dir { .. }) = (existing, &node.body)
            && matches!(self.nodes[old].body, Body::Dir { .. })
        {
            self.update_dir(old, node);
            return Ok(());
        }
        let is_whiteout = matches!(entry.kind, EntryKind::Whiteout);
        let id = self.push(path, node)?;
        self.bind(parent, name, id);
        if is_whiteout && let Body::Dir { whiteouts, .. } = &mut self.nodes[parent].body {
            *whiteouts = true;
        }
        Ok(())
    }

    /// Counts `bytes` (plus the per-entry cost) against the metadata bound.
    fn charge(&mut self, path: &[u8], bytes: u64) -> Result<(), ErofsError> {
        self.metadata_bytes += bytes + ENTRY_COST;
        if self.metadata_bytes > self.opts.max_metadata_bytes {
            return Err(ErofsError::TooLarge(format!(
                "entry {:?} exceeds the limit of {} bytes of metadata held in memory",
                String::from_utf8_lossy(path),
                self.opts.max_metadata_bytes
            )));
        }
        Ok(())
    }

    fn push(&mut self, path: &[u8], node: Node) -> Result<usize, ErofsError> {
        if self.nodes.len() >= self.opts.max_inodes {
            return Err(ErofsError::TooLarge(format!(
                "entry {:?} exceeds the limit of {} inodes",
                String::from_utf8_lossy(path),
                self.opts.max_inodes
            )));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// A directory over a directory: new metadata, same contents and overlay marks.
    fn update_dir(&mut self, id: usize, node: Node) {
        let old = &mut self.nodes[id];
        old.mode = node.mode;
        old.uid = node.uid;
        old.gid = node.gid;
        old.mtime = node.mtime;
        old.xattrs = node.xattrs;
    }

    fn child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.nodes[dir].body {
            Body::Dir { children, .. } => children.get(name).copied(),
            _ => None,
        }
    }

    fn bind(&mut self, dir: usize, name: &[u8], id: usize) {
        if let Body::Dir { children, .. } = &mut self.nodes[dir].body {
            children.insert(name.to_vec(), id);
        }
    }

    /// The node at `comps`, following directories only.
    pub(crate) fn lookup(&self, comps: &[&[u8]]) -> Option<usize> {
        let mut at = 0;
        for c in comps {
            at = self.child(at, c)?;
        }
        Some(at)
    }

    /// The directory at `comps`, created with default metadata where missing; an error
    /// if a non-directory is in the way.
    fn dir_at(&mut self, path: &[u8], comps: &[&[u8]]) -> Result<usize, ErofsError> {
        let mut at = 0;
        for c in comps {
            at = match self.child(at, c) {
                Some(id) if matches!(self.nodes[id].body, Body::Dir { .. }) => id,
                Some(_) => {
                    return Err(ErofsError::entry(
                        path,
                        format!(
                            "its parent {:?} is not a directory",
                            String::from_utf8_lossy(c)
                        ),
                    ));
                }
                None => {
                    self.charge(path, c.len() as u64)?;
                    let node = Node {
                        mode: S_IFDIR | 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: self.opts.build_time,
                        xattrs: Vec::new(),
                        body: Body::Dir {
                            children: BTreeMap::new(),
                            opaque: false,
                            whiteouts: false,
                        },
                    };
                    let id = self.push(path, node)?;
                    self.bind(at, c, id);
                    id
                }
            };
        }
        Ok(at)
    }
}

/// The components of an entry path; an error for `.`, `..`, empty components inside the
/// path, NULs and names longer than EROFS stores.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>, ErofsError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path.split(|&b| b == b'/')
        .map(|c| {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
                Err(ErofsError::entry(
                    path,
                    "path is not clean (empty, `.` or `..` component, or a NUL)",
                ))
            } else if c.len() > NAME_MAX {
                Err(ErofsError::entry(
                    path,
                    format!(
                        "name of {} bytes is longer than EROFS's {NAME_MAX}",
                        c.len()
                    ),
                ))
            } else {
                Ok(c)
            }
        })
        .collect()
}

/// The xattrs with names EROFS can store and values it can hold, one per name (the last
/// given wins, as setting them in order would leave).
fn check_xattrs(path: &[u8], xattrs: Xattrs) -> Result<Xattrs, ErofsError> {
    let mut out: Xattrs = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        let Some((_, rest)) = split_xattr_name(&name) else {
            return Err(ErofsError::entry(
                path,
                format!(
                    "xattr {:?} is not in a namespace EROFS stores (user., trusted., security., system.posix_acl_*)",
                    String::from_utf8_lossy(&name)
                ),
            ));
        };
        if rest.len() > NAME_MAX || value.len() > XATTR_VALUE_MAX {
            return Err(ErofsError::entry(
                path,
                format!(
                    "xattr {:?} has a name or value too long for EROFS",
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name, value)),
        }
    }
    Ok(out)
}

/// The xattr body size with every xattr inline (0 without xattrs).
pub(crate) fn xattr_body_size(xattrs: &[(Vec<u8>, Vec<u8>)]) -> usize {
    if xattrs.is_empty() {
        return 0;
    }
    XATTR_IBODY_HEADER_SIZE
        + xattrs
            .iter()
            .map(|(n, v)| {
                let rest = split_xattr_name(n).map_or(n.len(), |(_, r)| r.len());
                xattr_entry_size(rest, v.len())
            })
            .sum::<usize>()
}
