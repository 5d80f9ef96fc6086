//! A volume's sub path, resolved inside the image's root as KEP-4639 asks (containerd
//! resolves it with a secure join): `..` and symlinks, absolute ones included, cannot
//! leave the root (`openat2(RESOLVE_IN_ROOT)`), and the result must exist and be a
//! directory. The directory is then bound read-only onto the target through its file
//! descriptor, so nothing can swap the path between the check and the mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// A sub path that cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum SubpathError {
    /// The sub path is not a path one can resolve (empty component, NUL byte).
    #[error("sub path {0:?}: not a valid path")]
    Invalid(String),
    /// Nothing exists there, inside the image.
    #[error("sub path {0:?}: not found in the image")]
    NotFound(String),
    /// It exists and is not a directory.
    #[error("sub path {0:?}: not a directory")]
    NotADirectory(String),
    /// Resolving failed otherwise (e.g. a symlink loop).
    #[error("sub path {path:?}: {source}")]
    Resolve {
        /// The sub path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Opens `subpath` (relative to `root`; a leading `/` means the root too) as a directory,
/// resolved inside `root`.
///
/// # Errors
///
/// See [`SubpathError`].
pub fn open_subpath(root: &Path, subpath: &str) -> Result<OwnedFd, SubpathError> {
    if subpath.contains('\0') {
        return Err(SubpathError::Invalid(subpath.to_owned()));
    }
    let relative = subpath.trim_start_matches('/');
    let relative = if relative.is_empty() { "." } else { relative };
    let resolve = |e: io::Error| SubpathError::Resolve {
        path: subpath.to_owned(),
        source: e,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| resolve(e.into()))?;
    match rustix::fs::openat2(
        &root_fd,
        relative,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOENT) => Err(SubpathError::NotFound(subpath.to_owned())),
        Err(rustix::io::Errno::NOTDIR) => Err(SubpathError::NotADirectory(subpath.to_owned())),
        Err(e) => Err(resolve(e.into())),
    }
}

/// Binds the directory `dir` onto `target`, read-only, without setuid or device files
/// taking effect (an image's content is untrusted on the host).
///
/// # Errors
///
/// Either mount call fails (the first one's mount is undone).
pub fn bind_read_only(dir: &OwnedFd, target: &Path) -> io::Result<()> {
    let source = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let target_c = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: both strings are valid NUL-terminated paths alive for the calls; the other
    // arguments are null pointers the kernel accepts for a bind mount and a remount.
    unsafe {
        if libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::mount(
            std::ptr::null(),
            target_c.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ) != 0
        {
            let e = io::Error::last_os_error();
            libc::umount2(target_c.as_ptr(), libc::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_the_root_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("models/llama")).unwrap();
        std::fs::write(r.join("models/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/models", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("models/up")).unwrap();
        // The host's /etc is not the image's: an escape resolves to the image's root.
        std::os::unix::fs::symlink("/etc", r.join("etc-link")).unwrap();

        let is_dir = |p: &str| open_subpath(r, p).map(|_| ());
        assert!(is_dir("models/llama").is_ok());
        assert!(is_dir("/models/llama").is_ok());
        assert!(is_dir("").is_ok() && is_dir("/").is_ok());
        assert!(
            is_dir("abs/llama").is_ok(),
            "absolute symlinks resolve in the root"
        );
        let fd = open_subpath(r, "models/up").unwrap();
        let seen = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(seen, r, "`..` stops at the root");
        assert!(matches!(
            open_subpath(r, "etc-link/passwd"),
            Err(SubpathError::NotFound(_))
        ));
        assert!(matches!(
            open_subpath(r, "models/file"),
            Err(SubpathError::NotADirectory(_))
        ));
        assert!(matches!(
            open_subpath(r, "nope"),
            Err(SubpathError::NotFound(_))
        ));
        assert!(matches!(
            open_subpath(r, "a\0b"),
            Err(SubpathError::Invalid(_))
        ));
    }
}
