//! Checks of the snapshot lifecycle: prepare, mount, commit, view, remove, close,
//! and the error kind of every way these can be misused.

use std::path::Path;

use super::fs_tree::{self, dir, file, remove_all};
use super::harness::{
    CheckResult, Context, MountedDir, create_layer, ensure, ensure_eq, expect_error, gc_labels,
    key_in, prepare_mounted, unique_name, verify_chain, verify_layer,
};
use crate::{ErrorKind, Info, Kind, Labels, Snapshotter};

fn walk_all(sn: &dyn Snapshotter, filters: &[String]) -> CheckResult<Vec<Info>> {
    let mut infos = Vec::new();
    sn.walk(filters, &mut |info| {
        infos.push(info.clone());
        Ok(())
    })
    .context(format!("walk {filters:?}"))?;
    Ok(infos)
}

/// Prepare, fill, commit, prepare a child over it, change it, commit, view the
/// result, and remove the chain (containerd's `checkSnapshotterBasic`).
pub(crate) fn basic(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let initial = [
        file("/foo", b"foo\n", 0o777),
        dir("/a", 0o755),
        dir("/a/b", 0o755),
        dir("/a/b/c", 0o755),
    ];
    let diff = [
        file("/bar", b"bar\n", 0o777),
        file("/foo", b"bar\n", 0o777),
        remove_all("/a/b"),
    ];

    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    fs_tree::apply(mounted.path(), &initial).context("apply the first layer")?;
    mounted.unmount()?;
    let committed = key_in(work, "committed");
    sn.commit(&committed, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;

    let si = sn.stat(&committed).context(format!("stat {committed}"))?;
    ensure_eq(si.parent.as_deref(), None, format!("parent of {committed}"))?;
    ensure_eq(si.kind, Kind::Committed, format!("kind of {committed}"))?;
    expect_error(
        sn.stat(&preparing),
        ErrorKind::NotFound,
        format!("stat {preparing} after its commit"),
    )?;

    let expected_initial = work.join("expected-initial");
    std::fs::create_dir(&expected_initial).context("create the expected tree")?;
    fs_tree::apply(&expected_initial, &initial)
        .context("apply the first layer to the expected tree")?;

    let (next, mounted) = prepare_mounted(sn, work, "nextlayer", &committed)?;
    fs_tree::compare_trees(&expected_initial, mounted.path())
        .map_err(|e| super::CheckFailure::new(format!("child of {committed}: {e}")))?;
    fs_tree::apply(mounted.path(), &diff).context("apply the second layer")?;
    mounted.unmount()?;

    let ni = sn.stat(&next).context(format!("stat {next}"))?;
    ensure_eq(
        ni.parent.as_deref(),
        Some(committed.as_str()),
        format!("parent of {next}"),
    )?;
    ensure_eq(ni.kind, Kind::Active, format!("kind of {next}"))?;

    let next_committed = key_in(work, "committed-next");
    sn.commit(&next_committed, &next, gc_labels())
        .context(format!("commit {next}"))?;
    let si2 = sn
        .stat(&next_committed)
        .context(format!("stat {next_committed}"))?;
    ensure_eq(
        si2.parent.as_deref(),
        Some(committed.as_str()),
        format!("parent of {next_committed}"),
    )?;
    ensure_eq(
        si2.kind,
        Kind::Committed,
        format!("kind of {next_committed}"),
    )?;
    expect_error(
        sn.stat(&next),
        ErrorKind::NotFound,
        format!("stat {next} after its commit"),
    )?;

    let walked = walk_all(sn, &[])?;
    for expected in [&si, &si2] {
        let found = walked.iter().find(|i| i.name == expected.name);
        ensure_eq(
            found,
            Some(expected),
            format!("walk's info for {}", expected.name),
        )?;
    }

    let expected_both = work.join("expected-both");
    std::fs::create_dir(&expected_both).context("create the expected tree")?;
    fs_tree::apply(&expected_both, &initial)
        .context("apply the first layer to the expected tree")?;
    fs_tree::apply(&expected_both, &diff).context("apply the second layer to the expected tree")?;

    let view = key_in(work, "nextnextlayer");
    let mounts = sn
        .view(&view, &next_committed, gc_labels())
        .context(format!("view {next_committed}"))?;
    let mounted = MountedDir::mount(&mounts, Path::new(&view))?;
    let compared = fs_tree::compare_trees(&expected_both, mounted.path());
    mounted.unmount()?;
    compared.map_err(|e| super::CheckFailure::new(format!("view of {next_committed}: {e}")))?;
    sn.remove(&view).context(format!("remove {view}"))?;

    expect_error(
        sn.remove(&committed),
        ErrorKind::FailedPrecondition,
        format!("remove {committed}, which has a child"),
    )?;
    sn.remove(&next_committed)
        .context(format!("remove {next_committed}"))?;
    sn.remove(&committed).context(format!("remove {committed}"))
}

/// A freshly prepared snapshot stats as active, under its key, without a parent
/// (containerd's `checkSnapshotterStatActive`).
pub(crate) fn stat_active(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    fs_tree::apply(mounted.path(), &[file("/foo", b"foo\n", 0o777)]).context("write /foo")?;
    mounted.unmount()?;
    let si = sn.stat(&preparing).context(format!("stat {preparing}"))?;
    ensure_eq(si.name.as_str(), preparing.as_str(), "name")?;
    ensure_eq(si.kind, Kind::Active, "kind")?;
    ensure_eq(si.parent, None, "parent")
}

/// A committed snapshot stats as committed, under its name, without a parent
/// (containerd's `checkSnapshotterStatCommitted`).
pub(crate) fn stat_committed(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    fs_tree::apply(mounted.path(), &[file("/foo", b"foo\n", 0o777)]).context("write /foo")?;
    mounted.unmount()?;
    let committed = key_in(work, "committed");
    sn.commit(&committed, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;
    let si = sn.stat(&committed).context(format!("stat {committed}"))?;
    ensure_eq(si.name.as_str(), committed.as_str(), "name")?;
    ensure_eq(si.kind, Kind::Committed, "kind")?;
    ensure_eq(si.parent, None, "parent")
}

/// A key can be taken only once, whatever mix of Prepare and View tries
/// (containerd's `checkSnapshotterPrepareView`); the error is AlreadyExists.
pub(crate) fn prepare_view_failures(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    mounted.unmount()?;
    let snap_a = key_in(work, "snapA");
    sn.commit(&snap_a, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;

    let new_layer = key_in(work, "newlayer");
    sn.prepare(&new_layer, &snap_a, gc_labels())
        .context(format!("prepare {new_layer}"))?;
    expect_error(
        sn.view(&new_layer, &snap_a, gc_labels()),
        ErrorKind::AlreadyExists,
        "view with the key of an active snapshot",
    )?;

    let prep_layer = key_in(work, "prepLayer");
    sn.prepare(&prep_layer, &snap_a, gc_labels())
        .context(format!("prepare {prep_layer}"))?;
    expect_error(
        sn.prepare(&prep_layer, &snap_a, gc_labels()),
        ErrorKind::AlreadyExists,
        "prepare the same key twice",
    )?;

    let view_layer = key_in(work, "viewLayer");
    sn.view(&view_layer, &snap_a, gc_labels())
        .context(format!("view {view_layer}"))?;
    expect_error(
        sn.view(&view_layer, &snap_a, gc_labels()),
        ErrorKind::AlreadyExists,
        "view the same key twice",
    )?;
    expect_error(
        sn.prepare(&view_layer, "", gc_labels()),
        ErrorKind::AlreadyExists,
        "prepare with the key of a view",
    )?;
    expect_error(
        sn.prepare(&snap_a, "", gc_labels()),
        ErrorKind::AlreadyExists,
        "prepare with the name of a committed snapshot",
    )?;

    ensure_eq(
        sn.stat(&view_layer).context("stat the view")?.kind,
        Kind::View,
        "kind of the view after the failed attempts",
    )?;
    ensure_eq(
        sn.stat(&new_layer).context("stat the active")?.kind,
        Kind::Active,
        "kind of the active after the failed view",
    )
}

/// Keys are free again once removed, for any kind, and a committed name can be
/// reused after its removal (containerd's `checkRemove`).
pub(crate) fn remove(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    sn.prepare("committed-a", "", gc_labels())
        .context("prepare committed-a")?;
    sn.commit("committed-1", "committed-a", gc_labels())
        .context("commit committed-a")?;
    sn.prepare("reuse-1", "committed-1", gc_labels())
        .context("prepare reuse-1")?;
    expect_error(
        sn.remove("committed-1"),
        ErrorKind::FailedPrecondition,
        "remove committed-1 while reuse-1 is its child",
    )?;
    sn.remove("reuse-1").context("remove the active reuse-1")?;
    expect_error(
        sn.stat("reuse-1"),
        ErrorKind::NotFound,
        "stat reuse-1 after its removal",
    )?;
    sn.view("reuse-1", "committed-1", gc_labels())
        .context("view reuse-1")?;
    expect_error(
        sn.remove("committed-1"),
        ErrorKind::FailedPrecondition,
        "remove committed-1 while the view reuse-1 is its child",
    )?;
    sn.remove("reuse-1").context("remove the view reuse-1")?;
    sn.prepare("reuse-1", "", gc_labels())
        .context("prepare reuse-1 again")?;
    sn.remove("committed-1").context("remove committed-1")?;
    expect_error(
        sn.stat("committed-1"),
        ErrorKind::NotFound,
        "stat committed-1 after its removal",
    )?;
    sn.commit("committed-1", "reuse-1", gc_labels())
        .context("commit reuse-1 under the reused name committed-1")?;
    let info = sn.stat("committed-1").context("stat committed-1")?;
    ensure_eq(info.kind, Kind::Committed, "kind of the new committed-1")?;
    ensure_eq(info.parent, None, "parent of the new committed-1")
}

/// In a chain base ← inter ← top, the intermediate cannot be removed while top
/// exists; removing from the top down works (containerd's
/// `checkRemoveIntermediateSnapshot`).
pub(crate) fn remove_intermediate_snapshot(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (base, mounted) = prepare_mounted(sn, work, "base", "")?;
    mounted.unmount()?;
    let committed_base = key_in(work, "committed-base");
    sn.commit(&committed_base, &base, gc_labels())
        .context(format!("commit {base}"))?;

    let intermediate = key_in(work, "intermediate");
    sn.prepare(&intermediate, &committed_base, gc_labels())
        .context(format!("prepare {intermediate}"))?;
    let committed_inter = key_in(work, "committed-inter");
    sn.commit(&committed_inter, &intermediate, gc_labels())
        .context(format!("commit {intermediate}"))?;

    let top = key_in(work, "toplayer");
    sn.prepare(&top, &committed_inter, gc_labels())
        .context(format!("prepare {top}"))?;

    expect_error(
        sn.remove(&committed_inter),
        ErrorKind::FailedPrecondition,
        "remove the intermediate snapshot",
    )?;
    expect_error(
        sn.remove(&committed_base),
        ErrorKind::FailedPrecondition,
        "remove the base snapshot",
    )?;
    sn.stat(&committed_inter)
        .context("stat the intermediate after its failed removal")?;
    sn.remove(&top).context(format!("remove {top}"))?;
    sn.remove(&committed_inter)
        .context(format!("remove {committed_inter}"))?;
    sn.remove(&committed_base)
        .context(format!("remove {committed_base}"))?;
    let left = walk_all(sn, &[])?;
    ensure(left.is_empty(), || {
        format!("snapshots left after removing the chain: {left:?}")
    })
}

/// Close after some work, then close again: both succeed (containerd's `closeTwice`).
pub(crate) fn close_twice(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let name = unique_name("closeTwice");
    let prepare = format!("{name}-prepare");
    sn.prepare(&prepare, "", gc_labels())
        .context(format!("prepare {prepare}"))?;
    sn.commit(&name, &prepare, gc_labels())
        .context(format!("commit {prepare}"))?;
    sn.remove(&name).context(format!("remove {name}"))?;
    sn.close().context("the first close")?;
    sn.close().context("the second close")
}

/// The error kind of each misuse, as containerd's snapshotters answer it: NotFound
/// for missing keys and parents, InvalidArgument for a parent that is not committed,
/// FailedPrecondition for committing what is not active, AlreadyExists for a taken
/// commit name. A failed call changes nothing.
pub(crate) fn error_kinds(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let missing = "does-not-exist";
    expect_error(sn.stat(missing), ErrorKind::NotFound, "stat a missing key")?;
    expect_error(
        sn.remove(missing),
        ErrorKind::NotFound,
        "remove a missing key",
    )?;
    expect_error(
        sn.mounts(missing),
        ErrorKind::NotFound,
        "mounts of a missing key",
    )?;
    expect_error(
        sn.usage(missing),
        ErrorKind::NotFound,
        "usage of a missing key",
    )?;
    expect_error(
        sn.commit("new-name", missing, Labels::new()),
        ErrorKind::NotFound,
        "commit a missing key",
    )?;
    let ghost = Info {
        name: missing.to_owned(),
        parent: None,
        kind: Kind::Active,
        labels: Labels::new(),
        created: std::time::SystemTime::now(),
        updated: std::time::SystemTime::now(),
    };
    let mut nameless = ghost.clone();
    expect_error(
        sn.update(ghost, &[]),
        ErrorKind::NotFound,
        "update a missing key",
    )?;
    nameless.name.clear();
    expect_error(
        sn.update(nameless, &[]),
        ErrorKind::InvalidArgument,
        "update without a name",
    )?;

    expect_error(
        sn.prepare("orphan", missing, gc_labels()),
        ErrorKind::NotFound,
        "prepare over a missing parent",
    )?;
    expect_error(
        sn.view("orphan-view", missing, gc_labels()),
        ErrorKind::NotFound,
        "view of a missing parent",
    )?;
    expect_error(
        sn.stat("orphan"),
        ErrorKind::NotFound,
        "stat after a failed prepare",
    )?;
    expect_error(
        sn.stat("orphan-view"),
        ErrorKind::NotFound,
        "stat after a failed view",
    )?;

    sn.prepare("active", "", gc_labels())
        .context("prepare active")?;
    sn.view("view", "", gc_labels()).context("view view")?;
    expect_error(
        sn.prepare("over-active", "active", gc_labels()),
        ErrorKind::InvalidArgument,
        "prepare over an active parent",
    )?;
    expect_error(
        sn.view("view-of-active", "active", gc_labels()),
        ErrorKind::InvalidArgument,
        "view of an active parent",
    )?;
    expect_error(
        sn.prepare("over-view", "view", gc_labels()),
        ErrorKind::InvalidArgument,
        "prepare over a view parent",
    )?;
    expect_error(
        sn.stat("over-active"),
        ErrorKind::NotFound,
        "stat after a failed prepare over an active parent",
    )?;

    expect_error(
        sn.commit("from-view", "view", gc_labels()),
        ErrorKind::FailedPrecondition,
        "commit a view",
    )?;
    expect_error(
        sn.stat("from-view"),
        ErrorKind::NotFound,
        "stat the name of a failed commit",
    )?;
    ensure_eq(
        sn.stat("view").context("stat view")?.kind,
        Kind::View,
        "kind of a view after a failed commit",
    )?;

    sn.commit("committed", "active", gc_labels())
        .context("commit active")?;
    expect_error(
        sn.commit("committed-again", "committed", gc_labels()),
        ErrorKind::FailedPrecondition,
        "commit a committed snapshot",
    )?;

    sn.prepare("second", "committed", gc_labels())
        .context("prepare second")?;
    expect_error(
        sn.commit("committed", "second", gc_labels()),
        ErrorKind::AlreadyExists,
        "commit under a taken name",
    )?;
    expect_error(
        sn.commit("view", "second", gc_labels()),
        ErrorKind::AlreadyExists,
        "commit under the key of a view",
    )?;
    ensure_eq(
        sn.stat("second").context("stat second")?.kind,
        Kind::Active,
        "kind of an active after a failed commit",
    )?;
    sn.commit("second-committed", "second", gc_labels())
        .context("commit second")?;
    ensure_eq(
        sn.stat("second-committed")
            .context("stat second-committed")?
            .parent
            .as_deref(),
        Some("committed"),
        "parent of second-committed",
    )
}

/// Mounts returns what Prepare and View returned, and refuses committed snapshots
/// (FailedPrecondition, as containerd's storage does).
pub(crate) fn mounts(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let base_mounts = sn
        .prepare("base", "", gc_labels())
        .context("prepare base")?;
    ensure(!base_mounts.is_empty(), || {
        "prepare base returned no mounts".to_owned()
    })?;
    ensure_eq(
        sn.mounts("base").context("mounts of base")?,
        base_mounts,
        "mounts of base",
    )?;
    sn.commit("base-committed", "base", gc_labels())
        .context("commit base")?;
    expect_error(
        sn.mounts("base-committed"),
        ErrorKind::FailedPrecondition,
        "mounts of a committed snapshot",
    )?;
    expect_error(
        sn.mounts("base"),
        ErrorKind::NotFound,
        "mounts of a committed active key",
    )?;

    let child_mounts = sn
        .prepare("child", "base-committed", gc_labels())
        .context("prepare child")?;
    ensure_eq(
        sn.mounts("child").context("mounts of child")?,
        child_mounts,
        "mounts of child",
    )?;
    let view_mounts = sn
        .view("view", "base-committed", gc_labels())
        .context("view view")?;
    ensure(!view_mounts.is_empty(), || {
        "view returned no mounts".to_owned()
    })?;
    ensure_eq(
        sn.mounts("view").context("mounts of view")?,
        view_mounts,
        "mounts of view",
    )?;
    let empty_view = sn
        .view("empty-view", "", gc_labels())
        .context("view of nothing")?;
    ensure(!empty_view.is_empty(), || {
        "view of nothing returned no mounts".to_owned()
    })?;
    ensure_eq(
        sn.mounts("empty-view").context("mounts of empty-view")?,
        empty_view,
        "mounts of empty-view",
    )
}

/// Commit gives the committed snapshot the labels it is handed, not the active
/// snapshot's (containerd's storage: "replace labels, do not inherit"); a view
/// inherits nothing from its parent.
pub(crate) fn commit_labels(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let own = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    sn.prepare(
        "a",
        "",
        own(&[("prepared", "yes"), ("shared", "from-prepare")]),
    )
    .context("prepare a")?;
    sn.commit(
        "c",
        "a",
        own(&[("committed", "yes"), ("shared", "from-commit")]),
    )
    .context("commit a")?;
    ensure_eq(
        sn.stat("c").context("stat c")?.labels,
        own(&[("committed", "yes"), ("shared", "from-commit")]),
        "labels of c",
    )?;

    sn.prepare("b", "c", own(&[("prepared", "yes")]))
        .context("prepare b")?;
    sn.commit("d", "b", Labels::new())
        .context("commit b without labels")?;
    ensure_eq(
        sn.stat("d").context("stat d")?.labels,
        Labels::new(),
        "labels of d",
    )?;

    sn.view("v", "c", Labels::new()).context("view v")?;
    ensure_eq(
        sn.stat("v").context("stat v")?.labels,
        Labels::new(),
        "labels of a view of a labelled parent",
    )?;
    sn.prepare("e", "c", Labels::new()).context("prepare e")?;
    ensure_eq(
        sn.stat("e").context("stat e")?.labels,
        Labels::new(),
        "labels of an active over a labelled parent",
    )
}

/// Cleanup removes only what no snapshot uses: after removals, every remaining
/// snapshot, active ones with their writes included, mounts with its content, and
/// a second Cleanup is harmless.
pub(crate) fn cleanup_keeps_live_snapshots(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![dir("/base", 0o755), file("/base/f", b"base\n", 0o644)],
        vec![file("/second", b"second\n", 0o600)],
    ];
    let chain = verify_chain(sn, work, &layers)?;
    let top = chain.last().cloned().unwrap_or_default();

    let (active, mounted) = prepare_mounted(sn, work, "active", &top)?;
    fs_tree::apply(
        mounted.path(),
        &[file("/written", b"by the active snapshot\n", 0o644)],
    )
    .context("write in the active snapshot")?;
    mounted.unmount()?;
    let doomed = key_in(work, "doomed");
    sn.prepare(&doomed, &top, gc_labels())
        .context(format!("prepare {doomed}"))?;
    sn.remove(&doomed).context(format!("remove {doomed}"))?;
    let side = create_layer(sn, work, &chain[0], &[file("/side", b"side\n", 0o644)])?;
    sn.remove(&side).context(format!("remove {side}"))?;

    sn.cleanup().context("cleanup")?;
    sn.cleanup().context("the second cleanup")?;

    let expected = work.join("expected-active");
    std::fs::create_dir(&expected).context("create the expected tree")?;
    for changes in &layers {
        fs_tree::apply(&expected, changes).context("fill the expected tree")?;
    }
    verify_layer(sn, work, &top, &expected).context("the top layer after cleanup")?;
    fs_tree::apply(
        &expected,
        &[file("/written", b"by the active snapshot\n", 0o644)],
    )
    .context("fill the expected tree")?;
    let mounts = sn.mounts(&active).context(format!("mounts of {active}"))?;
    let mounted = MountedDir::mount(&mounts, &work.join("active-again"))?;
    let compared = fs_tree::compare_trees(&expected, mounted.path());
    mounted.unmount()?;
    compared.map_err(|e| super::CheckFailure::new(format!("{active} after cleanup: {e}")))?;
    let names: Vec<String> = walk_all(sn, &[])?.into_iter().map(|i| i.name).collect();
    ensure_eq(
        names.len(),
        chain.len() + 1,
        format!("snapshots after cleanup ({names:?})"),
    )
}
