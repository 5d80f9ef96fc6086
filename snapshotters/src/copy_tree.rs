//! Copying a snapshot's tree for the native snapshotter (containerd's `fs.CopyDir`):
//! regular files as reflinks where the filesystem shares extents (FICLONE), else by
//! `copy_file_range` over the data segments only, so sparse files stay sparse; hard links
//! stay hard links; symlinks, device nodes and fifos are recreated; sockets are skipped
//! (as containerd does). Owners, modes (setuid included), extended attributes and
//! nanosecond atimes/mtimes are kept. Symlinks in the source are never followed.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Copies the contents and attributes of directory `src` into the existing directory
/// `dst` (which should be empty); `dst` itself takes `src`'s owner, mode, xattrs and times.
///
/// # Errors
///
/// The first entry that cannot be read or recreated, naming its path.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| context("stat", src, e))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copy {}: not a directory", src.display()),
        ));
    }
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    apply_metadata(src, dst, &meta)
}

fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("copy: {what} {}: {e}", path.display()))
}

/// `links` maps (device, inode) of multiply-linked sources to their first copy.
fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    let entries = std::fs::read_dir(src).map_err(|e| context("list", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| context("list", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(|e| context("stat", &from, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(|e| context("create", &to, e))?;
            copy_dir_contents(&from, &to, links)?;
            apply_metadata(&from, &to, &meta)?;
            continue;
        }
        if ft.is_socket() {
            continue;
        }
        if let Some(first) = links
            .get(&(meta.dev(), meta.ino()))
            .filter(|_| meta.nlink() > 1)
        {
            std::fs::hard_link(first, &to).map_err(|e| context("link", &to, e))?;
            continue;
        }
        if ft.is_file() {
            copy_file(&from, &to, &meta)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(|e| context("read link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| context("create symlink", &to, e))?;
        } else {
            make_node(&to, &meta)?;
        }
        apply_metadata(&from, &to, &meta)?;
        if meta.nlink() > 1 {
            links.insert((meta.dev(), meta.ino()), to);
        }
    }
    Ok(())
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn make_node(to: &Path, meta: &Metadata) -> io::Result<()> {
    let c = cpath(to)?;
    // SAFETY: c is a valid NUL-terminated path alive for the call.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            meta.mode() as libc::mode_t,
            meta.rdev() as libc::dev_t,
        )
    };
    if rc != 0 {
        return Err(context("create node", to, io::Error::last_os_error()));
    }
    Ok(())
}

/// Copies a regular file: a reflink when possible, else its data segments.
fn copy_file(from: &Path, to: &Path, meta: &Metadata) -> io::Result<()> {
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(from)
        .map_err(|e| context("open", from, e))?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)
        .map_err(|e| context("create", to, e))?;
    // SAFETY: both descriptors are open for the call; FICLONE takes the source fd by value.
    let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0;
    if !cloned {
        copy_segments(&src, &dst, meta.len()).map_err(|e| context("copy", from, e))?;
    }
    Ok(())
}

/// Copies the data segments of `src` (SEEK_DATA/SEEK_HOLE) and sizes `dst` to `len`,
/// leaving holes as holes.
fn copy_segments(src: &File, dst: &File, len: u64) -> io::Result<()> {
    dst.set_len(len)?;
    let mut offset: i64 = 0;
    let end = i64::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    while offset < end {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(src.as_raw_fd(), offset, libc::SEEK_DATA) };
        let (data, hole) = if data < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => break,
                // No hole support: the rest is data.
                Some(libc::EINVAL) => (offset, end),
                _ => return Err(io::Error::last_os_error()),
            }
        } else {
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(io::Error::last_os_error());
            }
            (data, hole.min(end))
        };
        copy_range(src, dst, data, hole)?;
        offset = hole;
    }
    Ok(())
}

/// Copies bytes `[start, end)` of `src` to the same offsets of `dst`.
fn copy_range(src: &File, dst: &File, start: i64, end: i64) -> io::Result<()> {
    let mut off_in = start;
    let mut off_out = start;
    let mut kernel_copy = true;
    let mut buf = Vec::new();
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        if kernel_copy {
            // SAFETY: both descriptors are open; the offsets are valid for the call.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n > 0 {
                continue;
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being copied",
                ));
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(
                    libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM,
                ) => kernel_copy = false,
                _ => return Err(io::Error::last_os_error()),
            }
        }
        use std::os::unix::fs::FileExt;
        buf.resize(want.min(1 << 20), 0);
        let n = src.read_at(&mut buf, off_in as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being copied",
            ));
        }
        dst.write_all_at(&buf[..n], off_out as u64)?;
        off_in += n as i64;
        off_out += n as i64;
    }
    Ok(())
}

/// Gives `to` the owner, extended attributes, mode and times of `from`. Order matters:
/// chown clears setuid bits and security.capability, so the mode and xattrs come after.
fn apply_metadata(from: &Path, to: &Path, meta: &Metadata) -> io::Result<()> {
    let is_link = meta.file_type().is_symlink();
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| context("chown", to, e))?;
    copy_xattrs(from, to)?;
    if !is_link {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| context("chmod", to, e))?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as libc::c_long,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as libc::c_long,
        },
    ];
    let c = cpath(to)?;
    // SAFETY: c is a valid path and times a two-element array, both alive for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(context("set times of", to, io::Error::last_os_error()));
    }
    Ok(())
}

/// Copies every extended attribute the source has. Attributes the destination refuses
/// (unsupported namespace or filesystem) are skipped, as containerd's native snapshotter
/// does.
fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let src = cpath(from)?;
    let dst = cpath(to)?;
    let names = read_xattr_buf(|buf, len| {
        // SAFETY: buf points to len writable bytes (or is null with len 0).
        unsafe { libc::llistxattr(src.as_ptr(), buf.cast(), len) }
    })
    .map_err(|e| context("list xattrs of", from, e))?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name with NUL"))?;
        let value = match read_xattr_buf(|buf, len| {
            // SAFETY: as above; cname is a valid NUL-terminated name.
            unsafe { libc::lgetxattr(src.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        }) {
            Ok(v) => v,
            // Removed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(context("read xattr of", from, e)),
        };
        // SAFETY: value is a live buffer of value.len() bytes.
        let rc = unsafe {
            libc::lsetxattr(
                dst.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::EPERM) => continue,
                _ => {
                    return Err(context(
                        &format!("set xattr {} on", String::from_utf8_lossy(name)),
                        to,
                        e,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Calls a list/get-xattr style function with a growing buffer until the result fits.
fn read_xattr_buf(mut call: impl FnMut(*mut u8, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut buf = vec![0u8; size as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        let n = call(buf.as_mut_ptr(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests;
