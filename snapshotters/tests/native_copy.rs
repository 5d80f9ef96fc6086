//! The native snapshotter's copies, seen through real bind mounts: a child of a committed
//! snapshot holds the same entries with the same owners, modes, links and times, and
//! changes in the child do not reach the parent.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_snapshotters::mount::{mount_all, unmount_all};
use strata_snapshotters::native::NativeSnapshotter;
use strata_snapshotters::{Labels, Mount, Snapshotter};

/// A mount point that is unmounted when dropped, whatever the test did.
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[Mount], target: &Path) -> Mounted {
        std::fs::create_dir_all(target).unwrap();
        let guard = Mounted(target.to_path_buf());
        mount_all(mounts, target).expect("mount");
        guard
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(&self.0, true) {
            // Panicking while unwinding would abort and hide the first failure.
            eprintln!("unmount {}: {e}", self.0.display());
        }
    }
}

fn summary(root: &Path, rel: &str) -> (u32, u32, u32, u64, i64, i64) {
    let m = std::fs::symlink_metadata(root.join(rel)).unwrap();
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

#[test]
fn child_is_a_faithful_independent_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeSnapshotter::open(&dir.path().join("root")).unwrap();
    let target = dir.path().join("mnt");
    let entries = [
        "bin",
        "bin/su",
        "bin/su-link",
        "etc",
        "etc/passwd",
        "etc/alias",
        "dev-null",
        "pipe",
    ];
    let mounts = s.prepare("base-key", "", Labels::new()).unwrap();
    {
        let m = Mounted::new(&mounts, &target);
        let r = &m.0;
        std::fs::create_dir(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/su"), b"#!setuid").unwrap();
        std::os::unix::fs::chown(r.join("bin/su"), Some(0), Some(42)).unwrap();
        std::fs::set_permissions(r.join("bin/su"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::hard_link(r.join("bin/su"), r.join("bin/su-link")).unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), b"root:x:0:0").unwrap();
        std::os::unix::fs::chown(r.join("etc"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("etc/alias")).unwrap();
        let node = std::ffi::CString::new(r.join("dev-null").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: a valid path for the call; 1:3 is /dev/null's device number.
        assert_eq!(
            unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        let fifo =
            std::ffi::CString::new(r.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid path for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    }
    s.commit("base", "base-key", Labels::new()).unwrap();
    let base_view = s.view("base-view", "base", Labels::new()).unwrap();
    let before: Vec<_> = {
        let m = Mounted::new(&base_view, &target);
        entries.iter().map(|e| summary(&m.0, e)).collect()
    };

    let child = s.prepare("child", "base", Labels::new()).unwrap();
    let m = Mounted::new(&child, &target);
    let after: Vec<_> = entries.iter().map(|e| summary(&m.0, e)).collect();
    assert_eq!(after, before);
    assert_eq!(
        std::fs::read_link(m.0.join("etc/alias")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::symlink_metadata(m.0.join("bin/su")).unwrap().ino(),
        std::fs::symlink_metadata(m.0.join("bin/su-link"))
            .unwrap()
            .ino()
    );
    let node = std::fs::symlink_metadata(m.0.join("dev-null")).unwrap();
    assert!(node.file_type().is_char_device() && node.rdev() == libc::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(m.0.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    std::fs::write(m.0.join("etc/passwd"), b"changed").unwrap();
    std::fs::remove_file(m.0.join("bin/su")).unwrap();
    drop(m);
    let m = Mounted::new(&base_view, &target);
    assert_eq!(
        std::fs::read(m.0.join("etc/passwd")).unwrap(),
        b"root:x:0:0"
    );
    assert!(m.0.join("bin/su").exists());
}
