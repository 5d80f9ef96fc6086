//! The Debian fixture really contains what it claims: `umoci unpack` (the
//! OCI reference unpacker) shows every effect of its layers, and a second,
//! independent unpack (GNU tar plus our whiteout step) gives the same tree.
//! Needs root and umoci (`scripts/setup.sh`).

use std::collections::BTreeSet;
use std::time::Instant;

use strata_testdata::RegistryServer;
use strata_testdata::debian_image::{
    Expectation, REF_NAME, build_debian_image, gnu_tar_unpack, reference_unpack,
};
use strata_testdata::file_tree::{FileTree, Kind, Mtimes};

const MB: u64 = 1_000_000;

#[test]
fn umoci_shows_every_layer_effect_and_gnu_tar_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");

    let started = Instant::now();
    let image = build_debian_image(&layout).unwrap();
    eprintln!(
        "built {} in {:.2?}",
        image.manifest_digest(),
        started.elapsed()
    );
    assert_eq!(image.ref_name, REF_NAME);
    assert_eq!(image.image.layers.len(), 4);
    let uncompressed: u64 = image.image.layers.iter().map(|l| l.uncompressed_size).sum();
    let compressed: u64 = image.image.layers.iter().map(|l| l.size).sum();
    eprintln!(
        "layers: {} MB uncompressed, {} MB gzip",
        uncompressed / MB,
        compressed / MB
    );
    assert!(
        (50 * MB..=150 * MB).contains(&uncompressed),
        "{uncompressed} bytes"
    );
    assert!(
        layout
            .join("blobs/sha256")
            .join(&image.manifest_digest()[7..])
            .is_file()
    );

    // The fixture covers every kind of effect it promises.
    let kinds: BTreeSet<&str> = image
        .expectations
        .iter()
        .map(|e| match e {
            Expectation::Absent(_) => "absent",
            Expectation::Kind {
                kind: Kind::Dir, ..
            } => "dir",
            Expectation::Kind {
                kind: Kind::Fifo, ..
            } => "fifo",
            Expectation::Kind { .. } => "kind",
            Expectation::Children { .. } => "children",
            Expectation::Content { .. } => "content",
            Expectation::Mode { mode, .. } if mode & 0o4000 != 0 => "setuid",
            Expectation::Mode { .. } => "mode",
            Expectation::Owner { .. } => "owner",
            Expectation::Xattr { name, .. } if name == "security.capability" => "capability",
            Expectation::Xattr { .. } => "xattr",
            Expectation::Hardlinked(_) => "hardlinked",
            Expectation::NotHardlinked(_) => "not-hardlinked",
            Expectation::CharDevice { .. } => "char-device",
        })
        .collect();
    for kind in [
        "absent",
        "dir",
        "fifo",
        "kind",
        "children",
        "content",
        "setuid",
        "mode",
        "owner",
        "capability",
        "xattr",
        "hardlinked",
        "not-hardlinked",
        "char-device",
    ] {
        assert!(kinds.contains(kind), "no {kind} expectation in {kinds:?}");
    }

    let started = Instant::now();
    // By digest: umoci gets a temporary view of the layout naming that manifest.
    let bundle = tmp.path().join("bundle");
    let index_before = std::fs::read(layout.join("index.json")).unwrap();
    let rootfs = reference_unpack(&layout, image.manifest_digest(), &bundle).unwrap();
    assert!(!tmp.path().join("bundle.layout").exists());
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        index_before
    );
    let umoci = FileTree::capture(&rootfs).unwrap();
    eprintln!(
        "umoci unpack + capture: {} entries, {} MB of files in {:.2?}",
        umoci.len(),
        umoci.file_bytes() / MB,
        started.elapsed()
    );
    let failures = image.check(&umoci);
    assert!(
        failures.is_empty(),
        "umoci's tree misses effects:\n{}",
        failures.join("\n")
    );
    // Unexpected leftovers of the layer format never reach the tree.
    let markers: Vec<_> = umoci
        .entries()
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        })
        .collect();
    assert!(markers.is_empty(), "{markers:?}");

    let started = Instant::now();
    let tar_root = tmp.path().join("gnu-tar");
    gnu_tar_unpack(&layout, REF_NAME, &tar_root).unwrap();
    let tar = FileTree::capture(&tar_root).unwrap();
    eprintln!("GNU tar unpack + capture in {:.2?}", started.elapsed());
    assert!(image.check(&tar).is_empty(), "{:?}", image.check(&tar));
    let diff = umoci.diff_with(&tar, Mtimes::ExceptDirs);
    assert!(
        diff.is_empty(),
        "umoci and GNU tar disagree:\n{}",
        diff.join("\n")
    );
}

#[test]
fn fixture_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let a = build_debian_image(&tmp.path().join("a")).unwrap();
    let b = build_debian_image(&tmp.path().join("b")).unwrap();
    assert_eq!(a.image.manifest, b.image.manifest);
    assert_eq!(a.image.diff_ids(), b.image.diff_ids());
    assert_eq!(a.expectations, b.expectations);
    assert_eq!(
        std::fs::read(tmp.path().join("a/index.json")).unwrap(),
        std::fs::read(tmp.path().join("b/index.json")).unwrap()
    );
}

#[test]
fn pushes_to_the_test_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_debian_image(&tmp.path().join("layout")).unwrap();
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_image("debian/fixture", "bookworm", &image.image)
        .unwrap();
    assert_eq!(pushed.digest, image.manifest_digest());

    let mut client = registry.client();
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let manifest = client
        .get("/v2/debian/fixture/manifests/bookworm", &accept)
        .unwrap();
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert_eq!(manifest.body, image.image.manifest_json);
    assert_eq!(
        manifest.header("Docker-Content-Digest"),
        Some(image.manifest_digest())
    );
    let top = image.image.layers.last().unwrap();
    let blob = client
        .get(&format!("/v2/debian/fixture/blobs/{}", top.digest), &[])
        .unwrap();
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body, top.gzip);
}
