//! Filesystem changes the checks make (create, remove, chown, rename, hard-link) and
//! the comparison of two directory trees, so that a mounted snapshot can be checked
//! against the same changes applied to a plain directory.
//!
//! Modes are set with an explicit chmod after creation, so the process umask does
//! not matter. The comparison covers what an image layer carries: file type,
//! permission bits, owner, content, symlink target, device numbers, xattrs and hard
//! links within the tree; not times, and not the root directory itself (a scratch
//! directory and a snapshot root differ there by design).

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One change to a directory tree. Paths are relative to the tree's root (a leading
/// `/` is ignored).
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Writes a regular file (truncating an existing one) and sets its mode.
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    /// Creates a directory unless it exists, and sets its mode.
    Dir { path: String, mode: u32 },
    /// Removes a file or a whole directory tree; a missing path is not an error.
    RemoveAll { path: String },
    /// Changes a path's owner (not following symlinks).
    Chown { path: String, uid: u32, gid: u32 },
    /// Renames `from` to `to`. Where the filesystem refuses (overlayfs answers EXDEV
    /// for directories that come from a lower layer), moves the way `mv` does: copy,
    /// then remove.
    Rename { from: String, to: String },
    /// Makes `link` a hard link to the existing `target`.
    Link { target: String, link: String },
}

pub(crate) fn file(path: &str, content: &[u8], mode: u32) -> Change {
    Change::File {
        path: path.to_owned(),
        content: content.to_vec(),
        mode,
    }
}

pub(crate) fn dir(path: &str, mode: u32) -> Change {
    Change::Dir {
        path: path.to_owned(),
        mode,
    }
}

pub(crate) fn remove_all(path: &str) -> Change {
    Change::RemoveAll {
        path: path.to_owned(),
    }
}

pub(crate) fn chown(path: &str, uid: u32, gid: u32) -> Change {
    Change::Chown {
        path: path.to_owned(),
        uid,
        gid,
    }
}

pub(crate) fn rename(from: &str, to: &str) -> Change {
    Change::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
    }
}

pub(crate) fn link(target: &str, link: &str) -> Change {
    Change::Link {
        target: target.to_owned(),
        link: link.to_owned(),
    }
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn with_path(path: &Path, what: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

/// Applies `changes` in order below `root`.
pub(crate) fn apply(root: &Path, changes: &[Change]) -> io::Result<()> {
    for change in changes {
        apply_one(root, change)?;
    }
    Ok(())
}

fn apply_one(root: &Path, change: &Change) -> io::Result<()> {
    match change {
        Change::File {
            path,
            content,
            mode,
        } => {
            let p = under(root, path);
            fs::write(&p, content).map_err(|e| with_path(&p, "write", e))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                .map_err(|e| with_path(&p, "chmod", e))
        }
        Change::Dir { path, mode } => {
            let p = under(root, path);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(with_path(&p, "mkdir", e)),
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                .map_err(|e| with_path(&p, "chmod", e))
        }
        Change::RemoveAll { path } => {
            let p = under(root, path);
            let result = match fs::symlink_metadata(&p) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            result.map_err(|e| with_path(&p, "remove", e))
        }
        Change::Chown { path, uid, gid } => {
            let p = under(root, path);
            std::os::unix::fs::lchown(&p, Some(*uid), Some(*gid))
                .map_err(|e| with_path(&p, "chown", e))
        }
        Change::Rename { from, to } => {
            let (from, to) = (under(root, from), under(root, to));
            match fs::rename(&from, &to) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    copy_tree(&from, &to)?;
                    let meta =
                        fs::symlink_metadata(&from).map_err(|e| with_path(&from, "stat", e))?;
                    let removed = if meta.is_dir() {
                        fs::remove_dir_all(&from)
                    } else {
                        fs::remove_file(&from)
                    };
                    removed.map_err(|e| with_path(&from, "remove", e))
                }
                Err(e) => Err(with_path(&from, &format!("rename to {}:", to.display()), e)),
            }
        }
        Change::Link { target, link } => {
            let (target, link) = (under(root, target), under(root, link));
            fs::hard_link(&target, &link).map_err(|e| with_path(&link, "link", e))
        }
    }
}

/// Copies `from` to `to` keeping type, mode, owner and content (what `mv` does
/// across filesystems).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|e| with_path(from, "stat", e))?;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        fs::create_dir(to).map_err(|e| with_path(to, "mkdir", e))?;
        for entry in fs::read_dir(from).map_err(|e| with_path(from, "read directory", e))? {
            let entry = entry.map_err(|e| with_path(from, "read directory", e))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if file_type.is_symlink() {
        let target = fs::read_link(from).map_err(|e| with_path(from, "readlink", e))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| with_path(to, "symlink", e))?;
    } else if file_type.is_file() {
        fs::copy(from, to).map_err(|e| with_path(to, "copy", e))?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("copy {}: not a file, directory or symlink", from.display()),
        ));
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| with_path(to, "chown", e))?;
    if !file_type.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| with_path(to, "chmod", e))?;
    }
    Ok(())
}

/// What the comparison knows about one entry of a tree.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// `S_IFMT` bits and permission bits (including setuid, setgid, sticky).
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files: the content; symlinks: the target; otherwise empty.
    data: Vec<u8>,
    /// Character and block devices only.
    rdev: u64,
    /// Extended attributes, minus the ones a filesystem adds for itself.
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// A directory tree read into memory: entries by relative path, and the groups of
/// paths that are hard links to one file.
#[derive(Debug)]
struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
    links: Vec<Vec<PathBuf>>,
}

fn read_tree(root: &Path) -> io::Result<Tree> {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        for item in fs::read_dir(&dir).map_err(|e| with_path(&dir, "read directory", e))? {
            let item = item.map_err(|e| with_path(&dir, "read directory", e))?;
            let rel_path = rel.join(item.file_name());
            let path = root.join(&rel_path);
            let meta = fs::symlink_metadata(&path).map_err(|e| with_path(&path, "stat", e))?;
            let format = meta.mode() & libc::S_IFMT;
            let data = if meta.file_type().is_file() {
                fs::read(&path).map_err(|e| with_path(&path, "read", e))?
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .map_err(|e| with_path(&path, "readlink", e))?
                    .into_os_string()
                    .into_vec()
            } else {
                Vec::new()
            };
            let rdev = if format == libc::S_IFCHR || format == libc::S_IFBLK {
                meta.rdev()
            } else {
                0
            };
            if meta.file_type().is_dir() {
                pending.push(rel_path.clone());
            } else if meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(rel_path.clone());
            }
            let entry = Entry {
                mode: meta.mode() & (libc::S_IFMT | 0o7777),
                uid: meta.uid(),
                gid: meta.gid(),
                data,
                rdev,
                xattrs: read_xattrs(&path)?,
            };
            entries.insert(rel_path, entry);
        }
    }
    let mut links: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .collect();
    for group in &mut links {
        group.sort();
    }
    links.sort();
    Ok(Tree { entries, links })
}

/// xattrs of `path` (not following symlinks), without `security.*`, which the host
/// (SELinux, capabilities tooling) may add on one side only.
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<OsString, Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: c_path is NUL-terminated; names is a writable buffer of the given length.
        let n =
            unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(BTreeMap::new()),
            _ => return Err(with_path(path, "list xattrs", err)),
        }
    };
    let mut xattrs = BTreeMap::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"security.") {
            continue;
        }
        let c_name = CString::new(name).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "xattr name with a NUL byte")
        })?;
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated; value is a writable buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            return Err(with_path(path, "read xattr", io::Error::last_os_error()));
        }
        value.truncate(n as usize);
        xattrs.insert(OsString::from_vec(name.to_vec()), value);
    }
    Ok(xattrs)
}

/// Compares the trees below `expected` and `actual`; the error lists the first
/// differences found.
pub(crate) fn compare_trees(expected: &Path, actual: &Path) -> Result<(), String> {
    let want = read_tree(expected)
        .map_err(|e| format!("read expected tree {}: {e}", expected.display()))?;
    let got = read_tree(actual).map_err(|e| format!("read tree {}: {e}", actual.display()))?;
    let mut differences = Vec::new();
    for (path, entry) in &want.entries {
        match got.entries.get(path) {
            None => differences.push(format!("/{} is missing", path.display())),
            Some(other) if other != entry => differences.push(format!(
                "/{} differs: expected {}, found {}",
                path.display(),
                describe(entry),
                describe(other)
            )),
            Some(_) => {}
        }
    }
    for path in got
        .entries
        .keys()
        .filter(|p| !want.entries.contains_key(*p))
    {
        differences.push(format!("/{} should not exist", path.display()));
    }
    if want.links != got.links {
        differences.push(format!(
            "hard links differ: expected {:?}, found {:?}",
            want.links, got.links
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    let total = differences.len();
    differences.truncate(10);
    Err(format!(
        "{} differs from {} ({total} differences): {}",
        actual.display(),
        expected.display(),
        differences.join("; ")
    ))
}

fn describe(entry: &Entry) -> String {
    let shown = String::from_utf8_lossy(&entry.data[..entry.data.len().min(64)]).into_owned();
    format!(
        "mode {:o} owner {}:{} data {:?} ({} bytes) rdev {} xattrs {:?}",
        entry.mode,
        entry.uid,
        entry.gid,
        shown,
        entry.data.len(),
        entry.rdev,
        entry.xattrs.keys().collect::<Vec<_>>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(changes: &[Change]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        apply(dir.path(), changes).expect("apply changes");
        dir
    }

    fn base() -> Vec<Change> {
        vec![
            dir("/d", 0o750),
            file("/d/f", b"content", 0o640),
            file("/g", b"g", 0o600),
        ]
    }

    #[test]
    fn equal_trees_compare_equal() {
        let (a, b) = (tree(&base()), tree(&base()));
        assert_eq!(compare_trees(a.path(), b.path()), Ok(()));
    }

    #[test]
    fn modes_are_set_exactly_whatever_the_umask() {
        let t = tree(&[dir("/open", 0o777), file("/open/x", b"", 0o4755)]);
        let mode = |p: &str| fs::symlink_metadata(t.path().join(p)).expect("stat").mode() & 0o7777;
        assert_eq!(mode("open"), 0o777);
        assert_eq!(mode("open/x"), 0o4755);
    }

    #[test]
    fn each_kind_of_difference_is_reported() {
        let cases: Vec<(Vec<Change>, &str)> = vec![
            (vec![file("/d/f", b"other", 0o640)], "/d/f differs"),
            (vec![file("/d/f", b"content", 0o644)], "/d/f differs"),
            (vec![dir("/d", 0o755)], "/d differs"),
            (vec![chown("/g", 1, 1)], "/g differs"),
            (vec![remove_all("/g")], "/g is missing"),
            (vec![file("/extra", b"", 0o600)], "/extra should not exist"),
            (vec![link("/g", "/d/g-link")], "/d/g-link should not exist"),
        ];
        let expected = tree(&base());
        for (changes, message) in cases {
            let mut all = base();
            all.extend(changes.iter().cloned());
            let actual = tree(&all);
            let err = compare_trees(expected.path(), actual.path()).expect_err(message);
            assert!(err.contains(message), "{message}: {err}");
        }
    }

    #[test]
    fn hard_links_are_compared_as_groups() {
        let linked = tree(&[file("/a", b"same", 0o644), link("/a", "/b")]);
        let copied = tree(&[file("/a", b"same", 0o644), file("/b", b"same", 0o644)]);
        let err = compare_trees(linked.path(), copied.path()).expect_err("a copy is not a link");
        assert!(err.contains("hard links differ"), "{err}");
        let relinked = tree(&[file("/a", b"same", 0o644), link("/a", "/b")]);
        assert_eq!(compare_trees(linked.path(), relinked.path()), Ok(()));
    }

    #[test]
    fn rename_and_remove_change_the_tree() {
        let t = tree(&[
            dir("/dir1", 0o700),
            file("/dir1/f", b"x", 0o600),
            rename("/dir1", "/dir2"),
            remove_all("/missing"),
        ]);
        let expected = tree(&[dir("/dir2", 0o700), file("/dir2/f", b"x", 0o600)]);
        assert_eq!(compare_trees(expected.path(), t.path()), Ok(()));
    }

    #[test]
    fn copy_tree_keeps_modes_owners_and_links() {
        let src = tree(&[
            dir("/d", 0o711),
            file("/d/f", b"data", 0o4750),
            chown("/d/f", 7, 8),
        ]);
        std::os::unix::fs::symlink("f", src.path().join("d/s")).expect("symlink");
        let dst = tempfile::tempdir().expect("create a temporary directory");
        copy_tree(&src.path().join("d"), &dst.path().join("d")).expect("copy");
        assert_eq!(compare_trees(src.path(), dst.path()), Ok(()));
    }
}
