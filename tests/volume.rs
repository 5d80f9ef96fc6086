//! `strata volume`: an image, or a directory inside it, mounted read-only from a real
//! registry, on each snapshotter that unpacks (overlayfs, erofs, native); the sub path
//! resolved inside the image as KEP-4639 asks; `volume ls` and `volume umount` from later
//! processes; failures leave no snapshot, mount or record behind. Needs root (mounts) and
//! docker-registry.

use std::path::Path;

use strata_testdata::registry::RegistryServer;
use strata_testdata::{ImageSpec, LayerSpec, Platform};

mod serve_support;
mod support;

use serve_support::{KillHolders, UnmountOnDrop, estargz_and_daemon};
use support::Env;
use support::mounts::mounts_under;

/// A two-layer image: models under `models/`, a symlink leaving the root, a file the
/// second layer deletes.
fn push_image(registry: &RegistryServer) -> String {
    let image = ImageSpec::new(Platform::linux_amd64())
        .layer(
            LayerSpec::new()
                .file("models/llama/config.json", 0o644, "{\"layers\": 2}\n")
                .random_file("models/llama/weights.bin", 0o644, 7, 3 << 20)
                .file("models/old.txt", 0o644, "deleted above\n")
                .file("usr/bin/tool", 0o4755, "#!/bin/sh\n")
                .symlink("escape", "../../../../etc")
                .symlink("abs-models", "/models"),
        )
        .layer(LayerSpec::new().whiteout("models/old.txt").file(
            "models/README.md",
            0o644,
            "hello\n",
        ))
        .build()
        .unwrap();
    registry.push_image("volumes/models", "1", &image).unwrap();
    format!("{}/volumes/models:1", registry.host())
}

/// Read-only, and neither setuid bits nor device files take effect.
fn read_only(path: &Path) -> bool {
    use rustix::fs::StatVfsMountFlags as F;
    rustix::fs::statvfs(path)
        .unwrap()
        .f_flag
        .contains(F::RDONLY | F::NOSUID | F::NODEV)
}

#[test]
#[ignore = "needs root (mounts) and docker-registry: make test runs it"]
fn an_image_is_mounted_read_only_on_every_snapshotter_and_unmounted_without_trace() {
    strata_testdata::host::require_root("image volumes are mounts");
    let env = Env::new();
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    for snapshotter in ["overlayfs", "erofs", "native"] {
        let dir = env.path(&format!("mnt-{snapshotter}"));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_s = dir.to_str().unwrap();
        env.strata_ok(
            "root",
            &[
                "volume",
                "mount",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                &reference,
                dir_s,
            ],
        );
        let weights = std::fs::read(dir.join("models/llama/weights.bin")).unwrap();
        assert_eq!(weights.len(), 3 << 20, "{snapshotter}");
        assert_eq!(
            std::fs::read_to_string(dir.join("models/README.md")).unwrap(),
            "hello\n"
        );
        assert!(
            !dir.join("models/old.txt").exists(),
            "{snapshotter}: whiteout"
        );
        assert!(read_only(&dir), "{snapshotter}: not read-only");
        let err = std::fs::write(dir.join("models/new"), b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "{snapshotter}: {err}"
        );

        let listing = env.strata_ok("root", &["volume", "ls"]);
        let row = listing
            .lines()
            .find(|l| l.starts_with(dir_s))
            .unwrap_or_else(|| panic!("{snapshotter}: no row in\n{listing}"));
        for word in [reference.as_str(), snapshotter, "snapshot", "mounted"] {
            assert!(row.contains(word), "{snapshotter}: {word} not in {row}");
        }
        let snapshots = env.strata_ok("root", &["snapshot", "--snapshotter", snapshotter, "ls"]);
        assert!(
            snapshots.contains(&format!("strata-volume:{dir_s}")),
            "{snapshots}"
        );

        // A second volume on the same directory is refused.
        let again = env.strata(
            "root",
            &[
                "volume",
                "mount",
                "--snapshotter",
                snapshotter,
                &reference,
                dir_s,
            ],
        );
        assert!(!again.status.success());
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("mounted there already"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );

        env.strata_ok("root", &["volume", "umount", dir_s]);
        assert!(
            mounts_under(&dir).is_empty(),
            "{snapshotter}: still mounted"
        );
        let snapshots = env.strata_ok("root", &["snapshot", "--snapshotter", snapshotter, "ls"]);
        assert!(!snapshots.contains("strata-volume:"), "{snapshots}");
        assert!(!env.strata_ok("root", &["volume", "ls"]).contains(dir_s));
        let again = env.strata("root", &["volume", "umount", dir_s]);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("no volume is mounted there"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
    }
}

#[test]
#[ignore = "needs root (mounts) and docker-registry: make test runs it"]
fn a_subpath_is_resolved_inside_the_image_and_must_be_a_directory() {
    strata_testdata::host::require_root("image volumes are mounts");
    let env = Env::new();
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    let mount = |subpath: &str| {
        env.strata(
            "root",
            &[
                "volume",
                "mount",
                "--plain-http",
                "--snapshotter",
                "erofs",
                "--subpath",
                subpath,
                &reference,
                dir_s,
            ],
        )
    };

    // Through an absolute symlink, which resolves inside the image.
    let out = mount("abs-models/llama");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "weights.bin"]);
    assert!(read_only(&dir));
    assert!(
        env.strata_ok("root", &["volume", "ls"])
            .contains("abs-models/llama")
    );
    env.strata_ok("root", &["volume", "umount", dir_s]);

    for (subpath, expected) in [
        // `..` through a symlink stops at the image's root, where there is no etc/passwd.
        ("escape/passwd", "not found in the image"),
        ("../../../etc", "not found in the image"),
        ("models/README.md", "not a directory"),
    ] {
        let out = mount(subpath);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{subpath}: mounted");
        assert!(stderr.contains(expected), "{subpath}: {stderr}");
        assert!(mounts_under(&dir).is_empty(), "{subpath}: a mount is left");
        assert!(mounts_under(&env.path("root")).is_empty(), "{subpath}");
        let snapshots = env.strata_ok("root", &["snapshot", "--snapshotter", "erofs", "ls"]);
        assert!(
            !snapshots.contains("strata-volume:"),
            "{subpath}: {snapshots}"
        );
        assert!(!env.strata_ok("root", &["volume", "ls"]).contains(dir_s));
    }
    assert!(mounts_under(&env.path("root")).is_empty());
}

/// An eStargz image as a volume on `strata serve`'s stargz snapshotter: nothing but the
/// manifest, config and TOCs is fetched at mount; files read through the volume equal
/// the unpacked image's; the volume keeps working across a restart of the daemon (its fd
/// holder keeps the FUSE connections); `umount` removes the View and the mount.
#[test]
#[ignore = "needs root (mounts, FUSE) and docker-registry: make test runs it"]
fn an_estargz_image_is_mounted_lazily_through_the_daemon_and_survives_its_restart() {
    strata_testdata::host::require_root("image volumes are mounts");
    let env = Env::new();
    let _holders = KillHolders(env.dir.path().to_path_buf());
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    let esgz = format!("{}/volumes/models:1-esgz", registry.host());
    let mut serve = estargz_and_daemon(&env, &registry.host(), &reference, &esgz);
    let socket = serve.socket.to_str().unwrap().to_owned();

    // The reference: the same image unpacked, as a plain volume.
    let plain = env.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    env.strata_ok(
        "plain-root",
        &[
            "volume",
            "mount",
            "--plain-http",
            &reference,
            plain.to_str().unwrap(),
        ],
    );

    let dir = env.path("lazy");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    let out = env.strata(
        "root",
        &[
            "volume",
            "mount",
            "--plain-http",
            "--snapshotter",
            "stargz",
            "--socket",
            &socket,
            &esgz,
            dir_s,
        ],
    );
    assert!(
        out.status.success(),
        "{}\nserve log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.log_text()
    );
    assert!(read_only(&dir));
    let row = env.strata_ok("root", &["volume", "ls"]);
    assert!(
        row.lines()
            .any(|l| l.starts_with(dir_s) && l.contains("lazy") && l.contains("mounted")),
        "{row}"
    );
    // Nothing of the layers was downloaded whole: neither root holds a layer blob.
    for root in [env.path("root"), serve.root.clone()] {
        let blobs = root.join("content/blobs/sha256");
        let count = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
        assert!(count <= 2, "{}: {count} blobs", blobs.display());
    }
    let read = |base: &Path| {
        (
            std::fs::read(base.join("models/llama/weights.bin")).unwrap(),
            std::fs::read_to_string(base.join("models/README.md")).unwrap(),
            base.join("models/old.txt").exists(),
        )
    };
    let expected = read(&plain);
    assert_eq!(read(&dir), expected);

    serve.terminate();
    serve.restart();
    assert_eq!(read(&dir), expected, "after a restart of strata serve");

    env.strata_ok("root", &["volume", "umount", "--socket", &socket, dir_s]);
    env.strata_ok("plain-root", &["volume", "umount", plain.to_str().unwrap()]);
    assert!(mounts_under(&dir).is_empty() && mounts_under(&plain).is_empty());
    let snapshots = env.strata_ok(
        "root",
        &[
            "snapshot",
            "--snapshotter",
            "stargz",
            "--socket",
            &socket,
            "ls",
        ],
    );
    assert!(!snapshots.contains("strata-volume:"), "{snapshots}");
    serve.terminate();
}

/// A model checkout: a safetensors-shaped weights file (8-byte header length, JSON
/// header, tensor bytes), its config and tokenizer, and docs in a sub directory.
fn model_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let data_len: usize = 3 << 20;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{data_len}]}}}}"#,
        data_len / 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..data_len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]));
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"hidden_size":64}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"model":{}}"#).unwrap();
    std::fs::write(dir.join("docs/guide.md"), "# guide\n").unwrap();
}

/// Every regular file under `dir`, relative path → bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root (mounts) and docker-registry: make test runs it"]
fn a_model_artifact_is_mounted_as_its_files_read_only() {
    strata_testdata::host::require_root("image volumes are mounts");
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let model = env.path("model");
    model_dir(&model);
    let expected = files(&model);
    for kind in ["modelpack", "oras"] {
        let reference = format!("{}/models/tiny:{kind}", registry.host());
        env.strata_ok(
            "push",
            &[
                "artifact",
                "push",
                "--plain-http",
                "--type",
                kind,
                model.to_str().unwrap(),
                &reference,
            ],
        );
        let dir = env.path(&format!("mnt-{kind}"));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_s = dir.to_str().unwrap();
        // The push added a chunk index, so the default is lazy (tests/volume_lazy_artifact.rs
        // checks that path); --whole downloads every blob first.
        env.strata_ok(
            "root",
            &[
                "volume",
                "mount",
                "--whole",
                "--plain-http",
                &reference,
                dir_s,
            ],
        );
        assert_eq!(files(&dir), expected, "{kind}");
        assert!(read_only(&dir), "{kind}");
        let listing = env.strata_ok("root", &["volume", "ls"]);
        assert!(
            listing.lines().any(|l| l.starts_with(dir_s)
                && l.contains("whole-blobs")
                && l.contains("mounted")),
            "{listing}"
        );
        env.strata_ok("root", &["volume", "umount", dir_s]);
        assert!(mounts_under(&dir).is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        // A directory of the artifact.
        env.strata_ok(
            "root",
            &["volume", "mount", "--subpath", "docs", &reference, dir_s],
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("guide.md")).unwrap(),
            "# guide\n"
        );
        env.strata_ok("root", &["volume", "umount", dir_s]);
    }
    let trees = std::fs::read_dir(env.path("root/volumes"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "tree")
        })
        .count();
    assert_eq!(trees, 0, "artifact trees left");
}

#[test]
#[ignore = "needs root (mounts) and docker-registry: make test runs it"]
fn artifact_layers_that_escape_or_are_unknown_are_refused_by_name() {
    strata_testdata::host::require_root("image volumes are mounts");
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let push = |tag: &str, layers: serde_json::Value| {
        let empty = registry.push_blob("odd/model", b"{}").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci,
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": empty.digest, "size": 2},
            "layers": layers,
        });
        registry
            .push_manifest(
                "odd/model",
                tag,
                oci,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap();
        format!("{}/odd/model:{tag}", registry.host())
    };
    let weights = registry.push_blob("odd/model", b"weights").unwrap();
    let extra = registry.push_blob("odd/model", b"extra").unwrap();
    let raw = "application/vnd.cncf.model.weight.v1.raw";
    let escaping = push(
        "escape",
        serde_json::json!([{"mediaType": raw, "digest": weights.digest, "size": weights.size,
            "annotations": {"org.cncf.model.filepath": "../../etc/cron.d/x"}}]),
    );
    let unknown = push(
        "unknown",
        serde_json::json!([
            {"mediaType": raw, "digest": weights.digest, "size": weights.size,
             "annotations": {"org.cncf.model.filepath": "w.bin"}},
            {"mediaType": "application/vnd.example.strange", "digest": extra.digest, "size": extra.size},
        ]),
    );
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    let mount = |reference: &str, extra: &[&str]| {
        env.strata(
            "root",
            &[
                &["volume", "mount", "--plain-http"][..],
                extra,
                &[reference, dir_s],
            ]
            .concat(),
        )
    };
    let out = mount(&escaping, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("escapes") && stderr.contains(&weights.digest),
        "{stderr}"
    );
    let out = mount(&unknown, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("application/vnd.example.strange"),
        "{stderr}"
    );
    assert!(mounts_under(&dir).is_empty());
    assert!(!env.strata_ok("root", &["volume", "ls"]).contains(dir_s));

    let out = mount(&unknown, &["--skip-unknown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped"));
    assert_eq!(files(&dir).into_keys().collect::<Vec<_>>(), ["w.bin"]);
    env.strata_ok("root", &["volume", "umount", dir_s]);
}
