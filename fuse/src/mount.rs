//! The mount-side system calls of a FUSE connection: opening `/dev/fuse`, mounting it
//! (read-only, fstype `fuse.strata`, private propagation), finding the connection's id, and
//! taking it down: a lazy unmount, then an abort through the `fusectl` filesystem for a
//! connection that a copy of the mount in another mount namespace keeps alive.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::server::{FuseError, source_name};

/// Where the kernel lists FUSE connections (the `fusectl` filesystem).
const CONNECTIONS_DIR: &str = "/sys/fs/fuse/connections";

fn c_path(path: &Path) -> Result<CString, FuseError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        FuseError::io(
            format!("mount point {}", path.display()),
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })
}

/// Opens a new FUSE device descriptor.
pub(crate) fn open_device() -> Result<OwnedFd, FuseError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map(OwnedFd::from)
        .map_err(|e| FuseError::io("opening /dev/fuse", e))
}

/// Mounts the connection of `dev` at `mountpoint`, read-only, and makes the mount private so
/// it is not copied into mount namespaces created later from this one's peers.
pub(crate) fn mount_fuse(
    dev: BorrowedFd<'_>,
    mountpoint: &Path,
    layer: &str,
) -> Result<(), FuseError> {
    let target = c_path(mountpoint)?;
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let data = CString::new(format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},allow_other,default_permissions",
        dev.as_raw_fd(),
        libc::S_IFDIR
    ))
    .map_err(|_| FuseError::Protocol("mount options contain NUL".into()))?;
    let source = source_name(layer);
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"fuse.strata".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(FuseError::io(
            format!("mounting FUSE at {}", mountpoint.display()),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above; a propagation change takes no source, type or data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let _ = detach(mountpoint);
        return Err(FuseError::io(
            format!("making {} a private mount", mountpoint.display()),
            e,
        ));
    }
    Ok(())
}

/// The id of the FUSE connection mounted at `mountpoint`: its superblock's device number
/// as the kernel formats it (`MKDEV(major, minor)`).
pub(crate) fn connection_id(mountpoint: &Path) -> Result<u32, FuseError> {
    let md = std::fs::metadata(mountpoint)
        .map_err(|e| FuseError::io(format!("stat of mount point {}", mountpoint.display()), e))?;
    let dev = md.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Ok((major << 20) | minor)
}

/// Lazily unmounts `mountpoint`; not being mounted is not an error.
pub(crate) fn detach(mountpoint: &Path) -> Result<(), FuseError> {
    let target = c_path(mountpoint)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(FuseError::io(
                format!("unmounting {}", mountpoint.display()),
                e,
            ));
        }
    }
    Ok(())
}

/// Aborts connection `id` if it still exists (a copy of the mount elsewhere holds it):
/// every pending and future request fails, and the server's reads end with `ENODEV`.
pub(crate) fn abort_connection(id: u32) -> Result<(), FuseError> {
    let abort = Path::new(CONNECTIONS_DIR)
        .join(id.to_string())
        .join("abort");
    if !abort.exists() {
        // fusectl may not be mounted; mounting it twice fails with EBUSY, which is fine.
        // SAFETY: valid NUL-terminated strings.
        unsafe {
            libc::mount(
                c"fusectl".as_ptr(),
                c"/sys/fs/fuse/connections".as_ptr(),
                c"fusectl".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if !abort.exists() {
            return Ok(());
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(&abort)
        .map_err(|e| FuseError::io(format!("opening {}", abort.display()), e))?;
    match f.write_all(b"1") {
        Ok(()) => Ok(()),
        // The connection went away between the check and the write.
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT)
                || e.raw_os_error() == Some(libc::ENOTCONN) =>
        {
            Ok(())
        }
        Err(e) => Err(FuseError::io(format!("writing {}", abort.display()), e)),
    }
}
