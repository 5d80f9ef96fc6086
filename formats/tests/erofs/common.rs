//! What the EROFS tests share: a tar layer with every entry kind and its expected tree,
//! and three ways to read a tree back (erofs-rs, a mounted directory) for comparison.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use erofs_rs::EroFS;
use erofs_rs::backend::SliceImage;

/// One object of a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Obj {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub nlink: u32,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// Paths relative to the root (the root is ""), sorted.
pub(crate) type Tree = BTreeMap<String, Obj>;

/// The tree erofs-rs reads from `image`.
pub(crate) fn read_erofs(image: &[u8]) -> Tree {
    use std::os::unix::fs::PermissionsExt;
    let fs = EroFS::new(SliceImage::new(image)).expect("erofs-rs opens the image");
    let obj = |inode: erofs_rs::types::Inode| {
        let ft = inode.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            let mut data = Vec::new();
            fs.open_inode_file(inode)
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            Kind::File(data)
        } else if ft.is_symlink() {
            Kind::Symlink(fs.read_link_inode(inode).unwrap().as_bytes().to_vec())
        } else if ft.is_char_device() {
            let (a, b) = inode.device().unwrap();
            Kind::Char(a, b)
        } else if ft.is_block_device() {
            let (a, b) = inode.device().unwrap();
            Kind::Block(a, b)
        } else {
            Kind::Fifo
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
    };
    let mut out = Tree::new();
    let root = fs.get_inode(fs.super_block().root_inode_id()).unwrap();
    out.insert(String::new(), obj(root));
    for e in fs.walk_dir("/").unwrap() {
        let e = e.unwrap();
        let path = e.dir_entry.path();
        let p = String::from_utf8(path.as_bytes().to_vec()).unwrap();
        out.insert(p.trim_start_matches('/').to_string(), obj(e.inode));
    }
    out
}

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        out.insert(name.to_vec(), value[..len].to_vec());
    }
    out
}

/// The tree under a mounted directory (`root`), read through the kernel.
pub(crate) fn read_dir_tree(root: &Path) -> Tree {
    fn walk(root: &Path, path: &Path, out: &mut Tree) {
        let md = std::fs::symlink_metadata(path).unwrap();
        let ft = md.file_type();
        let rdev = md.rdev();
        let dev = (rustix::fs::major(rdev as _), rustix::fs::minor(rdev as _));
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File(std::fs::read(path).unwrap())
        } else if ft.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            Kind::Symlink(
                std::fs::read_link(path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_char_device() {
            Kind::Char(dev.0, dev.1)
        } else if ft.is_block_device() {
            Kind::Block(dev.0, dev.1)
        } else {
            Kind::Fifo
        };
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(
            rel,
            Obj {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec() as u32),
                nlink: md.nlink() as u32,
                xattrs: xattrs(path),
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// Asserts two trees are equal, naming the first path that differs.
pub(crate) fn assert_same_tree(got: &Tree, want: &Tree) {
    for (path, w) in want {
        match got.get(path) {
            None => panic!("{path:?} is missing"),
            Some(g) => assert_eq!(g, w, "at {path:?}"),
        }
    }
    for path in got.keys() {
        assert!(want.contains_key(path), "{path:?} is unexpected");
    }
}

/// Runs `fsck.erofs` on the image file; fails with its output unless it accepts it.
pub(crate) fn fsck(image: &Path) {
    strata_testdata::host::require_tools(&["/usr/bin/fsck.erofs"]);
    let out = Command::new("/usr/bin/fsck.erofs")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck.erofs refused {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn header(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn obj(kind: Kind, mode: u32, mtime: (i64, u32)) -> Obj {
    Obj {
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        nlink: 1,
        xattrs: BTreeMap::new(),
    }
}

/// Directory link counts (2 + subdirectories), as the image must have them.
pub(crate) fn set_dir_nlinks(t: &mut Tree) {
    let dirs: Vec<String> = t
        .iter()
        .filter(|(_, o)| o.kind == Kind::Dir)
        .map(|(p, _)| p.clone())
        .collect();
    for d in dirs {
        let subdirs = t
            .iter()
            .filter(|(p, o)| {
                o.kind == Kind::Dir
                    && !p.is_empty()
                    && match p.rsplit_once('/') {
                        Some((parent, _)) => *parent == d,
                        None => d.is_empty(),
                    }
            })
            .count() as u32;
        t.get_mut(&d).unwrap().nlink = 2 + subdirs;
    }
}

const T: u64 = 1_500_000_000;

/// A layer with every entry kind, metadata that must survive, whiteouts, a multi-block
/// directory and files around block sizes; and the tree its image must hold.
pub(crate) fn sample_layer() -> (Vec<u8>, Tree) {
    let mut b = tar::Builder::new(Vec::new());
    let mut want = Tree::new();
    let t0 = (T as i64, 0);
    want.insert(String::new(), obj(Kind::Dir, 0o755, (0, 0)));

    let mut h = header(tar::EntryType::Directory, 0, 0o750, T);
    h.set_uid(1000);
    h.set_gid(1001);
    b.append_pax_extensions([("mtime", &b"1600000000.5"[..])])
        .unwrap();
    b.append_data(&mut h, "etc/", &b""[..]).unwrap();
    let mut etc = obj(Kind::Dir, 0o750, (1_600_000_000, 500_000_000));
    (etc.uid, etc.gid) = (1000, 1001);
    // etc holds a whiteout: marked for overlayfs.
    etc.xattrs
        .insert(b"trusted.overlay.origin".to_vec(), Vec::new());
    want.insert("etc".into(), etc);

    b.append_pax_extensions([("SCHILY.xattr.user.origin", &b"layer"[..])])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 5, 0o4755, T);
    h.set_uid(1002);
    h.set_gid(1003);
    b.append_data(&mut h, "etc/setuid", &b"hello"[..]).unwrap();
    let mut setuid = obj(Kind::File(b"hello".to_vec()), 0o4755, t0);
    (setuid.uid, setuid.gid, setuid.nlink) = (1002, 1003, 2);
    setuid
        .xattrs
        .insert(b"user.origin".to_vec(), b"layer".to_vec());
    want.insert("etc/setuid".into(), setuid.clone());
    b.append_link(
        &mut header(tar::EntryType::Link, 0, 0o644, T),
        "etc/hard",
        "etc/setuid",
    )
    .unwrap();
    want.insert("etc/hard".into(), setuid);

    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    b.append_pax_extensions([
        ("mtime", &b"1600000001.123456789"[..]),
        ("SCHILY.xattr.security.capability", &cap[..]),
    ])
    .unwrap();
    let mut h = header(tar::EntryType::Regular, 4, 0o755, T);
    h.set_uid(3_000_000);
    b.append_data(&mut h, "bin/ping", &b"ping"[..]).unwrap();
    let mut ping = obj(
        Kind::File(b"ping".to_vec()),
        0o755,
        (1_600_000_001, 123_456_789),
    );
    ping.uid = 3_000_000;
    ping.xattrs
        .insert(b"security.capability".to_vec(), cap.to_vec());
    want.insert("bin/ping".into(), ping);
    want.insert("bin".into(), obj(Kind::Dir, 0o755, (0, 0)));

    for (name, size) in [
        ("empty", 0usize),
        ("one", 1),
        ("block", 4096),
        ("b4097", 4097),
        ("big", 300_000),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let path = format!("data/{name}");
        b.append_data(
            &mut header(tar::EntryType::Regular, size as u64, 0o644, T),
            &path,
            &data[..],
        )
        .unwrap();
        want.insert(path, obj(Kind::File(data), 0o644, t0));
    }
    want.insert("data".into(), obj(Kind::Dir, 0o755, (0, 0)));

    let long = format!("etc/{}", "l".repeat(250));
    b.append_data(
        &mut header(tar::EntryType::Regular, 4, 0o600, T),
        &long,
        &b"long"[..],
    )
    .unwrap();
    want.insert(long, obj(Kind::File(b"long".to_vec()), 0o600, t0));
    b.append_link(
        &mut header(tar::EntryType::Symlink, 0, 0o777, T),
        "etc/abs",
        "/etc/setuid",
    )
    .unwrap();
    want.insert(
        "etc/abs".into(),
        obj(Kind::Symlink(b"/etc/setuid".to_vec()), 0o777, t0),
    );
    let far = "x/".repeat(1000);
    b.append_link(
        &mut header(tar::EntryType::Symlink, 0, 0o777, T),
        "etc/far",
        &far,
    )
    .unwrap();
    want.insert(
        "etc/far".into(),
        obj(Kind::Symlink(far.into_bytes()), 0o777, t0),
    );

    let mut h = header(tar::EntryType::Char, 0, 0o620, T);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", &b""[..]).unwrap();
    want.insert("dev/null".into(), obj(Kind::Char(1, 3), 0o620, t0));
    let mut h = header(tar::EntryType::Block, 0, 0o660, T);
    h.set_device_major(7).unwrap();
    h.set_device_minor(300).unwrap();
    b.append_data(&mut h, "dev/loop300", &b""[..]).unwrap();
    want.insert("dev/loop300".into(), obj(Kind::Block(7, 300), 0o660, t0));
    b.append_data(
        &mut header(tar::EntryType::Fifo, 0, 0o1644, T),
        "dev/fifo",
        &b""[..],
    )
    .unwrap();
    want.insert("dev/fifo".into(), obj(Kind::Fifo, 0o1644, t0));
    want.insert("dev".into(), obj(Kind::Dir, 0o755, (0, 0)));

    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o1777, T),
        "tmp",
        &b""[..],
    )
    .unwrap();
    want.insert("tmp".into(), obj(Kind::Dir, 0o1777, t0));

    // Whiteouts: a deleted file and an opaque directory with new content.
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o600, T),
        "etc/.wh.gone",
        &b""[..],
    )
    .unwrap();
    want.insert("etc/gone".into(), obj(Kind::Char(0, 0), 0o600, t0));
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o755, T),
        "opq/",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o644, T),
        "opq/.wh..wh..opq",
        &b""[..],
    )
    .unwrap();
    let mut opq = obj(Kind::Dir, 0o755, t0);
    opq.xattrs
        .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
    want.insert("opq".into(), opq);
    b.append_data(
        &mut header(tar::EntryType::Regular, 3, 0o644, T),
        "opq/new",
        &b"new"[..],
    )
    .unwrap();
    want.insert(
        "opq/new".into(),
        obj(Kind::File(b"new".to_vec()), 0o644, t0),
    );

    // A directory of several blocks.
    for i in 0..400 {
        let path = format!("many/entry-with-a-longish-name-{i:04}");
        b.append_data(
            &mut header(tar::EntryType::Regular, 2, 0o644, T),
            &path,
            &b"ok"[..],
        )
        .unwrap();
        want.insert(path, obj(Kind::File(b"ok".to_vec()), 0o644, t0));
    }
    want.insert("many".into(), obj(Kind::Dir, 0o755, (0, 0)));

    set_dir_nlinks(&mut want);
    (b.into_inner().unwrap(), want)
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

/// A layer holding one old-GNU sparse file `sparse` of `real_size` bytes with `data` at
/// each offset (up to 4 segments, the header's own map).
pub(crate) fn gnu_sparse_layer(real_size: u64, segments: &[(u64, &[u8])]) -> Vec<u8> {
    assert!(segments.len() <= 4);
    let stored: u64 = segments.iter().map(|s| s.1.len() as u64).sum();
    let mut h = header(tar::EntryType::GNUSparse, stored, 0o644, T);
    h.set_path("sparse").unwrap();
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, real_size);
    for (slot, (offset, data)) in gnu.sparse.iter_mut().zip(segments) {
        octal(&mut slot.offset, *offset);
        octal(&mut slot.numbytes, data.len() as u64);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    for (_, data) in segments {
        out.extend_from_slice(data);
    }
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}
