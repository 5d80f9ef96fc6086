use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::ErrorKind;
use crate::mount::{mount_all, unmount_all};

fn open() -> (tempfile::TempDir, OverlaySnapshotter) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = OverlaySnapshotter::open(&dir.path().join("root")).expect("open");
    (dir, s)
}

/// A mount point that is unmounted when dropped, whatever the test did.
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[Mount], target: PathBuf) -> Mounted {
        std::fs::create_dir_all(&target).unwrap();
        let guard = Mounted(target);
        mount_all(mounts, &guard.0).expect("mount");
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

fn index_off() -> Vec<String> {
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        vec!["index=off".to_owned()]
    } else {
        Vec::new()
    }
}

#[test]
fn mounts_have_containerd_shapes() {
    let (dir, s) = open();
    let root = dir.path().join("root/snapshots");
    let m = s.prepare("a", "", Labels::new()).unwrap();
    assert_eq!(
        m,
        vec![Mount {
            kind: "bind".into(),
            source: root.join("1/fs").display().to_string(),
            target: String::new(),
            options: vec!["rw".into(), "rbind".into()]
        }]
    );
    s.commit("base", "a", Labels::new()).unwrap();
    let v = s.view("v0", "", Labels::new()).unwrap();
    assert_eq!(v[0].kind, "bind");
    assert_eq!(v[0].options, vec!["ro", "rbind"]);
    let v1 = s.view("v1", "base", Labels::new()).unwrap();
    assert_eq!(
        v1,
        vec![Mount {
            kind: "bind".into(),
            source: root.join("1/fs").display().to_string(),
            target: String::new(),
            options: vec!["ro".into(), "rbind".into()]
        }]
    );
    let b = s.prepare("b", "base", Labels::new()).unwrap();
    let mut want = index_off();
    want.push(format!("workdir={}", root.join("4/work").display()));
    want.push(format!("upperdir={}", root.join("4/fs").display()));
    want.push(format!("lowerdir={}", root.join("1/fs").display()));
    assert_eq!(
        b,
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: want
        }]
    );
    s.commit("second", "b", Labels::new()).unwrap();
    let v2 = s.view("v2", "second", Labels::new()).unwrap();
    let mut want = index_off();
    want.push(format!(
        "lowerdir={}:{}",
        root.join("4/fs").display(),
        root.join("1/fs").display()
    ));
    assert_eq!(v2[0].options, want);
    assert!(
        !root.join("5/work").exists(),
        "views have no work directory"
    );
    assert_eq!(s.mounts("v2").unwrap(), v2);
    assert_eq!(
        s.mounts("second").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(s.mounts("nope").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn configured_mount_options_and_upperdir_label() {
    let dir = tempfile::tempdir().unwrap();
    let options = OverlayOptions {
        mount_options: vec!["volatile".into()],
        upperdir_label: true,
    };
    let s = OverlaySnapshotter::with_options(dir.path(), options).unwrap();
    s.prepare("a", "", Labels::new()).unwrap();
    let info = s.stat("a").unwrap();
    assert_eq!(
        info.labels.get(UPPERDIR_LABEL).map(String::as_str),
        Some(dir.path().join("snapshots/1/fs").to_str().unwrap())
    );
    s.commit("c", "a", Labels::new()).unwrap();
    let m = s.prepare("b", "c", Labels::new()).unwrap();
    assert!(m[0].options.contains(&"volatile".to_owned()));
    let mut seen = Vec::new();
    s.walk(&[], &mut |i| {
        seen.push(i.labels.contains_key(UPPERDIR_LABEL));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![true, true]);
}

#[test]
fn layers_stack_in_real_overlay_mounts() {
    let (dir, s) = open();
    let work = dir.path().join("mnt");
    let m = s.prepare("a", "", Labels::new()).unwrap();
    {
        let mnt = Mounted::new(&m, work.clone());
        std::fs::write(mnt.0.join("lower.txt"), b"from base").unwrap();
        std::fs::create_dir(mnt.0.join("dir")).unwrap();
        std::fs::write(mnt.0.join("dir/gone"), b"x").unwrap();
    }
    let before = s.usage("a").unwrap();
    assert!(before.inodes >= 4 && before.size > 0, "{before:?}");
    s.commit("base", "a", Labels::new()).unwrap();
    assert_eq!(s.usage("base").unwrap(), before);

    let m = s.prepare("b", "base", Labels::new()).unwrap();
    {
        let mnt = Mounted::new(&m, work.clone());
        assert_eq!(
            std::fs::read(mnt.0.join("lower.txt")).unwrap(),
            b"from base"
        );
        std::fs::write(mnt.0.join("upper.txt"), b"new").unwrap();
        std::fs::remove_dir_all(mnt.0.join("dir")).unwrap();
    }
    s.commit("top", "b", Labels::new()).unwrap();
    let v = s.view("v", "top", Labels::new()).unwrap();
    {
        let mnt = Mounted::new(&v, work.clone());
        assert_eq!(std::fs::read(mnt.0.join("upper.txt")).unwrap(), b"new");
        assert!(!mnt.0.join("dir").exists());
        let err = std::fs::write(mnt.0.join("x"), b"").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }
    assert_eq!(s.usage("v").unwrap(), Usage::default());
}

#[test]
fn new_upper_takes_parent_root_owner_and_mode_0755() {
    let (dir, s) = open();
    s.prepare("a", "", Labels::new()).unwrap();
    let fs1 = dir.path().join("root/snapshots/1/fs");
    assert_eq!(
        std::fs::metadata(&fs1).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    std::os::unix::fs::chown(&fs1, Some(1234), Some(5678)).unwrap();
    s.commit("c", "a", Labels::new()).unwrap();
    s.prepare("b", "c", Labels::new()).unwrap();
    let meta = std::fs::metadata(dir.path().join("root/snapshots/2/fs")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    let snapshots = std::fs::metadata(dir.path().join("root/snapshots")).unwrap();
    assert_eq!(snapshots.permissions().mode() & 0o777, 0o700);
}

#[test]
fn remove_and_cleanup_leave_only_live_directories() {
    let (dir, s) = open();
    let snapshots = dir.path().join("root/snapshots");
    s.prepare("a", "", Labels::new()).unwrap();
    s.commit("c", "a", Labels::new()).unwrap();
    s.prepare("b", "c", Labels::new()).unwrap();
    assert_eq!(
        s.remove("c").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert!(
        snapshots.join("1").is_dir(),
        "a refused removal keeps the directory"
    );
    s.remove("b").unwrap();
    assert!(!snapshots.join("2").exists() && !snapshots.join("rm-2").exists());
    assert_eq!(s.remove("b").unwrap_err().kind(), ErrorKind::NotFound);

    // What crashes leave behind: a half-prepared directory, a half-removed one, and a
    // directory renamed into place whose transaction never committed.
    for junk in ["new-123", "rm-7", "99"] {
        std::fs::create_dir_all(snapshots.join(junk).join("fs/deep")).unwrap();
    }
    s.cleanup().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, vec!["1"]);
}

#[test]
fn failed_prepare_leaves_no_directory() {
    let (dir, s) = open();
    s.prepare("a", "", Labels::new()).unwrap();
    assert_eq!(
        s.prepare("a", "", Labels::new()).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.prepare("b", "missing", Labels::new()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.prepare("b", "a", Labels::new()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let n = std::fs::read_dir(dir.path().join("root/snapshots"))
        .unwrap()
        .count();
    assert_eq!(n, 1);
}

#[test]
fn close_twice_then_operations_fail_cleanly() {
    let (dir, s) = open();
    s.prepare("a", "", Labels::new()).unwrap();
    s.close().unwrap();
    s.close().unwrap();
    assert_eq!(
        s.stat("a").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert!(s.prepare("b", "", Labels::new()).is_err());
    let again = OverlaySnapshotter::open(&dir.path().join("root")).unwrap();
    assert_eq!(again.stat("a").unwrap().kind, Kind::Active);
}

#[test]
fn second_open_of_a_root_is_unavailable() {
    let (dir, _s) = open();
    let err = OverlaySnapshotter::open(&dir.path().join("root")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[test]
fn concurrent_prepare_commit_from_many_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let (dir, s) = open();
    shared(&s);
    s.prepare("base-key", "", Labels::new()).unwrap();
    s.commit("base", "base-key", Labels::new()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..10 {
                    let key = format!("k-{t}-{i}");
                    s.prepare(&key, "base", Labels::new()).unwrap();
                    s.commit(&format!("c-{t}-{i}"), &key, Labels::new())
                        .unwrap();
                    s.stat(&format!("c-{t}-{i}")).unwrap();
                }
            });
        }
    });
    let mut committed = 0;
    s.walk(&["kind==committed".to_owned()], &mut |_| {
        committed += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(committed, 41);
    s.cleanup().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("root/snapshots"))
            .unwrap()
            .count(),
        41
    );
}
