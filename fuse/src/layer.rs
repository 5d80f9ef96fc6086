//! The read-only tree one layer presents: inodes with attributes, directory entries and
//! xattrs, built once from an eStargz [`TocIndex`].
//!
//! Inode numbers are the TOC index's node ids plus one (the root, node 0, is inode 1), so
//! they are a pure function of the TOC: a daemon that restarts and rebuilds the tree from the
//! same TOC answers a live kernel connection with the inode numbers it handed out before.
//! A hardlink is not an inode of its own: its directory entry names the inode of the entry
//! it links to, whose `nlink` counts every name.
//!
//! Overlay presentation, so the mount can be an overlay lower directory as it is: an OCI
//! whiteout `.wh.NAME` becomes a 0/0 character device named `NAME` (overlayfs's whiteout),
//! and a directory holding `.wh..wh..opq` gets the xattr `trusted.overlay.opaque=y`; the
//! marker itself and other `.wh..wh.` entries are not shown. A whiteout and a real entry of
//! the same name in one layer: the real entry wins (a whiteout only hides lower layers).
//! The prefetch landmarks conversion adds at the root are not shown either.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_formats::estargz::{EntryType, NO_PREFETCH_LANDMARK, Node, PREFETCH_LANDMARK, TocIndex};

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
    /// The TOC node holding its metadata and chunks.
    pub toc_node: usize,
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
}

/// Why a layer tree could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A TOC field is out of the range the kernel accepts.
    #[error("layer {layer}: entry {path:?}: {reason}")]
    InvalidEntry {
        /// The layer's name.
        layer: String,
        /// The entry's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A layer's read-only tree: every inode, indexed by inode number, and the TOC index the
/// chunk lists come from.
#[derive(Debug)]
pub struct LayerTree {
    name: String,
    index: Arc<TocIndex>,
    /// `inodes[ino - 1]`; `None` for TOC nodes that are not inodes (hardlinks, markers).
    inodes: Vec<Option<Inode>>,
}

/// The kernel's `new_encode_dev`, the form `fuse_attr.rdev` is decoded with.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn to_u32(v: i64, what: &str, layer: &str, path: &str) -> Result<u32, LayerError> {
    u32::try_from(v).map_err(|_| LayerError::InvalidEntry {
        layer: layer.to_owned(),
        path: path.to_owned(),
        reason: format!("{what} {v} is out of range"),
    })
}

impl LayerTree {
    /// Builds the tree of layer `name` (used in log lines and errors) from its TOC index.
    pub fn build(name: impl Into<String>, index: Arc<TocIndex>) -> Result<Self, LayerError> {
        let name = name.into();
        let nodes = index.nodes();
        let ino_of = |id: usize| id as u64 + 1;
        // A hardlink's entry names its target's inode.
        let target_of = |id: usize| nodes[id].link_target.unwrap_or(id);

        let mut inodes: Vec<Option<Inode>> = Vec::with_capacity(nodes.len());
        for (id, node) in nodes.iter().enumerate() {
            if node.entry_type() == EntryType::Hardlink || is_hidden_marker(base_name(&node.path)) {
                inodes.push(None);
                continue;
            }
            inodes.push(Some(Self::inode_of(&name, id, node, ino_of(id))?));
        }

        // Directory entries, link counts, parents and opaque markers.
        for (id, node) in nodes.iter().enumerate() {
            if node.entry_type() != EntryType::Dir {
                continue;
            }
            let mut entries: BTreeMap<String, u64> = BTreeMap::new();
            let mut opaque = false;
            let mut subdirs = 0u32;
            for (child_name, &child) in &node.children {
                if child_name == OPAQUE_MARKER {
                    opaque = true;
                    continue;
                }
                if is_hidden_marker(child_name) || (id == 0 && is_landmark(child_name)) {
                    continue;
                }
                let target = target_of(child);
                let shown = match child_name.strip_prefix(WHITEOUT_PREFIX) {
                    Some(hidden) => {
                        if node.children.contains_key(hidden) {
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
                entries.insert(shown, ino);
            }
            if let Some(Some(dir)) = inodes.get_mut(id) {
                dir.nlink = 2u32.saturating_add(subdirs);
                dir.entries = entries.into_iter().collect();
                if opaque {
                    dir.xattrs.insert(OPAQUE_XATTR.to_owned(), b"y".to_vec());
                }
            }
        }
        if let Some(Some(root)) = inodes.first_mut() {
            root.parent = 1;
        }
        Ok(Self {
            name,
            index,
            inodes,
        })
    }

    fn inode_of(layer: &str, id: usize, node: &Node, ino: u64) -> Result<Inode, LayerError> {
        let e = &node.entry;
        let base = base_name(&node.path);
        let whiteout = base.starts_with(WHITEOUT_PREFIX);
        let (kind, size, rdev) = if whiteout {
            (InodeKind::CharDevice, 0, 0)
        } else {
            match e.entry_type {
                EntryType::Dir => (InodeKind::Directory, 4096, 0),
                EntryType::Reg | EntryType::Chunk | EntryType::Hardlink => (
                    InodeKind::RegularFile,
                    u64::try_from(e.size).unwrap_or(0),
                    0,
                ),
                EntryType::Symlink => (InodeKind::Symlink, e.link_name.len() as u64, 0),
                EntryType::Char | EntryType::Block => {
                    let major = to_u32(e.dev_major, "device major", layer, &node.path)?;
                    let minor = to_u32(e.dev_minor, "device minor", layer, &node.path)?;
                    let kind = if e.entry_type == EntryType::Char {
                        InodeKind::CharDevice
                    } else {
                        InodeKind::BlockDevice
                    };
                    (kind, 0, encode_dev(major, minor))
                }
                EntryType::Fifo => (InodeKind::Fifo, 0, 0),
            }
        };
        Ok(Inode {
            ino,
            parent: 0,
            toc_node: id,
            kind,
            perm: (e.mode & 0o7777) as u32,
            uid: to_u32(e.uid, "uid", layer, &node.path)?,
            gid: to_u32(e.gid, "gid", layer, &node.path)?,
            size,
            mtime: e.mtime_unix().unwrap_or(0),
            nlink: 0,
            rdev,
            link_target: if kind == InodeKind::Symlink {
                e.link_name.as_bytes().to_vec()
            } else {
                Vec::new()
            },
            // overlayfs trusts `trusted.overlay.*` on its lowers (redirects, metacopy):
            // an image must not be able to set them, only the markers above may.
            xattrs: if whiteout {
                BTreeMap::new()
            } else {
                e.xattrs
                    .iter()
                    .filter(|(k, _)| !k.starts_with(OVERLAY_XATTR_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
            entries: Vec::new(),
        })
    }

    /// The layer's name, for log lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TOC index the tree was built from.
    pub fn index(&self) -> &Arc<TocIndex> {
        &self.index
    }

    /// The inode with number `ino`.
    pub fn inode(&self, ino: u64) -> Option<&Inode> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get(i)?.as_ref()
    }

    /// The TOC node of an inode (its path and chunk list).
    pub fn toc_node(&self, inode: &Inode) -> Option<&Node> {
        self.index.node(inode.toc_node)
    }

    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: &Inode, name: &str) -> Option<&Inode> {
        let i = dir
            .entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        self.inode(dir.entries[i].1)
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

/// The prefetch landmarks eStargz conversion adds at the root: not part of the layer.
fn is_landmark(name: &str) -> bool {
    name == PREFETCH_LANDMARK || name == NO_PREFETCH_LANDMARK
}

/// Names that are OCI markers rather than entries: `.wh..wh..opq` and aufs's other
/// `.wh..wh.` metadata.
fn is_hidden_marker(name: &str) -> bool {
    name.starts_with(".wh..wh.")
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
