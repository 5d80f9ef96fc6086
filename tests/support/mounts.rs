//! Mount helpers: unmounting what FUSE / overlay mounts a test left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Unmounts everything under `dir`, deepest first: FUSE connections are aborted first (a
/// dead daemon's mounts would hang otherwise), then `umount -l`, then `fusermount3 -u -z`.
pub(crate) fn force_unmount(dir: &Path) {
    let mut mounts = mount_entries_under(dir);
    if mounts.is_empty() {
        return;
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.point.len()));
    let connections = Path::new("/sys/fs/fuse/connections");
    // fusectl is not mounted on every machine: mount it for the aborts, unmount it after.
    let mounted_fusectl = mounts.iter().any(|m| m.fstype.starts_with("fuse"))
        && fs::read_dir(connections).is_ok_and(|mut d| d.next().is_none())
        && Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(connections)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    for m in &mounts {
        if m.fstype.starts_with("fuse") {
            let minor = m.dev.rsplit(':').next().unwrap_or_default();
            let _ = fs::write(connections.join(minor).join("abort"), "1");
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&m.point)
            .stderr(Stdio::null())
            .status();
        if m.fstype.starts_with("fuse") && mounts_under(Path::new(&m.point)).contains(&m.point) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&m.point)
                .stderr(Stdio::null())
                .status();
        }
    }
    if mounted_fusectl {
        let _ = Command::new("umount").arg(connections).status();
    }
}

/// A read-only overlay mounted here; unmounted on drop.
pub(crate) struct OverlayMount(pub(crate) PathBuf);

impl OverlayMount {
    pub(crate) fn mount(target: &Path, lowerdirs: &str) -> Self {
        fs::create_dir_all(target).unwrap();
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={lowerdirs}"))
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount overlay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OverlayMount(target.to_path_buf())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

pub(crate) struct MountEntry {
    pub(crate) dev: String,
    pub(crate) point: String,
    pub(crate) fstype: String,
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
pub(crate) fn mount_entries_under(dir: &Path) -> Vec<MountEntry> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                dev: fields.get(2)?.to_string(),
                point: fields.get(4)?.to_string(),
                fstype: fields.get(sep + 1)?.to_string(),
            })
        })
        .filter(|m| m.point == prefix || m.point.starts_with(&format!("{prefix}/")))
        .collect()
}

pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    mount_entries_under(dir)
        .into_iter()
        .map(|m| m.point)
        .collect()
}
