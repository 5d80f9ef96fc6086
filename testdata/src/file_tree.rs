//! A file tree captured from disk ([`FileTree`]) and compared with another
//! one ([`FileTree::diff`]), to check that two ways of unpacking the same
//! image (a snapshotter's mount, `umoci unpack`, GNU tar) give the same tree.
//!
//! Every path below the root is recorded with its kind, permission bits
//! (setuid, setgid and sticky included), owner, size, SHA-256 of a regular
//! file's bytes, symlink target, device numbers, extended attributes and
//! hardlink group. The root directory itself is left out: its metadata
//! belongs to whoever made the mount point or bundle, not to the image.
//!
//! What is deliberately not compared:
//! * directory sizes (they depend on the filesystem and its history);
//! * `trusted.overlay.*` xattrs (overlayfs bookkeeping: opaque markers,
//!   redirects, origin file handles, which a merged overlay mount never
//!   shows but its upper directory does);
//! * modification times unless asked for ([`Mtimes`]): reference unpackers
//!   disagree on directory mtimes, since adding an entry touches its parent.
//!
//! Hardlinks are recorded as a group id: the smallest path (in the tree's
//! order) of the files sharing that inode, so two trees with the same links
//! get the same ids whatever their inode numbers. An inode seen at only one
//! path in the tree has no group, even if its link count is higher.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Prefix of the xattrs overlayfs keeps for itself (left out of a capture).
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// The kind of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    fn of(file_type: fs::FileType) -> Kind {
        if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_char_device() {
            Kind::CharDevice
        } else if file_type.is_block_device() {
            Kind::BlockDevice
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "char device",
            Kind::BlockDevice => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        })
    }
}

/// What a [`FileTree`] records about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The file's kind.
    pub kind: Kind,
    /// Permission bits including setuid (`0o4000`), setgid and sticky.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Length of a regular file or of a symlink's target; 0 for the rest.
    pub size: u64,
    /// Lowercase hex SHA-256 of a regular file's bytes.
    pub sha256: Option<String>,
    /// A symlink's target, verbatim.
    pub link_target: Option<PathBuf>,
    /// `(major, minor)` of a character or block device.
    pub device: Option<(u32, u32)>,
    /// Extended attributes by name, without `trusted.overlay.*`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The smallest path sharing this inode, when more than one path of the
    /// tree does.
    pub hardlink_group: Option<PathBuf>,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime: (i64, u32),
}

/// Which modification times [`FileTree::diff_with`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mtimes {
    /// None (what [`FileTree::diff`] does).
    #[default]
    Ignore,
    /// Everything but directories.
    ExceptDirs,
    /// All entries.
    All,
}

/// A captured file tree: relative path → entry, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileTree {
    entries: BTreeMap<PathBuf, TreeEntry>,
}

impl FileTree {
    /// Captures every path below `root` (not following symlinks, not
    /// including `root` itself). Regular files are read and hashed.
    pub fn capture(root: &Path) -> io::Result<FileTree> {
        let mut entries = BTreeMap::new();
        let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let full_dir = root.join(&dir);
            let listing = fs::read_dir(&full_dir).map_err(with_path(&full_dir))?;
            for item in listing {
                let item = item.map_err(with_path(&full_dir))?;
                let rel = dir.join(item.file_name());
                let full = root.join(&rel);
                let meta = fs::symlink_metadata(&full).map_err(with_path(&full))?;
                let entry = capture_entry(&full, &meta)?;
                match entry.kind {
                    Kind::Dir => pending.push(rel.clone()),
                    _ => inodes
                        .entry((meta.dev(), meta.ino()))
                        .or_default()
                        .push(rel.clone()),
                }
                entries.insert(rel, entry);
            }
        }
        for mut paths in inodes.into_values().filter(|paths| paths.len() > 1) {
            paths.sort();
            let group = paths[0].clone();
            for path in &paths {
                if let Some(entry) = entries.get_mut(path) {
                    entry.hardlink_group = Some(group.clone());
                }
            }
        }
        Ok(FileTree { entries })
    }

    /// The entry at `path` (relative to the root, e.g. `usr/bin/su`).
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&TreeEntry> {
        self.entries.get(path.as_ref())
    }

    /// All entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<PathBuf, TreeEntry> {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names of the direct children of directory `dir`, sorted.
    pub fn children(&self, dir: impl AsRef<Path>) -> Vec<String> {
        let dir = dir.as_ref();
        self.entries
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    /// Sum of regular file sizes (each hardlinked inode counted once).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(path, entry)| {
                entry.kind == Kind::File
                    && entry
                        .hardlink_group
                        .as_ref()
                        .is_none_or(|group| group == *path)
            })
            .map(|(_, entry)| entry.size)
            .sum()
    }

    /// The differences from `other`, one readable line each, ignoring
    /// modification times; empty when the trees are equal.
    pub fn diff(&self, other: &FileTree) -> Vec<String> {
        self.diff_with(other, Mtimes::Ignore)
    }

    /// Like [`FileTree::diff`], comparing the modification times `mtimes` selects.
    pub fn diff_with(&self, other: &FileTree, mtimes: Mtimes) -> Vec<String> {
        let mut out = Vec::new();
        let mut left = self.entries.iter().peekable();
        let mut right = other.entries.iter().peekable();
        loop {
            match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some((path, _)), None) => {
                    out.push(format!("{}: only in left", path.display()));
                    left.next();
                }
                (None, Some((path, _))) => {
                    out.push(format!("{}: only in right", path.display()));
                    right.next();
                }
                (Some((lp, le)), Some((rp, re))) => match lp.cmp(rp) {
                    std::cmp::Ordering::Less => {
                        out.push(format!("{}: only in left", lp.display()));
                        left.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push(format!("{}: only in right", rp.display()));
                        right.next();
                    }
                    std::cmp::Ordering::Equal => {
                        entry_diff(lp, le, re, mtimes, &mut out);
                        left.next();
                        right.next();
                    }
                },
            }
        }
        out
    }
}

fn entry_diff(
    path: &Path,
    left: &TreeEntry,
    right: &TreeEntry,
    mtimes: Mtimes,
    out: &mut Vec<String>,
) {
    let path = path.display();
    if left.kind != right.kind {
        out.push(format!("{path}: {} != {}", left.kind, right.kind));
        return;
    }
    let mut field = |name: &str, l: String, r: String| {
        if l != r {
            out.push(format!("{path}: {name} {l} != {r}"));
        }
    };
    field(
        "mode",
        format!("{:04o}", left.mode),
        format!("{:04o}", right.mode),
    );
    field(
        "owner",
        format!("{}:{}", left.uid, left.gid),
        format!("{}:{}", right.uid, right.gid),
    );
    field("size", left.size.to_string(), right.size.to_string());
    field(
        "sha256",
        format!("{:?}", left.sha256),
        format!("{:?}", right.sha256),
    );
    field(
        "link target",
        format!("{:?}", left.link_target),
        format!("{:?}", right.link_target),
    );
    field(
        "device",
        format!("{:?}", left.device),
        format!("{:?}", right.device),
    );
    field(
        "hardlink group",
        format!("{:?}", left.hardlink_group),
        format!("{:?}", right.hardlink_group),
    );
    let names = left.xattrs.keys().chain(right.xattrs.keys());
    let mut seen = std::collections::BTreeSet::new();
    for name in names.filter(|name| seen.insert(*name)) {
        let show =
            |value: Option<&Vec<u8>>| value.map_or("(absent)".to_owned(), |v| escape_bytes(v));
        field(
            &format!("xattr {name}"),
            show(left.xattrs.get(name)),
            show(right.xattrs.get(name)),
        );
    }
    let compare_mtime = match mtimes {
        Mtimes::Ignore => false,
        Mtimes::ExceptDirs => left.kind != Kind::Dir,
        Mtimes::All => true,
    };
    if compare_mtime {
        field(
            "mtime",
            format!("{}.{:09}", left.mtime.0, left.mtime.1),
            format!("{}.{:09}", right.mtime.0, right.mtime.1),
        );
    }
}

/// Printable form of an xattr value: ASCII as is, other bytes as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|byte| std::ascii::escape_default(*byte))
        .map(char::from)
        .collect()
}

fn capture_entry(full: &Path, meta: &fs::Metadata) -> io::Result<TreeEntry> {
    let kind = Kind::of(meta.file_type());
    let mut entry = TreeEntry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: 0,
        sha256: None,
        link_target: None,
        device: None,
        xattrs: read_xattrs(full)?,
        hardlink_group: None,
        mtime: (meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0)),
    };
    match kind {
        Kind::File => {
            let (size, digest) = hash_file(full)?;
            entry.size = size;
            entry.sha256 = Some(digest);
        }
        Kind::Symlink => {
            let target = fs::read_link(full).map_err(with_path(full))?;
            entry.size = target.as_os_str().len() as u64;
            entry.link_target = Some(target);
        }
        Kind::CharDevice | Kind::BlockDevice => {
            let rdev = meta.rdev();
            entry.device = Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)));
        }
        Kind::Dir | Kind::Fifo | Kind::Socket => {}
    }
    Ok(entry)
}

/// Streams a file through SHA-256; returns its length and hex digest.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path).map_err(with_path(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(with_path(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Every xattr of `path` (not following a symlink), minus overlayfs's own.
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let len = rustix::fs::llistxattr_query(path)
        .map_err(io::Error::from)
        .map_err(with_path(path))?;
    if len == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; len];
    let len = rustix::fs::llistxattr(path, &mut names[..])
        .map_err(io::Error::from)
        .map_err(with_path(path))?;
    names.truncate(len);
    for name in names
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let size = rustix::fs::lgetxattr_query(path, name.as_str())
            .map_err(io::Error::from)
            .map_err(with_path(path))?;
        let mut value = vec![0u8; size];
        if size > 0 {
            let got = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])
                .map_err(io::Error::from)
                .map_err(with_path(path))?;
            value.truncate(got);
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// Wraps an I/O error with the path it happened on.
fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |error| io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/file"), b"hello").unwrap();
        fs::hard_link(root.join("a/file"), root.join("a/b/link")).unwrap();
        symlink("../file", root.join("a/b/sym")).unwrap();
        fs::write(root.join("setuid"), b"x").unwrap();
        fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        rustix::fs::lsetxattr(
            root.join("a/file"),
            "user.test",
            b"v\x00\xff",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    #[test]
    fn captures_kinds_modes_links_and_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let tree = FileTree::capture(dir.path()).unwrap();
        let paths: Vec<String> = tree
            .entries()
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            paths,
            ["a", "a/b", "a/b/link", "a/b/sym", "a/file", "setuid"]
        );
        let file = tree.get("a/file").unwrap();
        assert_eq!(file.kind, Kind::File);
        assert_eq!(file.size, 5);
        assert_eq!(
            file.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(file.xattrs["user.test"], b"v\x00\xff");
        assert_eq!(file.hardlink_group, Some(PathBuf::from("a/b/link")));
        assert_eq!(
            tree.get("a/b/link").unwrap().hardlink_group,
            file.hardlink_group
        );
        let sym = tree.get("a/b/sym").unwrap();
        assert_eq!(sym.kind, Kind::Symlink);
        assert_eq!(sym.link_target, Some(PathBuf::from("../file")));
        assert_eq!(tree.get("setuid").unwrap().mode, 0o4755);
        assert_eq!(tree.children("a"), ["b", "file"]);
        assert_eq!(tree.file_bytes(), 6);
    }

    #[test]
    fn diff_names_each_difference() {
        let left = tempfile::tempdir().unwrap();
        let right = tempfile::tempdir().unwrap();
        sample(left.path());
        sample(right.path());
        let capture = |dir: &Path| FileTree::capture(dir).unwrap();
        assert_eq!(
            capture(left.path()).diff(&capture(right.path())),
            Vec::<String>::new()
        );

        fs::write(right.path().join("a/file"), b"hellp").unwrap();
        fs::set_permissions(
            right.path().join("setuid"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::remove_file(right.path().join("a/b/sym")).unwrap();
        fs::write(right.path().join("extra"), b"").unwrap();
        rustix::fs::lremovexattr(right.path().join("a/file"), "user.test").unwrap();
        let diff = capture(left.path()).diff(&capture(right.path()));
        assert!(
            diff.iter().any(|d| d.starts_with("a/file: sha256")),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"a/file: xattr user.test v\\x00\\xff != (absent)".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"setuid: mode 4755 != 0755".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"a/b/sym: only in left".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"extra: only in right".to_owned()),
            "{diff:?}"
        );
    }

    #[test]
    fn mtimes_are_compared_only_when_asked() {
        let left = tempfile::tempdir().unwrap();
        let right = tempfile::tempdir().unwrap();
        for root in [left.path(), right.path()] {
            fs::create_dir(root.join("d")).unwrap();
            fs::write(root.join("f"), b"same").unwrap();
        }
        let set = |path: PathBuf, secs: i64| {
            let time = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: secs,
                    tv_nsec: 0,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: secs,
                    tv_nsec: 0,
                },
            };
            rustix::fs::utimensat(rustix::fs::CWD, &path, &time, rustix::fs::AtFlags::empty())
                .unwrap();
        };
        set(left.path().join("d"), 1);
        set(right.path().join("d"), 2);
        set(left.path().join("f"), 3);
        set(right.path().join("f"), 3);
        let l = FileTree::capture(left.path()).unwrap();
        let r = FileTree::capture(right.path()).unwrap();
        assert!(l.diff(&r).is_empty());
        assert!(l.diff_with(&r, Mtimes::ExceptDirs).is_empty());
        assert_eq!(
            l.diff_with(&r, Mtimes::All),
            ["d: mtime 1.000000000 != 2.000000000"]
        );
    }
}
