//! Tar layers into EROFS images, read back without the kernel: erofs-rs sees the input
//! tree, `fsck.erofs` 1.5 and our validator accept the images, the same layer gives the
//! same bytes, memory stays bounded for a large file, and random trees round-trip.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use proptest::prelude::*;
use strata_formats::erofs::{
    BuildOptions, ErofsError, build_from_tar, build_tar_index, layer_uuid, validate,
};

use crate::common::{
    Kind, Obj, Tree, assert_same_tree, fsck, header, read_erofs, sample_layer, set_dir_nlinks,
};

pub(crate) fn image_of(tar: &[u8], opts: &BuildOptions) -> Vec<u8> {
    build_from_tar(tar, Cursor::new(Vec::new()), opts)
        .unwrap()
        .0
        .into_inner()
}

pub(crate) fn tar_index_of(tar: &[u8]) -> Vec<u8> {
    let (out, report) = build_tar_index(
        Cursor::new(tar),
        Cursor::new(Vec::new()),
        &BuildOptions::default(),
    )
    .unwrap();
    let image = out.into_inner();
    assert_eq!(report.tar_bytes, tar.len() as u64);
    assert_eq!(
        &image[report.index_bytes as usize..][..tar.len()],
        tar,
        "the tar follows the index as is"
    );
    image
}

fn fsck_bytes(image: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.erofs");
    std::fs::write(&path, image).unwrap();
    fsck(&path);
}

#[test]
fn tar_layer_reads_back_with_erofs_rs_and_fsck_accepts_it() {
    let (tar, want) = sample_layer();
    for inline_data in [true, false] {
        let opts = BuildOptions {
            inline_data,
            ..BuildOptions::default()
        };
        let image = image_of(&tar, &opts);
        assert_same_tree(&read_erofs(&image), &want);
        let summary = validate(&image).unwrap();
        assert_eq!(
            summary.inodes as usize,
            want.len() - 1,
            "one inode per path, hard link shared"
        );
        fsck_bytes(&image);
    }
}

#[test]
fn tar_index_image_references_the_tar_in_place() {
    let (tar, want) = sample_layer();
    let image = tar_index_of(&tar);
    // Far smaller than the data: only metadata precede the tar.
    assert!(
        image.len() < tar.len() + 200 * 1024,
        "{} vs tar {}",
        image.len(),
        tar.len()
    );
    assert_same_tree(&read_erofs(&image), &want);
    validate(&image).unwrap();
    // No fsck.erofs here: erofs-utils 1.5 only reads images whose block size is the page
    // size; the kernel mounts these (mounts.rs).
}

#[test]
fn same_layer_gives_same_bytes() {
    let (tar, _) = sample_layer();
    let opts = BuildOptions {
        uuid: layer_uuid("sha256:abc"),
        ..BuildOptions::default()
    };
    let one = image_of(&tar, &opts);
    assert_eq!(one, image_of(&tar, &opts));
    // However the stream is chunked on the way in.
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let trickled = build_from_tar(OneByte(&tar), Cursor::new(Vec::new()), &opts).unwrap();
    assert_eq!(one, trickled.0.into_inner());
    assert_eq!(tar_index_of(&tar), tar_index_of(&tar));
}

#[test]
fn untrusted_layers_fail_naming_the_entry() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                b.append_link(
                    &mut header(tar::EntryType::Link, 0, 0o644, 0),
                    "a/link",
                    "missing",
                )
                .unwrap();
                b.into_inner().unwrap()
            },
            "\"a/link\": hard link target \"missing\" does not exist",
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                let name = format!("d/{}", "n".repeat(300));
                b.append_data(
                    &mut header(tar::EntryType::Regular, 1, 0o644, 0),
                    &name,
                    &b"x"[..],
                )
                .unwrap();
                b.into_inner().unwrap()
            },
            "longer than EROFS's 255",
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                b.append_data(
                    &mut header(tar::EntryType::Regular, 1, 0o644, 0),
                    "f",
                    &b"x"[..],
                )
                .unwrap();
                b.append_data(
                    &mut header(tar::EntryType::Regular, 1, 0o644, 0),
                    "f/g",
                    &b"x"[..],
                )
                .unwrap();
                b.into_inner().unwrap()
            },
            "\"f/g\": its parent \"f\" is not a directory",
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                b.append_pax_extensions([("SCHILY.xattr.bogus.name", &b"v"[..])])
                    .unwrap();
                b.append_data(
                    &mut header(tar::EntryType::Regular, 1, 0o644, 0),
                    "x",
                    &b"x"[..],
                )
                .unwrap();
                b.into_inner().unwrap()
            },
            "xattr \"bogus.name\" is not in a namespace EROFS stores",
        ),
    ];
    for (tar, want) in cases {
        let err = build_from_tar(&tar[..], Cursor::new(Vec::new()), &BuildOptions::default())
            .unwrap_err();
        assert!(matches!(err, ErofsError::InvalidEntry { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
    }
    // A truncated layer is the tar reader's error, with its position.
    let (tar, _) = sample_layer();
    let err = build_from_tar(
        &tar[..3000],
        Cursor::new(Vec::new()),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ErofsError::Tar(_)), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// A `Write + Seek` that keeps nothing: the image's bytes are counted, not stored.
#[derive(Default)]
struct Discard {
    pos: u64,
    len: u64,
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Discard {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_large_file_streams_through_in_bounded_memory() {
    let size = 1u64 << 30;
    let before = peak_rss_kib();
    let (out, report) =
        build_from_tar(zero_tar(size), Discard::default(), &BuildOptions::default()).unwrap();
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(out.len >= size, "the image holds the data");
    assert_eq!(report.inodes, 2);
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB for a 1 GiB file"
    );
}

/// A random tree: paths from a small alphabet (so names collide and nest), files with
/// random sizes around block boundaries, symlinks, and xattrs.
/// A generated entry: path, kind (0 file, 1 directory, 2 symlink), data, xattrs.
type ArbEntry = (String, u8, Vec<u8>, Vec<(String, Vec<u8>)>);

fn arb_tree() -> impl Strategy<Value = Vec<ArbEntry>> {
    let name = "[abc]{1,3}";
    let path = prop::collection::vec(name, 1..4).prop_map(|v| v.join("/"));
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..100),
        (4090usize..4100).prop_map(|n| vec![7u8; n]),
        (0usize..9000).prop_map(|n| (0..n).map(|i| i as u8).collect()),
    ];
    let xattrs = prop::collection::vec(
        ("user\\.[xy]", prop::collection::vec(any::<u8>(), 0..20)),
        0..3,
    );
    prop::collection::vec((path, 0u8..3, data, xattrs), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(entries in arb_tree()) {
        // Keep the first entry per path and only paths whose parents are directories in
        // the set (or absent, so implied), as tar semantics would leave them.
        let mut want = Tree::new();
        let mut b = tar::Builder::new(Vec::new());
        want.insert(String::new(), Obj { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: (0, 0), nlink: 2, xattrs: BTreeMap::new() });
        for (path, kind, data, xattrs) in entries {
            let parts: Vec<&str> = path.split('/').collect();
            let mut ok = !want.contains_key(&path);
            for i in 1..parts.len() {
                let parent = parts[..i].join("/");
                match want.get(&parent) {
                    Some(o) if o.kind != Kind::Dir => ok = false,
                    _ => {}
                }
            }
            if !ok {
                continue;
            }
            for i in 1..parts.len() {
                want.entry(parts[..i].join("/")).or_insert(Obj { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: (0, 0), nlink: 2, xattrs: BTreeMap::new() });
            }
            let mut xmap = BTreeMap::new();
            let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
            for (n, v) in xattrs {
                pax.push((format!("SCHILY.xattr.{n}"), v.clone()));
                xmap.insert(n.into_bytes(), v);
            }
            if !pax.is_empty() {
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
            }
            let (obj_kind, mode) = match kind {
                0 => {
                    b.append_data(&mut header(tar::EntryType::Regular, data.len() as u64, 0o640, 7), &path, &data[..]).unwrap();
                    (Kind::File(data), 0o640)
                }
                1 => {
                    b.append_data(&mut header(tar::EntryType::Directory, 0, 0o711, 7), &path, &b""[..]).unwrap();
                    (Kind::Dir, 0o711)
                }
                _ => {
                    b.append_link(&mut header(tar::EntryType::Symlink, 0, 0o777, 7), &path, "tgt").unwrap();
                    (Kind::Symlink(b"tgt".to_vec()), 0o777)
                }
            };
            want.insert(path, Obj { kind: obj_kind, mode, uid: 0, gid: 0, mtime: (7, 0), nlink: 1, xattrs: xmap });
        }
        set_dir_nlinks(&mut want);
        let tar = b.into_inner().unwrap();
        let image = image_of(&tar, &BuildOptions::default());
        validate(&image).unwrap();
        assert_same_tree(&read_erofs(&image), &want);
        let index = tar_index_of(&tar);
        validate(&index).unwrap();
        assert_same_tree(&read_erofs(&index), &want);
    }
}

/// The segments of the sparse test layer: 16 GiB with data near the start, across a
/// chunk boundary in the middle and at the very end.
pub(crate) const SPARSE_SIZE: u64 = 16 << 30;
pub(crate) fn sparse_segments() -> Vec<(u64, &'static [u8])> {
    vec![
        (5, &b"head"[..]),
        ((8 << 30) - 2, &b"middle"[..]),
        (SPARSE_SIZE - 3, &b"end"[..]),
    ]
}

#[test]
fn sparse_tar_entries_become_holes_not_zeros() {
    let tar = crate::common::gnu_sparse_layer(SPARSE_SIZE, &sparse_segments());
    let image = image_of(&tar, &BuildOptions::default());
    assert!(
        image.len() < 16 << 20,
        "a 16 GiB sparse file took {} bytes",
        image.len()
    );
    validate(&image).unwrap();
    let fs = erofs_rs::EroFS::new(erofs_rs::backend::SliceImage::new(&image)).unwrap();
    let f = fs.open("/sparse").unwrap();
    assert_eq!(f.size(), SPARSE_SIZE);
    for (offset, data) in sparse_segments() {
        let mut buf = vec![0xaau8; data.len() + 4];
        let start = offset - 2;
        let n = f.read_at(&mut buf, start).unwrap();
        let mut want = vec![0u8; 2];
        want.extend_from_slice(data);
        want.resize(buf.len().min((SPARSE_SIZE - start) as usize), 0);
        assert_eq!(
            &buf[..n.min(want.len())],
            &want[..n.min(want.len())],
            "at {offset}"
        );
    }
    // A tar-index image cannot reference holes in the tar: refused, naming the file.
    let err = build_tar_index(
        Cursor::new(&tar[..]),
        Cursor::new(Vec::new()),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"sparse\": a sparse file cannot be referenced"),
        "{err}"
    );
}

/// A file that leaves all-zero writes as holes, so a multi-GiB image of zeros costs
/// little disk.
pub(crate) struct HoleyFile {
    file: std::fs::File,
    pos: u64,
    len: u64,
}

impl HoleyFile {
    pub(crate) fn create(path: &std::path::Path) -> Self {
        let file = std::fs::File::create(path).unwrap();
        Self {
            file,
            pos: 0,
            len: 0,
        }
    }
}

impl Write for HoleyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        // Compared as slices (memcmp), which is fast even in unoptimised test builds.
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        if !buf.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()]) {
            self.file.write_all_at(buf, self.pos)?;
        }
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)
    }
}

impl Seek for HoleyFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
    }
}

/// A tar stream of one file `big` of `size` zero bytes, generated as it is read.
pub(crate) fn zero_tar(size: u64) -> impl Read {
    let mut h = header(tar::EntryType::Regular, size, 0o644, 0);
    h.set_path("big").unwrap();
    h.set_cksum();
    io::Cursor::new(h.as_bytes().to_vec())
        .chain(io::repeat(0).take(size.next_multiple_of(512) + 1024))
}

/// Just over 4 GiB: the size no longer fits a compact inode.
pub(crate) const OVER_4_GIB: u64 = (4 << 30) + 12345;

/// Builds the over-4-GiB image at `path` (mostly holes on disk).
pub(crate) fn over_4_gib_image(path: &std::path::Path) {
    let out = HoleyFile::create(path);
    build_from_tar(zero_tar(OVER_4_GIB), out, &BuildOptions::default()).unwrap();
}

#[test]
fn files_over_4_gib_get_extended_inodes() {
    use strata_formats::erofs::ondisk::{DiskInode, LAYOUT_FLAT_INLINE, Superblock};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.erofs");
    over_4_gib_image(&path);
    let image = strata_formats::FileReadAt::new(std::fs::File::open(&path).unwrap()).unwrap();
    let summary = validate(&image).unwrap();
    assert_eq!(summary.files, 1);
    // The root's third dirent (after `.` and `..`) is `big`; its inode is extended.
    use strata_formats::ReadAt;
    let sb = Superblock::decode(&image.read_range(1024, 128).unwrap().try_into().unwrap()).unwrap();
    let meta = u64::from(sb.meta_blkaddr) << sb.blkszbits;
    let root_at = meta + 32 * u64::from(sb.root_nid);
    let root = DiskInode::decode(&image.read_range(root_at, 64).unwrap(), &sb).unwrap();
    let dirent = image
        .read_range(root_at + root.disk_size() as u64 + 24, 8)
        .unwrap();
    let nid = u64::from_le_bytes(dirent.try_into().unwrap());
    let big = DiskInode::decode(&image.read_range(meta + 32 * nid, 64).unwrap(), &sb).unwrap();
    assert!(big.extended);
    // Whole blocks, then the 57-byte tail inline after the inode.
    assert_eq!((big.size, big.layout), (OVER_4_GIB, LAYOUT_FLAT_INLINE));
}
