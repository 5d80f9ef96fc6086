//! The validator on images made malicious by hand: truncated, bad superblocks, features it
//! does not check, dirents pointing outside, directory loops, data beyond the image,
//! unsorted names, a wrong checksum; and every single-byte corruption of the metadata
//! handled without a panic.

use std::io::Cursor;

use strata_formats::erofs::ondisk::{COMPAT_SB_CHKSUM, DiskInode, Superblock, crc32c};
use strata_formats::erofs::{BuildOptions, Builder, Entry, EntryKind, ErofsError, validate};

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: Default::default(),
        xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
    }
}

/// Root with `a/` (holding `a/b`) and `f` (5000 bytes: a block and an inline tail).
fn image() -> Vec<u8> {
    let mut b = Builder::new(Cursor::new(Vec::new()), BuildOptions::default()).unwrap();
    b.add(entry("a", EntryKind::Dir), &mut std::io::empty())
        .unwrap();
    b.add(entry("a/b", EntryKind::Fifo), &mut std::io::empty())
        .unwrap();
    let data = vec![9u8; 5000];
    b.add(entry("f", EntryKind::File { size: 5000 }), &mut &data[..])
        .unwrap();
    let image = b.finish().unwrap().0.into_inner();
    validate(&image).unwrap();
    image
}

fn sb(image: &[u8]) -> Superblock {
    Superblock::decode(image[1024..1152].try_into().unwrap()).unwrap()
}

fn put_sb(image: &mut [u8], sb: &Superblock) {
    image[1024..1152].copy_from_slice(&sb.encode());
}

fn inode_at(image: &[u8], nid: u64) -> (usize, DiskInode) {
    let s = sb(image);
    let off = (u64::from(s.meta_blkaddr) << s.blkszbits) as usize + nid as usize * 32;
    (off, DiskInode::decode(&image[off..], &s).unwrap())
}

/// Offset of the root's dirent `i` (`.`, `..`, `a`, `f` in order), inline after the
/// root inode and its xattrs.
fn root_dirent(image: &[u8], i: usize) -> usize {
    let (off, disk) = inode_at(image, u64::from(sb(image).root_nid));
    let xattrs = if disk.xattr_icount == 0 {
        0
    } else {
        12 + 4 * (disk.xattr_icount as usize - 1)
    };
    off + disk.disk_size() + xattrs + 12 * i
}

fn nid_of_root_entry(image: &[u8], i: usize) -> u64 {
    let at = root_dirent(image, i);
    u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
}

fn corrupt_err(image: &[u8]) -> String {
    match validate(image) {
        Err(e @ (ErofsError::Corrupt { .. } | ErofsError::ReadImage { .. })) => e.to_string(),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn truncated_images_are_refused() {
    let image = image();
    for cut in [0, 100, 1100, 4096, image.len() / 2, image.len() - 1] {
        assert!(validate(&image[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn bad_superblocks_are_refused_by_field() {
    let good = image();
    let mut bad = good.clone();
    bad[1024] ^= 1;
    assert!(corrupt_err(&bad).contains("superblock: bad magic"));
    for bits in [8, 13] {
        let mut bad = good.clone();
        let mut s = sb(&bad);
        s.blkszbits = bits;
        put_sb(&mut bad, &s);
        assert!(corrupt_err(&bad).contains("block size bits"));
    }
    let mut bad = good.clone();
    let mut s = sb(&bad);
    s.feature_incompat |= 0x2; // compression configs
    put_sb(&mut bad, &s);
    assert!(matches!(
        validate(&bad),
        Err(ErofsError::Unsupported { .. })
    ));
    let mut bad = good.clone();
    let mut s = sb(&bad);
    s.root_nid = u16::MAX;
    put_sb(&mut bad, &s);
    assert!(
        corrupt_err(&bad).contains("nid 65535 (/)"),
        "{}",
        corrupt_err(&bad)
    );
}

#[test]
fn checksums_are_checked_when_flagged() {
    let mut image = image();
    let mut s = sb(&image);
    s.feature_compat |= COMPAT_SB_CHKSUM;
    s.checksum = 0;
    put_sb(&mut image, &s);
    let crc = crc32c(!0, &image[1024..4096]);
    s.checksum = crc;
    put_sb(&mut image, &s);
    validate(&image).unwrap();
    s.checksum = crc ^ 1;
    put_sb(&mut image, &s);
    assert!(corrupt_err(&image).contains("checksum"));
}

#[test]
fn dirents_out_of_range_and_loops_are_refused() {
    let good = image();
    // `a` (dirent 2) pointing far beyond the image.
    let mut bad = good.clone();
    let at = root_dirent(&bad, 2);
    bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = corrupt_err(&bad);
    assert!(e.contains("(/a)") && e.contains("beyond the image"), "{e}");
    // `a` pointing at the root: a directory reached twice.
    let mut bad = good.clone();
    let root = u64::from(sb(&bad).root_nid);
    bad[at..at + 8].copy_from_slice(&root.to_le_bytes());
    let e = corrupt_err(&bad);
    assert!(e.contains("reached twice"), "{e}");
    // `.` pointing elsewhere.
    let mut bad = good.clone();
    let dot = root_dirent(&bad, 0);
    let a = nid_of_root_entry(&good, 2);
    bad[dot..dot + 8].copy_from_slice(&a.to_le_bytes());
    assert!(corrupt_err(&bad).contains("`.` points to"));
    // Names out of order: swap the one-byte names `a` and `f`.
    let mut bad = good.clone();
    let names = root_dirent(&bad, 4);
    assert_eq!(&bad[names..names + 5], b"...af");
    bad[names + 3] = b'f';
    bad[names + 4] = b'a';
    let e = corrupt_err(&bad);
    assert!(
        e.contains("out of order") || e.contains("does not match"),
        "{e}"
    );
}

#[test]
fn data_beyond_the_image_is_refused() {
    let mut bad = image();
    let f = nid_of_root_entry(&bad, 3);
    let (off, _) = inode_at(&bad, f);
    // `i_u` (the block address) is at offset 16 in both inode forms.
    let iu = off + 16;
    bad[iu..iu + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let e = corrupt_err(&bad);
    assert!(e.contains("(/f)") && e.contains("beyond the image"), "{e}");
}

#[test]
fn every_single_byte_corruption_is_handled() {
    let good = image();
    let s = sb(&good);
    let meta = (u64::from(s.meta_blkaddr) << s.blkszbits) as usize;
    let positions = (1024..1152).chain(meta..good.len()).chain(4096..4096 + 512);
    for pos in positions {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[pos] ^= flip;
            // Ok or Err, never a panic.
            let _ = validate(&bad);
        }
    }
}

/// The validator accepts what `mkfs.erofs` 1.5 writes (compact inodes, its own layout and
/// features) and refuses its compressed images as unchecked rather than passing them.
#[test]
fn mkfs_erofs_images_are_accepted_and_compressed_ones_refused() {
    strata_testdata::host::require_tools(&["/usr/bin/mkfs.erofs"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("small"), "hi").unwrap();
    std::fs::write(src.join("sub/big"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("small", src.join("link")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("sub/deeper/file-{i:04}")), i.to_string()).unwrap();
    }
    for (name, args) in [("plain", vec![]), ("lz4", vec!["-zlz4"])] {
        let image = dir.path().join(format!("{name}.erofs"));
        let out = std::process::Command::new("/usr/bin/mkfs.erofs")
            .args(&args)
            .arg(&image)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&image).unwrap();
        match (name, validate(&bytes)) {
            ("plain", Ok(summary)) => assert_eq!(summary.files, 302),
            ("lz4", Err(ErofsError::Unsupported { .. })) => {}
            (name, other) => panic!("{name}: {other:?}"),
        }
    }
}
