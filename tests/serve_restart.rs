//! `strata serve` killed with SIGKILL while containerd 1.6 is pulling through it, then
//! restarted on the same root and socket: the pull fails, the retried pull succeeds, no
//! snapshot is left half-made, no mount is leaked, and a container runs on the image.
//!
//! The pull is `ctr-remote image rpull`: containerd's unpacker prepares each layer's
//! extraction snapshot and then waits for its blob, as CRI's pulls do (plain `ctr image
//! pull` fetches everything first and unpacks in a fraction of a second afterwards, which
//! leaves no window to kill in). The image (six layers, ~40 MB of incompressible files,
//! generated here) is served through a fault proxy that paces blob bodies, so the kill
//! lands while layers are still arriving: the lower layers are committed, one extraction
//! snapshot is active. What a kill inside a Prepare or Remove would leave (`new-*`, `rm-*`
//! directories) is planted too, and must be gone once the daemon is back. Needs root,
//! containerd, ctr, ctr-remote, runc and docker-registry (scripts/setup.sh).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_testdata::LayerSpec;
use strata_testdata::registry::{Fault, FaultProxy, FaultRule, RegistryServer};

mod serve_support;
mod support;

use serve_support::{
    StrataServe, UnmountOnDrop, entries, require_containerd, runnable_image, snapshot_rows,
};
use strata_testdata::containerd::Containerd;
use support::mounts::mounts_under;
use support::{CTR, CTR_REMOTE, chain_ids, log_tail};

/// Size of each generated layer's file.
const BIG_LAYER: u64 = 10 << 20;
/// Pace of each blob body through the proxy: a big layer takes ~2.5 s.
const BLOB_RATE: u64 = 4 << 20;

/// Waits up to `limit` for `done`, polling.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn sigkill_mid_pull_then_restart_and_retry() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    // Declared first, dropped last: after containerd and strata have stopped.
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let big: Vec<LayerSpec> = (0..4u64)
        .map(|i| {
            LayerSpec::new()
                .created_by(format!("data {i}"))
                .random_file(format!("data/{i}.bin"), 0o644, 100 + i, BIG_LAYER)
        })
        .collect();
    let image = runnable_image(big).build().unwrap();
    registry
        .push_image("restart/big", "1", &image)
        .expect("push the image");
    let chain = chain_ids(&image.diff_ids());
    assert_eq!(chain.len(), 6);
    let proxy = FaultProxy::start(registry.addr()).expect("start the fault proxy");
    proxy.set_faults(vec![
        FaultRule::new(Fault::Slow {
            bytes_per_sec: BLOB_RATE,
        })
        .blobs(),
    ]);
    let reference = format!("{}/restart/big:1", proxy.host());

    let mut serve = StrataServe::start(&dir.path().join("strata"), "");
    let containerd = Containerd::start(
        &dir.path().join("containerd"),
        "strata-restart",
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.strata]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ),
    ).unwrap();
    let (serve_log, containerd_log) = (serve.log.clone(), containerd.log.clone());
    let context = |what: &str| {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&serve_log, 25),
            log_tail(&containerd_log, 15)
        )
    };
    let pull_args = [
        "--address",
        &containerd.socket.to_string_lossy(),
        "--namespace",
        &containerd.namespace,
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "strata",
        &reference,
    ]
    .map(str::to_owned);

    // The first pull, killed under: SIGKILL once the third layer's (the first big one)
    // extraction snapshot is prepared: two layers are committed, it waits for its blob.
    let pull = Command::new(CTR_REMOTE)
        .args(&pull_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prepared = wait_until(Duration::from_secs(60), || {
        serve
            .log_text()
            .lines()
            .any(|l| l.contains("rpc=\"Prepare\"") && l.contains(&chain[2]))
    });
    assert!(
        prepared,
        "{}",
        context("the third layer was never prepared")
    );
    std::thread::sleep(Duration::from_millis(300));
    serve.kill();
    let killed_at = Instant::now();
    let first = pull.wait_with_output().unwrap();
    assert!(
        !first.status.success(),
        "{}",
        context("the pull succeeded although strata serve was killed under it")
    );
    eprintln!(
        "first pull failed {:?} after the kill: {}",
        killed_at.elapsed(),
        String::from_utf8_lossy(&first.stderr).trim()
    );
    let snapshots_dir = serve.root.join("snapshotters/overlayfs/snapshots");
    // What a kill inside a Prepare (a `new-*` directory being filled) or a Remove (an
    // `rm-*` directory being deleted) leaves behind.
    for planted in ["new-1-0-00000000/fs/usr", "rm-999/fs/etc"] {
        std::fs::create_dir_all(snapshots_dir.join(planted)).unwrap();
    }

    // Restart on the same root and socket (the dead daemon's socket file is taken over);
    // startup Cleanup removes whatever the kill left half-made.
    assert!(
        serve.socket.exists(),
        "SIGKILL leaves the socket file behind"
    );
    serve.restart();
    let leftovers: Vec<String> = entries(&snapshots_dir)
        .into_iter()
        .filter(|e| e.parse::<u64>().is_err())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{}",
        context(&format!(
            "half-made directories after restart: {leftovers:?}"
        ))
    );

    // containerd redials the proxy on its own (gRPC backoff, at most 3 s apart in
    // containerd 1.6); until it has, calls fail with Unavailable. A Prepare reaches the
    // daemon (List and Stat of the killed pull's layers would not: containerd's garbage
    // collector dropped them with the pull's lease, and answers those from its own
    // metadata). Then the retried pull succeeds.
    let restarted_at = Instant::now();
    let reconnected = wait_until(Duration::from_secs(30), || {
        containerd
            .run(
                CTR,
                &[
                    "snapshots",
                    "--snapshotter",
                    "strata",
                    "prepare",
                    "reconnect-probe",
                ],
            )
            .status
            .success()
    });
    assert!(
        reconnected,
        "{}",
        context("containerd did not reach the restarted daemon")
    );
    eprintln!(
        "containerd reached the restarted daemon after {:?}",
        restarted_at.elapsed()
    );
    containerd.ok(
        CTR,
        &[
            "snapshots",
            "--snapshotter",
            "strata",
            "rm",
            "reconnect-probe",
        ],
    );
    proxy.clear_faults();
    let retry = containerd.run(
        CTR_REMOTE,
        &[
            "image",
            "rpull",
            "--plain-http",
            "--snapshotter",
            "strata",
            &reference,
        ],
    );
    assert!(
        retry.status.success(),
        "{}",
        context(&format!(
            "the retried pull failed: {}",
            String::from_utf8_lossy(&retry.stderr)
        ))
    );

    // Every snapshot is committed or a proper active one (the killed pull's extraction
    // snapshot, which containerd could not remove while the daemon was down); the chain
    // is complete; every directory is a snapshot's, with its `fs`.
    let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", "strata", "ls"]);
    eprintln!("after the retry:\n{listing}");
    for line in listing.lines().skip(1) {
        // Keys of extraction snapshots hold a space: the kind is the last column.
        let kind = line.split_whitespace().last().unwrap_or_default();
        assert!(
            kind == "Committed" || kind == "Active",
            "{}",
            context(&format!("snapshot row {line:?}:\n{listing}"))
        );
    }
    let rows = snapshot_rows(&listing);
    for (i, id) in chain.iter().enumerate() {
        let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
        assert!(
            rows.iter()
                .any(|(k, p, kind)| k == id && p == parent && kind == "Committed"),
            "{}",
            context(&format!("layer {i} ({id}) is not committed:\n{listing}"))
        );
    }
    let dirs = entries(&snapshots_dir);
    assert!(
        dirs.iter()
            .all(|d| d.parse::<u64>().is_ok() && snapshots_dir.join(d).join("fs").is_dir()),
        "{}",
        context(&format!("snapshot directories: {dirs:?}"))
    );
    assert!(
        dirs.len() >= rows.len(),
        "{}",
        context("a snapshot without its directory")
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
            context(&format!("mounts left under {}", place.display()))
        );
    }

    // A container runs on the image, and sees the top layer's data.
    let runc_root = dir.path().join("runc");
    let out = containerd.run(
        CTR,
        &[
            "run",
            "--rm",
            "--runc-root",
            &runc_root.to_string_lossy(),
            "--snapshotter",
            "strata",
            &reference,
            "restart-1",
            "sh",
            "-c",
            "echo hello; test -s /data/3.bin && echo data",
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
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello\ndata");
    check_no_mounts(&[serve.root.as_path(), containerd.state.as_path()]);

    // Strata's own view, with both daemons stopped: every snapshot it records is
    // committed or active and has its directory, and every directory is a snapshot's.
    drop(containerd);
    serve.terminate();
    let out = Command::new(support::STRATA)
        .arg("--root")
        .arg(&serve.root)
        .args(["snapshot", "ls"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata snapshot ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let own = String::from_utf8(out.stdout).unwrap();
    eprintln!("strata snapshot ls:\n{own}");
    let recorded: Vec<&str> = own
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    for line in &recorded {
        let kind = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            kind == "committed" || kind == "active",
            "strata snapshot row {line:?}"
        );
    }
    let dirs = entries(&snapshots_dir);
    assert_eq!(
        dirs.len(),
        recorded.len(),
        "directories {dirs:?} for snapshots:\n{own}"
    );
}

fn check_no_mounts(places: &[&Path]) {
    for place in places {
        assert_eq!(
            mounts_under(place),
            Vec::<String>::new(),
            "mounts left under {} after the container",
            place.display()
        );
    }
}
