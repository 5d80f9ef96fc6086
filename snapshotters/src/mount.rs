//! Performing the [`Mount`]s a snapshotter returns, and undoing them: the only place
//! this crate calls mount(2). Options are split as containerd's `mount_linux.go` does:
//! known flags (`ro`, `rbind`, `nosuid`, …) become mount flags, the rest is the data
//! string (`lowerdir=…,upperdir=…`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Mount;

/// Mount flags and propagation parsed from a mount's options.
#[derive(Debug, Default, PartialEq, Eq)]
struct ParsedOptions {
    flags: libc::c_ulong,
    propagation: libc::c_ulong,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions::default();
    for option in options {
        // (clear, flag): `clear` options remove the flag (e.g. `rw` clears `ro`).
        let flag: Option<(bool, libc::c_ulong)> = match option.as_str() {
            "async" => Some((true, libc::MS_SYNCHRONOUS)),
            "atime" => Some((true, libc::MS_NOATIME)),
            "bind" => Some((false, libc::MS_BIND)),
            "defaults" => Some((false, 0)),
            "dev" => Some((true, libc::MS_NODEV)),
            "diratime" => Some((true, libc::MS_NODIRATIME)),
            "dirsync" => Some((false, libc::MS_DIRSYNC)),
            "exec" => Some((true, libc::MS_NOEXEC)),
            "mand" => Some((false, libc::MS_MANDLOCK)),
            "noatime" => Some((false, libc::MS_NOATIME)),
            "nodev" => Some((false, libc::MS_NODEV)),
            "nodiratime" => Some((false, libc::MS_NODIRATIME)),
            "noexec" => Some((false, libc::MS_NOEXEC)),
            "nomand" => Some((true, libc::MS_MANDLOCK)),
            "norelatime" => Some((true, libc::MS_RELATIME)),
            "nostrictatime" => Some((true, libc::MS_STRICTATIME)),
            "nosuid" => Some((false, libc::MS_NOSUID)),
            "rbind" => Some((false, libc::MS_BIND | libc::MS_REC)),
            "relatime" => Some((false, libc::MS_RELATIME)),
            "remount" => Some((false, libc::MS_REMOUNT)),
            "ro" => Some((false, libc::MS_RDONLY)),
            "rw" => Some((true, libc::MS_RDONLY)),
            "strictatime" => Some((false, libc::MS_STRICTATIME)),
            "suid" => Some((true, libc::MS_NOSUID)),
            "sync" => Some((false, libc::MS_SYNCHRONOUS)),
            _ => None,
        };
        let propagation = match option.as_str() {
            "private" => Some(libc::MS_PRIVATE),
            "rprivate" => Some(libc::MS_PRIVATE | libc::MS_REC),
            "shared" => Some(libc::MS_SHARED),
            "rshared" => Some(libc::MS_SHARED | libc::MS_REC),
            "slave" => Some(libc::MS_SLAVE),
            "rslave" => Some(libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => Some(libc::MS_UNBINDABLE),
            "runbindable" => Some(libc::MS_UNBINDABLE | libc::MS_REC),
            _ => None,
        };
        match (flag, propagation) {
            (Some((true, f)), _) => parsed.flags &= !f,
            (Some((false, f)), _) => parsed.flags |= f,
            (None, Some(p)) => parsed.propagation |= p,
            (None, None) => parsed.data.push(option.clone()),
        }
    }
    parsed
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
}

fn sys_mount(
    source: &CString,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl Mount {
    /// Performs this mount on `target` (joined with [`Mount::target`] when that is set).
    ///
    /// Bind mounts with `ro` are remounted read-only afterwards (the kernel ignores
    /// `MS_RDONLY` on the first bind call); propagation flags are applied last.
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        let target = if self.target.is_empty() { target.to_path_buf() } else { target.join(self.target.trim_start_matches('/')) };
        let parsed = parse_options(&self.options);
        let source = cstring(self.source.as_bytes(), "mount source")?;
        let target_c = cstring(target.as_os_str().as_bytes(), "mount target")?;
        let fstype = cstring(self.kind.as_bytes(), "mount type")?;
        let data = if parsed.data.is_empty() { None } else { Some(cstring(parsed.data.join(",").as_bytes(), "mount options")?) };
        let context = |e: io::Error| io::Error::new(e.kind(), format!("mount {} ({}) on {}: {e}", self.source, self.kind, target.display()));
        sys_mount(&source, &target_c, Some(&fstype), parsed.flags, data.as_ref()).map_err(context)?;
        let is_bind = parsed.flags & libc::MS_BIND != 0;
        if is_bind && parsed.flags & libc::MS_RDONLY != 0 && parsed.flags & libc::MS_REMOUNT == 0 {
            let flags = parsed.flags | libc::MS_REMOUNT;
            sys_mount(&source, &target_c, None, flags, None).map_err(context)?;
        }
        if parsed.propagation != 0 {
            let none = cstring(b"none", "source")?;
            sys_mount(&none, &target_c, None, parsed.propagation, None).map_err(context)?;
        }
        Ok(())
    }
}

/// Performs `mounts` on `target` in order (containerd's `mount.All`).
pub fn mount_all(mounts: &[Mount], target: &Path) -> io::Result<()> {
    for m in mounts {
        m.mount(target)?;
    }
    Ok(())
}

/// Unmounts everything mounted on `target`, innermost first, until nothing is left
/// (containerd's `mount.UnmountAll`). `detach` uses `MNT_DETACH` (lazy unmount).
/// A target with nothing mounted is not an error.
pub fn unmount_all(target: &Path, detach: bool) -> io::Result<()> {
    let target_c = cstring(target.as_os_str().as_bytes(), "unmount target")?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    loop {
        // SAFETY: target_c is a valid NUL-terminated path alive for the call.
        let rc = unsafe { libc::umount2(target_c.as_ptr(), flags) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // EINVAL: not a mount point (any more); ENOENT: gone.
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(io::Error::new(err.kind(), format!("unmount {}: {err}", target.display()))),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "rbind", "rprivate", "lowerdir=/a:/b", "index=off"].iter().map(|s| s.to_string()).collect();
        let p = parse_options(&opts);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC);
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(p.data, vec!["lowerdir=/a:/b".to_string(), "index=off".to_string()]);
        let p = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert_eq!(p.flags, 0);
    }
}
