//! The remote-snapshot protocol end to end with the real containerd 1.6: `strata serve`
//! with `[remote] local_content = true`, an image whose blobs Strata already holds
//! (`strata pull --no-unpack` into the daemon's root), and `ctr-remote image rpull`, which
//! labels each layer's Prepare with its digest. The layers Strata has are committed by
//! Strata under their chainIDs (AlreadyExists answered) and never reach containerd's
//! content store; a layer Strata lacks falls back to containerd's own fetch and unpack.
//! The container then runs on the chain. Needs root, containerd, ctr, ctr-remote, runc and
//! docker-registry (scripts/setup.sh).

use std::path::Path;
use std::process::{Command, Stdio};

use strata_testdata::LayerSpec;
use strata_testdata::registry::RegistryServer;

mod serve_support;
mod support;

use serve_support::{
    StrataServe, UnmountOnDrop, require_containerd, runnable_image, snapshot_rows,
};
use strata_testdata::containerd::Containerd;
use support::mounts::mounts_under;
use support::{CTR, CTR_REMOTE, STRATA, chain_ids, log_tail};

/// `strata pull --no-unpack` of `reference` into `root`, with no credentials or hosts.
fn strata_pull_no_unpack(root: &Path, scratch: &Path, reference: &str) {
    std::fs::create_dir_all(scratch).unwrap();
    std::fs::write(scratch.join("config.json"), "{}").unwrap();
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(root)
        .args(["pull", "--no-unpack", "--plain-http", reference])
        .env("DOCKER_CONFIG", scratch)
        .env("STRATA_HOSTS_DIR", scratch.join("no-hosts"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata pull --no-unpack: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn containerd_rpull_uses_layers_from_strata_content_store() {
    rpull_uses_layers_from_strata_content_store("strata");
}

/// The erofs snapshotter writes each provided layer as its `layer.erofs` (the fallen-back
/// top layer is converted at Commit), and the container runs on the EROFS chain.
#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn containerd_rpull_on_erofs_uses_layers_from_strata_content_store() {
    rpull_uses_layers_from_strata_content_store("erofs");
}

/// `ctr-remote image rpull` through the proxy plugin `name` (served by the daemon under
/// that name).
fn rpull_uses_layers_from_strata_content_store(name: &str) {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    // Declared first, dropped last: after containerd and strata have stopped.
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let greeting = LayerSpec::new().created_by("greeting").file(
        "etc/greeting",
        0o644,
        "hello from the top layer\n",
    );
    let image = runnable_image(vec![greeting]).build().unwrap();
    let reference = format!("{}/remote/sh:1", registry.host());
    registry
        .push_image("remote/sh", "1", &image)
        .expect("push the image");
    let chain = chain_ids(&image.diff_ids());
    let layers: Vec<String> = image.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(layers.len(), 3);

    let mut serve = StrataServe::start(
        &dir.path().join("strata"),
        "[remote]\nlocal_content = true\n",
    );
    // Strata holds every blob of the image but the top layer's.
    strata_pull_no_unpack(&serve.root, &dir.path().join("pull"), &reference);
    let top_blob = serve
        .root
        .join("content/blobs/sha256")
        .join(layers[2].trim_start_matches("sha256:"));
    std::fs::remove_file(&top_blob).unwrap_or_else(|e| panic!("{}: {e}", top_blob.display()));

    let mut containerd = Containerd::start(
        &dir.path().join("containerd"),
        "strata-remote",
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ),
    ).unwrap();
    let context = |what: &str| {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&serve.log, 20),
            log_tail(&containerd.log, 15)
        )
    };

    containerd.ok(
        CTR_REMOTE,
        &[
            "image",
            "rpull",
            "--plain-http",
            "--snapshotter",
            name,
            &reference,
        ],
    );

    // containerd fetched only the layer Strata lacked.
    let content = containerd.ok(CTR, &["content", "ls", "-q"]);
    for provided in &layers[..2] {
        assert!(
            !content.contains(provided.as_str()),
            "{}",
            context(&format!("containerd downloaded {provided}:\n{content}"))
        );
    }
    assert!(
        content.contains(layers[2].as_str()),
        "{}",
        context(&format!("the top layer was not fetched:\n{content}"))
    );

    // Strata said what it did, layer by layer.
    let log = serve.log_text();
    for provided in &layers[..2] {
        assert!(
            log.lines().any(
                |l| l.contains("provided layer from the local content store")
                    && l.contains(provided.as_str())
            ),
            "{}",
            context(&format!("no log line for providing {provided}"))
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("falling back to a normal prepare")
                && l.contains(&chain[2])
                && l.contains("not in Strata's content store")),
        "{}",
        context("no fallback log line for the top layer")
    );

    // The chain: the provided snapshots are committed under their chainIDs, the top one
    // by containerd's own unpack.
    let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", name, "ls"]);
    let mut rows = snapshot_rows(&listing);
    rows.sort();
    let mut expected: Vec<(String, String, String)> = chain
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.clone(),
                if i == 0 {
                    String::new()
                } else {
                    chain[i - 1].clone()
                },
                "Committed".to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(
        rows,
        expected,
        "{}",
        context(&format!("ctr snapshots ls:\n{listing}"))
    );
    let info = containerd.ok(
        CTR,
        &["snapshots", "--snapshotter", name, "info", &chain[1]],
    );
    assert!(
        info.contains("containerd.io/snapshot/remote"),
        "{}",
        context(&format!("info {}:\n{info}", chain[1]))
    );

    if name == "erofs" {
        // Every layer is one image, the provided ones and the top one converted at Commit.
        let snapshots = serve.root.join("snapshotters/erofs/snapshots");
        let mut images = 0;
        for entry in std::fs::read_dir(&snapshots).unwrap() {
            let dir = entry.unwrap().path();
            assert!(
                dir.join("layer.erofs").is_file(),
                "{}",
                context(&format!("{}: no layer.erofs", dir.display()))
            );
            images += 1;
        }
        assert_eq!(images, 3, "{}", context("three layers"));
        assert!(
            log.lines()
                .filter(
                    |l| l.contains("provided layer from the local content store")
                        && l.contains("erofs=true")
                )
                .count()
                == 2,
            "{}",
            context("the provided layers were not written as EROFS images")
        );
    }

    let runc_root = dir.path().join("runc");
    let out = containerd.run(
        CTR,
        &[
            "run",
            "--rm",
            "--runc-root",
            &runc_root.to_string_lossy(),
            "--snapshotter",
            name,
            &reference,
            "remote-1",
            "sh",
            "-c",
            "echo hello; read line < /etc/greeting; echo \"$line\"",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        context(&format!(
            "ctr run failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello\nhello from the top layer"
    );

    containerd.ok(CTR, &["image", "rm", "--sync", &reference]);
    containerd.terminate();
    serve.terminate();
    for place in [
        serve.root.as_path(),
        containerd.root.as_path(),
        containerd.state.as_path(),
    ] {
        assert_eq!(
            mounts_under(place),
            Vec::<String>::new(),
            "mounts left under {}",
            place.display()
        );
    }
}
