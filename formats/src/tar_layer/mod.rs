//! OCI image layers as tar streams: what an applier needs to unpack one.
//!
//! A layer blob is a tar stream, plain or compressed with gzip or zstd. Reading one here
//! means: sniffing and undoing the compression ([`decompress`]), hashing the uncompressed
//! bytes on the way to get the layer's diffID ([`DiffIdReader`], optionally on a helper
//! thread with [`read_ahead`]), and walking the tar entries ([`TarLayer`]), each classified
//! ([`EntryKind`]) with OCI whiteouts recognised and its path cleaned the way containerd
//! cleans it (joined to `/` and cleaned: `..` cannot climb above the root; the leading `/`
//! is dropped). Everything here is untrusted input: extension headers, names, xattrs and
//! sparse maps are bounded ([`Limits`]), and a malformed or truncated stream is a typed
//! error naming the entry, never a panic.
//!
//! Nothing here touches the filesystem; `strata-snapshotters` writes the entries.

mod header;
mod path;
mod reader;
mod sparse;
mod stream;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::errdefs::ErrorKind;

pub use path::clean_path;
pub(crate) use reader::Header;
pub use reader::TarLayer;
pub use stream::{ChannelReader, DiffIdReader, SizeLimitExceeded, decompress, read_ahead};

/// The OCI whiteout prefix: `.wh.<name>` deletes `<name>` from the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker: its directory hides everything below it in lower layers.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Bounds on what an untrusted layer can make the reader hold or do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most uncompressed bytes read from the layer (a guard against compression bombs);
    /// `None`: unbounded.
    pub max_size: Option<u64>,
    /// Largest PAX or GNU long-name extension header, read into memory.
    pub max_extension: u64,
    /// Longest path or link target, in bytes (Linux's `PATH_MAX` less the NUL).
    pub max_name: usize,
    /// Largest xattr value (Linux's `XATTR_SIZE_MAX`).
    pub max_xattr_value: usize,
    /// Most segments in one sparse file's map.
    pub max_sparse_segments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_size: None,
            max_extension: 1 << 20,
            max_name: 4095,
            max_xattr_value: 64 << 10,
            max_sparse_segments: 1 << 18,
        }
    }
}

/// A point in time with nanoseconds, as a tar header (or its PAX record) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

/// One data segment of a sparse file: `length` bytes at `offset` of the file. Everything
/// between segments (and after the last, up to the file size) is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseSegment {
    /// Where the segment starts in the file.
    pub offset: u64,
    /// How many bytes of the payload it holds.
    pub length: u64,
}

/// What an entry is, with what each kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its payload follows (see [`Entry::sparse`] for its layout).
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is stored as the tar says (it is data, possibly absolute).
    Symlink {
        /// The link's contents.
        target: OsString,
    },
    /// A hard link to an earlier entry; the target path is cleaned like entry paths.
    Hardlink {
        /// The linked entry's cleaned relative path.
        target: PathBuf,
    },
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// `.wh.<name>`: `<name>` in the same directory is deleted.
    Whiteout {
        /// The cleaned relative path of the deleted name.
        target: PathBuf,
    },
    /// `.wh..wh..opq`: the directory holding it hides its lower-layer contents.
    OpaqueWhiteout {
        /// The cleaned relative path of the opaque directory (empty: the root).
        dir: PathBuf,
    },
}

/// One tar entry's effective metadata, extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cleaned path relative to the layer root; empty for the root itself.
    pub path: PathBuf,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time when the archive records one (PAX `atime`, GNU header).
    pub atime: Option<Timestamp>,
    /// The file's size (for a sparse file: its full size, holes included); 0 for
    /// non-files.
    pub size: u64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// For a sparse file, where its payload goes; `None`: the payload is the file.
    pub sparse: Option<Vec<SparseSegment>>,
}

impl Entry {
    /// The path for messages.
    pub fn display_path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Where in the stream something went wrong, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Before any entry was read.
    Start,
    /// In the header of the entry after this one (its own name unknown yet).
    After(String),
    /// In this entry (its header or payload).
    Entry(String),
    /// After the end-of-archive marker.
    Trailer,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("the first entry"),
            Self::After(name) => write!(f, "the entry after {name:?}"),
            Self::Entry(name) => write!(f, "entry {name:?}"),
            Self::Trailer => f.write_str("data after the end of the archive"),
        }
    }
}

/// Why a tar layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TarLayerError {
    /// The tar structure is malformed (bad header, bad extension, bad name or sparse map).
    #[error("{at}: {reason}")]
    Invalid {
        /// Where.
        at: Position,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside a header or a payload.
    #[error("{at}: stream truncated")]
    Truncated {
        /// Where.
        at: Position,
    },
    /// Reading or decompressing the stream failed (a corrupt gzip or zstd stream lands here).
    #[error("{at}: reading the layer: {source}")]
    Read {
        /// Where.
        at: Position,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The uncompressed stream is larger than [`Limits::max_size`].
    #[error("{at}: layer exceeds the limit of {limit} uncompressed bytes")]
    TooLarge {
        /// Where.
        at: Position,
        /// The limit.
        limit: u64,
    },
}

impl TarLayerError {
    /// The errdefs category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid { .. } | Self::TooLarge { .. } => ErrorKind::InvalidArgument,
            Self::Truncated { .. } => ErrorKind::DataCorrupt,
            Self::Read { source, .. } => match source.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    ErrorKind::DataCorrupt
                }
                _ => ErrorKind::Internal,
            },
        }
    }

    /// Where in the stream it happened.
    pub fn position(&self) -> &Position {
        match self {
            Self::Invalid { at, .. }
            | Self::Truncated { at }
            | Self::Read { at, .. }
            | Self::TooLarge { at, .. } => at,
        }
    }

    /// Maps an I/O error met at `at`: a size limit hit below becomes [`Self::TooLarge`],
    /// an early end of stream [`Self::Truncated`].
    pub(crate) fn from_io(at: Position, e: std::io::Error) -> Self {
        if let Some(limit) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<SizeLimitExceeded>())
        {
            return Self::TooLarge {
                at,
                limit: limit.limit,
            };
        }
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Self::Truncated { at };
        }
        Self::Read { at, source: e }
    }
}
