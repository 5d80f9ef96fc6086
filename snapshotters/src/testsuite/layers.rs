//! Checks of what a chain of layers looks like when mounted: transitive parents,
//! files deleted or moved in children, read-only views, the root's permissions and
//! a 128-layer chain.

use std::io;
use std::path::Path;

use super::CheckFailure;
use super::fs_tree::{self, Change, dir, file, link, remove_all};
use super::harness::{
    CheckResult, Context, MountedDir, ensure, ensure_eq, gc_labels, key_in, prepare_mounted,
    verify_chain, verify_layer,
};
use crate::Snapshotter;

/// Given A ← B, B's parent is A and A has none; B's view shows B's version of a
/// file A also has; and in a longer chain every layer's files show through all the
/// layers above (containerd's `checkSnapshotterTransitivity`, extended).
pub(crate) fn transitive_layers(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    fs_tree::apply(mounted.path(), &[file("/foo", b"foo\n", 0o777)]).context("write /foo in A")?;
    mounted.unmount()?;
    let snap_a = key_in(work, "snapA");
    sn.commit(&snap_a, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;

    let (next, mounted) = prepare_mounted(sn, work, "next", &snap_a)?;
    fs_tree::apply(mounted.path(), &[file("/foo", b"foo bar\n", 0o777)])
        .context("write /foo in B")?;
    mounted.unmount()?;
    let snap_b = key_in(work, "snapB");
    sn.commit(&snap_b, &next, gc_labels())
        .context(format!("commit {next}"))?;

    let si_a = sn.stat(&snap_a).context("stat A")?;
    let si_b = sn.stat(&snap_b).context("stat B")?;
    let b_parent = si_b
        .parent
        .clone()
        .ok_or_else(|| CheckFailure::new(format!("{snap_b} has no parent")))?;
    let si_parent_b = sn.stat(&b_parent).context("stat B's parent")?;
    ensure_eq(si_a.parent, None, "parent of A")?;
    ensure_eq(b_parent.as_str(), snap_a.as_str(), "parent of B")?;
    ensure_eq(si_parent_b.parent, None, "parent of B's parent")?;

    let expected = work.join("expected-b");
    std::fs::create_dir(&expected).context("create the expected tree")?;
    fs_tree::apply(&expected, &[file("/foo", b"foo bar\n", 0o777)])
        .context("fill the expected tree")?;
    verify_layer(sn, work, &snap_b, &expected)?;

    let mut layers: Vec<Vec<Change>> = Vec::new();
    for i in 0..6 {
        let mut changes = vec![
            dir(&format!("/layer-{i}"), 0o755),
            file(
                &format!("/layer-{i}/own"),
                format!("layer {i}\n").as_bytes(),
                0o644,
            ),
        ];
        changes.push(file(
            "/shared",
            format!("written by layer {i}\n").as_bytes(),
            0o600 + i,
        ));
        if i > 0 {
            changes.push(file(
                &format!("/layer-{}/from-above", i - 1),
                format!("added by layer {i}\n").as_bytes(),
                0o640,
            ));
        }
        layers.push(changes);
    }
    verify_chain(sn, work, &layers).map(|_| ())
}

/// Files deleted in a child stay deleted in the child's committed snapshot and in
/// its children (containerd's `checkDeletedFilesInChildSnapshot`).
pub(crate) fn deleted_files_in_child_snapshot(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            file("/foo", b"foo\n", 0o777),
            file("/foobar", b"foobar\n", 0o777),
            dir("/gone", 0o755),
            file("/gone/inside", b"x", 0o644),
        ],
        vec![remove_all("/foobar"), remove_all("/gone")],
        vec![],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}

/// A directory removed in a child, a file moved out of a lower directory by hard
/// link and removal (containerd's `checkFileFromLowerLayer`).
pub(crate) fn move_file_from_lower_layer(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            dir("/dir1", 0o700),
            file("/dir1/f1", b"Hello", 0o644),
            dir("/dir2", 0o700),
            file("/dir2/f2", b"...", 0o644),
        ],
        vec![
            dir("/dir3", 0o700),
            file("/dir3/f1", b"Hello", 0o644),
            remove_all("/dir1"),
            link("/dir2/f2", "/dir3/f2"),
            remove_all("/dir2/f2"),
        ],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}

fn expect_read_only(root: &Path, what: &str) -> CheckResult {
    let checks: [(&str, io::Result<()>); 2] = [
        (
            "write testfile",
            std::fs::write(root.join("testfile"), b"testcontent"),
        ),
        ("mkdir testdir", std::fs::create_dir(root.join("testdir"))),
    ];
    for (op, result) in checks {
        match result {
            Ok(()) => {
                return Err(CheckFailure::new(format!(
                    "{what}: {op} succeeded on a read-only view"
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            Err(e) => {
                return Err(CheckFailure::new(format!(
                    "{what}: {op} should fail with EROFS, failed with {e}"
                )));
            }
        }
    }
    Ok(())
}

/// A view, mounted for real, is read-only: writes fail with EROFS, whether it has
/// no parent, one, or several layers below (containerd's
/// `checkSnapshotterViewReadonly`).
pub(crate) fn view_readonly(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let preparing = key_in(work, "preparing");
    sn.prepare(&preparing, "", gc_labels())
        .context(format!("prepare {preparing}"))?;
    let committed = key_in(work, "committed");
    sn.commit(&committed, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;
    let upper = key_in(work, "upper");
    sn.prepare(&upper, &committed, gc_labels())
        .context(format!("prepare {upper}"))?;
    let committed_two = key_in(work, "committed-two");
    sn.commit(&committed_two, &upper, gc_labels())
        .context(format!("commit {upper}"))?;

    for (view_name, parent) in [
        ("view", committed.as_str()),
        ("view-two", committed_two.as_str()),
        ("view-empty", ""),
    ] {
        let view = key_in(work, view_name);
        let mounts = sn
            .view(&view, parent, gc_labels())
            .context(format!("view {parent:?}"))?;
        let mounted = MountedDir::mount(&mounts, &work.join(format!("{view_name}-mount")))?;
        let checked = expect_read_only(mounted.path(), &format!("view of {parent:?}"));
        mounted.unmount()?;
        checked?;
        sn.remove(&view).context(format!("remove {view}"))?;
    }
    sn.remove(&committed_two)
        .context(format!("remove {committed_two}"))?;
    sn.remove(&committed).context(format!("remove {committed}"))
}

/// The root directory of a new snapshot is 0755, with or without a parent
/// (containerd's `checkRootPermission`).
pub(crate) fn root_permission(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let (preparing, mounted) = prepare_mounted(sn, work, "preparing", "")?;
    let mode = std::fs::metadata(mounted.path())
        .context("stat the mounted root")?
        .mode_bits();
    mounted.unmount()?;
    ensure(mode == 0o755, || {
        format!("root of a new snapshot has mode {mode:o}, expected 755")
    })?;

    let committed = key_in(work, "committed");
    sn.commit(&committed, &preparing, gc_labels())
        .context(format!("commit {preparing}"))?;
    let (_, mounted) = prepare_mounted(sn, work, "child", &committed)?;
    let mode = std::fs::metadata(mounted.path())
        .context("stat the mounted child root")?
        .mode_bits();
    mounted.unmount()?;
    ensure(mode == 0o755, || {
        format!("root of a child snapshot has mode {mode:o}, expected 755")
    })
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Metadata {
    fn mode_bits(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        self.permissions().mode() & 0o777
    }
}

/// 128 layers, each prepared over the last, mounted, compared with a plain
/// directory given the same changes before and after applying them, then
/// committed; a view of the top and a 129th active snapshot show everything
/// (containerd's `check128LayersMount`).
pub(crate) fn layers_128_mount(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let mut layers: Vec<Vec<Change>> = vec![vec![
        file("/bottom", b"way at the bottom\n", 0o777),
        file("/overwriteme", b"FIRST!\n", 0o777),
        dir("/addhere", 0o755),
        dir("/onlyme", 0o755),
        file("/onlyme/bottom", b"bye!\n", 0o777),
    ]];
    for i in 1..=127 {
        layers.push(vec![
            file("/overwriteme", format!("{i} WAS HERE!\n").as_bytes(), 0o777),
            file(&format!("/addhere/file-{i}"), b"same\n", 0o755),
            remove_all("/onlyme"),
            dir("/onlyme", 0o755),
            file(&format!("/onlyme/file-{i}"), b"only me!\n", 0o777),
        ]);
    }

    let flat = work.join("flat");
    std::fs::create_dir(&flat).context("create the flat directory")?;
    let compare = |dir: &Path, when: String| {
        fs_tree::compare_trees(&flat, dir).map_err(|e| CheckFailure::new(format!("{when}: {e}")))
    };
    let mut parent = String::new();
    for (i, changes) in layers.iter().enumerate() {
        let (preparing, mounted) =
            prepare_mounted(sn, work, &format!("prepare-layer-{i}"), &parent)?;
        compare(mounted.path(), format!("layer {i} before applying"))?;
        fs_tree::apply(&flat, changes)
            .context(format!("layer {i}: apply to the flat directory"))?;
        fs_tree::apply(mounted.path(), changes)
            .context(format!("layer {i}: apply to {preparing}"))?;
        compare(mounted.path(), format!("layer {i} after applying"))?;
        mounted.unmount()?;
        let committed = key_in(work, &format!("committed-{i}"));
        sn.commit(&committed, &preparing, gc_labels())
            .context(format!("layer {i}: commit {preparing}"))?;
        parent = committed;
    }

    let view = key_in(work, "fullview");
    let mounts = sn
        .view(&view, &parent, gc_labels())
        .context("view the top layer")?;
    let mounted = MountedDir::mount(&mounts, Path::new(&view))?;
    let viewed = compare(mounted.path(), "the view of 128 layers".to_owned());
    mounted.unmount()?;
    viewed?;

    let (_, mounted) = prepare_mounted(sn, work, "layer-129", &parent)?;
    let compared = compare(
        mounted.path(),
        "the active snapshot over 128 layers".to_owned(),
    );
    let files = std::fs::read_dir(mounted.path().join("addhere"))
        .context("list /addhere")?
        .count();
    mounted.unmount()?;
    compared?;
    ensure_eq(files, 127, "files in /addhere over 128 layers")
}
