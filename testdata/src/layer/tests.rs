//! Unit tests of the layer builder: archive order, metadata, digests, errors.

use super::*;
use crate::testutil::{gunzip, tar_entries};

fn sample() -> LayerSpec {
    LayerSpec::new()
        .file("/etc/os-release", 0o644, "ID=strata\n")
        .owner(1000, 1000)
        .random_file("./home/u/data.bin", 0o600, 3, 70_000)
        .owner(0, 0)
        .hardlink("bin/ls", "/bin/busybox")
        .random_file("bin/busybox", 0o755, 4, 5000)
        .symlink("bin/sh", "busybox")
        .whiteout("etc/motd")
        .opaque("usr/share/doc")
        .file(format!("opt/{}/file.txt", "x".repeat(120)), 0o644, "long")
}

#[test]
fn tar_has_sorted_entries_links_last_and_implicit_dirs() {
    let built = sample().build().unwrap();
    let entries = tar_entries(&built.tar);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let long = format!("opt/{}", "x".repeat(120));
    let long_file = format!("{long}/file.txt");
    assert_eq!(
        names,
        [
            "bin",
            "bin/busybox",
            "bin/sh",
            "etc",
            "etc/.wh.motd",
            "etc/os-release",
            "home",
            "home/u",
            "home/u/data.bin",
            "opt",
            long.as_str(),
            long_file.as_str(),
            "usr",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc/.wh..wh..opq",
            "bin/ls",
        ]
    );
    let by_name = |n: &str| entries.iter().find(|e| e.path == n).unwrap();
    let data = by_name("home/u/data.bin");
    assert_eq!((data.uid, data.gid, data.mode), (1000, 1000, 0o600));
    assert_eq!(data.data, crate::random_bytes(70_000, 3));
    assert_eq!(data.mtime, DEFAULT_MTIME);
    assert_eq!(by_name("bin/ls").link.as_deref(), Some("bin/busybox"));
    assert_eq!(by_name("bin/ls").kind, EntryType::Link);
    assert_eq!(by_name("bin/sh").link.as_deref(), Some("busybox"));
    assert_eq!(by_name("bin/sh").kind, EntryType::Symlink);
    assert_eq!(by_name("etc").kind, EntryType::Directory);
    assert_eq!(by_name("etc/.wh.motd").data, b"");
    assert_eq!(by_name(&long_file).data, b"long");
}

#[test]
fn digests_and_sizes_match_bytes() {
    let built = sample().build().unwrap();
    assert_eq!(built.diff_id, sha256_digest(&built.tar));
    assert_eq!(built.digest, sha256_digest(&built.gzip));
    assert_eq!(built.size, built.gzip.len() as u64);
    assert_eq!(built.uncompressed_size, built.tar.len() as u64);
    assert_eq!(gunzip(&built.gzip), built.tar);
    assert_eq!(built.blob_ref().media_type, MEDIA_TYPE_LAYER_GZIP);
}

#[test]
fn build_is_deterministic() {
    assert_eq!(sample().build().unwrap(), sample().build().unwrap());
}

#[test]
fn explicit_dirs_only() {
    let tar = LayerSpec::new()
        .implicit_dirs(false)
        .file("a/b/c", 0o644, "x")
        .tar()
        .unwrap();
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|e| e.path).collect();
    assert_eq!(names, ["a/b/c"]);
}

#[test]
fn bad_paths_are_rejected() {
    let dup = LayerSpec::new()
        .file("a", 0o644, "1")
        .file("/a", 0o644, "2");
    assert!(matches!(dup.tar(), Err(Error::DuplicatePath(p)) if p == "a"));
    let up = LayerSpec::new().file("a/../../etc/passwd", 0o644, "x");
    assert!(matches!(up.tar(), Err(Error::InvalidPath { .. })));
    let root = LayerSpec::new().dir("/", 0o755);
    assert!(matches!(root.tar(), Err(Error::InvalidPath { .. })));
}

#[test]
fn whiteout_at_root() {
    let entry = Entry {
        path: "/gone".into(),
        kind: EntryKind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
    };
    assert_eq!(entry.archive_path().unwrap(), ".wh.gone");
}
