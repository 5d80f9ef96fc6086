//! `strata serve` as containerd's proxy snapshotter, end to end with the real containerd
//! 1.6 and runc from Debian: a small runnable image (the host's dash, touch and their
//! shared libraries, in three layers) is pushed to a loopback registry; a private
//! containerd with `[proxy_plugins.<name>] type = "snapshot"` pulls it into Strata, runs a
//! container from it (`echo hello; touch /x`), lists the chain, and removes everything;
//! nothing may be left behind: no snapshot directories, no mounts.
//!
//! Run once with the default name `strata` (overlayfs) and once with `strata-native`
//! mapped to the native snapshotter by Strata's config. Needs root, containerd, ctr, runc
//! and docker-registry (scripts/setup.sh).

use std::fs;
use std::time::{Duration, Instant};

use strata_testdata::LayerSpec;
use strata_testdata::registry::RegistryServer;

mod serve_support;
mod support;

use serve_support::{
    StrataServe, UnmountOnDrop, entries, require_containerd, runnable_image, snapshot_rows,
};
use strata_testdata::containerd::Containerd;
use support::mounts::mounts_under;
use support::{CTR, chain_ids, log_tail};

/// Pull, run, list and remove through containerd with Strata's snapshotter `implementation`
/// served as proxy plugin `name`.
fn pull_run_list_remove(name: &str, implementation: &str) {
    require_containerd(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Declared first, dropped last: after containerd and strata have stopped.
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let touch = LayerSpec::new()
        .created_by("touch, greeting")
        .file("bin/touch", 0o755, fs::read("/usr/bin/touch").unwrap())
        .file("etc/greeting", 0o644, "hello from layer 3\n");
    let image = runnable_image(vec![touch]).build().unwrap();
    let reference = format!("{}/e2e/sh:1", registry.host());
    registry
        .push_image("e2e/sh", "1", &image)
        .expect("push the image");
    let chain = chain_ids(&image.diff_ids());

    let mut serve = StrataServe::start(
        &dir.path().join("strata"),
        &format!("[snapshotters]\n{name:?} = {implementation:?}\n"),
    );
    let mut containerd = Containerd::start(
        &dir.path().join("containerd"),
        &format!("strata-e2e-{implementation}"),
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.{name:?}]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ),
    ).unwrap();
    let context = |what: &str| {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&serve.log, 15),
            log_tail(&containerd.log, 15)
        )
    };

    // The proxy plugin is loaded.
    let plugins = containerd.ok(CTR, &["plugins", "ls"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains(name)
                && l.contains("ok")),
        "{}",
        context(&format!("proxy plugin {name} not ok:\n{plugins}"))
    );

    // Pull: containerd unpacks each layer through Strata.
    containerd.ok(
        CTR,
        &[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            name,
            &reference,
        ],
    );
    let snapshots_dir = serve
        .root
        .join("snapshotters")
        .join(implementation)
        .join("snapshots");
    assert_eq!(
        entries(&snapshots_dir).len(),
        chain.len(),
        "{}",
        context("one directory per layer")
    );

    // Run: the container's rootfs is an active snapshot over the chain's top.
    // runc's state goes under the temp dir, not the host's /run/containerd/runc.
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
            "e2e-1",
            "sh",
            "-c",
            "echo hello; touch /x",
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
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // The chain, one committed snapshot per layer, each the parent of the next; nothing
    // active after `run --rm`.
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

    // Remove: snapshots top first, then the image. The image holds only the top of the
    // chain as a GC root, so containerd's garbage collector may remove the lower ones
    // (through Strata's Remove as well) before `ctr snapshots rm` reaches them.
    for id in chain.iter().rev() {
        let out = containerd.run(CTR, &["snapshots", "--snapshotter", name, "rm", id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || (id != chain.last().unwrap() && stderr.contains("not found")),
            "{}",
            context(&format!("ctr snapshots rm {id}: {stderr}"))
        );
    }
    containerd.ok(CTR, &["image", "rm", "--sync", &reference]);
    // Every layer was removed through Strata (containerd's keys carry a namespace prefix).
    let log = fs::read_to_string(&serve.log).unwrap();
    for id in &chain {
        assert!(
            log.lines().any(|l| l.contains("rpc=\"Remove\"")
                && l.contains(&format!("{id}\""))
                && l.contains("result=\"OK\"")),
            "{}",
            context(&format!("no successful Remove of {id}"))
        );
    }
    let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", name, "ls"]);
    assert!(
        snapshot_rows(&listing).is_empty(),
        "{}",
        context(&format!("left after removal:\n{listing}"))
    );
    // Directory removal may be asynchronous (containerd calls Cleanup after its GC).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entries(&snapshots_dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        entries(&snapshots_dir),
        Vec::<String>::new(),
        "{}",
        context("snapshot directories left behind")
    );
    for place in [
        serve.root.as_path(),
        containerd.root.as_path(),
        containerd.state.as_path(),
    ] {
        assert_eq!(
            mounts_under(place),
            Vec::<String>::new(),
            "{}",
            context("mounts left behind")
        );
    }

    containerd.terminate();
    serve.terminate();
    assert!(
        !serve.socket.exists(),
        "strata serve removed its socket at shutdown"
    );
}

#[test]
#[ignore = "needs root, containerd, ctr and runc: make test runs it"]
fn containerd_pulls_runs_and_removes_through_strata_overlayfs() {
    pull_run_list_remove("strata", "overlayfs");
}

#[test]
#[ignore = "needs root, containerd, ctr and runc: make test runs it"]
fn containerd_pulls_runs_and_removes_through_strata_native() {
    pull_run_list_remove("strata-native", "native");
}

/// The erofs snapshotter: containerd 1.6's walking differ fills each layer's upper
/// directory through the overlay Strata returns, Strata converts it to `layer.erofs` at
/// Commit, and the container runs on an overlay of the mounted EROFS layers.
#[test]
#[ignore = "needs root, containerd, ctr, runc and mkfs.erofs: make test runs it"]
fn containerd_pulls_runs_and_removes_through_strata_erofs() {
    pull_run_list_remove("strata-erofs", "erofs");
}
