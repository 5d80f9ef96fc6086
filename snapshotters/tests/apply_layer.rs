//! The layer applier on well-formed layers: every entry kind round-trips with its
//! metadata, whiteouts work in both modes (Overlay checked through a real overlay mount),
//! every compression is read, the diffID is checked, and broken streams fail naming the
//! layer and the entry. Needs root (owners, devices, trusted xattrs, mounts).

mod apply_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use apply_common::{gzip, header, raw_entry, tree};
use strata_formats::Digest;
use strata_snapshotters::Mount;
use strata_snapshotters::apply::{
    ApplyError, ApplyOptions, WhiteoutMode, apply_layer, apply_to_mounts,
};

const LAYER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn delete() -> ApplyOptions {
    ApplyOptions::new(LAYER, WhiteoutMode::Delete)
}

fn overlay() -> ApplyOptions {
    ApplyOptions::new(LAYER, WhiteoutMode::Overlay { userxattr: false })
}

/// A layer with one entry of every kind and the metadata that must survive.
fn every_kind() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0, 0o750);
    h.set_uid(1000);
    h.set_gid(1001);
    b.append_pax_extensions([("mtime", &b"1600000000.5"[..])])
        .unwrap();
    b.append_data(&mut h, "etc/", &b""[..]).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.origin", &b"layer"[..])])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 5, 0o4755);
    h.set_uid(1002);
    h.set_gid(1003);
    b.append_data(&mut h, "etc/setuid", &b"hello"[..]).unwrap();
    b.append_pax_extensions([
        ("mtime", &b"1600000001.123456789"[..]),
        (
            "SCHILY.xattr.security.capability",
            &[
                1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ][..],
        ),
    ])
    .unwrap();
    let mut h = header(tar::EntryType::Regular, 4, 0o755);
    h.set_uid(1005);
    b.append_data(&mut h, "bin/ping", &b"ping"[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 3, 0o2640);
    b.append_data(&mut h, "implicit/parent/file", &b"abc"[..])
        .unwrap();
    let long = format!("etc/{}", "l".repeat(180));
    b.append_data(
        &mut header(tar::EntryType::Regular, 4, 0o600),
        &long,
        &b"long"[..],
    )
    .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    h.set_uid(1004);
    b.append_link(&mut h, "etc/abs", "/etc/setuid").unwrap();
    b.append_link(
        &mut header(tar::EntryType::Symlink, 0, 0o777),
        "etc/rel",
        "../implicit",
    )
    .unwrap();
    // A hard link adds a name: the shared inode keeps the target's setuid bit and capability.
    let mut h = header(tar::EntryType::Link, 0, 0o4755);
    h.set_uid(1002);
    h.set_gid(1003);
    b.append_link(&mut h, "etc/hard", "etc/setuid").unwrap();
    let mut h = header(tar::EntryType::Char, 0, 0o620);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", &b""[..]).unwrap();
    let mut h = header(tar::EntryType::Block, 0, 0o660);
    h.set_device_major(7).unwrap();
    h.set_device_minor(42).unwrap();
    b.append_data(&mut h, "dev/loop42", &b""[..]).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Fifo, 0, 0o1644),
        "run/fifo",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o1777),
        "tmp",
        &b""[..],
    )
    .unwrap();
    b.into_inner().unwrap()
}

#[test]
fn every_entry_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let tar = every_kind();
    let report = apply_layer(&tar[..], dir.path(), &delete()).unwrap();
    assert_eq!(report.diff_id, Digest::of(&tar));
    assert_eq!(report.size, tar.len() as u64);
    assert_eq!((report.entries, report.files), (12, 4));
    let t = tree(dir.path());

    let etc = &t["etc"];
    assert_eq!((etc.mode & 0o7777, etc.uid, etc.gid), (0o750, 1000, 1001));
    assert_eq!(
        etc.mtime,
        (1_600_000_000, 500_000_000),
        "directory mtime is set after its content"
    );
    let setuid = &t["etc/setuid"];
    assert_eq!(
        (setuid.mode & 0o7777, setuid.uid, setuid.gid),
        (0o4755, 1002, 1003)
    );
    assert_eq!(setuid.content.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        setuid.mtime,
        (1_600_000_000, 0),
        "the hard link's header set the shared inode's times"
    );
    assert_eq!(setuid.xattrs["user.origin"], b"layer");
    let ping = &t["bin/ping"];
    assert_eq!((ping.uid, ping.mtime), (1005, (1_600_000_001, 123_456_789)));
    assert!(
        ping.xattrs.contains_key("security.capability"),
        "xattrs are set after chown, which clears capabilities"
    );
    assert_eq!(t["etc/hard"].ino, setuid.ino);
    assert_eq!(t["implicit/parent/file"].mode & 0o7777, 0o2640);
    assert_eq!(t["implicit/parent"].mode & 0o7777, 0o755);
    assert_eq!(
        t[&format!("etc/{}", "l".repeat(180))].content.as_deref(),
        Some(&b"long"[..])
    );
    assert_eq!(t["etc/abs"].link.as_deref(), Some("/etc/setuid"));
    assert_eq!(
        (t["etc/abs"].uid, t["etc/abs"].mtime),
        (1004, (1_600_000_000, 0))
    );
    assert_eq!(t["etc/rel"].link.as_deref(), Some("../implicit"));
    let null = std::fs::symlink_metadata(dir.path().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (rustix::fs::makedev(1, 3), 0o620)
    );
    let lo = std::fs::symlink_metadata(dir.path().join("dev/loop42")).unwrap();
    assert!(lo.file_type().is_block_device());
    assert_eq!(lo.rdev(), rustix::fs::makedev(7, 42));
    let fifo = std::fs::symlink_metadata(dir.path().join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o1644);
    assert_eq!(t["tmp"].mode & 0o7777, 0o1777);
}

#[test]
fn every_compression_gives_the_same_tree_and_diff_id() {
    let tar = every_kind();
    let expected = Digest::of(&tar);
    let mut trees = Vec::new();
    for blob in [
        tar.clone(),
        gzip(&tar),
        zstd::encode_all(&tar[..], 3).unwrap(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            expected_diff_id: Some(expected.clone()),
            ..overlay()
        };
        let report = apply_layer(&blob[..], dir.path(), &opts).unwrap();
        assert_eq!(report.diff_id, expected);
        let mut t = tree(dir.path());
        t.values_mut().for_each(|n| (n.ino, n.ctime) = (0, (0, 0)));
        // Directories the layer does not list are created now, with the current time.
        for implicit in ["", "bin", "dev", "run", "implicit", "implicit/parent"] {
            t.remove(implicit);
        }
        trees.push(t);
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
}

#[test]
fn a_wrong_diff_id_fails_naming_both_digests() {
    let tar = every_kind();
    let wrong = Digest::of(b"something else");
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        expected_diff_id: Some(wrong.clone()),
        ..delete()
    };
    let err = apply_layer(&gzip(&tar)[..], dir.path(), &opts).unwrap_err();
    assert!(matches!(err, ApplyError::DiffIdMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong.to_string())
            && msg.contains(&Digest::of(&tar).to_string())
            && msg.contains(LAYER),
        "{msg}"
    );
}

#[test]
fn trailing_data_after_the_archive_is_part_of_the_diff_id() {
    let mut tar = every_kind();
    tar.extend_from_slice(&[0u8; 10240]);
    let dir = tempfile::tempdir().unwrap();
    let report = apply_layer(&tar[..], dir.path(), &delete()).unwrap();
    assert_eq!(
        (report.diff_id, report.size),
        (Digest::of(&tar), tar.len() as u64)
    );
}

/// The lower layer the whiteout tests start from.
fn lower_tree(root: &Path) {
    for d in ["a", "d/sub", "keep"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["a/x", "a/y", "b", "d/old", "d/sub/deep", "keep/k"] {
        std::fs::write(root.join(f), f).unwrap();
    }
}

fn whiteout_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let empty = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0, 0o644),
            name,
            &b""[..],
        )
        .unwrap();
    };
    empty(&mut b, "a/.wh.x");
    empty(&mut b, ".wh.b");
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o755),
        "d/",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 3, 0o644),
        "d/new",
        &b"new"[..],
    )
    .unwrap();
    empty(&mut b, "d/.wh..wh..opq");
    b.into_inner().unwrap()
}

#[test]
fn whiteouts_delete_in_delete_mode() {
    let dir = tempfile::tempdir().unwrap();
    lower_tree(dir.path());
    apply_layer(&whiteout_layer()[..], dir.path(), &delete()).unwrap();
    let names: Vec<String> = tree(dir.path()).into_keys().collect();
    assert_eq!(names, ["", "a", "a/y", "d", "d/new", "keep", "keep/k"]);
}

#[test]
fn whiteouts_hide_lower_files_through_an_overlay_mount() {
    let base = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged) = (
        base.path().join("lower"),
        base.path().join("upper"),
        base.path().join("work"),
        base.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    lower_tree(&lower);
    // A name that exists in the upper already (written by an earlier entry) is whited out too.
    std::fs::create_dir(upper.join("a")).unwrap();
    std::fs::write(upper.join("a/x"), "upper").unwrap();
    let opts = ApplyOptions {
        parents: vec![lower.clone()],
        ..overlay()
    };
    apply_layer(&whiteout_layer()[..], &upper, &opts).unwrap();
    let wh = std::fs::symlink_metadata(upper.join("a/.wh.x").with_file_name("x")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        apply_common::xattrs(&upper.join("d"))
            .get("trusted.overlay.opaque")
            .map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(!upper.join("a/.wh.x").exists() && !upper.join("d/.wh..wh..opq").exists());

    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    };
    m.mount(&merged).unwrap();
    let names: Vec<String> = tree(&merged).into_keys().collect();
    strata_snapshotters::mount::unmount_all(&merged, false).unwrap();
    assert_eq!(names, ["", "a", "a/y", "d", "d/new", "keep", "keep/k"]);
}

#[test]
fn apply_to_mounts_writes_overlay_upper_bind_source_or_through_a_mount() {
    let base = tempfile::tempdir().unwrap();
    let (lower, upper, work, scratch) = (
        base.path().join("lower"),
        base.path().join("upper"),
        base.path().join("work"),
        base.path().join("scratch"),
    );
    for d in [&lower, &upper, &work, &scratch] {
        std::fs::create_dir(d).unwrap();
    }
    lower_tree(&lower);
    std::fs::set_permissions(
        lower.join("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let overlay_mount = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lower.display()),
        ],
    };
    apply_to_mounts(
        &whiteout_layer()[..],
        std::slice::from_ref(&overlay_mount),
        &scratch,
        &delete(),
    )
    .unwrap();
    assert!(
        std::fs::symlink_metadata(upper.join("a/x"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        std::fs::metadata(upper.join("a")).unwrap().mode() & 0o7777,
        0o711,
        "implicit parents copy the lower directory"
    );

    let bind_src = base.path().join("bind");
    std::fs::create_dir(&bind_src).unwrap();
    lower_tree(&bind_src);
    let bind = Mount {
        kind: "bind".into(),
        source: bind_src.display().to_string(),
        target: String::new(),
        options: vec!["rbind".into(), "rw".into()],
    };
    apply_to_mounts(&whiteout_layer()[..], &[bind], &scratch, &overlay()).unwrap();
    assert!(!bind_src.join("a/x").exists() && !bind_src.join("b").exists());

    // Two mounts (a bind with an overlay stacked on it): applied through a temporary mount.
    let top_upper = base.path().join("top-upper");
    let top_work = base.path().join("top-work");
    std::fs::create_dir(&top_upper).unwrap();
    std::fs::create_dir(&top_work).unwrap();
    let mounts = [
        Mount {
            kind: "bind".into(),
            source: bind_src.display().to_string(),
            target: String::new(),
            options: vec!["bind".into()],
        },
        Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", lower.display()),
                format!("upperdir={}", top_upper.display()),
                format!("workdir={}", top_work.display()),
            ],
        },
    ];
    apply_to_mounts(&whiteout_layer()[..], &mounts, &scratch, &overlay()).unwrap();
    assert!(
        std::fs::symlink_metadata(top_upper.join("a/x"))
            .unwrap()
            .file_type()
            .is_char_device(),
        "overlayfs turns the deletion into a whiteout"
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the temporary mount point is removed"
    );
}

#[test]
fn truncated_and_corrupt_streams_fail_naming_layer_and_entry() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 3, 0o644),
        "first",
        &b"one"[..],
    )
    .unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.append_data(
        &mut header(tar::EntryType::Regular, big.len() as u64, 0o644),
        "usr/lib/big.so",
        &big[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 3, 0o644),
        "last",
        &b"end"[..],
    )
    .unwrap();
    let tar = b.into_inner().unwrap();

    for blob in [
        tar[..100_000].to_vec(),
        gzip(&tar[..100_000]),
        zstd::encode_all(&tar[..100_000], 3).unwrap(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(&blob[..], dir.path(), &delete()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(LAYER) && msg.contains("usr/lib/big.so") && msg.contains("truncated"),
            "{msg}"
        );
    }
    // A gzip stream cut short: the decompressor's error, named at the entry being read.
    let gz = gzip(&tar);
    let dir = tempfile::tempdir().unwrap();
    let err = apply_layer(&gz[..gz.len() / 2], dir.path(), &delete()).unwrap_err();
    assert!(
        err.to_string().contains(LAYER) && err.to_string().contains("usr/lib/big.so"),
        "{err}"
    );

    // A header with a bad checksum: named by the entry before it.
    let mut corrupt = tar.clone();
    let last_header = 1536 + big.len().div_ceil(512) * 512;
    corrupt[last_header + 3] ^= 0x55;
    let dir = tempfile::tempdir().unwrap();
    let err = apply_layer(&gzip(&corrupt)[..], dir.path(), &delete()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(LAYER) && msg.contains("after \"usr/lib/big.so\"") && msg.contains("checksum"),
        "{msg}"
    );

    // Flipped bits in the compressed data: the decompressor or the diffID check catches it.
    let mut bad = gzip(&tar);
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0xa5;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        expected_diff_id: Some(Digest::of(&tar)),
        ..delete()
    };
    let err = apply_layer(&bad[..], dir.path(), &opts).unwrap_err();
    assert!(err.to_string().contains(LAYER), "{err}");
}

#[test]
fn a_file_replaces_a_directory_and_a_directory_replaces_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("was-dir/inner")).unwrap();
    std::fs::write(dir.path().join("was-file"), "x").unwrap();
    std::fs::create_dir(dir.path().join("merged")).unwrap();
    std::fs::write(dir.path().join("merged/kept"), "k").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 1, 0o600),
        "was-dir",
        &b"f"[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o700),
        "was-file",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o711),
        "merged",
        &b""[..],
    )
    .unwrap();
    raw_entry(
        &mut b,
        tar::EntryType::Regular,
        "merged/kept",
        "",
        b"new",
        0o644,
    );
    apply_layer(&b.into_inner().unwrap()[..], dir.path(), &delete()).unwrap();
    let t = tree(dir.path());
    assert_eq!(t["was-dir"].content.as_deref(), Some(&b"f"[..]));
    assert_eq!(t["was-file"].mode & 0o170777, 0o040700);
    assert_eq!(t["merged"].mode & 0o7777, 0o711);
    assert_eq!(t["merged/kept"].content.as_deref(), Some(&b"new"[..]));
}
