//! The layer applier: streams a tar layer (gzip, zstd or plain) into a snapshot directory,
//! as containerd's `archive.Apply` does, with the layer treated as hostile.
//!
//! The stream is decompressed and hashed on a helper thread while entries are written on
//! the calling one; the diffID is checked at the end. Every path an entry names resolves
//! inside the target ([`root`]: `openat2(RESOLVE_IN_ROOT)` from the target's fd), so `..`,
//! absolute paths, symlinks and hard links that point out are confined or refused, and
//! nothing outside the target is ever written. setuid/setgid bits are kept as the image
//! says; the snapshot root's parent directory (0700) keeps them away from other users.
//!
//! OCI whiteouts are written in one of two ways ([`WhiteoutMode`]): as overlayfs
//! whiteouts (0/0 character devices and the opaque xattr) for an overlay upper directory,
//! or by deleting what they name, for a full-copy snapshot such as native's.
//!
//! - [`apply_layer`]: a layer into a directory.
//! - [`apply_to_mounts`]: a layer into the mounts of an active snapshot.

mod entry;
mod error;
mod mounts;
mod root;
mod whiteout;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use strata_formats::Digest;
use strata_formats::tar_layer::{Limits, TarLayer, read_ahead};

pub use error::ApplyError;
pub use mounts::apply_to_mounts;

use root::Root;

/// How OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// For an overlayfs upper directory: a whiteout becomes a 0/0 character device named
    /// `<name>`; an opaque directory gets `trusted.overlay.opaque=y`, or
    /// `user.overlay.opaque=y` when the overlay is mounted with `userxattr`.
    Overlay {
        /// The overlay uses `user.overlay.*` xattrs (`userxattr` mount option).
        userxattr: bool,
    },
    /// For a directory holding the whole merged tree: the named path is removed; an
    /// opaque directory loses everything it held before this layer.
    Delete,
}

/// What [`apply_layer`] is asked to do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are written.
    pub whiteouts: WhiteoutMode,
    /// The diffID the image config announces; the apply fails if the stream differs.
    pub expected_diff_id: Option<Digest>,
    /// The layer's digest (or another name), used in messages.
    pub layer: String,
    /// Most uncompressed bytes accepted (a guard against decompression bombs).
    pub max_size: Option<u64>,
    /// Lower layers, topmost first: a parent directory the layer does not list is created
    /// with the attributes it has in the first of these that holds it.
    pub parents: Vec<PathBuf>,
}

impl ApplyOptions {
    /// Options for `layer` with `whiteouts`, no diffID check, no size limit, no parents.
    pub fn new(layer: impl Into<String>, whiteouts: WhiteoutMode) -> Self {
        Self {
            whiteouts,
            expected_diff_id: None,
            layer: layer.into(),
            max_size: None,
            parents: Vec::new(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The sha256 of the uncompressed stream (checked against the expected one if given).
    pub diff_id: Digest,
    /// Uncompressed bytes in the stream.
    pub size: u64,
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Overlayfs-private xattrs (`trusted.overlay.*`, `user.overlay.*`) found in the layer
    /// and not written: they would steer overlayfs rather than describe a file.
    pub skipped_xattrs: u64,
}

/// The state of one apply: the confined root, what has been written, what is deferred.
#[derive(Debug)]
struct Applier<'o> {
    root: Root,
    options: &'o ApplyOptions,
    /// Paths written by this layer (Delete mode: an opaque directory keeps them).
    unpacked: HashSet<PathBuf>,
    /// Directories whose times are set once everything inside them is written.
    dirs: Vec<(PathBuf, rustix::fs::Timestamps)>,
    /// The process umask: a created file's mode is exact when the umask cleared nothing.
    umask: u32,
    buf: Vec<u8>,
    entries: u64,
    files: u64,
    skipped_xattrs: std::cell::Cell<u64>,
}

/// Reads the umask without changing it (`umask(2)` can only set it).
fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        // Unknown: assume the worst, so every mode is set explicitly.
        .unwrap_or(0o777)
}

/// Applies the layer read from `reader` (gzip, zstd or plain tar) to the directory
/// `target`. On error the target may hold part of the layer (the caller removes the
/// snapshot); nothing outside it has been touched.
pub fn apply_layer(
    reader: impl Read + Send,
    target: &Path,
    options: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let layer = || options.layer.clone();
    let root = Root::open(target, &options.parents).map_err(|source| ApplyError::Target {
        layer: layer(),
        context: "opening the target or a parent layer".into(),
        path: target.to_path_buf(),
        source,
    })?;
    let mut applier = Applier {
        root,
        options,
        unpacked: HashSet::new(),
        dirs: Vec::new(),
        umask: current_umask(),
        buf: vec![0u8; 1 << 20],
        entries: 0,
        files: 0,
        skipped_xattrs: std::cell::Cell::new(0),
    };
    let limits = Limits {
        max_size: options.max_size,
        ..Limits::default()
    };
    let (diff_id, size) = std::thread::scope(|scope| {
        let (stream, helper) = read_ahead(scope, reader, options.max_size);
        let mut tar = TarLayer::new(stream, limits);
        let result = applier.run(&mut tar).and_then(|()| {
            tar.finish().map(drop).map_err(|source| ApplyError::Read {
                layer: layer(),
                source,
            })
        });
        let helper = helper.join();
        result?;
        match helper {
            Ok(Ok(done)) => Ok(done),
            // The reader already surfaced the helper's errors; these cannot normally happen.
            Ok(Err(e)) => Err(ApplyError::Read {
                layer: layer(),
                source: strata_formats::tar_layer::TarLayerError::Read {
                    at: strata_formats::tar_layer::Position::Trailer,
                    source: e,
                },
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    applier.finish_dirs()?;
    if let Some(expected) = &options.expected_diff_id
        && *expected != diff_id
    {
        return Err(ApplyError::DiffIdMismatch {
            layer: layer(),
            expected: expected.clone(),
            actual: diff_id,
        });
    }
    Ok(ApplyReport {
        diff_id,
        size,
        entries: applier.entries,
        files: applier.files,
        skipped_xattrs: applier.skipped_xattrs.get(),
    })
}
