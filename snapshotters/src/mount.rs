//! Performing the [`Mount`]s a snapshotter returns, and undoing them: the only place
//! this crate calls mount(2). Options are split as containerd's `mount_linux.go` does:
//! known flags (`ro`, `rbind`, `nosuid`, …) become mount flags, the rest is the data
//! string (`lowerdir=…,upperdir=…`). The `loop` option mounts a file through a loop
//! device (`mount/loop_device.rs`), as containerd does; for `erofs` the file itself is
//! tried first (file-backed mounts, Linux ≥ 6.12), the loop device only when the kernel
//! answers ENOTBLK.

pub(crate) mod loop_device;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::Mount;

/// Mount flags and propagation parsed from a mount's options.
#[derive(Debug, Default, PartialEq, Eq)]
struct ParsedOptions {
    flags: libc::c_ulong,
    propagation: libc::c_ulong,
    data: Vec<String>,
    /// `loop`: the source is a file to mount through a loop device.
    loop_device: bool,
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
        if option == "loop" {
            parsed.loop_device = true;
            continue;
        }
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
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
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
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Mount {
    /// Performs this mount on `target` (joined with [`Mount::target`] when that is set).
    ///
    /// Bind mounts with `ro` are remounted read-only afterwards (the kernel ignores
    /// `MS_RDONLY` on the first bind call); propagation flags are applied last.
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        let target = if self.target.is_empty() {
            target.to_path_buf()
        } else {
            target.join(self.target.trim_start_matches('/'))
        };
        let parsed = parse_options(&self.options);
        let source = cstring(self.source.as_bytes(), "mount source")?;
        let target_c = cstring(target.as_os_str().as_bytes(), "mount target")?;
        let fstype = cstring(self.kind.as_bytes(), "mount type")?;
        let data = if parsed.data.is_empty() {
            None
        } else {
            Some(cstring(parsed.data.join(",").as_bytes(), "mount options")?)
        };
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "mount {} ({}) on {}: {e}",
                    self.source,
                    self.kind,
                    target.display()
                ),
            )
        };
        let too_long = data
            .as_ref()
            .is_some_and(|d| d.as_bytes_with_nul().len() > page_size());
        match compact_lowerdirs(&parsed.data).filter(|_| too_long && self.kind == "overlay") {
            Some((common, compacted)) => {
                // Relative lower directories resolve against the cwd of the mounting
                // thread, so the target must not depend on it.
                let target_abs = std::path::absolute(&target).map_err(context)?;
                let target_abs = cstring(target_abs.as_os_str().as_bytes(), "mount target")?;
                let data = cstring(compacted.join(",").as_bytes(), "mount options")?;
                mount_from_dir(&common, &source, &target_abs, &fstype, parsed.flags, &data)
                    .map_err(context)?;
            }
            None if parsed.loop_device => {
                mount_file(self, &source, &target_c, &fstype, &parsed, data.as_ref())
                    .map_err(context)?;
            }
            None => sys_mount(
                &source,
                &target_c,
                Some(&fstype),
                parsed.flags,
                data.as_ref(),
            )
            .map_err(context)?,
        }
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

/// Mounts the file `m.source` (a mount with the `loop` option): an `erofs` image
/// file-backed when the kernel can (no device to allocate), else through a loop device
/// with autoclear, which the kernel frees when the filesystem is unmounted.
fn mount_file(
    m: &Mount,
    source: &CString,
    target: &CString,
    fstype: &CString,
    parsed: &ParsedOptions,
    data: Option<&CString>,
) -> io::Result<()> {
    if m.kind == "erofs" {
        match sys_mount(source, target, Some(fstype), parsed.flags, data) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTBLK) => {}
            other => return other,
        }
    }
    let device = loop_device::attach(Path::new(&m.source), parsed.flags & libc::MS_RDONLY != 0)?;
    let device_c = cstring(device.path().as_os_str().as_bytes(), "loop device")?;
    sys_mount(&device_c, target, Some(fstype), parsed.flags, data)
}

/// The most bytes of option data mount(2) takes: one page, with the NUL.
fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// For overlay data whose `lowerdir=` list is too long for one page (128 layers of
/// absolute paths): the lower directories' common parent, and the data with the lower
/// directories relative to it (containerd's `compactLowerdirOption`). `None` when the
/// lower directories share no parent but `/`.
fn compact_lowerdirs(data: &[String]) -> Option<(std::path::PathBuf, Vec<String>)> {
    let index = data.iter().position(|o| o.starts_with("lowerdir="))?;
    let lowers: Vec<&Path> = data[index]["lowerdir=".len()..]
        .split(':')
        .map(Path::new)
        .collect();
    let first = lowers.first()?.parent()?;
    let mut common: std::path::PathBuf = first.to_path_buf();
    for lower in &lowers {
        while !lower.starts_with(&common) || *lower == common.as_path() {
            if !common.pop() {
                return None;
            }
        }
    }
    if !common.is_absolute() || common.parent().is_none() {
        return None;
    }
    let relative: Vec<String> = lowers
        .iter()
        .map(|l| {
            l.strip_prefix(&common)
                .map(|r| r.to_string_lossy().into_owned())
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let mut out = data.to_vec();
    out[index] = format!("lowerdir={}", relative.join(":"));
    Some((common, out))
}

/// Performs the mount from a thread whose working directory is `dir`, so that relative
/// paths in `data` resolve there. The thread gets its own filesystem context
/// (`unshare(CLONE_FS)`) so the process's working directory never changes.
fn mount_from_dir(
    dir: &Path,
    source: &CString,
    target: &CString,
    fstype: &CString,
    flags: libc::c_ulong,
    data: &CString,
) -> io::Result<()> {
    let dir = cstring(dir.as_os_str().as_bytes(), "mount directory")?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare and chdir take no pointers but dir's, valid for the call;
                // CLONE_FS only detaches this thread's cwd/root/umask from the process.
                if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: as above.
                if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                sys_mount(source, target, Some(fstype), flags, Some(data))
            })
            .join()
            .map_err(|_| io::Error::other("the mounting thread panicked"))?
    })
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
                _ => Err(io::Error::new(
                    err.kind(),
                    format!("unmount {}: {err}", target.display()),
                )),
            };
        }
    }
}

/// Whether something is mounted on `target` (an absolute path), by this process's
/// `/proc/self/mountinfo` (whose mount points escape space, tab, newline and backslash
/// as octal).
pub fn is_mounted(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = target.as_os_str().as_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| unescape_mountinfo(point) == want)
}

/// A mount point field of `/proc/self/mountinfo`, unescaped.
pub(crate) fn unescape_mount_point(field: &str) -> std::ffi::OsString {
    std::ffi::OsString::from_vec(unescape_mountinfo(field))
}

fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "rbind", "rprivate", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_options(&opts);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC);
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(
            p.data,
            vec!["lowerdir=/a:/b".to_string(), "index=off".to_string()]
        );
        let p = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert_eq!(p.flags, 0);
    }

    #[test]
    fn lowerdirs_compact_to_their_common_parent() {
        let data: Vec<String> = [
            "index=off",
            "workdir=/r/snapshots/9/work",
            "upperdir=/r/snapshots/9/fs",
            "lowerdir=/r/snapshots/2/fs:/r/snapshots/10/fs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (common, out) = compact_lowerdirs(&data).unwrap();
        assert_eq!(common, Path::new("/r/snapshots"));
        assert_eq!(out[3], "lowerdir=2/fs:10/fs");
        assert_eq!(out[..3], data[..3]);
        let one = vec!["lowerdir=/r/snapshots/2/fs".to_string()];
        assert_eq!(
            compact_lowerdirs(&one).unwrap().1,
            vec!["lowerdir=fs".to_string()]
        );
        let apart = vec!["lowerdir=/a/x:/b/y".to_string()];
        assert!(compact_lowerdirs(&apart).is_none());
    }
}
