use std::collections::BTreeMap;
use strata_formats::estargz::{EntryType, Jtoc, TocEntry, TocIndex};

use super::*;

fn entry(name: &str, t: EntryType) -> TocEntry {
    TocEntry {
        name: name.into(),
        entry_type: t,
        mode: 0o644,
        ..TocEntry::default()
    }
}

fn tree(entries: Vec<TocEntry>) -> LayerTree {
    let toc = Jtoc {
        version: 1,
        entries,
    };
    LayerTree::build(
        "unit",
        TocIndex::build(&toc, 0).unwrap().layer_index().unwrap(),
    )
}

fn child<'a>(t: &'a LayerTree, dir: u64, name: &str) -> Option<&'a Inode> {
    t.lookup(t.inode(dir).unwrap(), name)
}

fn sample() -> Vec<TocEntry> {
    let mut xattr_file = entry("a/x", EntryType::Reg);
    xattr_file.xattrs = BTreeMap::from([
        ("user.k".to_owned(), b"v".to_vec()),
        ("trusted.overlay.redirect".to_owned(), b"/etc".to_vec()),
    ]);
    let mut hard = entry("a/h", EntryType::Hardlink);
    hard.link_name = "a/x".into();
    vec![
        entry("a/", EntryType::Dir),
        xattr_file,
        hard,
        entry("a/.wh.w", EntryType::Reg),
        entry("a/.wh.x", EntryType::Reg),
        entry("b/.wh..wh..opq", EntryType::Reg),
        entry("b/c/", EntryType::Dir),
    ]
}

#[test]
fn inode_numbers_are_a_function_of_the_toc() {
    let (t1, t2) = (tree(sample()), tree(sample()));
    for name in ["a/x", "a/w", "b/c"] {
        let (dir, base) = name.split_once('/').unwrap();
        let d1 = child(&t1, 1, dir).unwrap().ino;
        let d2 = child(&t2, 1, dir).unwrap().ino;
        assert_eq!(d1, d2);
        assert_eq!(
            child(&t1, d1, base).unwrap().ino,
            child(&t2, d2, base).unwrap().ino,
            "{name}"
        );
    }
    assert_eq!(t1.inode(1).unwrap().kind, InodeKind::Directory);
}

#[test]
fn hardlinks_share_the_inode_and_count_links() {
    let t = tree(sample());
    let a = child(&t, 1, "a").unwrap().ino;
    let x = child(&t, a, "x").unwrap();
    assert_eq!(child(&t, a, "h").unwrap().ino, x.ino);
    assert_eq!(x.nlink, 2);
    assert_eq!(x.parent, a);
}

#[test]
fn whiteouts_and_opaque_dirs_are_presented_for_overlayfs() {
    let t = tree(sample());
    let a = child(&t, 1, "a").unwrap();
    let names: Vec<&str> = a.entries.iter().map(|(n, _)| n.as_str()).collect();
    // `.wh.x` loses to the real `x` in the same layer; `.wh.w` shows as `w`.
    assert_eq!(names, ["h", "w", "x"]);
    let w = child(&t, a.ino, "w").unwrap();
    assert_eq!((w.kind, w.rdev), (InodeKind::CharDevice, 0));
    let b = child(&t, 1, "b").unwrap();
    assert_eq!(
        b.xattrs.get(OPAQUE_XATTR).map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert_eq!(b.entries.len(), 1, "the opaque marker is hidden");
    assert_eq!(b.nlink, 3);
    assert_eq!(t.inode(1).unwrap().nlink, 4);
}

#[test]
fn image_supplied_overlay_xattrs_are_dropped() {
    let t = tree(sample());
    let a = child(&t, 1, "a").unwrap().ino;
    let x = child(&t, a, "x").unwrap();
    assert_eq!(x.xattrs.keys().collect::<Vec<_>>(), ["user.k"]);
}

#[test]
fn device_numbers_use_the_kernel_encoding() {
    let mut dev = entry("d", EntryType::Char);
    dev.dev_major = 259;
    dev.dev_minor = 300;
    let t = tree(vec![dev]);
    let d = child(&t, 1, "d").unwrap();
    // new_encode_dev(MKDEV(259, 300))
    assert_eq!(d.rdev, (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12));
}

#[test]
fn inode_numbers_are_toc_node_ids_plus_one() {
    // What an older daemon handed the kernel: a restarted one resuming the connection
    // must number every inode the same.
    let mut entries = sample();
    entries.push(entry(
        strata_formats::estargz::PREFETCH_LANDMARK,
        EntryType::Reg,
    ));
    let toc = TocIndex::build(
        &Jtoc {
            version: 1,
            entries,
        },
        0,
    )
    .unwrap();
    let t = LayerTree::build("unit", toc.layer_index().unwrap());
    for (id, node) in toc.nodes().iter().enumerate() {
        if let Some(inode) = t.inode(id as u64 + 1) {
            assert_eq!(&*inode.path, node.path.as_str());
        }
        let Some(shown) = t.resolve(&node.path) else {
            continue;
        };
        let id = node.link_target.unwrap_or(id);
        if !node.path.rsplit('/').next().unwrap().starts_with(".wh.") {
            assert_eq!(shown.ino, id as u64 + 1, "{}", node.path);
        }
    }
    // The landmark keeps its number but is not listed.
    assert!(child(&t, 1, strata_formats::estargz::PREFETCH_LANDMARK).is_none());
}

#[test]
fn a_tree_from_a_neutral_index() {
    use strata_formats::Digest;
    use strata_formats::layer_index::raw::RawBlobFile;
    let index = RawBlobFile {
        path: "m/w.bin".into(),
        size: 10,
        chunk_size: 4,
        digests: vec![Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c")],
        mode: 0o640,
        mtime: 5,
    }
    .layer_index()
    .unwrap();
    let t = LayerTree::build("raw", index);
    let w = t.resolve("m/w.bin").unwrap();
    assert_eq!(
        (w.kind, w.size, w.perm, w.mtime),
        (InodeKind::RegularFile, 10, 0o640, 5)
    );
    assert_eq!(w.chunks.len(), 3);
    assert_eq!(t.resolve("m").unwrap().nlink, 2);
    assert_eq!(t.inode(1).unwrap().nlink, 3);
    assert_eq!(t.total_file_bytes(), 10);
}
