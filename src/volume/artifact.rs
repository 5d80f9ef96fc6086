//! Model artifacts as volumes, whole: every blob of the artifact is in the content store
//! (pulled and verified against its digest), and the volume is a tree under
//! `<root>/volumes/` built from them — each raw layer hard-linked at its annotated path
//! (no copy; a copy only when the tree is on another filesystem), each tar layer applied
//! into its directory by the confined layer applier — then bound read-only like any
//! volume. Paths come cleaned from [`strata_formats::artifact::ArtifactLayout`]; the tree
//! is built with `*at` calls that refuse symlinks on the way, so a tar layer that planted
//! a symlink cannot send a later file outside the tree.
//!
//! Not lazy: the mount waits for every blob. Lazy reads of raw blobs need the chunk index
//! (`docs/chunk-index.md`) served over FUSE.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use strata_formats::ReadAtCursor;
use strata_formats::artifact::{ArtifactLayout, Entry};
use strata_snapshotters::apply::{ApplyOptions, WhiteoutMode, apply_layer};

use super::VolumeError;
use crate::store::Store;

/// What went into a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeReport {
    /// Raw layers placed as files.
    pub files: usize,
    /// Tar layers applied.
    pub tars: usize,
    /// Bytes of the blobs used.
    pub bytes: u64,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    VolumeError::io(context)
}

/// Opens (creating) the directories of `rel` (cleaned, relative, `/`-separated) under
/// `root`, one component at a time, refusing symlinks.
fn make_dirs(root: &OwnedFd, rel: &str) -> Result<OwnedFd, VolumeError> {
    let mut dir = rustix::io::dup(root).map_err(|e| io("dup")(e.into()))?;
    for name in rel.split('/').filter(|c| !c.is_empty()) {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io(format!("create directory {rel}"))(e.into())),
        }
        dir = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io(format!(
                "directory {rel} in the volume (a file or symlink is in the way)"
            ))(e.into())
        })?;
    }
    Ok(dir)
}

/// Places `layout`'s layers, from `store`'s content, in the new directory `tree`.
///
/// # Errors
///
/// A blob missing from the store or of the wrong size, a path taken twice or blocked by
/// a file or symlink, a tar layer the applier refuses.
pub fn build_tree(
    store: &Store,
    layout: &ArtifactLayout,
    tree: &Path,
) -> Result<TreeReport, VolumeError> {
    std::fs::create_dir_all(tree).map_err(io(format!("create {}", tree.display())))?;
    let root = open_tree(tree)?;
    let mut report = TreeReport::default();
    for entry in &layout.entries {
        let d = entry.descriptor();
        let blob = store.content().blob_path(&d.digest);
        let size = std::fs::metadata(&blob)
            .map_err(io(format!(
                "layer {}: not in the content store (pull the artifact)",
                d.digest
            )))?
            .len();
        if size != d.size {
            return Err(VolumeError::Remote(format!(
                "layer {}: {size} bytes in the content store, the manifest says {}",
                d.digest, d.size
            )));
        }
        report.bytes += size;
        match entry {
            Entry::RawFile { path, .. } => {
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                let dir = make_dirs(&root, parent)?;
                place_file(&blob, &dir, name, path)?;
                report.files += 1;
            }
            Entry::Tar { path_prefix, .. } => {
                let reader = store
                    .content()
                    .reader_at(&d.digest)
                    .map_err(|e| VolumeError::Remote(format!("layer {}: {e}", d.digest)))?;
                apply_tar(&root, path_prefix, &d.digest, ReadAtCursor::new(reader))?;
                report.tars += 1;
            }
        }
    }
    Ok(report)
}

/// Opens the tree `tree` (a directory) for [`apply_tar`].
///
/// # Errors
///
/// It cannot be opened.
pub fn open_tree(tree: &Path) -> Result<OwnedFd, VolumeError> {
    rustix::fs::open(
        tree,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(format!("open {}", tree.display()))(e.into()))
}

/// Applies the tar layer `digest` (its verified bytes from `reader`, compressed or not)
/// into the directory `path_prefix` of the tree `root`, with the confined applier.
///
/// # Errors
///
/// The directory is blocked by a file or symlink, or the applier refuses the layer.
pub fn apply_tar(
    root: &OwnedFd,
    path_prefix: &str,
    digest: &strata_formats::Digest,
    reader: impl std::io::Read + Send,
) -> Result<(), VolumeError> {
    let dir = make_dirs(root, path_prefix)?;
    let target = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let options = ApplyOptions::new(digest.to_string(), WhiteoutMode::Delete);
    apply_layer(reader, Path::new(&target), &options)
        .map_err(|e| VolumeError::Remote(format!("layer {digest}: {e}")))?;
    Ok(())
}

/// Hard-links `blob` as `name` in `dir` (a copy across filesystems).
fn place_file(blob: &Path, dir: &OwnedFd, name: &str, path: &str) -> Result<(), VolumeError> {
    let taken = || VolumeError::Remote(format!("{path}: the artifact places two things there"));
    match rustix::fs::linkat(rustix::fs::CWD, blob, dir.as_fd(), name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => return Err(taken()),
        Err(rustix::io::Errno::XDEV) => {}
        Err(e) => return Err(io(format!("link {path}"))(e.into())),
    }
    let out = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )
    .map_err(|e| match e {
        rustix::io::Errno::EXIST => taken(),
        e => io(format!("create {path}"))(e.into()),
    })?;
    let mut out = std::fs::File::from(out);
    let mut src = std::fs::File::open(blob).map_err(io(format!("open the blob of {path}")))?;
    std::io::copy(&mut src, &mut out).map_err(io(format!("copy {path}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_one_by_one_and_symlinks_refused() {
        let tree = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(tree.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        make_dirs(&root, "a/b/c").unwrap();
        assert!(tree.path().join("a/b/c").is_dir());
        make_dirs(&root, "a/b").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.path().join("a/link")).unwrap();
        let err = make_dirs(&root, "a/link/x").unwrap_err().to_string();
        assert!(err.contains("symlink is in the way"), "{err}");
        assert!(!outside.path().join("x").exists());
        std::fs::write(tree.path().join("a/file"), b"").unwrap();
        assert!(make_dirs(&root, "a/file/x").is_err());
    }
}
