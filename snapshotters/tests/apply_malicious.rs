//! Hostile layers: each is applied in both whiteout modes next to a sibling "host"
//! directory, and must either fail or land entirely inside the target; the host tree
//! (contents, modes, owners, times, link counts, ctimes) is compared before and after.
//! Needs root (devices, owners).

mod apply_common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use apply_common::{gzip, header, raw_entry, tree};
use strata_formats::tar_layer::TarLayerError;
use strata_snapshotters::apply::{
    ApplyError, ApplyOptions, ApplyReport, WhiteoutMode, apply_layer,
};

const LAYER: &str = "sha256:6666666666666666666666666666666666666666666666666666666666666666";

/// A base directory with `host/` (a secret file, a directory, a subdirectory) beside the
/// target `root/`.
struct Fixture {
    base: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let host = base.path().join("host");
        std::fs::create_dir_all(host.join("dir/sub")).unwrap();
        std::fs::write(host.join("secret"), "do not touch").unwrap();
        std::fs::write(host.join("dir/file"), "host file").unwrap();
        std::fs::create_dir(base.path().join("root")).unwrap();
        Self { base }
    }

    fn host(&self) -> PathBuf {
        self.base.path().join("host")
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    /// The absolute host path as a string, for names and link targets.
    fn host_abs(&self) -> String {
        self.host().display().to_string()
    }

    /// Everything outside `root/`.
    fn outside(&self) -> std::collections::BTreeMap<String, apply_common::Node> {
        let mut t = tree(self.base.path());
        t.retain(|k, _| k != "root" && !k.starts_with("root/"));
        t
    }

    /// Applies `layer` in `mode` to a fresh `root/` and checks nothing outside changed.
    fn apply(
        &self,
        layer: &[u8],
        mode: WhiteoutMode,
        max_size: Option<u64>,
    ) -> Result<ApplyReport, ApplyError> {
        let _ = std::fs::remove_dir_all(self.root());
        std::fs::create_dir(self.root()).unwrap();
        let before = self.outside();
        let result = apply_layer(
            layer,
            &self.root(),
            &ApplyOptions {
                max_size,
                ..ApplyOptions::new(LAYER, mode)
            },
        );
        let after = self.outside();
        assert_eq!(
            before, after,
            "the layer changed something outside the target ({mode:?}): {result:?}"
        );
        result
    }

    /// Applies `layer` in both modes and returns both results.
    fn apply_both(&self, layer: &[u8]) -> [Result<ApplyReport, ApplyError>; 2] {
        [
            WhiteoutMode::Delete,
            WhiteoutMode::Overlay { userxattr: false },
        ]
        .map(|mode| self.apply(layer, mode, None))
    }
}

fn build(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

use tar::EntryType::{Block, Char, Directory, Link, Regular, Symlink};

#[test]
fn path_traversal_lands_inside() {
    let fx = Fixture::new();
    let layer = build(|b| {
        raw_entry(b, Regular, "../../host/secret", "", b"pwned", 0o644);
        raw_entry(
            b,
            Regular,
            "a/../../../../host/dir/file",
            "",
            b"pwned",
            0o644,
        );
        raw_entry(b, Directory, "../../../host/dir/sub/", "", b"", 0o777);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        assert_eq!(
            std::fs::read(fx.root().join("host/secret")).unwrap(),
            b"pwned"
        );
        assert_eq!(
            std::fs::read(fx.root().join("host/dir/file")).unwrap(),
            b"pwned"
        );
    }
}

#[test]
fn absolute_paths_land_inside() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    let layer = build(|b| {
        let mut h = header(Regular, 5, 0o644);
        h.set_path("placeholder").unwrap();
        h.set_cksum();
        b.append_pax_extensions([("path", format!("{abs}/secret").as_bytes())])
            .unwrap();
        b.append(&h, &b"pwned"[..]).unwrap();
        raw_entry(b, Regular, "/rooted", "", b"x", 0o644);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        assert_eq!(
            std::fs::read(fx.root().join(abs.trim_start_matches('/')).join("secret")).unwrap(),
            b"pwned"
        );
        assert!(fx.root().join("rooted").exists());
    }
}

#[test]
fn symlink_then_write_is_confined() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    let layer = build(|b| {
        raw_entry(b, Symlink, "link", &format!("{abs}/dir"), b"", 0o777);
        raw_entry(b, Regular, "link/file", "", b"pwned", 0o644);
        raw_entry(b, Regular, "link/new", "", b"pwned", 0o644);
        raw_entry(b, Symlink, "rel", "../../../../../../../host", b"", 0o777);
        raw_entry(b, Regular, "rel/secret", "", b"pwned", 0o644);
        raw_entry(b, Directory, "link/sub/", "", b"", 0o777);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        // The absolute link is stored as-is (it is data) but resolved inside the root.
        assert_eq!(
            std::fs::read_link(fx.root().join("link")).unwrap(),
            Path::new(&format!("{abs}/dir"))
        );
        let inside = fx.root().join(abs.trim_start_matches('/')).join("dir");
        assert_eq!(std::fs::read(inside.join("file")).unwrap(), b"pwned");
        assert_eq!(
            std::fs::read(fx.root().join("host/secret")).unwrap(),
            b"pwned"
        );
    }
}

#[test]
fn symlinks_to_dotdot_chains_stay_at_the_root() {
    let fx = Fixture::new();
    let layer = build(|b| {
        raw_entry(b, Symlink, "up", "..", b"", 0o777);
        raw_entry(b, Symlink, "up2", "up/up/../..", b"", 0o777);
        raw_entry(b, Directory, "d/", "", b"", 0o755);
        raw_entry(b, Symlink, "d/deep", "../../../../up2/up", b"", 0o777);
        raw_entry(b, Regular, "up/up/up/host/secret", "", b"pwned", 0o644);
        raw_entry(b, Regular, "d/deep/up2/host/dir/file", "", b"pwned", 0o644);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        assert_eq!(
            std::fs::read(fx.root().join("host/secret")).unwrap(),
            b"pwned"
        );
        assert_eq!(
            std::fs::read(fx.root().join("host/dir/file")).unwrap(),
            b"pwned"
        );
    }
}

#[test]
fn absolute_symlink_chains_are_resolved_inside() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    let layer = build(|b| {
        raw_entry(b, Symlink, "l1", "/l2", b"", 0o777);
        raw_entry(b, Symlink, "l2", "/l3/", b"", 0o777);
        raw_entry(b, Symlink, "l3", &abs, b"", 0o777);
        raw_entry(b, Regular, "l1/secret", "", b"pwned", 0o644);
        // A dangling link as a parent: what it points at is created inside, as containerd does.
        raw_entry(b, Symlink, "dangling", &format!("{abs}/newdir"), b"", 0o777);
        raw_entry(b, Regular, "dangling/f", "", b"pwned", 0o644);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        let inside = fx.root().join(abs.trim_start_matches('/'));
        assert_eq!(std::fs::read(inside.join("secret")).unwrap(), b"pwned");
        assert_eq!(std::fs::read(inside.join("newdir/f")).unwrap(), b"pwned");
        assert!(!fx.host().join("newdir").exists());
    }
}

#[test]
fn hard_links_to_host_files_fail() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    for target in [
        format!("{abs}/secret"),
        "../../host/secret".to_string(),
        "../../../../../host/secret".to_string(),
    ] {
        let layer = build(|b| raw_entry(b, Link, "stolen", &target, b"", 0o644));
        for r in fx.apply_both(&layer) {
            let err = r.unwrap_err();
            assert!(
                matches!(err, ApplyError::Write { .. }) && err.to_string().contains("stolen"),
                "{err}"
            );
        }
    }
    // Through a symlink that points out: the link is resolved inside, where nothing is.
    let layer = build(|b| {
        raw_entry(b, Symlink, "out", &abs, b"", 0o777);
        raw_entry(b, Link, "stolen", "out/secret", b"", 0o644);
    });
    for r in fx.apply_both(&layer) {
        assert!(r.is_err());
    }
    // A hard link to a symlink that points out links the symlink itself, never its target.
    let layer = build(|b| {
        raw_entry(b, Symlink, "s", &format!("{abs}/secret"), b"", 0o777);
        raw_entry(b, Link, "h", "s", b"", 0o644);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        let h = std::fs::symlink_metadata(fx.root().join("h")).unwrap();
        assert!(h.file_type().is_symlink() && h.nlink() == 2);
    }
    assert_eq!(
        std::fs::metadata(fx.host().join("secret")).unwrap().nlink(),
        1
    );
}

#[test]
fn device_nodes_are_created_inside_only() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    let layer = build(|b| {
        let mut h = header(Char, 0, 0o666);
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
        h.set_path("dev/mem").unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let mut h = header(Block, 0, 0o666);
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_path("placeholder").unwrap();
        h.set_cksum();
        b.append_pax_extensions([("path", format!("../../{abs}/sda").as_bytes())])
            .unwrap();
        b.append(&h, &b""[..]).unwrap();
        raw_entry(b, Symlink, "devlink", &format!("{abs}/dir"), b"", 0o777);
        let mut h = header(Char, 0, 0o666);
        h.set_device_major(1).unwrap();
        h.set_device_minor(2).unwrap();
        h.set_path("devlink/kmem").unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
        let inside = fx.root().join(abs.trim_start_matches('/'));
        let mem = std::fs::symlink_metadata(fx.root().join("dev/mem")).unwrap();
        assert!(mem.file_type().is_char_device() && mem.rdev() == rustix::fs::makedev(1, 1));
        assert!(
            std::fs::symlink_metadata(inside.join("sda"))
                .unwrap()
                .file_type()
                .is_block_device()
        );
        assert!(
            std::fs::symlink_metadata(inside.join("dir/kmem"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
}

#[test]
fn whiteouts_through_symlinks_only_touch_the_inside() {
    let fx = Fixture::new();
    let abs = fx.host_abs();
    let layer = build(|b| {
        raw_entry(b, Symlink, "link", &abs, b"", 0o777);
        raw_entry(b, Regular, "link/.wh.secret", "", b"", 0o644);
        raw_entry(b, Regular, "link/dir/.wh..wh..opq", "", b"", 0o644);
        raw_entry(b, Regular, "../host/dir/.wh..wh..opq", "", b"", 0o644);
        raw_entry(b, Regular, "../../host/.wh.dir", "", b"", 0o644);
    });
    for r in fx.apply_both(&layer) {
        r.unwrap();
    }
    let bad = build(|b| raw_entry(b, Regular, "x/.wh..", "", b"", 0o644));
    for r in fx.apply_both(&bad) {
        let err = r.unwrap_err();
        assert!(err.to_string().contains("invalid whiteout"), "{err}");
    }
}

/// A layer whose only entry is an old-GNU sparse file of `real` bytes with a few bytes of
/// data at some offsets.
fn sparse_layer(real: u64, segments: &[(u64, &[u8])]) -> Vec<u8> {
    fn octal(field: &mut [u8], value: u64) {
        let text = format!("{value:0width$o}", width = field.len() - 1);
        field[..text.len()].copy_from_slice(text.as_bytes());
    }
    let stored: u64 = segments.iter().map(|s| s.1.len() as u64).sum();
    let mut h = header(tar::EntryType::GNUSparse, stored, 0o644);
    h.set_path("var/huge.img").unwrap();
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, real);
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

#[test]
fn a_10_gb_sparse_entry_is_written_sparsely() {
    let fx = Fixture::new();
    let ten_gb = 10u64 << 30;
    let layer = gzip(&sparse_layer(
        ten_gb,
        &[(0, b"head"), (5 << 30, b"middle"), (ten_gb - 4, b"tail")],
    ));
    for mode in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay { userxattr: false },
    ] {
        let report = fx.apply(&layer, mode, Some(1 << 20)).unwrap();
        assert!(report.size < 1 << 20);
        let path = fx.root().join("var/huge.img");
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.len(), ten_gb);
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{} bytes allocated for a sparse file",
            md.blocks() * 512
        );
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 5 << 30).unwrap();
        assert_eq!(&buf, b"middle");
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf[..4], ten_gb - 4).unwrap();
        assert_eq!(&buf[..4], b"tail");
    }
    // A map that points past the file's end is refused.
    let bad = sparse_layer(100, &[(98, b"four")]);
    let err = fx.apply(&bad, WhiteoutMode::Delete, None).unwrap_err();
    assert!(err.to_string().contains("var/huge.img"), "{err}");
}

#[test]
fn a_gzip_bomb_is_stopped_by_max_size() {
    let fx = Fixture::new();
    // 1 GiB of zeros in a ~1 MB gzip stream, compressed without holding it in memory.
    let size = 1u64 << 30;
    let mut h = header(Regular, size, 0o644);
    h.set_path("bomb").unwrap();
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 2 << 20);
    for mode in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay { userxattr: false },
    ] {
        let err = fx.apply(&bomb, mode, Some(64 << 20)).unwrap_err();
        assert!(
            matches!(&err, ApplyError::Read { source: TarLayerError::TooLarge { limit, .. }, .. } if *limit == 64 << 20),
            "{err}"
        );
        assert!(
            err.to_string().contains("bomb") && err.to_string().contains(LAYER),
            "{err}"
        );
        let written = std::fs::metadata(fx.root().join("bomb")).map_or(0, |m| m.len());
        assert!(written <= 64 << 20);
    }
}
