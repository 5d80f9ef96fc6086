//! Our images mounted by the kernel (file-backed EROFS mounts, Linux ≥ 6.12): the mounted
//! tree equals the layer's, for copied and tar-index images; under an overlay the
//! whiteouts delete and the opaque directory hides what the lower layer has.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_formats::erofs::BuildOptions;

use crate::common::{assert_same_tree, read_dir_tree, sample_layer};
use crate::tar_images::{image_of, tar_index_of};

/// A mount that is undone when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(args: &[&str], target: &Path) -> Self {
        std::fs::create_dir_all(target).unwrap();
        let out = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?} {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_erofs(image: &Path, target: &Path) -> Mounted {
    Mounted::new(
        &["-t", "erofs", "-o", "ro", image.to_str().unwrap()],
        target,
    )
}

/// Options storing overlayfs' xattrs under a long prefix, so overlayfs reads its
/// whiteout marks through the kernel's long-prefix lookup.
fn long_prefixes() -> BuildOptions {
    BuildOptions {
        xattr_prefixes: vec![b"trusted.overlay.".to_vec(), b"security.cap".to_vec()],
        ..BuildOptions::default()
    }
}

fn needs_root() {
    strata_testdata::host::require_tools(&["/usr/bin/mount", "/usr/bin/umount"]);
    strata_testdata::host::require_root("kernel EROFS and overlay mounts");
}

#[test]
#[ignore = "needs root (kernel mounts): make test runs it"]
fn kernel_mounts_show_the_layer_tree() {
    needs_root();
    let (tar, want) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    for (name, image) in [
        ("inline", image_of(&tar, &BuildOptions::default())),
        (
            "plain",
            image_of(
                &tar,
                &BuildOptions {
                    inline_data: false,
                    ..BuildOptions::default()
                },
            ),
        ),
        ("tar-index", tar_index_of(&tar)),
        ("long-prefixes", image_of(&tar, &long_prefixes())),
    ] {
        let file = dir.path().join(format!("{name}.erofs"));
        std::fs::write(&file, &image).unwrap();
        let mnt = dir.path().join(format!("mnt-{name}"));
        let _m = mount_erofs(&file, &mnt);
        let got = read_dir_tree(&mnt);
        assert_same_tree(&got, &want);
    }
}

#[test]
#[ignore = "needs root (kernel mounts): make test runs it"]
fn whiteouts_hide_lower_files_under_overlay() {
    needs_root();
    let (tar, _) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    for (path, data) in [
        ("etc/gone", "old"),
        ("etc/kept", "kept"),
        ("opq/old", "hidden"),
    ] {
        let p = lower.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    for (name, image) in [
        ("copy", image_of(&tar, &BuildOptions::default())),
        ("index", tar_index_of(&tar)),
    ] {
        let file = dir.path().join(format!("{name}.erofs"));
        std::fs::write(&file, &image).unwrap();
        let layer = mount_erofs(&file, &dir.path().join(format!("layer-{name}")));
        let merged = dir.path().join(format!("merged-{name}"));
        let opts = format!("lowerdir={}:{}", layer.0.display(), lower.display());
        let _ovl = Mounted::new(&["-t", "overlay", "overlay", "-o", &opts], &merged);
        assert!(
            !merged.join("etc/gone").exists(),
            "{name}: the whiteout deletes etc/gone"
        );
        assert_eq!(
            std::fs::read_to_string(merged.join("etc/kept")).unwrap(),
            "kept"
        );
        assert!(
            !merged.join("opq/old").exists(),
            "{name}: the opaque dir hides opq/old"
        );
        assert_eq!(
            std::fs::read_to_string(merged.join("opq/new")).unwrap(),
            "new"
        );
        let mut names: Vec<String> = std::fs::read_dir(merged.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            !names.contains(&"gone".to_string()),
            "{name}: readdir lists {names:?}"
        );
        assert!(names.contains(&"kept".to_string()) && names.contains(&"setuid".to_string()));
        assert_eq!(
            std::fs::read(merged.join("data/big")).unwrap().len(),
            300_000
        );
    }
}

#[test]
#[ignore = "needs root (kernel mounts): make test runs it"]
fn kernel_reads_sparse_giants_through_null_chunks() {
    use std::os::unix::fs::FileExt;
    needs_root();
    let tar = crate::common::gnu_sparse_layer(
        crate::tar_images::SPARSE_SIZE,
        &crate::tar_images::sparse_segments(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sparse.erofs");
    std::fs::write(&file, image_of(&tar, &BuildOptions::default())).unwrap();
    let mnt = mount_erofs(&file, &dir.path().join("mnt"));
    let f = std::fs::File::open(mnt.0.join("sparse")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), crate::tar_images::SPARSE_SIZE);
    for (offset, data) in crate::tar_images::sparse_segments() {
        let mut buf = vec![0xaau8; data.len() + 2];
        f.read_exact_at(&mut buf[..data.len() + 2], offset - 2)
            .unwrap();
        assert_eq!(&buf[..2], &[0, 0], "hole before {offset}");
        assert_eq!(&buf[2..], data, "data at {offset}");
    }
    let mut hole = vec![0xaau8; 1 << 20];
    f.read_exact_at(&mut hole, 3 << 30).unwrap();
    assert!(hole.iter().all(|&b| b == 0), "a hole reads as zeros");
}

#[test]
#[ignore = "needs root (kernel mounts): make test runs it"]
fn kernel_reads_files_over_4_gib() {
    use std::os::unix::fs::FileExt;
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.erofs");
    crate::tar_images::over_4_gib_image(&file);
    let mnt = mount_erofs(&file, &dir.path().join("mnt"));
    let f = std::fs::File::open(mnt.0.join("big")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), crate::tar_images::OVER_4_GIB);
    let mut tail = vec![0xaau8; 12345 + 10];
    let n = f.read_at(&mut tail, 4 << 30).unwrap();
    assert_eq!(n, 12345, "reads stop at the size past 4 GiB");
    assert!(tail[..n].iter().all(|&b| b == 0));
}

/// The Debian-package fixture (4 layers: setuid files, capabilities, hardlinks, devices,
/// whiteouts of files, symlinks and directories, opaque directories, type changes), each
/// layer written as an EROFS image by `build_from_tar` (then as a tar-index image), mounted by the kernel and stacked
/// under overlayfs as containerd's erofs snapshotter stacks them: the merged tree equals
/// `umoci unpack`'s and shows every effect the fixture expects.
#[test]
#[ignore = "needs root (kernel and overlay mounts) and umoci: make test runs it"]
fn debian_layers_stacked_as_erofs_equal_umoci_unpack() {
    use strata_formats::erofs::{build_from_tar, build_tar_index, layer_uuid, validate};
    use strata_testdata::debian_image::{REF_NAME, build_debian_image, reference_unpack};
    use strata_testdata::file_tree::{FileTree, Mtimes};
    needs_root();
    strata_testdata::host::require_tools(&["/usr/bin/umoci"]);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let image = build_debian_image(&layout).unwrap();
    let rootfs = reference_unpack(&layout, REF_NAME, &dir.path().join("bundle")).unwrap();
    let reference = FileTree::capture(&rootfs).unwrap();
    for tar_index in [false, true] {
        let mut layers = Vec::new();
        for (i, layer) in image.image.layers.iter().enumerate() {
            let file = dir.path().join(format!("layer{i}-{tar_index}.erofs"));
            let opts = BuildOptions {
                uuid: layer_uuid(&layer.digest),
                ..BuildOptions::default()
            };
            let out = std::fs::File::create(&file).unwrap();
            if tar_index {
                build_tar_index(std::io::Cursor::new(&layer.tar[..]), out, &opts).unwrap();
            } else {
                build_from_tar(&layer.tar[..], out, &opts).unwrap();
            }
            let blob =
                strata_formats::FileReadAt::new(std::fs::File::open(&file).unwrap()).unwrap();
            validate(&blob).unwrap();
            layers.push(mount_erofs(
                &file,
                &dir.path().join(format!("layer{i}-{tar_index}")),
            ));
        }
        // overlayfs takes the top layer first.
        let lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|m| m.0.display().to_string())
            .collect();
        let merged = Mounted::new(
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!("lowerdir={}", lowers.join(":")),
            ],
            &dir.path().join(format!("merged-{tar_index}")),
        );
        let tree = FileTree::capture(&merged.0).unwrap();
        let diff = reference.diff_with(&tree, Mtimes::ExceptDirs);
        assert!(
            diff.is_empty(),
            "tar index {tar_index}: {} differences: {:#?}",
            diff.len(),
            &diff[..diff.len().min(20)]
        );
        let missed = image.check(&tree);
        assert!(missed.is_empty(), "tar index {tar_index}: {missed:?}");
        drop(merged);
    }
}
