//! The read-only tree one layer presents: inodes with attributes, directory entries and
//! xattrs, built once from the layer's neutral [`LayerIndex`] (whatever format it came
//! from: an eStargz TOC, a raw blob, …).
//!
//! Inode numbers are the index's entry ids plus one (the root, entry 0, is inode 1), so
//! they are a pure function of the index (and the eStargz adapter keeps entry ids equal to
//! TOC node ids): a daemon that restarts and rebuilds the tree from the same source answers
//! a live kernel connection with the inode numbers it handed out before. A hardlink is not
//! an inode of its own: its directory entry names the inode of the entry it links to,
//! whose `nlink` counts every name.
//!
//! Overlay presentation, so the mount can be an overlay lower directory as it is: an OCI
//! whiteout `.wh.NAME` becomes a 0/0 character device named `NAME` (overlayfs's whiteout),
//! and a directory holding `.wh..wh..opq` gets the xattr `trusted.overlay.opaque=y`; the
//! marker itself and other `.wh..wh.` entries are not shown. A whiteout and a real entry of
//! the same name in one layer: the real entry wins (a whiteout only hides lower layers).
//! Entries the index marks hidden (eStargz's prefetch landmarks) are not listed either.

use std::collections::BTreeMap;

use strata_formats::layer_index::{Entry, EntryKind, FileChunk, LayerIndex};

/// The prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI marker that makes its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to find an opaque lower directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The namespace of overlayfs's own xattrs, dropped from the image's xattrs.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeKind {
    /// A directory.
    Directory,
    /// A regular file; its data comes from the chunk source.
    RegularFile,
    /// A symbolic link.
    Symlink,
    /// A character device (overlay whiteouts included).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

impl InodeKind {
    /// The `S_IFMT` bits.
    pub fn file_type_bits(self) -> u32 {
        match self {
            Self::Directory => libc::S_IFDIR,
            Self::RegularFile => libc::S_IFREG,
            Self::Symlink => libc::S_IFLNK,
            Self::CharDevice => libc::S_IFCHR,
            Self::BlockDevice => libc::S_IFBLK,
            Self::Fifo => libc::S_IFIFO,
        }
    }

    /// The `DT_*` value for a directory entry.
    pub fn dirent_type(self) -> u32 {
        u32::from(match self {
            Self::Directory => libc::DT_DIR,
            Self::RegularFile => libc::DT_REG,
            Self::Symlink => libc::DT_LNK,
            Self::CharDevice => libc::DT_CHR,
            Self::BlockDevice => libc::DT_BLK,
            Self::Fifo => libc::DT_FIFO,
        })
    }
}

/// One inode of the layer.
#[derive(Debug, Clone)]
pub struct Inode {
    /// The inode number (also the FUSE node id).
    pub ino: u64,
    /// The inode number of the directory holding its first name (the root: itself).
    pub parent: u64,
    /// The index entry it is (entry id = `ino - 1`).
    pub entry: usize,
    /// Its path in the layer (for log lines and chunk sources).
    pub path: Box<str>,
    /// What it is.
    pub kind: InodeKind,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes: file length, symlink target length, 4096 for directories.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Link count: names of a file, 2 + subdirectories of a directory.
    pub nlink: u32,
    /// Device number in the kernel's `new_encode_dev` form (devices only).
    pub rdev: u32,
    /// Symlink target.
    pub link_target: Vec<u8>,
    /// Extended attributes, overlay markers included.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Directory entries, sorted by name: `(name, inode number)`.
    pub entries: Vec<(String, u64)>,
    /// A regular file's chunks, in file order, covering it exactly.
    pub chunks: Box<[FileChunk]>,
}

/// A layer's read-only tree: every inode, indexed by inode number.
#[derive(Debug)]
pub struct LayerTree {
    name: String,
    /// `inodes[ino - 1]`; `None` for entries that are not inodes (hardlinks, markers).
    inodes: Vec<Option<Inode>>,
}

/// The kernel's `new_encode_dev`, the form `fuse_attr.rdev` is decoded with.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

impl LayerTree {
    /// Builds the tree of layer `name` (used in log lines) from its index, which it takes
    /// over: paths, xattrs and chunk lists move into the inodes rather than being copied.
    pub fn build(name: impl Into<String>, index: LayerIndex) -> Self {
        let name = name.into();
        let (entries, parents, targets) = index.into_parts();
        let ino_of = |id: usize| id as u64 + 1;

        // Each directory's children, by name: (name, entry id), sorted below.
        let mut children: Vec<Vec<(String, usize)>> = vec![Vec::new(); entries.len()];
        for (id, e) in entries.iter().enumerate().skip(1) {
            children[parents[id] as usize].push((base_name(&e.path).to_owned(), id));
        }
        let hidden: Vec<bool> = entries.iter().map(|e| e.hidden).collect();
        let mut inodes: Vec<Option<Inode>> = Vec::with_capacity(entries.len());
        for (id, entry) in entries.into_iter().enumerate() {
            if entry.kind == EntryKind::Hardlink || is_hidden_marker(base_name(&entry.path)) {
                inodes.push(None);
                continue;
            }
            inodes.push(Some(Self::inode_of(id, entry, ino_of(id))));
        }

        // Directory entries, link counts, parents and opaque markers.
        for (id, mut kids) in children.into_iter().enumerate() {
            if inodes
                .get(id)
                .and_then(Option::as_ref)
                .is_none_or(|i| i.kind != InodeKind::Directory)
            {
                continue;
            }
            kids.sort_unstable();
            let mut shown_entries: BTreeMap<String, u64> = BTreeMap::new();
            let mut opaque = false;
            let mut subdirs = 0u32;
            let has = |name: &str| kids.binary_search_by(|(n, _)| n.as_str().cmp(name)).is_ok();
            for (child_name, child) in &kids {
                if child_name == OPAQUE_MARKER {
                    opaque = true;
                    continue;
                }
                if is_hidden_marker(child_name) || hidden[*child] {
                    continue;
                }
                let target = targets[*child] as usize;
                let shown = match child_name.strip_prefix(WHITEOUT_PREFIX) {
                    Some(hidden) => {
                        if has(hidden) {
                            continue;
                        }
                        hidden.to_owned()
                    }
                    None => child_name.clone(),
                };
                let ino = ino_of(target);
                let Some(Some(child_inode)) = inodes.get_mut(target) else {
                    continue;
                };
                if child_inode.kind == InodeKind::Directory {
                    subdirs = subdirs.saturating_add(1);
                    child_inode.parent = ino_of(id);
                } else {
                    // One link per name; the first name found gives the parent.
                    child_inode.nlink = child_inode.nlink.saturating_add(1);
                    if child_inode.parent == 0 {
                        child_inode.parent = ino_of(id);
                    }
                }
                shown_entries.insert(shown, ino);
            }
            if let Some(Some(dir)) = inodes.get_mut(id) {
                dir.nlink = 2u32.saturating_add(subdirs);
                dir.entries = shown_entries.into_iter().collect();
                if opaque {
                    dir.xattrs.insert(OPAQUE_XATTR.to_owned(), b"y".to_vec());
                }
            }
        }
        if let Some(Some(root)) = inodes.first_mut() {
            root.parent = 1;
        }
        Self { name, inodes }
    }

    fn inode_of(id: usize, e: Entry, ino: u64) -> Inode {
        let whiteout = base_name(&e.path).starts_with(WHITEOUT_PREFIX);
        let (kind, size, rdev) = if whiteout {
            (InodeKind::CharDevice, 0, 0)
        } else {
            match e.kind {
                EntryKind::Dir => (InodeKind::Directory, 4096, 0),
                EntryKind::Reg | EntryKind::Hardlink => (InodeKind::RegularFile, e.size, 0),
                EntryKind::Symlink => (InodeKind::Symlink, e.link_target.len() as u64, 0),
                EntryKind::Char => (
                    InodeKind::CharDevice,
                    0,
                    encode_dev(e.dev_major, e.dev_minor),
                ),
                EntryKind::Block => (
                    InodeKind::BlockDevice,
                    0,
                    encode_dev(e.dev_major, e.dev_minor),
                ),
                EntryKind::Fifo => (InodeKind::Fifo, 0, 0),
            }
        };
        Inode {
            ino,
            parent: 0,
            entry: id,
            kind,
            perm: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            size,
            mtime: e.mtime,
            nlink: 0,
            rdev,
            link_target: if kind == InodeKind::Symlink {
                e.link_target.into_bytes()
            } else {
                Vec::new()
            },
            // overlayfs trusts `trusted.overlay.*` on its lowers (redirects, metacopy):
            // an image must not be able to set them, only the markers above may.
            xattrs: if whiteout {
                BTreeMap::new()
            } else {
                let mut xattrs = e.xattrs;
                xattrs.retain(|k, _| !k.starts_with(OVERLAY_XATTR_PREFIX));
                xattrs
            },
            entries: Vec::new(),
            // A whiteout shows as a device: its data is not the layer's.
            chunks: if kind == InodeKind::RegularFile {
                e.chunks
            } else {
                Box::default()
            },
            path: e.path.into_boxed_str(),
        }
    }

    /// The layer's name, for log lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The inode with number `ino`.
    pub fn inode(&self, ino: u64) -> Option<&Inode> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get(i)?.as_ref()
    }

    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: &Inode, name: &str) -> Option<&Inode> {
        let i = dir
            .entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        self.inode(dir.entries[i].1)
    }

    /// The inode at `path` (no leading `/`; "" is the root), following directory entries
    /// as a lookup does.
    pub fn resolve(&self, path: &str) -> Option<&Inode> {
        let mut inode = self.inode(1)?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            inode = self.lookup(inode, name)?;
        }
        Some(inode)
    }

    /// How many inodes the tree holds.
    pub fn inode_count(&self) -> u64 {
        self.inodes.iter().filter(|i| i.is_some()).count() as u64
    }

    /// The sum of all regular file sizes.
    pub fn total_file_bytes(&self) -> u64 {
        self.inodes
            .iter()
            .flatten()
            .filter(|i| i.kind == InodeKind::RegularFile)
            .fold(0u64, |acc, i| acc.saturating_add(i.size))
    }
}

fn base_name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Names that are OCI markers rather than entries: `.wh..wh..opq` and aufs's other
/// `.wh..wh.` metadata.
fn is_hidden_marker(name: &str) -> bool {
    name.starts_with(".wh..wh.")
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
