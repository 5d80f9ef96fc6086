//! The CLI while `strata serve` holds the snapshotters' metadata: `strata pull` unpacks
//! through the daemon's socket instead of failing on the held database.

mod serve_support;
mod support;

use serve_support::{StrataServe, UnmountOnDrop, runnable_image};
use strata_testdata::RegistryServer;
use support::STRATA;

#[test]
#[ignore = "needs root (overlay mounts) and docker-registry: make test runs it"]
fn pull_unpacks_through_the_daemon_that_holds_the_snapshotter() {
    strata_testdata::host::require_root("overlay mounts need root");
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let image = runnable_image(Vec::new()).build().unwrap();
    let reference = format!("{}/cli/sh:1", registry.host());
    registry.push_image("cli/sh", "1", &image).unwrap();
    let serve = StrataServe::start(&dir.path().join("strata"), "");

    let strata = |args: &[&str]| {
        std::process::Command::new(STRATA)
            .arg("--root")
            .arg(&serve.root)
            .env("STRATA_SOCKET", &serve.socket)
            .env("DOCKER_CONFIG", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let pull = strata(&["pull", "--plain-http", &reference]);
    let stderr = String::from_utf8_lossy(&pull.stderr);
    assert!(pull.status.success(), "pull through the daemon: {stderr}");
    let ls = strata(&["snapshot", "ls", "--filter", "kind==committed"]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(
        listing.lines().count(),
        1 + image.layers.len(),
        "one committed snapshot per layer, made by the daemon: {listing}"
    );

    // Nothing listening on the socket: the error names the socket and how to set it.
    let pull = std::process::Command::new(STRATA)
        .arg("--root")
        .arg(&serve.root)
        .env("STRATA_SOCKET", dir.path().join("nothing.sock"))
        .args(["pull", "--plain-http", &reference])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&pull.stderr);
    assert!(!pull.status.success());
    assert!(
        stderr.contains("nothing.sock") && stderr.contains("STRATA_SOCKET"),
        "{stderr}"
    );
}
