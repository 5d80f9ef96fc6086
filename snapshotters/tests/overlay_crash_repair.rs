//! The overlayfs snapshotter does not sync new snapshot directories (as containerd's
//! does not); a power loss that drops the rename of an uncommitted snapshot's directory
//! is repaired when the snapshotter opens again.

use std::collections::BTreeMap;

use strata_snapshotters::Snapshotter;
use strata_snapshotters::overlay::OverlaySnapshotter;

#[test]
fn missing_directories_of_uncommitted_snapshots_are_recreated_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let snapshots = root.join("snapshots");
    {
        let sn = OverlaySnapshotter::open(&root).unwrap();
        sn.prepare("base-key", "", BTreeMap::new()).unwrap();
        sn.commit("base", "base-key", BTreeMap::new()).unwrap();
        sn.prepare("active", "base", BTreeMap::new()).unwrap();
        sn.view("view", "base", BTreeMap::new()).unwrap();
        sn.close().unwrap();
    }
    // ids: 1 = base, 2 = active, 3 = view. Lose the directories of the active and the view.
    std::fs::remove_dir_all(snapshots.join("2")).unwrap();
    std::fs::remove_dir_all(snapshots.join("3")).unwrap();

    let sn = OverlaySnapshotter::open(&root).unwrap();
    assert!(
        snapshots.join("2/fs").is_dir() && snapshots.join("2/work").is_dir(),
        "active repaired"
    );
    assert!(snapshots.join("3/fs").is_dir(), "view repaired");
    let mounts = sn.mounts("active").unwrap();
    assert!(
        mounts[0]
            .options
            .iter()
            .any(|o| o.contains("upperdir=") && o.contains("/2/fs")),
        "{mounts:?}"
    );
    sn.commit("next", "active", BTreeMap::new()).unwrap();
    assert_eq!(sn.stat("next").unwrap().parent.as_deref(), Some("base"));
    sn.close().unwrap();

    // A committed snapshot whose directory is gone is not invented: it stays missing
    // (and is logged), and opening still works.
    std::fs::remove_dir_all(snapshots.join("1")).unwrap();
    let sn = OverlaySnapshotter::open(&root).unwrap();
    assert!(!snapshots.join("1").exists());
    assert!(sn.stat("base").is_ok());
    sn.close().unwrap();
}
