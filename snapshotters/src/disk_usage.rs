//! Measuring what a directory tree uses on disk, as containerd's `fs.DiskUsage` does:
//! every inode counted once (hard links share one), size as allocated blocks (512-byte
//! units, like `du`), the root directory included. Symbolic links are not followed.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Usage;

/// The usage of the tree at `root`.
///
/// Entries that vanish while the tree is walked (an active snapshot in use) are skipped.
///
/// # Errors
///
/// `root` cannot be read, or a directory in it cannot be listed.
pub fn disk_usage(root: &Path) -> io::Result<Usage> {
    let context = |path: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("disk usage of {}: {e}", path.display()))
    };
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut size: i64 = 0;
    let mut count = |meta: &std::fs::Metadata, size: &mut i64| {
        if seen.insert((meta.dev(), meta.ino())) {
            *size = size.saturating_add(
                i64::try_from(meta.blocks())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(512),
            );
        }
    };
    let meta = std::fs::symlink_metadata(root).map_err(|e| context(root, e))?;
    count(&meta, &mut size);
    let mut pending: Vec<PathBuf> = if meta.is_dir() {
        vec![root.to_path_buf()]
    } else {
        Vec::new()
    };
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(context(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| context(&dir, e))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(context(&entry.path(), e)),
            };
            count(&meta, &mut size);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(Usage {
        inodes: i64::try_from(seen.len()).unwrap_or(i64::MAX),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn blocks(path: &Path) -> i64 {
        std::fs::symlink_metadata(path).unwrap().blocks() as i64 * 512
    }

    #[test]
    fn counts_hardlinks_once_and_symlinks_unfollowed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), vec![7u8; 10_000]).unwrap();
        std::fs::hard_link(root.join("sub/file"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let usage = disk_usage(&root).unwrap();
        // root, sub, file (twice linked, once counted), symlink.
        assert_eq!(usage.inodes, 4);
        let want = blocks(&root)
            + blocks(&root.join("sub"))
            + blocks(&root.join("sub/file"))
            + blocks(&root.join("etc"));
        assert_eq!(usage.size, want);
        assert!(usage.size >= 10_000);
    }

    #[test]
    fn sparse_files_count_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 2);
        assert!(usage.size < 1 << 20, "{usage:?}");
    }

    #[test]
    fn missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_usage(&dir.path().join("absent")).is_err());
    }
}
