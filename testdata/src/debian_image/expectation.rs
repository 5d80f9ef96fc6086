//! What an unpacked tree of the Debian fixture must show ([`Expectation`]),
//! recorded while the layers are planned and checked against a [`FileTree`].

use std::path::PathBuf;

use crate::file_tree::{FileTree, Kind};

/// One effect of the layers that an unpacked tree must show. Paths are
/// relative to the root (`usr/bin/su`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Deleted by a whiteout (or hidden by an opaque directory or a deleted parent).
    Absent(String),
    /// The path has this kind (e.g. a file that replaced a directory).
    Kind {
        /// The path.
        path: String,
        /// Its kind.
        kind: Kind,
    },
    /// A directory holds exactly these names (e.g. an opaque directory).
    Children {
        /// The directory.
        dir: String,
        /// Its entries' names, sorted.
        names: Vec<String>,
    },
    /// A regular file has these bytes (given as their SHA-256 hex).
    Content {
        /// The file.
        path: String,
        /// Lowercase hex SHA-256.
        sha256: String,
    },
    /// Permission bits, setuid/setgid/sticky included.
    Mode {
        /// The path.
        path: String,
        /// E.g. `0o4755`.
        mode: u32,
    },
    /// Owner ids.
    Owner {
        /// The path.
        path: String,
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
    /// An extended attribute and its value.
    Xattr {
        /// The path.
        path: String,
        /// Full name, e.g. `security.capability`.
        name: String,
        /// Raw value.
        value: Vec<u8>,
    },
    /// These paths share one inode (and no other path of the tree does).
    Hardlinked(Vec<String>),
    /// The path's inode is not shared with another path of the tree.
    NotHardlinked(String),
    /// A character device with these numbers.
    CharDevice {
        /// The path.
        path: String,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl Expectation {
    /// `None` when `tree` shows this effect, else what is wrong.
    pub fn check(&self, tree: &FileTree) -> Option<String> {
        let entry = |path: &str| tree.get(path);
        let missing = |path: &str| Some(format!("{path}: missing, {self:?}"));
        match self {
            Expectation::Absent(path) => {
                entry(path).map(|e| format!("{path}: present as {}, should be deleted", e.kind))
            }
            Expectation::Kind { path, kind } => match entry(path) {
                None => missing(path),
                Some(e) if e.kind != *kind => Some(format!("{path}: {} instead of {kind}", e.kind)),
                Some(_) => None,
            },
            Expectation::Children { dir, names } => match entry(dir) {
                None => missing(dir),
                Some(e) if e.kind != Kind::Dir => {
                    Some(format!("{dir}: {} instead of directory", e.kind))
                }
                Some(_) => {
                    let got = tree.children(dir);
                    (got != *names).then(|| format!("{dir}: holds {got:?} instead of {names:?}"))
                }
            },
            Expectation::Content { path, sha256 } => match entry(path) {
                None => missing(path),
                Some(e) => (e.sha256.as_ref() != Some(sha256))
                    .then(|| format!("{path}: sha256 {:?} instead of {sha256}", e.sha256)),
            },
            Expectation::Mode { path, mode } => match entry(path) {
                None => missing(path),
                Some(e) => (e.mode != *mode)
                    .then(|| format!("{path}: mode {:04o} instead of {mode:04o}", e.mode)),
            },
            Expectation::Owner { path, uid, gid } => match entry(path) {
                None => missing(path),
                Some(e) => ((e.uid, e.gid) != (*uid, *gid))
                    .then(|| format!("{path}: owner {}:{} instead of {uid}:{gid}", e.uid, e.gid)),
            },
            Expectation::Xattr { path, name, value } => match entry(path) {
                None => missing(path),
                Some(e) => (e.xattrs.get(name) != Some(value)).then(|| {
                    format!(
                        "{path}: xattr {name} is {:?} instead of {value:?}",
                        e.xattrs.get(name)
                    )
                }),
            },
            Expectation::Hardlinked(paths) => {
                let groups: Vec<_> = paths
                    .iter()
                    .map(|p| entry(p).map(|e| e.hardlink_group.clone()))
                    .collect();
                let expected = paths.iter().min().map(PathBuf::from);
                let linked = groups
                    .iter()
                    .all(|g| matches!(g, Some(Some(group)) if Some(group) == expected.as_ref()));
                let group_size = tree
                    .entries()
                    .values()
                    .filter(|e| e.hardlink_group.is_some() && e.hardlink_group == expected)
                    .count();
                (!linked || group_size != paths.len()).then(|| {
                    format!("{paths:?}: hardlink groups {groups:?}, {group_size} paths in group")
                })
            }
            Expectation::NotHardlinked(path) => match entry(path) {
                None => missing(path),
                Some(e) => e
                    .hardlink_group
                    .as_ref()
                    .map(|g| format!("{path}: hardlinked with {}", g.display())),
            },
            Expectation::CharDevice { path, major, minor } => match entry(path) {
                None => missing(path),
                Some(e) => {
                    (e.kind != Kind::CharDevice || e.device != Some((*major, *minor))).then(|| {
                        format!(
                            "{path}: {} {:?} instead of char device {major}:{minor}",
                            e.kind, e.device
                        )
                    })
                }
            },
        }
    }
}
