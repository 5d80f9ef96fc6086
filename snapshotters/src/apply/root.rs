//! The target directory as a confined root: every lookup goes through `openat2` with
//! `RESOLVE_IN_ROOT` from the target's directory fd, so `..`, absolute symlinks and
//! symlinks met on the way resolve inside the target, as containerd's `fs.RootPath`
//! resolves them, and nothing an entry names can reach outside it. Entries are then
//! created with `*at` calls on the resolved parent and a single name that is never `..`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use strata_formats::tar_layer::clean_path;

/// Symlinks followed while creating missing parents before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// A directory under which all lookups are confined.
#[derive(Debug)]
pub(super) struct Root {
    fd: OwnedFd,
    /// Lower layers (topmost first) whose directory attributes a created parent copies.
    parents: Vec<OwnedFd>,
    /// Resolved parent directories by relative path. Entries of a tar come grouped by
    /// directory, so this saves a path walk per entry; it is cleared whenever anything
    /// is removed, since a removed directory may be one of them.
    dirs: HashMap<PathBuf, OwnedFd>,
}

/// Splits a cleaned relative path into its parent and its last component.
pub(super) fn split(path: &Path) -> (&Path, &OsStr) {
    let bytes = path.as_os_str().as_bytes();
    match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            Path::new(OsStr::from_bytes(&bytes[..i])),
            OsStr::from_bytes(&bytes[i + 1..]),
        ),
        None => (Path::new(""), path.as_os_str()),
    }
}

fn dot(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// Opens `dir` (a directory) read-only for fd-based calls, resolving inside `root`.
pub(super) fn open_dir_in(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat2(
        root,
        dot(path),
        flags,
        Mode::empty(),
        RESOLVE,
    )?)
}

impl Root {
    /// Opens `target` (which must be a directory) and the lower layers in `parents`.
    pub(super) fn open(target: &Path, parents: &[PathBuf]) -> io::Result<Self> {
        let open = |p: &Path| -> io::Result<OwnedFd> {
            Ok(rustix::fs::open(
                p,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        };
        Ok(Self {
            fd: open(target)?,
            parents: parents.iter().map(|p| open(p)).collect::<io::Result<_>>()?,
            dirs: HashMap::new(),
        })
    }

    /// Forgets cached directories (after a removal).
    pub(super) fn forget_dirs(&mut self) {
        self.dirs.clear();
    }

    /// The directory at `path` (relative, cleaned), opened through the root.
    pub(super) fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        open_dir_in(self.fd.as_fd(), path)
    }

    /// Makes sure the directory `path` exists, creating it and its missing ancestors
    /// (mode 0755, or the attributes of the same directory in a lower layer) when absent;
    /// [`Root::dir`] then returns it.
    pub(super) fn ensure_dir(&mut self, path: &Path) -> io::Result<()> {
        if !self.dirs.contains_key(path) {
            let fd = self.make_dirs(path, 0)?;
            self.dirs.insert(path.to_path_buf(), fd);
        }
        Ok(())
    }

    /// The directory made sure of by the last [`Root::ensure_dir`] for `path`.
    pub(super) fn dir(&self, path: &Path) -> BorrowedFd<'_> {
        self.dirs[path].as_fd()
    }

    fn make_dirs(&self, path: &Path, followed: usize) -> io::Result<OwnedFd> {
        match self.open_dir(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let (parent, name) = split(path);
        let parent_fd = self.make_dirs(parent, followed)?;
        match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => self.copy_lower_attributes(path, &parent_fd, name)?,
            Err(Errno::EXIST) => {
                // Resolution failed but the name exists: a dangling symlink. Create what it
                // points at, inside the root, as containerd's mkparent does.
                if followed >= MAX_SYMLINKS {
                    return Err(Errno::LOOP.into());
                }
                let link = rustix::fs::readlinkat(&parent_fd, name, Vec::new())?;
                let link = link.as_bytes();
                let joined = if link.starts_with(b"/") {
                    link.to_vec()
                } else {
                    let mut p = parent.as_os_str().as_bytes().to_vec();
                    p.push(b'/');
                    p.extend_from_slice(link);
                    p
                };
                self.make_dirs(&clean_path(&joined), followed + 1)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.open_dir(path)
    }

    /// Gives a directory created as a missing parent the mode, owner, times and xattrs of
    /// the same directory in the topmost lower layer that has it, so an upper layer does
    /// not change the merged view's attributes (containerd's `WithParents`).
    fn copy_lower_attributes(
        &self,
        path: &Path,
        parent_fd: &OwnedFd,
        name: &OsStr,
    ) -> io::Result<()> {
        for lower in &self.parents {
            let lower_dir = match open_dir_in(lower.as_fd(), path) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                // Replaced by a non-directory in that layer: nothing to copy.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
                Err(e) => return Err(e),
            };
            let st = rustix::fs::fstat(&lower_dir)?;
            let dir = rustix::fs::openat(
                parent_fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchown(
                &dir,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            )?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            for (key, value) in list_xattrs(&lower_dir)? {
                if !is_overlay_private(&key) {
                    rustix::fs::fsetxattr(
                        &dir,
                        key.as_os_str(),
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    )?;
                }
            }
            let times = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            rustix::fs::futimens(&dir, &times)?;
            return Ok(());
        }
        Ok(())
    }
}

/// Whether an xattr is overlayfs's own bookkeeping (`trusted.overlay.*`, `user.overlay.*`).
pub(super) fn is_overlay_private(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"trusted.overlay.") || b.starts_with(b"user.overlay.")
}

/// All xattrs of an open file.
fn list_xattrs(fd: &OwnedFd) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut names = vec![0u8; 64 << 10];
    let n = match rustix::fs::flistxattr(fd, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 64 << 10];
        let len = rustix::fs::fgetxattr(fd, OsStr::from_bytes(name), &mut value[..])?;
        value.truncate(len);
        out.push((OsString::from_vec(name.to_vec()), value));
    }
    Ok(out)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, without
/// following symlinks. A missing name is not an error.
pub(super) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(child) => empty_dir(&child)?,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside the open directory `dir`.
pub(super) fn empty_dir(dir: &OwnedFd) -> io::Result<()> {
    for name in dir_names(dir)? {
        remove_all_at(dir.as_fd(), &name)?;
    }
    Ok(())
}

/// The names in an open directory, without `.` and `..`.
pub(super) fn dir_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

/// The type of `name` in `dir`, not following a symlink; `None` when absent.
pub(super) fn type_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
