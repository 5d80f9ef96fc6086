//! EROFS images: a streaming writer fed by entries (from a tar layer or, elsewhere, a
//! directory walk) and a validator for images from untrusted sources.
//!
//! The writer streams each regular file's data into the image as it is added (data blocks
//! from the first block after the superblock on), keeps only metadata in memory (plus at
//! most one block of inline tail per file, all bounded by
//! [`BuildOptions::max_metadata_bytes`]), and lays out directories, shared xattrs and
//! inodes after the data at [`Builder::finish`], writing the superblock last. Output is deterministic: the same
//! entries in the same order with the same [`BuildOptions`] give the same bytes.
//!
//! - [`ondisk`]: the on-disk structures and constants (kernel `fs/erofs/erofs_fs.h`).
//! - [`builder`]: [`Builder`], the entry-based writer, and its in-memory tree.
//! - `data`: how a file's bytes are placed (plain blocks, inline tail, chunks, holes).
//! - `layout`: what [`Builder::finish`] computes and writes (dirents, xattrs, inodes).
//! - [`tar`]: the tar frontends: [`build_from_tar`] (data copied, OCI whiteouts become
//!   overlay whiteouts as `mkfs.erofs --tar=f --aufs` makes them) and [`build_tar_index`]
//!   (metadata only, file data referenced in the tar appended after it, as `--tar=i`).
//! - [`mod@validate`]: [`validate()`], bounded checks of an image before the kernel mounts it.
//! - [`uuid`]: the volume UUID containerd derives from a layer digest.

pub mod builder;
mod data;
mod layout;
pub mod ondisk;
pub mod tar;
pub mod uuid;
pub mod validate;

#[cfg(test)]
mod tests;

use crate::errdefs::ErrorKind;
use crate::tar_layer::{Limits, SparseSegment, TarLayerError, Timestamp};

pub use builder::{BuildReport, Builder};
pub use tar::{TarIndexReport, build_from_tar, build_tar_index};
pub use uuid::{layer_uuid, uuid_string};
pub use validate::{Summary, ValidateLimits, validate, validate_with};

/// How an image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// log2 of the block size: 12 (4096, as containerd's `-b4096`) by default, 9..=12.
    /// Tar-index images always use 9 (512-byte blocks, the tar's own).
    pub block_size_bits: u8,
    /// The volume UUID ([`layer_uuid`] derives containerd's from a layer digest).
    pub uuid: [u8; 16],
    /// The image's build time, which compact inodes take as their mtime; fixed (the Unix
    /// epoch by default, as `-T0 --mkfs-time`) so the output does not depend on the clock.
    pub build_time: Timestamp,
    /// Whether regular files keep their last partial block inline, after the inode, when
    /// it fits in the inode's block. containerd passes `-Enoinline_data`; the default here
    /// is to inline, which saves up to a block per small file. Directories and symlinks
    /// are inlined whenever they fit, whatever this says.
    pub inline_data: bool,
    /// Most inodes the image may hold: a bound on the metadata kept in memory for an
    /// untrusted layer.
    pub max_inodes: usize,
    /// Most bytes of metadata kept in memory until [`Builder::finish`] (names, xattrs,
    /// symlink targets, inline tails, chunk indexes, plus a fixed cost per entry).
    pub max_metadata_bytes: u64,
    /// Long xattr name prefixes (full prefixes such as `trusted.overlay.`, each starting
    /// with `user.`, `trusted.` or `security.` and longer than it; at most 127): names
    /// under one are stored without it, saving bytes per xattr (EROFS's
    /// `XATTR_PREFIXES` feature, which kernels before 6.4 cannot mount). None by default,
    /// as `mkfs.erofs` without `--xattr-prefix`.
    pub xattr_prefixes: Vec<Vec<u8>>,
    /// Bounds on the tar layer the tar frontends read (extension headers, names, xattrs,
    /// sparse maps). `max_size` is the caller's to apply, with the
    /// [`crate::tar_layer::DiffIdReader`] that also computes the layer's diffID.
    pub tar_limits: Limits,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            block_size_bits: 12,
            uuid: [0; 16],
            build_time: Timestamp::default(),
            inline_data: true,
            max_inodes: 1 << 24,
            max_metadata_bytes: 2 << 30,
            xattr_prefixes: Vec::new(),
            tar_limits: Limits::default(),
        }
    }
}

/// Extended attributes: full names (`user.x`, `security.capability`, …) and values.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One filesystem object to add to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the image root, `/`-separated, without `.` or `..`
    /// components; empty for the root directory itself.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`); type bits are ignored.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Extended attributes as full names (`user.x`, `security.capability`, …) and values.
    pub xattrs: Xattrs,
}

/// What an [`Entry`] is, with what each kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes, read from the data reader handed to
    /// [`Builder::add`].
    File {
        /// The file's size.
        size: u64,
    },
    /// A sparse regular file: `size` bytes with data only in `segments` (in order, not
    /// overlapping); the data reader yields the segments' bytes back to back.
    SparseFile {
        /// The file's size, holes included.
        size: u64,
        /// Where its data are.
        segments: Vec<SparseSegment>,
    },
    /// A directory. Adding one where a directory exists updates its metadata and keeps its
    /// contents, as extracting a tar does.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link's contents.
        target: Vec<u8>,
    },
    /// Another name for the non-directory at `target` (a path like [`Entry::path`]).
    Hardlink {
        /// The existing path.
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// An overlayfs whiteout at this path: a 0/0 character device, and its directory
    /// marked (`trusted.overlay.origin`) so overlayfs never lists it directly.
    Whiteout,
}

/// Why an image could not be built or validated.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    /// An entry cannot be represented or contradicts the tree (bad path, name too long,
    /// parent not a directory, hard link to nothing, …).
    #[error("entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading an entry's data failed or ended early.
    #[error("entry {path:?}: reading its data: {source}")]
    ReadData {
        /// The entry's path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tar stream is malformed or could not be read.
    #[error(transparent)]
    Tar(#[from] TarLayerError),
    /// Writing the image failed.
    #[error("writing the image: {0}")]
    Write(#[source] std::io::Error),
    /// The image would exceed what EROFS addresses (block numbers, inode numbers) or a
    /// configured bound.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// The options are unusable.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The image (validated) is malformed: `at` names the superblock, an nid or a path.
    #[error("{at}: {reason}")]
    Corrupt {
        /// Where: `superblock`, `nid 36`, `nid 36 (/usr/bin)`, …
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The image (validated) uses a feature the validator does not check, so it is
    /// refused rather than passed unchecked.
    #[error("{at}: unsupported: {reason}")]
    Unsupported {
        /// Where.
        at: String,
        /// What.
        reason: String,
    },
    /// Reading the image (validated) failed.
    #[error("reading the image at offset {offset}: {source}")]
    ReadImage {
        /// Where.
        offset: u64,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl ErofsError {
    /// The errdefs category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidEntry { .. } | Self::TooLarge(_) | Self::InvalidOptions(_) => {
                ErrorKind::InvalidArgument
            }
            Self::Tar(e) => e.kind(),
            Self::ReadData { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                ErrorKind::DataCorrupt
            }
            Self::Corrupt { .. } => ErrorKind::DataCorrupt,
            Self::Unsupported { .. } => ErrorKind::NotImplemented,
            Self::ReadData { .. } | Self::Write(_) | Self::ReadImage { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn entry(path: &[u8], reason: impl Into<String>) -> Self {
        Self::InvalidEntry {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }
}
