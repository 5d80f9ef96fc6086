//! Helpers shared by the layer-applier tests: building hostile tars, recording a tree.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A tar header with the given type, size, mode and owner 0:0, mtime fixed.
pub(crate) fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

/// Appends an entry whose name and link name are written into the header as given,
/// bypassing the `tar` crate's path checks (which refuse `..` and absolute paths).
pub(crate) fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
    mode: u32,
) {
    let mut h = header(kind, data.len() as u64, mode);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Everything observable about one file in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) mtime: (i64, i64),
    pub(crate) rdev: u64,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) ctime: (i64, i64),
    pub(crate) link: Option<String>,
    pub(crate) content: Option<Vec<u8>>,
    pub(crate) xattrs: BTreeMap<String, Vec<u8>>,
}

pub(crate) fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 << 10];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 64 << 10];
        if let Ok(len) = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]) {
            value.truncate(len);
            out.insert(name, value);
        }
    }
    out
}

/// The tree under `root` (root included as ""), without following symlinks.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<String, Node>) {
    let md = std::fs::symlink_metadata(path).unwrap();
    let rel = path
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ft = md.file_type();
    let node = Node {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_dir() { 0 } else { md.size() },
        mtime: (md.mtime(), md.mtime_nsec()),
        rdev: md.rdev(),
        ino: md.ino(),
        nlink: md.nlink(),
        ctime: (md.ctime(), md.ctime_nsec()),
        link: ft.is_symlink().then(|| {
            std::fs::read_link(path)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        }),
        content: (ft.is_file() && md.size() < 1 << 20).then(|| std::fs::read(path).unwrap()),
        xattrs: xattrs(path),
    };
    out.insert(rel, node);
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
