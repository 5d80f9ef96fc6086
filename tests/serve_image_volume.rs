//! containerd's image-volume path (KEP-4639, containerd 2.x's CRI plugin) against `strata
//! serve`, driven through the real containerd 1.6's snapshots service: after the image is
//! pulled (`ctr image pull`, or `ctr-remote image rpull` for the lazy `stargz`
//! snapshotter), an active snapshot keyed by the volume's target path is Prepared with
//! the image's chainID as parent, its mounts performed with overlay's `volatile` added as
//! containerd does, made read-only, read, unmounted and removed — for overlayfs (the
//! `strata` name), erofs, and stargz lazily. Needs root, containerd, ctr, ctr-remote and
//! docker-registry.

use std::path::Path;

use strata_snapshotters::{Mount, mount};
use strata_testdata::LayerSpec;
use strata_testdata::containerd::Containerd;
use strata_testdata::registry::RegistryServer;

mod serve_support;
mod support;

use serve_support::{
    KillHolders, StrataServe, UnmountOnDrop, plain_http_hosts, require_containerd, runnable_image,
};
use support::mounts::mounts_under;
use support::{CTR, CTR_REMOTE, Env, chain_ids};

/// containerd's `--mounts` JSON: `[{"Type", "Source", "Target"?, "Options"}]`.
fn parse_mounts(json: &str) -> Vec<Mount> {
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Mount {
            kind: m["Type"].as_str().unwrap_or_default().to_owned(),
            source: m["Source"].as_str().unwrap_or_default().to_owned(),
            target: String::new(),
            options: m["Options"]
                .as_array()
                .map(|o| o.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and docker-registry: make test runs it"]
fn image_volume_prepares_work_on_strata_erofs_and_stargz_lazily() {
    require_containerd(&[CTR_REMOTE]);
    let env = Env::new();
    let dir = env.dir.path();
    let _holders = KillHolders(dir.to_path_buf());
    let _unmount = UnmountOnDrop(dir.to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let models = LayerSpec::new()
        .created_by("models")
        .file("models/config.json", 0o644, "{\"layers\": 2}\n")
        .random_file("models/weights.bin", 0o644, 3, 2 << 20);
    let image = runnable_image(vec![models]).build().unwrap();
    let chain = chain_ids(&image.diff_ids());
    let top = chain.last().unwrap().clone();
    registry.push_image("iv/models", "1", &image).unwrap();
    let reference = format!("{}/iv/models:1", registry.host());
    let esgz = format!("{}/iv/models:esgz", registry.host());
    env.strata_ok("conv", &["pull", "--plain-http", &reference]);
    env.strata_ok(
        "conv",
        &["convert", "--plain-http", "--push", &reference, &esgz],
    );
    let hosts = plain_http_hosts(dir, &registry.host());
    let serve = StrataServe::start(
        &dir.join("strata"),
        &format!("config_path = {:?}\n", hosts.to_string_lossy()),
    );
    let proxies: String = ["strata", "erofs", "stargz"]
        .iter()
        .map(|name| {
            format!(
                "[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = {:?}\n",
                serve.socket
            )
        })
        .collect();
    let containerd = Containerd::start(&dir.join("containerd"), "k8s.io", &proxies).unwrap();

    for (snapshotter, image_ref) in [
        ("strata", &reference),
        ("erofs", &reference),
        ("stargz", &esgz),
    ] {
        let pull: &[&str] = if snapshotter == "stargz" {
            &[
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                image_ref,
            ]
        } else {
            &[
                "image",
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                image_ref,
            ]
        };
        let tool = if snapshotter == "stargz" {
            CTR_REMOTE
        } else {
            CTR
        };
        containerd.ok(tool, pull);
        // The stargz image's chain differs (other diffIDs): its top is the last snapshot.
        let parent = if snapshotter == "stargz" {
            let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", snapshotter, "ls"]);
            let rows = serve_support::snapshot_rows(&listing);
            let parents: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            rows.iter()
                .find(|r| !parents.contains(&r.0.as_str()))
                .unwrap()
                .0
                .clone()
        } else {
            top.clone()
        };
        let target = dir.join(format!("image-volumes/pod-1/{snapshotter}"));
        std::fs::create_dir_all(&target).unwrap();
        let key = target.to_string_lossy().into_owned();
        let json = containerd.ok(
            CTR,
            &[
                "snapshots",
                "--snapshotter",
                snapshotter,
                "prepare",
                "--mounts",
                &key,
                &parent,
            ],
        );
        let mut mounts = parse_mounts(&json);
        for m in &mut mounts {
            if m.kind == "overlay" {
                m.options.push("volatile".to_owned());
            }
        }
        mount::mount_all(&mounts, &target)
            .unwrap_or_else(|e| panic!("{snapshotter}: mount {mounts:?}: {e}"));
        // Read-only, as the CRI plugin requires of image volumes.
        let remount = std::process::Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&target)
            .status()
            .unwrap();
        assert!(remount.success());
        let weights = std::fs::read(target.join("models/weights.bin"));
        let config = std::fs::read_to_string(target.join("models/config.json"));
        let write = std::fs::write(target.join("models/new"), b"x");
        mount::unmount_all(&target, false).unwrap();
        assert_eq!(weights.unwrap().len(), 2 << 20, "{snapshotter}");
        assert_eq!(config.unwrap(), "{\"layers\": 2}\n", "{snapshotter}");
        assert!(write.is_err(), "{snapshotter}: the volume is writable");
        containerd.ok(
            CTR,
            &["snapshots", "--snapshotter", snapshotter, "rm", &key],
        );
        assert!(mounts_under(Path::new(&target)).is_empty());
    }
    if serve.log_text().contains("falling back") {
        panic!("a layer was not provided lazily:\n{}", serve.log_text());
    }
}
