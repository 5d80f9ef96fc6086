use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = cpath(path).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid strings and buffer for the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr {name}: {}", io::Error::last_os_error());
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path).unwrap();
    let n = CString::new(name).unwrap();
    read_xattr_buf(|buf, len| {
        // SAFETY: as in the module.
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.cast(), len) }
    })
    .ok()
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = cpath(path).unwrap();
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and array for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn copies_every_kind_of_entry_with_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir(&dst).unwrap();

    std::fs::write(src.join("sub/file"), b"contents").unwrap();
    std::os::unix::fs::chown(src.join("sub/file"), Some(1000), Some(2000)).unwrap();
    std::fs::set_permissions(
        src.join("sub/file"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    set_xattr(&src.join("sub/file"), "user.note", b"hello");
    set_xattr(&src.join("sub/file"), "trusted.overlay.opaque", b"y");
    std::fs::hard_link(src.join("sub/file"), src.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("../outside/target", src.join("sub/link")).unwrap();
    std::os::unix::fs::lchown(src.join("sub/link"), Some(7), Some(8)).unwrap();
    let fifo = cpath(&src.join("fifo")).unwrap();
    // SAFETY: valid path for the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let whiteout = cpath(&src.join("whiteout")).unwrap();
    // SAFETY: valid path for the call; a 0/0 character device is an overlay whiteout.
    assert_eq!(
        unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR | 0o600, 0) },
        0
    );
    let _socket = std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
    std::fs::set_permissions(
        src.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
    set_times(
        &src.join("sub/file"),
        (1_000_000_000, 123_456_789),
        (1_500_000_000, 987_654_321),
    );
    set_times(
        &src.join("sub/link"),
        (1_000_000_001, 1),
        (1_500_000_001, 2),
    );
    set_times(&src.join("sub"), (1_000_000_002, 3), (1_500_000_002, 4));

    copy_tree(&src, &dst).unwrap();

    let f = std::fs::symlink_metadata(dst.join("sub/file")).unwrap();
    assert_eq!(std::fs::read(dst.join("sub/file")).unwrap(), b"contents");
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 2000, 0o4755));
    assert_eq!(
        (f.mtime(), f.mtime_nsec(), f.atime(), f.atime_nsec()),
        (1_500_000_000, 987_654_321, 1_000_000_000, 123_456_789)
    );
    assert_eq!(
        get_xattr(&dst.join("sub/file"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get_xattr(&dst.join("sub/file"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let h = std::fs::symlink_metadata(dst.join("hardlink")).unwrap();
    assert_eq!(h.ino(), f.ino(), "hard links stay linked");
    assert_eq!(f.nlink(), 2);

    let l = std::fs::symlink_metadata(dst.join("sub/link")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(dst.join("sub/link")).unwrap(),
        Path::new("../outside/target")
    );
    assert_eq!(
        (l.uid(), l.gid(), l.mtime(), l.mtime_nsec()),
        (7, 8, 1_500_000_001, 2)
    );

    assert!(
        std::fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let w = std::fs::symlink_metadata(dst.join("whiteout")).unwrap();
    assert!(w.file_type().is_char_device() && w.rdev() == 0);
    assert!(!dst.join("socket").exists(), "sockets are skipped");

    let d = std::fs::symlink_metadata(dst.join("sub")).unwrap();
    assert_eq!((d.mtime(), d.mtime_nsec()), (1_500_000_002, 4));
    assert_eq!(
        std::fs::symlink_metadata(dst.join("sub/deeper"))
            .unwrap()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        std::fs::symlink_metadata(&dst).unwrap().mode() & 0o7777,
        0o751
    );
}

#[test]
fn sparse_files_stay_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let f = File::create(src.join("sparse")).unwrap();
    f.set_len(8 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 4 << 30).unwrap();
    f.write_all_at(b"end", (8 << 30) - 3).unwrap();
    drop(f);
    copy_tree(&src, &dst).unwrap();
    let meta = std::fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(meta.len(), 8 << 30);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "copied {} bytes of blocks",
        meta.blocks() * 512
    );
    let copy = File::open(dst.join("sparse")).unwrap();
    let mut buf = [0u8; 6];
    copy.read_exact_at(&mut buf, 4 << 30).unwrap();
    assert_eq!(&buf, b"middle");
    copy.read_exact_at(&mut buf[..3], (8 << 30) - 3).unwrap();
    assert_eq!(&buf[..3], b"end");
}

#[test]
fn segments_copy_a_dense_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("a"), &data).unwrap();
    let src = File::open(dir.path().join("a")).unwrap();
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.path().join("b"))
        .unwrap();
    copy_segments(&src, &dst, data.len() as u64).unwrap();
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), data);
}

#[test]
fn source_must_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"").unwrap();
    assert!(copy_tree(&dir.path().join("f"), dir.path()).is_err());
}
