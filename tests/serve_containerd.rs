//! `strata serve` as containerd's proxy snapshotter, end to end with the real containerd
//! 1.6 and runc from Debian: a small runnable image (the host's dash, touch and their
//! shared libraries, in three layers) is pushed to a loopback registry; a private
//! containerd with `[proxy_plugins.<name>] type = "snapshot"` pulls it into Strata, runs a
//! container from it (`echo hello; touch /x`), lists the chain, and removes everything;
//! nothing may be left behind: no snapshot directories, no mounts.
//!
//! Run once with the default name `strata` (overlayfs), once with `strata-native`
//! mapped to the native snapshotter by Strata's config, and once with `strata-erofs`
//! (erofs); python from a Debian-package image runs on erofs across a daemon restart. Needs root, containerd, ctr, runc
//! and docker-registry (scripts/setup.sh).

use std::fs;
use std::time::{Duration, Instant};

use strata_testdata::LayerSpec;
use strata_testdata::registry::RegistryServer;

mod serve_support;
mod support;

use serve_support::{
    StrataServe, UnmountOnDrop, entries, require_containerd, runnable_image, shared_libraries,
    snapshot_rows,
};
use strata_testdata::containerd::Containerd;
use support::mounts::{mount_entries_under, mounts_under};
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

/// A python image (this host's python3.11, its libraries and `encodings`, over the dash
/// image, with a whiteout in the top layer) pulled by containerd into the erofs
/// snapshotter runs `print('hello')` and does not see the deleted file; after the daemon
/// is killed and every EROFS mount under its root is gone (a reboot, as far as Strata can
/// tell), the restarted daemon mounts the layers again and python runs again. Also
/// prints how long containerd's unpack of the Debian-package fixture (4 layers, ~85 MB)
/// took into overlayfs and into erofs through Strata (content already local).
#[test]
#[ignore = "needs root, containerd, ctr, runc and mkfs.erofs: make test runs it"]
fn containerd_runs_python_on_strata_erofs_across_a_restart() {
    require_containerd(&["/usr/bin/mkfs.erofs"]);
    python_on_erofs_across_a_restart("mkfs", "[erofs]\nbuilder = \"mkfs.erofs\"\n");
}

/// The same with the layer images written by Strata's own EROFS writer
/// (`[erofs] builder = "strata"`, the default).
#[test]
#[ignore = "needs root, containerd, ctr and runc: make test runs it"]
fn containerd_runs_python_on_strata_erofs_written_by_strata() {
    python_on_erofs_across_a_restart("strata", "[erofs]\nbuilder = \"strata\"\n");
}

/// `name` tells the two runs apart: their containerd namespaces must differ, or runc's
/// cgroups (`/<namespace>/<id>`) collide when both run at once.
fn python_on_erofs_across_a_restart(name: &str, erofs_config: &str) {
    require_containerd(&[PYTHON]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let image = runnable_image(vec![python_layer(), deleted_codec()])
        .build()
        .unwrap();
    let reference = format!("{}/e2e/python:1", registry.host());
    registry
        .push_image("e2e/python", "1", &image)
        .expect("push the image");
    let fixture = strata_testdata::debian_image::build_debian_image(&dir.path().join("layout"))
        .expect("build the Debian-package image");
    registry
        .push_image("e2e/debian", "1", &fixture.image)
        .expect("push the Debian-package image");
    let debian = format!("{}/e2e/debian:1", registry.host());

    let mut serve = StrataServe::start(
        &dir.path().join("strata"),
        &format!(
            "[snapshotters]\nstrata = \"overlayfs\"\n\"strata-erofs\" = \"erofs\"\n{erofs_config}"
        ),
    );
    let mut plugins = String::from("[proxy_plugins]\n");
    for name in ["strata", "strata-erofs"] {
        plugins.push_str(&format!(
            "  [proxy_plugins.{name:?}]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ));
    }
    let mut containerd = Containerd::start(
        &dir.path().join("containerd"),
        &format!("strata-e2e-python-{name}"),
        &plugins,
    )
    .unwrap();
    let context = |what: &str, serve: &StrataServe, containerd: &Containerd| {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&serve.log, 15),
            log_tail(&containerd.log, 15)
        )
    };
    containerd.ok(CTR, &["content", "fetch", "--plain-http", &debian]);
    for name in ["strata", "strata-erofs"] {
        let started = Instant::now();
        containerd.ok(
            CTR,
            &[
                "image",
                "pull",
                "--plain-http",
                "--snapshotter",
                name,
                &debian,
            ],
        );
        eprintln!(
            "containerd unpack of the Debian fixture into {name} (content local): {:?}",
            started.elapsed()
        );
    }
    containerd.ok(
        CTR,
        &[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata-erofs",
            &reference,
        ],
    );
    let runc_root = dir.path().join("runc");
    let python = |containerd: &Containerd, id: &str| {
        containerd.run(
            CTR,
            &[
                "run",
                "--rm",
                "--runc-root",
                &runc_root.to_string_lossy(),
                "--snapshotter",
                "strata-erofs",
                &reference,
                id,
                PYTHON,
                "-S",
                "-c",
                "import os; print('hello' if not os.path.exists('/usr/lib/python3.11/encodings/cp1252.py') else 'whiteout ignored')",
            ],
        )
    };
    let out = python(&containerd, "py-1");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "hello",
        "{}",
        context(
            &format!(
                "python on erofs ({}):\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            &serve,
            &containerd
        )
    );
    let layers = serve.root.join("snapshotters/erofs/snapshots");
    let images = entries(&layers)
        .into_iter()
        .filter(|id| layers.join(id).join("layer.erofs").is_file())
        .count();
    assert_eq!(
        images,
        image.layers.len() + fixture.image.layers.len(),
        "one layer.erofs per layer"
    );

    // SIGKILL leaves the layer mounts; unmounting them all is what a reboot does to them.
    serve.kill();
    for m in mount_entries_under(&serve.root) {
        if m.fstype == "erofs" {
            let status = std::process::Command::new("umount")
                .arg(&m.point)
                .status()
                .unwrap();
            assert!(status.success(), "umount {}", m.point);
        }
    }
    assert!(
        !mount_entries_under(&serve.root)
            .iter()
            .any(|m| m.fstype == "erofs")
    );
    serve.restart();
    // containerd redials the proxy on its own (gRPC backoff, at most 3 s apart in 1.6).
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = [
        "snapshots",
        "--snapshotter",
        "strata-erofs",
        "prepare",
        "probe",
    ];
    while !containerd.run(CTR, &probe).status.success() {
        assert!(
            Instant::now() < deadline,
            "{}",
            context(
                "containerd did not reach the restarted daemon",
                &serve,
                &containerd
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    containerd.ok(
        CTR,
        &["snapshots", "--snapshotter", "strata-erofs", "rm", "probe"],
    );
    let out = python(&containerd, "py-2");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "hello",
        "{}",
        context(
            &format!(
                "python on erofs after a restart ({}):\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            &serve,
            &containerd
        )
    );
    containerd.terminate();
    serve.terminate();
}

const PYTHON: &str = "/usr/bin/python3.11";

/// This host's python3.11 with its shared libraries and the `encodings` package, all
/// `python -S` needs to start.
fn python_layer() -> LayerSpec {
    let mut layer = LayerSpec::new().created_by("python3.11").file(
        &PYTHON[1..],
        0o755,
        fs::read(PYTHON).unwrap(),
    );
    for lib in shared_libraries(PYTHON) {
        let bytes = fs::read(&lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
        layer = layer.file(lib.trim_start_matches('/'), 0o755, bytes);
    }
    let encodings = std::path::Path::new("/usr/lib/python3.11/encodings");
    for entry in fs::read_dir(encodings).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            layer = layer.file(
                format!("usr/lib/python3.11/encodings/{name}"),
                0o644,
                fs::read(&path).unwrap(),
            );
        }
    }
    layer
}

/// A layer deleting one file of the layer below (an OCI whiteout).
fn deleted_codec() -> LayerSpec {
    LayerSpec::new()
        .created_by("rm cp1252.py")
        .whiteout("usr/lib/python3.11/encodings/cp1252.py")
}
