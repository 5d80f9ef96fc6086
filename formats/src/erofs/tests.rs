//! Unit tests of the EROFS writer: images built from entries, read back with erofs-rs (an
//! independent reader) and checked by our validator.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use erofs_rs::EroFS;
use erofs_rs::backend::SliceImage;

use super::*;
use crate::tar_layer::Timestamp;

/// One object as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Obj {
    pub(crate) kind: ObjKind,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: (i64, u32),
    pub(crate) nlink: u32,
    pub(crate) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjKind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    Socket,
}

/// Every path of the image (root as "") with what erofs-rs reads there.
pub(crate) fn read_tree(image: &[u8]) -> BTreeMap<Vec<u8>, Obj> {
    let fs = EroFS::new(SliceImage::new(image)).expect("erofs-rs opens the image");
    let mut out = BTreeMap::new();
    let root = fs.get_inode(fs.super_block().root_inode_id()).unwrap();
    out.insert(Vec::new(), obj(&fs, root));
    for e in fs.walk_dir("/").unwrap() {
        let e = e.unwrap();
        let path = e.dir_entry.path();
        let p = path.as_bytes();
        let p = p.strip_prefix(b"/").unwrap_or(p).to_vec();
        out.insert(p, obj(&fs, e.inode));
    }
    out
}

fn obj(fs: &EroFS<SliceImage<'_>>, inode: erofs_rs::types::Inode) -> Obj {
    use std::os::unix::fs::PermissionsExt;
    let ft = inode.file_type();
    let kind = if ft.is_dir() {
        ObjKind::Dir
    } else if ft.is_file() {
        let mut data = Vec::new();
        fs.open_inode_file(inode)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        ObjKind::File(data)
    } else if ft.is_symlink() {
        ObjKind::Symlink(fs.read_link_inode(inode).unwrap().as_bytes().to_vec())
    } else if ft.is_char_device() {
        let (a, b) = inode.device().unwrap();
        ObjKind::Char(a, b)
    } else if ft.is_block_device() {
        let (a, b) = inode.device().unwrap();
        ObjKind::Block(a, b)
    } else if ft.is_fifo() {
        ObjKind::Fifo
    } else {
        ObjKind::Socket
    };
    Obj {
        kind,
        mode: inode.permissions().mode() & 0o7777,
        uid: inode.uid(),
        gid: inode.gid(),
        mtime: inode.modified_unix(),
        nlink: inode.nlink(),
        xattrs: fs.xattrs_inode(inode).unwrap(),
    }
}

pub(crate) fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 123,
        },
        xattrs: Vec::new(),
    }
}

fn build(opts: BuildOptions, entries: Vec<(Entry, Vec<u8>)>) -> Vec<u8> {
    let mut b = Builder::new(Cursor::new(Vec::new()), opts).unwrap();
    for (e, data) in entries {
        b.add(e, &mut data.as_slice()).unwrap();
    }
    let (out, report) = b.finish().unwrap();
    let image = out.into_inner();
    assert_eq!(image.len() as u64, report.bytes);
    assert_eq!(image.len() as u64 % u64::from(report.block_size), 0);
    validate(&image).expect("our own image validates");
    image
}

fn file(path: &str, data: &[u8]) -> (Entry, Vec<u8>) {
    (
        entry(
            path,
            EntryKind::File {
                size: data.len() as u64,
            },
        ),
        data.to_vec(),
    )
}

#[test]
fn every_kind_reads_back() {
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let mut suid = file("bin/su", b"#!/bin/sh\n");
    suid.0.mode = 0o4755;
    suid.0.uid = 70000;
    suid.0.gid = 100;
    let mut x = file("etc/x", b"x");
    x.0.xattrs = vec![
        (b"user.a".to_vec(), b"1".to_vec()),
        (b"security.capability".to_vec(), vec![1, 2, 3]),
    ];
    let mut dir = entry("etc", EntryKind::Dir);
    dir.mode = 0o1777;
    let entries = vec![
        (dir, vec![]),
        file("etc/big", &big),
        file("etc/empty", b""),
        x,
        suid,
        (
            entry(
                "lnk",
                EntryKind::Symlink {
                    target: b"/etc/big".to_vec(),
                },
            ),
            vec![],
        ),
        (
            entry(
                "hard",
                EntryKind::Hardlink {
                    target: b"etc/big".to_vec(),
                },
            ),
            vec![],
        ),
        (
            entry("dev/null", EntryKind::CharDevice { major: 1, minor: 3 }),
            vec![],
        ),
        (
            entry(
                "dev/sda",
                EntryKind::BlockDevice {
                    major: 8,
                    minor: 300,
                },
            ),
            vec![],
        ),
        (entry("dev/fifo", EntryKind::Fifo), vec![]),
        (entry("dev/sock", EntryKind::Socket), vec![]),
    ];
    for inline_data in [true, false] {
        let image = build(
            BuildOptions {
                inline_data,
                ..BuildOptions::default()
            },
            entries.clone(),
        );
        let t = read_tree(&image);
        assert_eq!(t[&b"etc/big"[..]].kind, ObjKind::File(big.clone()));
        assert_eq!(t[&b"etc/big"[..]].nlink, 2);
        assert_eq!(t[&b"hard"[..]], t[&b"etc/big"[..]]);
        assert_eq!(t[&b"etc/empty"[..]].kind, ObjKind::File(vec![]));
        assert_eq!(t[&b"etc"[..]].mode, 0o1777);
        assert_eq!(t[&b"etc"[..]].mtime, (1_700_000_000, 123));
        let su = &t[&b"bin/su"[..]];
        assert_eq!((su.mode, su.uid, su.gid), (0o4755, 70000, 100));
        // An implied parent: root-owned 0755 at the build time.
        let bin = &t[&b"bin"[..]];
        assert_eq!(
            (bin.kind.clone(), bin.mode, bin.mtime),
            (ObjKind::Dir, 0o755, (0, 0))
        );
        assert_eq!(
            t[&b"etc/x"[..]].xattrs,
            BTreeMap::from([
                (b"security.capability".to_vec(), vec![1, 2, 3]),
                (b"user.a".to_vec(), b"1".to_vec()),
            ])
        );
        assert_eq!(t[&b"lnk"[..]].kind, ObjKind::Symlink(b"/etc/big".to_vec()));
        assert_eq!(t[&b"dev/null"[..]].kind, ObjKind::Char(1, 3));
        assert_eq!(t[&b"dev/sda"[..]].kind, ObjKind::Block(8, 300));
        assert_eq!(t[&b"dev/fifo"[..]].kind, ObjKind::Fifo);
        assert_eq!(t[&b"dev/sock"[..]].kind, ObjKind::Socket);
        assert_eq!(t[&b""[..]].nlink, 5); // ., .., bin, dev, etc
    }
}

#[test]
fn large_directories_span_blocks_and_stay_sorted() {
    let mut entries = Vec::new();
    for i in 0..3000 {
        let name = format!("d/{}{}", "n".repeat(i % 200), i);
        entries.push(file(&name, format!("{i}").as_bytes()));
    }
    entries.push(file(&format!("d/{}", "z".repeat(255)), b"long"));
    let image = build(BuildOptions::default(), entries);
    let t = read_tree(&image);
    assert_eq!(t.len(), 3000 + 1 + 2);
    assert_eq!(
        t[format!("d/{}", "z".repeat(255)).as_bytes()].kind,
        ObjKind::File(b"long".to_vec())
    );
    assert_eq!(
        t[format!("d/{}2999", "n".repeat(2999 % 200)).as_bytes()].kind,
        ObjKind::File(b"2999".to_vec())
    );
}

#[test]
fn long_names_are_refused_by_name() {
    let mut b = Builder::new(Cursor::new(Vec::new()), BuildOptions::default()).unwrap();
    let long = format!("a/{}", "x".repeat(256));
    let err = b
        .add(entry(&long, EntryKind::Fifo), &mut std::io::empty())
        .unwrap_err();
    assert!(err.to_string().contains("longer than EROFS's 255"), "{err}");
    for bad in ["a/../b", "/a", "a//b", "a/./b"] {
        assert!(
            b.add(entry(bad, EntryKind::Fifo), &mut std::io::empty())
                .is_err()
        );
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let mut d = entry("a", EntryKind::Dir);
    d.mode = 0o700;
    let entries = vec![
        file("a/f", b"one"),
        file("a/f", b"two!"),
        file("a/g", b"g"),
        (d, vec![]),
        file("b", b"file"),
        (entry("b", EntryKind::Dir), vec![]),
        file("b/c", b"c"),
        file("h1", b"shared"),
        (
            entry(
                "h2",
                EntryKind::Hardlink {
                    target: b"h1".to_vec(),
                },
            ),
            vec![],
        ),
        file("h1", b"replaced"),
    ];
    let t = read_tree(&build(BuildOptions::default(), entries));
    assert_eq!(t[&b"a/f"[..]].kind, ObjKind::File(b"two!".to_vec()));
    // A directory over a directory keeps its contents.
    assert_eq!(t[&b"a"[..]].mode, 0o700);
    assert!(t.contains_key(&b"a/g"[..]));
    assert_eq!(t[&b"b/c"[..]].kind, ObjKind::File(b"c".to_vec()));
    // The link keeps the old inode; both names now have one link each.
    assert_eq!(t[&b"h2"[..]].kind, ObjKind::File(b"shared".to_vec()));
    assert_eq!(t[&b"h2"[..]].nlink, 1);
    assert_eq!(t[&b"h1"[..]].kind, ObjKind::File(b"replaced".to_vec()));
}

#[test]
fn sparse_giants_cost_their_data() {
    let size = 64u64 << 30; // 64 GiB
    let segments = vec![
        SparseSegment {
            offset: 4096 * 3 + 5,
            length: 10,
        },
        SparseSegment {
            offset: size - 7,
            length: 7,
        },
    ];
    let data = b"0123456789abcdefg".to_vec();
    let e = entry("sparse", EntryKind::SparseFile { size, segments });
    let mut b = Builder::new(Cursor::new(Vec::new()), BuildOptions::default()).unwrap();
    b.add(e, &mut data.as_slice()).unwrap();
    let image = b.finish().unwrap().0.into_inner();
    assert!(image.len() < 8 << 20, "image is {} bytes", image.len());
    validate(&image).unwrap();
    let fs = EroFS::new(SliceImage::new(&image)).unwrap();
    let listed: Vec<_> = fs.read_dir("/").unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(listed[0].inode.data_size(), size);
    let mut f = fs.open("/sparse").unwrap();
    let mut head = vec![0u8; 4096 * 4];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head[4096 * 3 + 5..4096 * 3 + 15], b"0123456789");
    assert!(head[..4096 * 3 + 5].iter().all(|&b| b == 0));
}

#[test]
fn same_entries_give_same_bytes_and_uuid_is_kept() {
    let entries = || {
        let mut v = vec![file("a", b"1"), file("b/c", &[7; 5000])];
        v[0].0.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        v[1].0.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        v
    };
    let opts = BuildOptions {
        uuid: layer_uuid("sha256:00"),
        ..BuildOptions::default()
    };
    let one = build(opts.clone(), entries());
    let two = build(opts.clone(), entries());
    assert_eq!(one, two);
    assert_eq!(&one[1024 + 48..1024 + 64], &opts.uuid);
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_marks() {
    let mut b = Builder::new(Cursor::new(Vec::new()), BuildOptions::default()).unwrap();
    b.add(entry("d/gone", EntryKind::Whiteout), &mut std::io::empty())
        .unwrap();
    b.mark_opaque(b"o").unwrap();
    let image = b.finish().unwrap().0.into_inner();
    validate(&image).unwrap();
    let t = read_tree(&image);
    assert_eq!(t[&b"d/gone"[..]].kind, ObjKind::Char(0, 0));
    assert_eq!(
        t[&b"d"[..]].xattrs,
        BTreeMap::from([(b"trusted.overlay.origin".to_vec(), vec![])])
    );
    assert_eq!(
        t[&b"o"[..]].xattrs,
        BTreeMap::from([(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())])
    );
}

#[test]
fn metadata_held_in_memory_is_bounded() {
    let opts = BuildOptions {
        max_metadata_bytes: 64 << 10,
        ..BuildOptions::default()
    };
    let mut b = Builder::new(Cursor::new(Vec::new()), opts).unwrap();
    let mut err = None;
    for i in 0..10_000 {
        let mut e = entry(&format!("d/f{i}"), EntryKind::Fifo);
        e.xattrs = vec![(b"user.pad".to_vec(), vec![0; 100])];
        if let Err(e) = b.add(e, &mut std::io::empty()) {
            err = Some((i, e));
            break;
        }
    }
    let (i, e) = err.expect("the bound stops the build");
    assert!(i < 300, "stopped only at entry {i}");
    assert!(matches!(e, ErofsError::TooLarge(_)), "{e:?}");
    assert!(e.to_string().contains("bytes of metadata"), "{e}");
}

#[test]
fn long_xattr_prefixes_read_back_and_shrink_entries() {
    let make = |xattr_prefixes: Vec<Vec<u8>>| {
        let mut b = Builder::new(
            Cursor::new(Vec::new()),
            BuildOptions {
                xattr_prefixes,
                ..BuildOptions::default()
            },
        )
        .unwrap();
        for i in 0..50 {
            let mut e = entry(&format!("f{i}"), EntryKind::Fifo);
            e.xattrs = vec![
                (
                    b"trusted.overlay.redirect".to_vec(),
                    format!("/x{i}").into_bytes(),
                ),
                (b"user.plain".to_vec(), format!("{i}").into_bytes()),
            ];
            b.add(e, &mut std::io::empty()).unwrap();
        }
        b.add(entry("d/.wh", EntryKind::Whiteout), &mut std::io::empty())
            .unwrap();
        b.mark_opaque(b"d").unwrap();
        b.finish().unwrap().0.into_inner()
    };
    let plain = make(Vec::new());
    let long = make(vec![b"trusted.overlay.".to_vec(), b"user.pl".to_vec()]);
    validate(&long).unwrap();
    let t = read_tree(&long);
    assert_eq!(t, read_tree(&plain));
    assert_eq!(
        t[&b"f7"[..]].xattrs[&b"trusted.overlay.redirect"[..]],
        b"/x7".to_vec()
    );
    assert_eq!(
        t[&b"d"[..]].xattrs.keys().cloned().collect::<Vec<_>>(),
        vec![
            b"trusted.overlay.opaque".to_vec(),
            b"trusted.overlay.origin".to_vec()
        ]
    );
    let sb = ondisk::Superblock::decode(long[1024..1152].try_into().unwrap()).unwrap();
    assert_eq!(sb.xattr_prefix_count, 2);
    assert_ne!(sb.feature_incompat & ondisk::INCOMPAT_XATTR_PREFIXES, 0);
    // Bad prefixes are refused up front.
    for bad in [b"user.".to_vec(), b"other.x".to_vec()] {
        let opts = BuildOptions {
            xattr_prefixes: vec![bad],
            ..BuildOptions::default()
        };
        assert!(Builder::new(Cursor::new(Vec::new()), opts).is_err());
    }
}
