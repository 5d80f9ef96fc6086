//! `strata snapshot …` as a user runs it: the snapshotter names it accepts are the ones
//! containerd sends (`overlayfs`, `native`, `stargz`, and the names the daemon's
//! configuration maps to them).

mod support;

use support::Env;

#[test]
fn snapshot_commands_accept_the_names_the_daemon_serves() {
    let env = Env::new();
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        "[snapshotters]\nstrata = \"native\"\nlazy = \"stargz\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // A name the configuration maps opens the implementation it names.
    let out = env.strata_ok(
        "root",
        &[
            "snapshot",
            "--snapshotter",
            "strata",
            "--config",
            config,
            "ls",
        ],
    );
    assert!(out.starts_with("KEY"), "{out}");
    assert!(env.path("root/snapshotters/native").is_dir());
    assert!(!env.path("root/snapshotters/overlayfs").exists());
    env.strata_ok(
        "root",
        &[
            "snapshot",
            "--snapshotter",
            "lazy",
            "--config",
            config,
            "ls",
        ],
    );
    assert!(env.path("root/snapshotters/stargz").is_dir());

    let missing = env.path("no-such-dir/config.toml");
    let missing = missing.to_str().unwrap();
    let out = env.strata(
        "root2",
        &[
            "snapshot",
            "--snapshotter",
            "strata",
            "--config",
            missing,
            "ls",
        ],
    );
    // An explicit file that is missing is an error naming it.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-dir/config.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An unknown name says which names there are.
    let out = env.strata(
        "root",
        &[
            "snapshot",
            "--snapshotter",
            "nope",
            "--config",
            config,
            "ls",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown snapshotter \"nope\"") && stderr.contains("lazy, native"),
        "{stderr}"
    );
}

#[test]
fn an_interrupted_unpack_is_listed_as_one_key_and_pruned() {
    let env = Env::new();
    let chain = format!("sha256:{}", "ab".repeat(32));
    let stale = format!("extract-18f0c2a1 {chain}");
    {
        // What a `strata pull` killed between Prepare and Commit leaves.
        let sn =
            strata::snapshots::open_snapshotter(&env.path("root"), "native", &Default::default())
                .unwrap();
        let labels = std::collections::BTreeMap::from([(
            strata::image::unpack::LABEL_SNAPSHOT_REF.to_owned(),
            chain.clone(),
        )]);
        sn.prepare(&stale, "", labels.clone()).unwrap();
        // containerd's own unpacks (namespaced) and other active snapshots are not Strata's
        // to prune.
        sn.prepare(&format!("default/3/extract-1 {chain}"), "", labels)
            .unwrap();
        sn.prepare("my-container", "", Default::default()).unwrap();
        sn.close().unwrap();
    }
    let ls = env.strata_ok("root", &["snapshot", "--snapshotter", "native", "ls"]);
    assert!(ls.contains(&format!("\"{stale}\"")), "{ls}");
    let pruned = env.strata_ok("root", &["snapshot", "--snapshotter", "native", "prune"]);
    assert_eq!(pruned.trim(), stale);
    let ls = env.strata_ok("root", &["snapshot", "--snapshotter", "native", "ls"]);
    assert!(!ls.contains("extract-18f0c2a1"), "{ls}");
    assert!(
        ls.contains("default/3/extract-1") && ls.contains("my-container"),
        "{ls}"
    );
}
