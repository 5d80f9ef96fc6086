//! `strata convert --erofs`: images in the store to native EROFS layers, as containerd
//! 2.x's converter makes them. Checked by Strata's validator (`convert --check`), by the
//! kernel (the layers mounted and stacked with overlayfs, compared with the overlayfs
//! snapshotter's unpack of the source image) and for determinism.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_testdata::file_tree::{FileTree, Mtimes};
use strata_testdata::{LayoutImage, sample_multiplatform};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const EROFS_LAYER: &str = "application/vnd.erofs.layer.v1";

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .env_remove("STRATA_ROOT")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn json(root: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(blob(root, digest)).unwrap()).unwrap()
}

/// A root holding the multi-platform sample image (whiteouts, opaque directories,
/// hardlinks, long names) as docker.io/library/sample:1.0.
fn sample_root(dir: &Path) -> PathBuf {
    let layout = dir.join("sample");
    strata_testdata::write_oci_layout(
        &layout,
        &[("1.0", LayoutImage::Multi(sample_multiplatform(3)))],
    )
    .unwrap();
    let root = dir.join("root");
    ok(strata(
        &root,
        &["image", "import", layout.to_str().unwrap()],
    ));
    root
}

/// The converted image's manifests: (platform, manifest JSON).
fn manifests(root: &Path, name: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let ls = ok(strata(root, &["image", "ls"]));
    let line = ls
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} in:\n{ls}"));
    let digest = line.split_whitespace().nth(2).unwrap();
    let index = json(root, digest);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"].clone(),
                json(root, m["digest"].as_str().unwrap()),
            )
        })
        .collect()
}

#[test]
fn erofs_conversion_is_deterministic_valid_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    ok(strata(
        &root,
        &["convert", "--erofs", "sample:1.0", "sample:1.0-erofs"],
    ));

    let converted = manifests(&root, "docker.io/library/sample:1.0-erofs");
    assert_eq!(converted.len(), 2, "both platforms converted");
    for (platform, manifest) in &converted {
        assert_eq!(
            platform["os.features"],
            serde_json::json!(["erofs"]),
            "{platform}"
        );
        let config = json(&root, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["os.features"], serde_json::json!(["erofs"]));
        let layers = manifest["layers"].as_array().unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(layer["mediaType"], EROFS_LAYER);
            // An uncompressed blob: its digest is its diffID.
            assert_eq!(layer["digest"], *diff_id);
            let bytes = std::fs::read(blob(&root, layer["digest"].as_str().unwrap())).unwrap();
            assert_eq!(
                u32::from_le_bytes(bytes[1024..1028].try_into().unwrap()),
                0xE0F5_E1E2,
                "EROFS superblock magic"
            );
            assert_eq!(bytes.len() % 4096, 0, "4 KiB blocks");
        }
    }

    let check = ok(strata(&root, &["convert", "--check", "sample:1.0-erofs"]));
    assert_eq!(check.matches("EROFS,").count(), 6, "{check}");

    // The same source gives the same bytes.
    ok(strata(
        &root,
        &["convert", "--erofs", "sample:1.0", "again:1"],
    ));
    let again = manifests(&root, "docker.io/library/again:1");
    assert_eq!(
        converted
            .iter()
            .map(|(_, m)| m["layers"].clone())
            .collect::<Vec<_>>(),
        again
            .iter()
            .map(|(_, m)| m["layers"].clone())
            .collect::<Vec<_>>()
    );

    // Converting the EROFS image again passes its layers through.
    let out = ok(strata(
        &root,
        &["convert", "--erofs", "sample:1.0-erofs", "twice:1"],
    ));
    let twice = manifests(&root, "docker.io/library/twice:1");
    assert_eq!(converted[0].1["layers"], twice[0].1["layers"], "{out}");

    // A damaged layer fails --check, naming it.
    let layer = converted[0].1["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = blob(&root, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1024] ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "the test damages the blob"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let out = strata(&root, &["convert", "--check", "sample:1.0-erofs"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("INVALID  {layer}")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn erofs_conversion_refuses_estargz_only_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for flag in [
        ["--zstd", ""],
        ["--level", "3"],
        ["--prioritize", "/bin/sh"],
    ] {
        let mut args = vec!["convert", "--erofs", flag[0]];
        if !flag[1].is_empty() {
            args.push(flag[1]);
        }
        args.extend(["a:1", "b:1"]);
        let out = strata(&root, &args);
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("cannot be used with"), "{args:?}: {e}");
    }
}

/// Mounts `source` of `fstype` on `target` read-only (with `options`).
fn mount(fstype: &str, source: &Path, target: &Path, options: &str) {
    std::fs::create_dir_all(target).unwrap();
    let out = Command::new("mount")
        .args(["-t", fstype, "-o", options])
        .arg(source)
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t {fstype} {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

#[test]
#[ignore = "needs root (kernel EROFS and overlay mounts): make test runs it"]
fn erofs_layers_mount_as_the_overlayfs_unpack_of_the_source() {
    strata_testdata::host::require_root("kernel EROFS and overlay mounts need root");
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    ok(strata(
        &root,
        &["convert", "--erofs", "sample:1.0", "sample:1.0-erofs"],
    ));
    let converted = manifests(&root, "docker.io/library/sample:1.0-erofs");
    let (_, manifest) = converted
        .iter()
        .find(|(p, _)| p["architecture"] == "amd64")
        .expect("the amd64 manifest");

    // Each layer's EROFS image mounted by the kernel, stacked as overlay lowerdirs.
    let mut guard = Unmount(Vec::new());
    let mut lowers = Vec::new();
    for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let target = dir.path().join(format!("layer{i}"));
        mount(
            "erofs",
            &blob(&root, layer["digest"].as_str().unwrap()),
            &target,
            "ro",
        );
        guard.0.push(target.clone());
        lowers.push(target.display().to_string());
    }
    lowers.reverse();
    let stacked = dir.path().join("stacked");
    mount(
        "overlay",
        Path::new("overlay"),
        &stacked,
        &format!("ro,lowerdir={}", lowers.join(":")),
    );
    guard.0.push(stacked.clone());
    let erofs_tree = FileTree::capture(&stacked).unwrap();

    // The source image as the overlayfs snapshotter unpacks it.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    ok(strata(
        &root,
        &[
            "mount",
            "--platform",
            "linux/amd64",
            "sample:1.0",
            rootfs.to_str().unwrap(),
        ],
    ));
    let reference = FileTree::capture(&rootfs);
    ok(strata(&root, &["umount", rootfs.to_str().unwrap()]));
    let reference = reference.unwrap();

    assert!(reference.len() > 20, "{} entries", reference.len());
    let diff = reference.diff_with(&erofs_tree, Mtimes::ExceptDirs);
    assert!(
        diff.is_empty(),
        "erofs stack differs from overlayfs:\n{}",
        diff.join("\n")
    );
    // Whiteouts applied: the sample's second layer deletes /etc/motd.
    assert!(erofs_tree.get("etc/motd").is_none());
    drop(guard);

    // The erofs snapshotter uses the native layers as they are.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_arg = mnt.to_str().unwrap();
    ok(strata(
        &root,
        &[
            "mount",
            "--snapshotter",
            "erofs",
            "--platform",
            "linux/amd64",
            "sample:1.0-erofs",
            mnt_arg,
        ],
    ));
    let mounted = FileTree::capture(&mnt);
    ok(strata(&root, &["umount", mnt_arg]));
    let diff = reference.diff_with(&mounted.unwrap(), Mtimes::ExceptDirs);
    assert!(
        diff.is_empty(),
        "erofs snapshotter differs from overlayfs:\n{}",
        diff.join("\n")
    );
    // Each committed layer is the converted blob, byte for byte.
    let images: Vec<Vec<u8>> = walk_files(&root.join("snapshotters/erofs/snapshots"))
        .into_iter()
        .filter(|p| p.ends_with("layer.erofs"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let bytes = std::fs::read(blob(&root, digest)).unwrap();
        assert!(images.contains(&bytes), "layer {digest} not used as it is");
    }

    // Other snapshotters cannot use EROFS layers, and say so.
    let out = strata(
        &root,
        &[
            "mount",
            "--platform",
            "linux/amd64",
            "sample:1.0-erofs",
            mnt_arg,
        ],
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("native EROFS layer") && e.contains("--snapshotter erofs"),
        "{e}"
    );
}

/// Every regular file below `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root (kernel EROFS mounts) and docker-registry: make test runs it"]
fn erofs_images_push_and_pull_into_the_erofs_snapshotter() {
    strata_testdata::host::require_root("kernel EROFS mounts need root");
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    let registry = strata_testdata::RegistryServer::start().expect("start docker-registry");
    let remote = format!("{}/sample:1.0-erofs", registry.host());
    ok(strata(
        &root,
        &[
            "convert",
            "--erofs",
            "--plain-http",
            "--push",
            "sample:1.0",
            &remote,
        ],
    ));
    let fresh = dir.path().join("fresh");
    ok(strata(
        &fresh,
        &["pull", "--snapshotter", "erofs", "--plain-http", &remote],
    ));
    let check = ok(strata(&fresh, &["convert", "--check", &remote]));
    assert_eq!(check.matches("EROFS,").count(), 3, "{check}");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_arg = mnt.to_str().unwrap();
    ok(strata(
        &fresh,
        &["mount", "--snapshotter", "erofs", &remote, mnt_arg],
    ));
    let tree = FileTree::capture(&mnt);
    ok(strata(&fresh, &["umount", mnt_arg]));
    let tree = tree.unwrap();
    assert!(tree.get("app/VERSION").is_some() && tree.get("etc/motd").is_none());
}
