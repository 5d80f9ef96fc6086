//! The image's file tree as [`crate::prefetch`] sees it ([`RootFs`]), path resolution
//! inside it (symlinks followed within the root, `..` clamped at `/`), and [`MemRootFs`],
//! an in-memory tree.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::PrefetchError;
use crate::read_at::ReadAt;

/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINKS: usize = 40;
/// Longest path (or symlink target) considered, as Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;

/// What a path names, without following a final symlink (`lstat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file (or a hard link to one).
    Regular,
    /// A symbolic link and its target, as stored.
    Symlink(String),
    /// A directory.
    Dir,
    /// A device, FIFO or socket.
    Other,
}

/// Read access to an image's merged root filesystem (after whiteouts).
///
/// Paths handed to these methods are absolute and normalized (`/a/b`, no `.`, `..`, `//` or
/// trailing `/`; the root is `/`), and every component but the last has already been
/// resolved to a directory, so an implementation over a layer index is a plain map lookup.
/// Implementations see untrusted paths and must not panic on any.
pub trait RootFs {
    /// What `path` is, not following a final symlink; `None` if it does not exist.
    fn lookup(&self, path: &str) -> Option<FileKind>;

    /// The contents of the regular file at `path`; `None` if it is not one.
    fn open(&self, path: &str) -> Option<Box<dyn ReadAt + '_>>;

    /// The names (not paths) of the entries of directory `path`, in any order; empty if it
    /// is not a directory.
    fn read_dir(&self, path: &str) -> Vec<String>;
}

/// A path resolved inside a [`RootFs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The final, symlink-free absolute path.
    pub path: String,
    /// What it is (never a symlink).
    pub kind: FileKind,
    /// Every symlink followed on the way, in the order they were followed.
    pub symlinks: Vec<String>,
}

/// Joins `path` onto `base` (if relative) and normalizes it lexically, clamping `..` at `/`.
pub fn normalize(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = if path.starts_with('/') {
        [path, ""]
    } else {
        [base, path]
    };
    for comp in joined.iter().flat_map(|p| p.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The directory part of a normalized absolute path (`/` for `/x` and `/`).
pub(super) fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `dir/name` for a normalized absolute `dir`.
pub(super) fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolves `path` (relative to the directory `cwd` if not absolute; symlinks in `cwd`
/// are followed too, and listed) in `fs`, following every symlink
/// within the root as the kernel would if the root were `chroot`ed: an absolute target
/// restarts at the image's `/`, and `..` never climbs above it.
///
/// Errors: [`PrefetchError::NotFound`] if a component is missing or a non-directory is
/// traversed, [`PrefetchError::SymlinkLoop`] past [`MAX_SYMLINKS`] links.
pub fn resolve(fs: &dyn RootFs, cwd: &str, path: &str) -> Result<Resolved, PrefetchError> {
    let not_found = || PrefetchError::NotFound {
        path: path.to_owned(),
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(not_found());
    }
    // A relative path is walked from `/` through `cwd`, so symlinks in the working
    // directory are followed before a `..` applies, as for a process that `chdir`ed there.
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{cwd}/{path}")
    };
    if full.len() > 2 * MAX_PATH_LEN {
        return Err(not_found());
    }
    let mut cur: Vec<String> = Vec::new();
    // Components still to walk, last first, so a symlink's target is pushed on top.
    let mut pending: Vec<String> = full.split('/').rev().map(str::to_owned).collect();
    let mut symlinks = Vec::new();
    let mut kind = FileKind::Dir;
    while let Some(comp) = pending.pop() {
        if kind != FileKind::Dir {
            return Err(not_found()); // ENOTDIR: nothing, not even `.`, follows a file
        }
        match comp.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate = child_path(&format!("/{}", cur.join("/")), &comp);
        match fs.lookup(&candidate) {
            None => return Err(not_found()),
            Some(FileKind::Symlink(target)) => {
                if symlinks.len() >= MAX_SYMLINKS {
                    return Err(PrefetchError::SymlinkLoop {
                        path: path.to_owned(),
                    });
                }
                if target.is_empty() || target.len() > MAX_PATH_LEN {
                    return Err(not_found());
                }
                symlinks.push(candidate);
                if target.starts_with('/') {
                    cur.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_owned));
                kind = FileKind::Dir; // the link's parent, where the target is walked from
            }
            Some(k) => {
                cur.push(comp);
                kind = k;
            }
        }
    }
    Ok(Resolved {
        path: format!("/{}", cur.join("/")),
        kind,
        symlinks,
    })
}

#[derive(Debug, Clone)]
enum MemEntry {
    File(Arc<[u8]>),
    Symlink(String),
    Dir,
    Other,
}

/// An in-memory [`RootFs`]: a map from normalized path to entry, with parent directories
/// created implicitly. For tests, and for callers that assemble a small tree by hand.
#[derive(Debug, Clone)]
pub struct MemRootFs {
    entries: BTreeMap<String, MemEntry>,
}

impl Default for MemRootFs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemRootFs {
    /// A tree holding only `/`.
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::from([("/".to_owned(), MemEntry::Dir)]),
        }
    }

    /// Adds an entry of `kind` at `path` (normalized against `/`), replacing any entry
    /// there; `data` is the content of a regular file and ignored otherwise. The root
    /// stays a directory: an entry that normalizes to `/` is ignored.
    pub fn insert(&mut self, path: &str, kind: FileKind, data: &[u8]) -> &mut Self {
        let path = normalize("/", path);
        if path == "/" {
            return self;
        }
        let mut dir = dirname(&path).to_owned();
        while dir != "/" {
            self.entries.entry(dir.clone()).or_insert(MemEntry::Dir);
            dir = dirname(&dir).to_owned();
        }
        let entry = match kind {
            FileKind::Regular => MemEntry::File(Arc::from(data)),
            FileKind::Symlink(t) => MemEntry::Symlink(t),
            FileKind::Dir => MemEntry::Dir,
            FileKind::Other => MemEntry::Other,
        };
        self.entries.insert(path, entry);
        self
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.insert(path, FileKind::Regular, data)
    }

    /// Adds a symlink to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, FileKind::Symlink(target.to_owned()), &[])
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.insert(path, FileKind::Dir, &[])
    }
}

impl RootFs for MemRootFs {
    fn lookup(&self, path: &str) -> Option<FileKind> {
        Some(match self.entries.get(path)? {
            MemEntry::File(_) => FileKind::Regular,
            MemEntry::Symlink(t) => FileKind::Symlink(t.clone()),
            MemEntry::Dir => FileKind::Dir,
            MemEntry::Other => FileKind::Other,
        })
    }

    fn open(&self, path: &str) -> Option<Box<dyn ReadAt + '_>> {
        match self.entries.get(path)? {
            MemEntry::File(data) => Some(Box::new(Arc::clone(data))),
            _ => None,
        }
    }

    fn read_dir(&self, path: &str) -> Vec<String> {
        if !matches!(self.entries.get(path), Some(MemEntry::Dir)) {
            return Vec::new();
        }
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                k.get(prefix.len()..)
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            })
            .map(str::to_owned)
            .collect()
    }
}
