//! A real multi-layer image (built from this host's Debian packages, with deletions,
//! opaque directories and kind changes in upper layers) pushed to a registry, pulled and
//! unpacked by `strata pull` into each snapshotter, mounted with `strata mount`: the
//! mounted tree must equal `umoci unpack`'s (the OCI reference unpacker) in paths, kinds,
//! modes (setuid included), owners, sizes, content hashes, link targets, devices, xattrs
//! and hardlink groups. Then `strata umount` leaves no active snapshot or mount behind,
//! and a second pull finds every layer unpacked already. Needs root, umoci and the
//! registry (`scripts/setup.sh`).

mod support;

use std::path::Path;

use strata_testdata::RegistryServer;
use strata_testdata::debian_image::{DebianImage, REF_NAME, build_debian_image, reference_unpack};
use strata_testdata::file_tree::{FileTree, Mtimes};
use support::Env;

/// The fixture and its reference tree, built by each test that needs it (nextest runs each
/// test in its own process, so a process-wide one would save nothing, and a static's
/// temporary directory is never dropped: it would leak ~130 MB per test run).
struct Fixture {
    _dir: tempfile::TempDir,
    image: DebianImage,
    reference: FileTree,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let image = build_debian_image(&layout).unwrap();
    let rootfs = reference_unpack(&layout, REF_NAME, &dir.path().join("bundle")).unwrap();
    let reference = FileTree::capture(&rootfs).unwrap();
    assert!(
        image.check(&reference).is_empty(),
        "umoci's tree misses the fixture's effects: {:?}",
        image.check(&reference)
    );
    Fixture {
        _dir: dir,
        image,
        reference,
    }
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

fn pull_mount_and_compare(snapshotter: &str) {
    let fx = fixture();
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    registry
        .push_image("debian/fixture", snapshotter, &fx.image.image)
        .unwrap();
    let reference = format!("{}/debian/fixture:{snapshotter}", registry.host());

    // What a pull stopped by Ctrl-C between a layer's Prepare and Commit leaves behind:
    // the next pull removes it.
    let stale = format!("extract-18f0c2a1 sha256:{}", "ab".repeat(32));
    {
        let sn =
            strata::snapshots::open_snapshotter(&env.path("dst"), snapshotter, &Default::default())
                .unwrap();
        let labels = std::collections::BTreeMap::from([(
            strata::image::unpack::LABEL_SNAPSHOT_REF.to_owned(),
            stale[17..].to_owned(),
        )]);
        sn.prepare(&stale, "", labels).unwrap();
        sn.close().unwrap();
    }

    let pull = env.strata(
        "dst",
        &[
            "pull",
            "--plain-http",
            "--snapshotter",
            snapshotter,
            &reference,
        ],
    );
    let stderr = String::from_utf8_lossy(&pull.stderr);
    assert!(pull.status.success(), "pull failed: {stderr}");
    assert!(
        stderr.contains(&format!("removed {stale:?}")),
        "the interrupted unpack was not removed: {stderr}"
    );
    let layers = fx.image.image.layers.len();
    assert_eq!(
        stderr.matches(" unpacked ").count(),
        layers,
        "one unpack per layer: {stderr}"
    );

    let snapshots = env.strata_ok(
        "dst",
        &[
            "snapshot",
            "--snapshotter",
            snapshotter,
            "ls",
            "--filter",
            "kind==committed",
        ],
    );
    assert_eq!(snapshots.lines().count(), 1 + layers, "{snapshots}");

    let dir = env.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    env.strata_ok(
        "dst",
        &[
            "mount",
            "--snapshotter",
            snapshotter,
            &reference,
            dir.to_str().unwrap(),
        ],
    );
    // Removing the mount's snapshot under the live mount is refused, and the tree stays
    // whole (compared below).
    let rm = env.strata(
        "dst",
        &[
            "snapshot",
            "--snapshotter",
            snapshotter,
            "rm",
            dir.to_str().unwrap(),
        ],
    );
    assert!(
        !rm.status.success() && String::from_utf8_lossy(&rm.stderr).contains("it is mounted"),
        "snapshot rm of a mounted snapshot: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let captured = FileTree::capture(&dir);
    // umount finds the snapshotter the mount used by itself.
    let umount = env.strata("dst", &["umount", dir.to_str().unwrap()]);
    let tree = captured.unwrap();
    let diff = fx.reference.diff_with(&tree, Mtimes::ExceptDirs);
    assert!(
        diff.is_empty(),
        "{snapshotter}: strata's tree differs from umoci's:\n{}",
        diff.join("\n")
    );
    assert!(
        fx.image.check(&tree).is_empty(),
        "{:?}",
        fx.image.check(&tree)
    );
    assert!(
        umount.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&umount.stderr)
    );
    assert!(!mounted(&dir), "{} is still mounted", dir.display());
    let all = env.strata_ok("dst", &["snapshot", "--snapshotter", snapshotter, "ls"]);
    assert_eq!(
        all.lines().count(),
        1 + layers,
        "the mount's active snapshot is gone: {all}"
    );

    // A second pull finds every layer unpacked.
    let again = env.strata(
        "dst",
        &[
            "pull",
            "--plain-http",
            "--snapshotter",
            snapshotter,
            &reference,
        ],
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(stderr.matches(" exists").count(), layers, "{stderr}");
    assert!(!stderr.contains(" unpacked "), "{stderr}");
}

#[test]
fn overlayfs_unpack_matches_umoci() {
    pull_mount_and_compare("overlayfs");
}

#[test]
fn native_unpack_matches_umoci() {
    pull_mount_and_compare("native");
}

/// Each layer applied into the erofs snapshotter's active snapshot (overlay upper over the
/// mounted EROFS images of the layers below), converted to `layer.erofs` at Commit.
#[test]
fn erofs_unpack_matches_umoci() {
    pull_mount_and_compare("erofs");
}

/// A layer whose bytes do not match the config's diffID fails the pull naming the layer,
/// and leaves no snapshot or snapshot directory behind.
#[test]
fn a_wrong_diff_id_fails_and_leaves_nothing_behind() {
    wrong_diff_id("overlayfs");
}

/// The same when the layer streams into an EROFS image: no image, no snapshot left.
#[test]
fn a_wrong_diff_id_fails_and_leaves_nothing_behind_in_erofs() {
    wrong_diff_id("erofs");
}

fn wrong_diff_id(snapshotter: &str) {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let mut image = strata_testdata::sample::sample_image(5).build().unwrap();
    corrupt_first_diff_id(&mut image);
    registry.push_image("bad/diffid", "1", &image).unwrap();
    let reference = format!("{}/bad/diffid:1", registry.host());
    let out = env.strata(
        "dst",
        &[
            "pull",
            "--plain-http",
            "--snapshotter",
            snapshotter,
            &reference,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("unpack layer {}", image.layers[0].digest)),
        "{stderr}"
    );
    // Named once: the apply error's own "layer sha256:…: " is not repeated.
    assert_eq!(
        stderr.matches(&image.layers[0].digest.to_string()).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256:{}", "0".repeat(64))),
        "{stderr}"
    );
    let all = env.strata_ok("dst", &["snapshot", "--snapshotter", snapshotter, "ls"]);
    assert_eq!(
        all.lines().count(),
        1,
        "no snapshot, active or committed: {all}"
    );
    let snapshots_dir = env
        .path("dst")
        .join("snapshotters")
        .join(snapshotter)
        .join("snapshots");
    let left: Vec<_> = std::fs::read_dir(&snapshots_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "directories left: {left:?}");
}

/// Makes the image's config list a wrong first diffID (re-addressing config and manifest).
fn corrupt_first_diff_id(image: &mut strata_testdata::BuiltImage) {
    use sha2::Digest as _;
    let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let mut config: serde_json::Value = serde_json::from_slice(&image.config_json).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::Value::from(format!("sha256:{}", "0".repeat(64)));
    image.config_json = serde_json::to_vec(&config).unwrap();
    image.config.digest = digest(&image.config_json);
    image.config.size = image.config_json.len() as u64;
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest_json).unwrap();
    manifest["config"]["digest"] = serde_json::Value::from(image.config.digest.clone());
    manifest["config"]["size"] = serde_json::Value::from(image.config.size);
    image.manifest_json = serde_json::to_vec(&manifest).unwrap();
    image.manifest.digest = digest(&image.manifest_json);
    image.manifest.size = image.manifest_json.len() as u64;
}

/// The same image pulled into overlayfs and into erofs (one root, so one download) and
/// mounted with `strata mount`: the two trees are equal in everything, mtimes of
/// directories included. `strata pull` wrote each erofs layer straight from its tar (the
/// image's UUID is the one derived from the layer's diffID; the upper directories stayed
/// empty).
#[test]
fn erofs_tree_equals_overlayfs_tree() {
    let fx = fixture();
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    registry
        .push_image("debian/fixture", "both", &fx.image.image)
        .unwrap();
    let reference = format!("{}/debian/fixture:both", registry.host());
    let mut trees = Vec::new();
    for snapshotter in ["overlayfs", "erofs"] {
        let started = std::time::Instant::now();
        env.strata_ok(
            "root",
            &[
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                &reference,
            ],
        );
        eprintln!("pull + unpack into {snapshotter}: {:?}", started.elapsed());
        let dir = env.path(&format!("mnt-{snapshotter}"));
        std::fs::create_dir(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        env.strata_ok(
            "root",
            &[
                "mount",
                "--snapshotter",
                snapshotter,
                &reference,
                dir.to_str().unwrap(),
            ],
        );
        let captured = FileTree::capture(&dir);
        let umount = env.strata("root", &["umount", dir.to_str().unwrap()]);
        assert!(
            umount.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&umount.stderr)
        );
        trees.push(captured.unwrap());
    }
    let snapshots = env.path("root").join("snapshotters/erofs/snapshots");
    let mut uuids: Vec<Vec<u8>> = Vec::new();
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let dir = entry.unwrap().path();
        let image = std::fs::read(dir.join("layer.erofs")).unwrap();
        // The superblock (at 1024) holds the volume UUID at its byte 48.
        uuids.push(image[1024 + 48..1024 + 64].to_vec());
        assert_eq!(
            std::fs::read_dir(dir.join("fs")).unwrap().count(),
            0,
            "{}: the layer went through the upper directory",
            dir.display()
        );
    }
    // As containerd's EROFS differ: the UUID derived from the layer blob's digest.
    let mut expected: Vec<Vec<u8>> = fx
        .image
        .image
        .layers
        .iter()
        .map(|l| strata_formats::erofs::layer_uuid(&l.digest).to_vec())
        .collect();
    uuids.sort();
    expected.sort();
    assert_eq!(uuids, expected, "images written by the tar → EROFS writer");
    let diff = trees[0].diff_with(&trees[1], Mtimes::All);
    assert!(
        diff.is_empty(),
        "erofs's tree differs from overlayfs's:\n{}",
        diff.join("\n")
    );
    assert!(
        fx.image.check(&trees[1]).is_empty(),
        "{:?}",
        fx.image.check(&trees[1])
    );
}
