//! Writing one tar entry into the confined root, in containerd's order: replace what is
//! in the way (a directory over a directory merges), create, write the payload, then
//! owner, xattrs, mode (after chown, which clears setuid bits) and times; directories get
//! their times after everything inside them is written.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use strata_formats::tar_layer::{Entry, EntryKind, TarLayer, TarLayerError, Timestamp};

use super::root::{is_overlay_private, remove_all_at, split, type_at};
use super::{Applier, ApplyError, WhiteoutMode};

/// A time containerd would set: anything before the epoch or past what a 64-bit
/// nanosecond count holds becomes the epoch (its `boundTime`).
fn bound(t: Timestamp) -> Timespec {
    const MAX_SECS: i64 = i64::MAX / 1_000_000_000;
    if t.secs < 0 || t.secs > MAX_SECS {
        return Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
    }
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos) as _,
    }
}

/// Access and modification times: containerd sets atime to the later of the two.
fn times(entry: &Entry) -> Timestamps {
    let atime = entry.atime.map_or(entry.mtime, |a| a.max(entry.mtime));
    Timestamps {
        last_access: bound(atime),
        last_modification: bound(entry.mtime),
    }
}

pub(super) fn owner(entry: &Entry) -> io::Result<(Uid, Gid)> {
    let id = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} {v} is out of range"),
            )
        })
    };
    Ok((
        Uid::from_raw(id(entry.uid, "uid")?),
        Gid::from_raw(id(entry.gid, "gid")?),
    ))
}

/// Runs `create`; if the name exists, removes it (a directory with its contents) and runs
/// it again. Returns what `create` made and whether something was removed.
fn create_replacing<T>(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mut create: impl FnMut() -> rustix::io::Result<T>,
) -> io::Result<(T, bool)> {
    match create() {
        Ok(made) => Ok((made, false)),
        Err(Errno::EXIST) => {
            remove_all_at(dir, name)?;
            Ok((create()?, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path for the calls that have no `*at` form
/// (`lsetxattr`); the directory is the already-confined fd, the name is one component.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Copies the payload into `file`; a sparse file's segments are written at their
/// offsets and its size set, so holes stay holes.
fn write_payload<R: Read>(
    tar: &mut TarLayer<R>,
    entry: &Entry,
    file: &File,
    buf: &mut [u8],
    layer: &str,
) -> Result<(), ApplyError> {
    let read_error = |source: TarLayerError| ApplyError::Read {
        layer: layer.to_owned(),
        source,
    };
    let write_error = |source: io::Error| ApplyError::Write {
        layer: layer.to_owned(),
        entry: entry.display_path(),
        context: "writing the file".into(),
        source,
    };
    match &entry.sparse {
        None => {
            let mut out = file;
            loop {
                let n = buf
                    .len()
                    .min(usize::try_from(tar.remaining()).unwrap_or(usize::MAX));
                if n == 0 {
                    return Ok(());
                }
                tar.read_data_exact(&mut buf[..n]).map_err(read_error)?;
                out.write_all(&buf[..n]).map_err(write_error)?;
            }
        }
        Some(map) => {
            for segment in map {
                let mut offset = segment.offset;
                let end = segment.offset + segment.length;
                while offset < end {
                    let n = buf
                        .len()
                        .min(usize::try_from(end - offset).unwrap_or(usize::MAX));
                    tar.read_data_exact(&mut buf[..n]).map_err(read_error)?;
                    file.write_all_at(&buf[..n], offset).map_err(write_error)?;
                    offset += n as u64;
                }
            }
            file.set_len(entry.size).map_err(write_error)
        }
    }
}

/// Where an entry's xattrs go.
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Path(std::path::PathBuf),
}

impl Applier<'_> {
    /// Applies every entry of `tar`.
    pub(super) fn run<R: Read>(&mut self, tar: &mut TarLayer<R>) -> Result<(), ApplyError> {
        let read_error = |source: TarLayerError| ApplyError::Read {
            layer: self.options.layer.clone(),
            source,
        };
        loop {
            let Some(entry) = tar.next_entry().map_err(read_error)? else {
                return Ok(());
            };
            self.entries += 1;
            // The root itself: containerd ignores entries that resolve to it.
            if entry.path.as_os_str().is_empty() {
                continue;
            }
            match &entry.kind {
                EntryKind::Whiteout { target } => self.whiteout(&entry, target)?,
                EntryKind::OpaqueWhiteout { dir } => self.opaque(&entry, dir)?,
                _ => {
                    self.create(tar, &entry)?;
                    if self.options.whiteouts == WhiteoutMode::Delete {
                        self.unpacked.insert(entry.path.clone());
                    }
                }
            }
        }
    }

    /// An error about `entry` while doing `context`.
    pub(super) fn fail<C: Into<String>>(
        &self,
        entry: &Entry,
        context: C,
    ) -> impl FnOnce(io::Error) -> ApplyError + use<C> {
        let (layer, path, context) = (
            self.options.layer.clone(),
            entry.display_path(),
            context.into(),
        );
        move |source| ApplyError::Write {
            layer,
            entry: path,
            context,
            source,
        }
    }

    fn create<R: Read>(&mut self, tar: &mut TarLayer<R>, entry: &Entry) -> Result<(), ApplyError> {
        let (parent, name) = split(&entry.path);
        self.root
            .ensure_dir(parent)
            .map_err(self.fail(entry, "creating the parent directory"))?;
        let dir = self.root.dir(parent);
        let perm = Mode::from_raw_mode(entry.mode & 0o777);
        let mut removed = false;
        match &entry.kind {
            EntryKind::Dir => {
                let fresh = match rustix::fs::mkdirat(dir, name, perm) {
                    Ok(()) => true,
                    Err(Errno::EXIST)
                        if type_at(dir, name).ok().flatten() == Some(FileType::Directory) =>
                    {
                        false
                    }
                    Err(Errno::EXIST) => {
                        removed = true;
                        remove_all_at(dir, name)
                            .map_err(self.fail(entry, "removing what the directory replaces"))?;
                        rustix::fs::mkdirat(dir, name, perm)
                            .map_err(|e| self.fail(entry, "creating the directory")(e.into()))?;
                        true
                    }
                    Err(e) => return Err(self.fail(entry, "creating the directory")(e.into())),
                };
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fail(entry, "opening the directory")(e.into()))?;
                self.set_attributes_fd(entry, fd.as_fd(), fresh)?;
                self.dirs.push((entry.path.clone(), times(entry)));
            }
            EntryKind::File => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let (fd, replaced) =
                    create_replacing(dir, name, || rustix::fs::openat(dir, name, flags, perm))
                        .map_err(self.fail(entry, "creating the file"))?;
                removed = replaced;
                let file = File::from(fd);
                write_payload(tar, entry, &file, &mut self.buf, &self.options.layer)?;
                self.set_attributes_fd(entry, file.as_fd(), true)?;
                rustix::fs::futimens(&file, &times(entry))
                    .map_err(|e| self.fail(entry, "setting times")(e.into()))?;
                self.files += 1;
            }
            EntryKind::Symlink { target } => {
                removed = create_replacing(dir, name, || {
                    rustix::fs::symlinkat(target.as_os_str(), dir, name)
                })
                .map_err(self.fail(entry, "creating the symlink"))?
                .1;
                self.set_attributes_at(entry, dir, name, false)?;
            }
            EntryKind::Hardlink { target } => {
                let (target_parent, target_name) = split(target);
                let target_dir = self.root.open_dir(target_parent).map_err(self.fail(
                    entry,
                    format!("resolving the hard link target {}", target.display()),
                ))?;
                match type_at(target_dir.as_fd(), target_name)
                    .map_err(self.fail(entry, "inspecting the hard link target"))?
                {
                    None => {
                        return Err(self.fail(
                            entry,
                            format!("hard link target {} is not in the layer", target.display()),
                        )(Errno::NOENT.into()));
                    }
                    Some(FileType::Directory) => {
                        return Err(self.fail(
                            entry,
                            format!("hard link target {} is a directory", target.display()),
                        )(Errno::PERM.into()));
                    }
                    Some(_) => {}
                }
                // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
                removed = create_replacing(dir, name, || {
                    rustix::fs::linkat(&target_dir, target_name, dir, name, AtFlags::empty())
                })
                .map_err(self.fail(entry, "creating the hard link"))?
                .1;
                // The link only adds a name to its target's inode, whose attributes the
                // target's own entry set; the link header's are not applied (as GNU tar
                // and stargz-snapshotter; containerd's chmod of a link looks the target up
                // relative to its cwd and so almost never happens, and a chown would
                // clear the target's setuid bit and file capabilities).
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(*major, *minor);
                removed = create_replacing(dir, name, || {
                    rustix::fs::mknodat(dir, name, kind, perm, dev)
                })
                .map_err(self.fail(entry, "creating the device node"))?
                .1;
                self.set_attributes_at(entry, dir, name, true)?;
            }
            EntryKind::Fifo => {
                removed = create_replacing(dir, name, || {
                    rustix::fs::mknodat(dir, name, FileType::Fifo, perm, 0)
                })
                .map_err(self.fail(entry, "creating the fifo"))?
                .1;
                self.set_attributes_at(entry, dir, name, true)?;
            }
            EntryKind::Whiteout { .. } | EntryKind::OpaqueWhiteout { .. } => {}
        }
        if removed {
            self.root.forget_dirs();
        }
        Ok(())
    }

    /// Owner, xattrs and mode of an open file or directory. `fresh`: it was just created
    /// with the entry's permission bits, so `chmod` is needed only if the umask or the
    /// special bits make them differ.
    fn set_attributes_fd(
        &self,
        entry: &Entry,
        fd: BorrowedFd<'_>,
        fresh: bool,
    ) -> Result<(), ApplyError> {
        let (uid, gid) = owner(entry).map_err(self.fail(entry, "changing the owner"))?;
        rustix::fs::fchown(fd, Some(uid), Some(gid))
            .map_err(|e| self.fail(entry, "changing the owner")(e.into()))?;
        self.set_xattrs(entry, XattrTarget::Fd(fd))?;
        let exact = fresh && entry.mode & 0o7000 == 0 && entry.mode & self.umask == 0;
        if !exact {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(entry.mode))
                .map_err(|e| self.fail(entry, "changing the mode")(e.into()))?;
        }
        Ok(())
    }

    /// Owner, xattrs, mode (when `chmod`) and times of `name` in `dir`, never following
    /// a symlink at `name`.
    fn set_attributes_at(
        &self,
        entry: &Entry,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        chmod: bool,
    ) -> Result<(), ApplyError> {
        let (uid, gid) = owner(entry).map_err(self.fail(entry, "changing the owner"))?;
        rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(entry, "changing the owner")(e.into()))?;
        if !entry.xattrs.is_empty() {
            self.set_xattrs(entry, XattrTarget::Path(proc_path(dir, name)))?;
        }
        if chmod {
            // `name` is not a symlink here (devices, fifos, hard links to non-symlinks).
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(entry.mode), AtFlags::empty())
                .map_err(|e| self.fail(entry, "changing the mode")(e.into()))?;
        }
        rustix::fs::utimensat(dir, name, &times(entry), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(entry, "setting times")(e.into()))
    }

    /// Sets the entry's xattrs as containerd does: `ENOTSUP`, and `EPERM` on `security.*`,
    /// are ignored. overlayfs's own xattrs are never taken from a layer.
    fn set_xattrs(&self, entry: &Entry, target: XattrTarget<'_>) -> Result<(), ApplyError> {
        for (key, value) in &entry.xattrs {
            if is_overlay_private(key) {
                self.skipped_xattrs.set(self.skipped_xattrs.get() + 1);
                continue;
            }
            let result = match &target {
                XattrTarget::Fd(fd) => {
                    rustix::fs::fsetxattr(fd, key.as_os_str(), value, XattrFlags::empty())
                }
                XattrTarget::Path(path) => {
                    rustix::fs::lsetxattr(path, key.as_os_str(), value, XattrFlags::empty())
                }
            };
            match result {
                Ok(()) | Err(Errno::NOTSUP) => {}
                Err(Errno::PERM) if key.as_bytes().starts_with(b"security.") => {}
                Err(e) => {
                    return Err(self
                        .fail(entry, format!("setting xattr {}", key.to_string_lossy()))(
                        e.into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sets directory times last, once nothing more is written inside them.
    pub(super) fn finish_dirs(&mut self) -> Result<(), ApplyError> {
        for (path, times) in std::mem::take(&mut self.dirs) {
            let (parent, name) = split(&path);
            let fail = |e: io::Error| ApplyError::Write {
                layer: self.options.layer.clone(),
                entry: path.display().to_string(),
                context: "setting directory times".into(),
                source: e,
            };
            let dir = match self.root.open_dir(parent) {
                Ok(fd) => fd,
                // Removed later in the layer (a whiteout): nothing to set.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            match rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(fail(e.into())),
            }
        }
        Ok(())
    }
}
