//! The layer filesystem mounted through the real kernel: tree, attributes, contents, xattrs,
//! overlay presentation (as an overlay lower), EIO on bad chunks, concurrent readers.

mod fixture;

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use fixture::{
    BIG_LEN, CHUNK, HELLO, MTIME, Mounted, big_data, detach_mount, failing_fs, layer_blob, layer_fs,
};
use rand::{Rng, SeedableRng};
use strata_fuse::ServeOptions;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn listxattr(path: &Path) -> Vec<String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid string and buffer.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        r >= 0,
        "listxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn tree_attributes_and_contents() {
    let m = Mounted::new(layer_fs(layer_blob()));
    assert_eq!(
        names(m.path()),
        [
            "big.bin",
            "dev",
            "empty",
            "etc",
            "lower",
            "opq",
            "pipe",
            "xattr.txt"
        ]
    );
    assert_eq!(names(&m.join("etc")), ["hard", "hello.txt", "link"]);
    // The opaque marker is hidden; the whiteout shows under the name it hides.
    assert_eq!(names(&m.join("opq")), ["visible"]);
    assert_eq!(names(&m.join("lower")), ["gone", "kept"]);

    let hello = fs::symlink_metadata(m.join("etc/hello.txt")).unwrap();
    assert!(hello.is_file());
    assert_eq!(hello.mode() & 0o7777, 0o640);
    assert_eq!((hello.uid(), hello.gid()), (1000, 2000));
    assert_eq!(hello.len(), HELLO.len() as u64);
    assert_eq!(hello.mtime(), MTIME as i64);
    assert_eq!(hello.nlink(), 2, "hello.txt and its hardlink");
    let hard = fs::symlink_metadata(m.join("etc/hard")).unwrap();
    assert_eq!(hard.ino(), hello.ino(), "a hardlink is the same inode");
    assert_eq!(fs::read(m.join("etc/hard")).unwrap(), HELLO);
    assert_eq!(fs::read(m.join("etc/hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(m.join("empty")).unwrap(), b"");

    let root = fs::metadata(m.path()).unwrap();
    assert!(root.is_dir());
    assert_eq!(root.ino(), 1);
    assert_eq!(root.nlink(), 2 + 4, "dev, etc, lower, opq");

    let link = fs::symlink_metadata(m.join("etc/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(m.join("etc/link")).unwrap(),
        Path::new("hello.txt")
    );
    assert_eq!(fs::read(m.join("etc/link")).unwrap(), HELLO);

    let null = fs::symlink_metadata(m.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    let sda = fs::symlink_metadata(m.join("dev/sda")).unwrap();
    assert!(sda.file_type().is_block_device());
    assert_eq!((libc::major(sda.rdev()), libc::minor(sda.rdev())), (8, 0));
    assert_eq!(sda.mode() & 0o7777, 0o660);
    assert!(
        fs::symlink_metadata(m.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let gone = fs::symlink_metadata(m.join("lower/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device(),
        "whiteout is a char device"
    );
    assert_eq!(gone.rdev(), 0);
    assert!(fs::symlink_metadata(m.join("lower/.wh.gone")).is_err());
    assert!(fs::symlink_metadata(m.join("opq/.wh..wh..opq")).is_err());

    assert_eq!(
        getxattr(&m.join("xattr.txt"), "user.color").as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(listxattr(&m.join("xattr.txt")), ["user.color"]);
    assert_eq!(getxattr(&m.join("xattr.txt"), "user.none"), None);
    assert_eq!(
        getxattr(&m.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(getxattr(&m.join("lower"), "trusted.overlay.opaque"), None);

    // Read-only.
    let err = fs::write(m.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = fs::OpenOptions::new()
        .write(true)
        .open(m.join("etc/hello.txt"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let p = CString::new(m.path().as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path and out pointer.
    assert_eq!(unsafe { libc::statfs(p.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_bsize, 4096);
    assert!(st.f_blocks as u64 >= (BIG_LEN as u64).div_ceil(4096));
}

#[test]
fn multi_chunk_file_reads_at_chunk_boundaries() {
    let m = Mounted::new(layer_fs(layer_blob()));
    let want = big_data();
    assert_eq!(fs::read(m.join("big.bin")).unwrap(), want);
    let f = fs::File::open(m.join("big.bin")).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut offsets: Vec<u64> = (1..=5)
        .flat_map(|k| [k * CHUNK - 1, k * CHUNK, k * CHUNK - 100])
        .collect();
    offsets.extend((0..50).map(|_| rng.random_range(0..BIG_LEN as u64)));
    for off in offsets {
        let len = rng.random_range(1..3 * CHUNK as usize);
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off).unwrap();
        let end = (off as usize + len).min(BIG_LEN);
        assert_eq!(n, end - off as usize, "read at {off} of {len}");
        assert_eq!(&buf[..n], &want[off as usize..end], "bytes at {off}");
    }
}

fn concurrent_readers_see_the_right_bytes(opts: &ServeOptions) {
    let m = Arc::new(Mounted::with_options(layer_fs(layer_blob()), opts));
    let want = Arc::new(big_data());
    let readers: Vec<_> = (0..8u64)
        .map(|t| {
            let (m, want) = (Arc::clone(&m), Arc::clone(&want));
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                for _ in 0..40 {
                    let f = fs::File::open(m.join("big.bin")).unwrap();
                    let off = rng.random_range(0..BIG_LEN as u64);
                    // Drop the cached pages so the read reaches the server.
                    // SAFETY: fadvise on an open descriptor.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                    let mut buf = vec![0u8; 8192];
                    let n = f.read_at(&mut buf, off).unwrap();
                    assert_eq!(&buf[..n], &want[off as usize..off as usize + n]);
                    assert_eq!(fs::read(m.join("etc/hello.txt")).unwrap(), HELLO);
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn concurrent_readers_on_a_shared_descriptor() {
    concurrent_readers_see_the_right_bytes(&ServeOptions {
        threads: 4,
        ..ServeOptions::default()
    });
}

#[test]
fn concurrent_readers_on_cloned_descriptors() {
    concurrent_readers_see_the_right_bytes(&ServeOptions {
        threads: 4,
        clone_fd: true,
        ..ServeOptions::default()
    });
}

#[test]
fn failing_chunk_source_gives_eio() {
    let m = Mounted::new(failing_fs(layer_blob()));
    // Metadata needs no chunks.
    assert_eq!(
        fs::metadata(m.join("big.bin")).unwrap().len(),
        BIG_LEN as u64
    );
    let err = fs::read(m.join("big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let err = fs::read(m.join("etc/hello.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}

#[test]
fn corrupt_chunk_gives_eio_never_wrong_bytes() {
    let mut blob = layer_blob();
    let probe = layer_fs(blob.clone());
    let big = probe.tree().resolve("big.bin").unwrap();
    // Flip a byte inside the third chunk's compressed member.
    let c = &big.chunks[2];
    let at = (c.extent.offset + c.extent.len / 2) as usize;
    blob[at] ^= 0x55;
    let m = Mounted::new(layer_fs(blob));
    let want = big_data();
    let f = fs::File::open(m.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    // Chunks before the bad one still read.
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], &want[..n]);
    let err = f.read_at(&mut buf, c.offset + 10).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        fs::read(m.join("big.bin")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
}

/// Unmounts an overlay on drop.
struct OverlayGuard(std::path::PathBuf);

impl Drop for OverlayGuard {
    fn drop(&mut self) {
        let _ = detach_mount(&self.0);
    }
}

#[test]
fn layer_is_an_overlay_lower() {
    let m = Mounted::new(layer_fs(layer_blob()));
    let base = tempfile::tempdir().unwrap();
    let lowest = base.path().join("lowest");
    fs::create_dir_all(lowest.join("lower")).unwrap();
    fs::create_dir_all(lowest.join("opq")).unwrap();
    fs::write(lowest.join("lower/gone"), b"hidden by the whiteout").unwrap();
    fs::write(lowest.join("lower/other"), b"still here").unwrap();
    fs::write(lowest.join("opq/hidden"), b"hidden by the opaque dir").unwrap();
    let merged = base.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let opts = format!("lowerdir={}:{}", m.path().display(), lowest.display());
    let target = CString::new(merged.as_os_str().as_bytes()).unwrap();
    let data = CString::new(opts).unwrap();
    // SAFETY: valid strings.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "overlay mount: {}", std::io::Error::last_os_error());
    let _guard = OverlayGuard(merged.clone());

    assert_eq!(names(&merged.join("lower")), ["kept", "other"]);
    assert_eq!(
        fs::symlink_metadata(merged.join("lower/gone"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(names(&merged.join("opq")), ["visible"]);
    assert_eq!(fs::read(merged.join("opq/visible")).unwrap(), b"yes");
    assert_eq!(fs::read(merged.join("etc/hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(merged.join("big.bin")).unwrap(), big_data());
}

#[test]
fn unmount_aborts_a_connection_a_copy_in_another_namespace_keeps_alive() {
    let mut m = Mounted::new(layer_fs(layer_blob()));
    let server = m.server.take().unwrap();
    let id = server.connection_id().unwrap();
    let conn_dir = Path::new("/sys/fs/fuse/connections").join(id.to_string());
    // A process in a new mount namespace: its namespace holds a copy of the mount.
    let mut holder = std::process::Command::new("unshare")
        .args(["--mount", "sleep", "60"])
        .spawn()
        .unwrap();
    let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
    let theirs = format!("/proc/{}/ns/mnt", holder.id());
    for _ in 0..200 {
        if fs::read_link(&theirs).is_ok_and(|ns| ns != ours) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let copy = format!("/proc/{}/root{}", holder.id(), m.path().display());
    assert_eq!(
        fs::read(format!("{copy}/lower/kept")).unwrap(),
        b"kept",
        "the copy is served"
    );

    server.unmount().unwrap();
    let err = fs::symlink_metadata(format!("{copy}/opq/visible")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "the copy's connection is aborted"
    );
    assert!(
        !fs::read_dir(m.path()).unwrap().any(|_| true),
        "our mount point is empty again"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The connection is gone once the last copy goes.
    for _ in 0..200 {
        if !conn_dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!conn_dir.exists(), "{} still exists", conn_dir.display());
}
