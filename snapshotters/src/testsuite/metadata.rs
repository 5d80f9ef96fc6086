//! Checks of snapshot metadata: Update's field paths and times, Walk's filters,
//! Stat inside Walk, label limits, timestamp precision and Usage.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::CheckFailure;
use super::fs_tree::{self, file};
use super::harness::{
    CheckResult, Context, MountedDir, ensure, ensure_eq, expect_error, gc_labels,
};
use crate::{ErrorKind, Info, Kind, Labels, SnapshotError, Snapshotter, Usage};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// c1 ← c2 committed, a1 active over c2, a2 active alone, v1 a view of c2, v2 an
/// empty view (containerd's `baseTestSnapshots`).
fn base_snapshots(sn: &dyn Snapshotter) -> CheckResult {
    sn.prepare("c1-a", "", gc_labels())
        .context("prepare c1-a")?;
    sn.commit("c1", "c1-a", gc_labels()).context("commit c1")?;
    sn.prepare("c2-a", "c1", gc_labels())
        .context("prepare c2-a")?;
    sn.commit("c2", "c2-a", gc_labels()).context("commit c2")?;
    sn.prepare("a1", "c2", gc_labels()).context("prepare a1")?;
    sn.prepare("a2", "", gc_labels()).context("prepare a2")?;
    sn.view("v1", "c2", gc_labels()).context("view v1")?;
    sn.view("v2", "", gc_labels()).context("view v2")?;
    Ok(())
}

fn within(t: SystemTime, start: SystemTime, end: SystemTime, what: &str) -> CheckResult {
    ensure(t >= start && t <= end, || {
        format!("{what} {t:?} is not between {start:?} and {end:?}")
    })
}

/// Update replaces labels wholesale (no field paths, or `labels`), sets or deletes
/// single labels (`labels.<key>`), ignores the immutable fields it is handed, bumps
/// `updated` and keeps `created`; any other field path is InvalidArgument
/// (containerd's `checkUpdate`).
pub(crate) fn update(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let t1 = SystemTime::now();
    base_snapshots(sn)?;
    let t2 = SystemTime::now();
    let cases: [(&str, Kind, Option<&str>); 6] = [
        ("c1", Kind::Committed, None),
        ("c2", Kind::Committed, Some("c1")),
        ("a1", Kind::Active, Some("c2")),
        ("a2", Kind::Active, None),
        ("v1", Kind::View, Some("c2")),
        ("v2", Kind::View, None),
    ];
    for (name, kind, parent) in cases {
        let check_identity = |info: &Info, when: &str| -> CheckResult {
            ensure_eq(info.name.as_str(), name, format!("{name} {when}: name"))?;
            ensure_eq(info.kind, kind, format!("{name} {when}: kind"))?;
            ensure_eq(
                info.parent.as_deref(),
                parent,
                format!("{name} {when}: parent"),
            )
        };
        let mut st = sn.stat(name).context(format!("stat {name}"))?;
        within(st.created, t1, t2, &format!("{name}: created"))?;
        ensure_eq(
            st.updated,
            st.created,
            format!("{name}: updated of a new snapshot"),
        )?;
        check_identity(&st, "before updates")?;
        let created = st.created;

        let gc = gc_labels();
        let root_label = |mut l: Labels| {
            l.extend(gc.clone());
            l
        };
        let expected = root_label(labels(&[("l1", "v1"), ("l2", "v2"), ("l3", "v3")]));
        st.parent = Some("doesnotexist".to_owned());
        st.kind = if kind == Kind::View {
            Kind::Active
        } else {
            Kind::View
        };
        st.labels = expected.clone();
        let u1 = SystemTime::now();
        st = sn
            .update(st, &[])
            .context(format!("update {name} without field paths"))?;
        let u2 = SystemTime::now();
        ensure_eq(st.created, created, format!("{name}: created after update"))?;
        within(st.updated, u1, u2, &format!("{name}: updated after update"))?;
        check_identity(&st, "after update")?;
        ensure_eq(
            &st.labels,
            &expected,
            format!("{name}: labels after a full update"),
        )?;
        ensure_eq(
            &sn.stat(name).context(format!("stat {name}"))?,
            &st,
            format!("{name}: stat after update"),
        )?;

        st.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
        st = sn
            .update(st, &strings(&["labels.l1", "labels.l2"]))
            .context(format!("update {name} labels.l1, labels.l2"))?;
        let expected = root_label(labels(&[("l1", "updated"), ("l3", "v3")]));
        ensure_eq(
            &st.labels,
            &expected,
            format!("{name}: labels after updating labels.l1 and labels.l2"),
        )?;

        let expected = root_label(labels(&[("l4", "v4")]));
        st.labels = expected.clone();
        st = sn
            .update(st, &strings(&["labels"]))
            .context(format!("update {name} labels"))?;
        ensure_eq(
            &st.labels,
            &expected,
            format!("{name}: labels after updating labels"),
        )?;
        ensure_eq(
            &sn.stat(name).context(format!("stat {name}"))?.labels,
            &expected,
            format!("{name}: stat's labels"),
        )?;

        for path in [
            "parent",
            "kind",
            "name",
            "created",
            "updated",
            "labels_typo",
        ] {
            let mut changed = st.clone();
            changed.parent = Some("doesnotexist".to_owned());
            expect_error(
                sn.update(changed, &strings(&[path])),
                ErrorKind::InvalidArgument,
                format!("update {name} field path {path:?}"),
            )?;
        }
        let after = sn.stat(name).context(format!("stat {name}"))?;
        ensure_eq(&after, &st, format!("{name}: stat after rejected updates"))?;
    }
    Ok(())
}

fn walk_names(sn: &dyn Snapshotter, filters: &[String]) -> Result<BTreeSet<String>, SnapshotError> {
    let mut names = BTreeSet::new();
    sn.walk(filters, &mut |info| {
        names.insert(info.name.clone());
        Ok(())
    })?;
    Ok(names)
}

/// Walk with containerd's filter syntax over name, parent, kind and labels;
/// comma-joined selectors all apply, separate filters are alternatives; a bad
/// filter is InvalidArgument (containerd's `checkWalk`, and more).
pub(crate) fn walk(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let root = labels(&[("containerd.io/gc.root", "check-walk")]);
    let with_l = |value: &str| labels(&[("l", value), ("containerd.io/gc.root", "check-walk")]);
    sn.prepare("a-np", "", root.clone())
        .context("prepare a-np")?;
    sn.prepare("p-tmp", "", root.clone())
        .context("prepare p-tmp")?;
    sn.commit("p", "p-tmp", root.clone()).context("commit p")?;
    sn.prepare("a", "p", root.clone()).context("prepare a")?;
    sn.view("v", "p", root.clone()).context("view v")?;
    sn.prepare("p-wl-tmp", "", root.clone())
        .context("prepare p-wl-tmp")?;
    sn.commit("p-wl", "p-wl-tmp", with_l("1"))
        .context("commit p-wl")?;
    sn.prepare("a-wl", "p-wl", with_l("2"))
        .context("prepare a-wl")?;
    sn.view("v-wl", "p-wl", with_l("3")).context("view v-wl")?;
    sn.prepare("a-np-wl", "", with_l("2"))
        .context("prepare a-np-wl")?;

    let cases: &[(&[&str], &[&str])] = &[
        (
            &[],
            &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"],
        ),
        (
            &[r#"labels."containerd.io/gc.root"==check-walk"#],
            &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"],
        ),
        (
            &[r#"kind==active,labels."containerd.io/gc.root"==check-walk"#],
            &["a-np", "a", "a-wl", "a-np-wl"],
        ),
        (
            &[r#"kind==view,labels."containerd.io/gc.root"==check-walk"#],
            &["v", "v-wl"],
        ),
        (
            &[r#"kind==committed,labels."containerd.io/gc.root"==check-walk"#],
            &["p", "p-wl"],
        ),
        (&["name==p", "name==a-np-wl"], &["p", "a-np-wl"]),
        (&["name==a-wl,labels.l"], &["a-wl"]),
        (&["parent==p"], &["a", "v"]),
        (
            &[r#"parent!="",labels."containerd.io/gc.root"==check-walk"#],
            &["a", "v", "a-wl", "v-wl"],
        ),
        (&["labels.l"], &["p-wl", "a-wl", "v-wl", "a-np-wl"]),
        (&["labels.l==2"], &["a-wl", "a-np-wl"]),
        (&["labels.l!=2,labels.l"], &["p-wl", "v-wl"]),
        (&["kind==view", "labels.l==1"], &["v", "v-wl", "p-wl"]),
        (&["name~=^a-np"], &["a-np", "a-np-wl"]),
        (&["name==nothing"], &[]),
        (
            &["parent==p-wl,kind==active", "parent==p,kind==view"],
            &["a-wl", "v"],
        ),
    ];
    for (filters, expected) in cases {
        let filters = strings(filters);
        let got = walk_names(sn, &filters).context(format!("walk {filters:?}"))?;
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        ensure_eq(got, expected, format!("walk {filters:?}"))?;
    }

    for bad in [
        r#"labels."unterminated==x"#,
        "name==a,",
        "kind>>active",
        "==x",
    ] {
        expect_error(
            walk_names(sn, &strings(&[bad])),
            ErrorKind::InvalidArgument,
            format!("walk with the bad filter {bad:?}"),
        )?;
    }
    Ok(())
}

/// Stat inside a Walk callback neither deadlocks nor disagrees with Walk
/// (containerd's `checkStatInWalk`).
pub(crate) fn stat_in_walk(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let prefix = "stats-in-walk-";
    let name = |s: &str| format!("{prefix}{s}");
    sn.prepare(&name("c1-a"), "", gc_labels())
        .context("prepare c1-a")?;
    sn.commit(&name("c1"), &name("c1-a"), gc_labels())
        .context("commit c1")?;
    sn.prepare(&name("c2-a"), &name("c1"), gc_labels())
        .context("prepare c2-a")?;
    sn.commit(&name("c2"), &name("c2-a"), gc_labels())
        .context("commit c2")?;
    sn.prepare(&name("a1"), &name("c2"), gc_labels())
        .context("prepare a1")?;
    sn.view(&name("v1"), &name("c2"), gc_labels())
        .context("view v1")?;

    let mut seen = 0;
    sn.walk(&[], &mut |info| {
        if !info.name.starts_with(prefix) {
            return Ok(());
        }
        seen += 1;
        let again = sn.stat(&info.name)?;
        if &again != info {
            return Err(SnapshotError::internal(format!(
                "stat {} inside walk: {again:?}, walk gave {info:?}",
                info.name
            )));
        }
        Ok(())
    })
    .context("walk with stat inside")?;
    ensure_eq(seen, 4, "snapshots walked")
}

/// An error returned by the walk callback stops the walk and is returned.
pub(crate) fn walk_callback_error(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    for key in ["w1", "w2", "w3"] {
        sn.prepare(key, "", gc_labels())
            .context(format!("prepare {key}"))?;
    }
    let mut calls = 0;
    let result = sn.walk(&[], &mut |_| {
        calls += 1;
        Err(SnapshotError::failed_precondition("stop here"))
    });
    ensure_eq(calls, 1, "callback calls after the first returned an error")?;
    match result {
        Err(e)
            if e.kind() == ErrorKind::FailedPrecondition && e.message().contains("stop here") =>
        {
            Ok(())
        }
        other => Err(CheckFailure::new(format!(
            "walk should return the callback's error, returned {other:?}"
        ))),
    }
}

/// A label's key and value together may take 4096 bytes, no more (InvalidArgument),
/// on Prepare, View, Commit and Update; a rejected call changes nothing.
pub(crate) fn label_size_limit(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let fits = labels(&[("k", &"v".repeat(4095))]);
    let too_big = labels(&[("k", &"v".repeat(4096))]);
    let big_key = labels(&[(&"k".repeat(4097), "")]);

    sn.prepare("fits", "", fits.clone())
        .context("prepare with a 4096-byte label")?;
    ensure_eq(
        sn.stat("fits").context("stat fits")?.labels,
        fits.clone(),
        "labels of fits",
    )?;
    expect_error(
        sn.prepare("too-big", "", too_big.clone()),
        ErrorKind::InvalidArgument,
        "prepare with a 4097-byte label",
    )?;
    expect_error(
        sn.prepare("big-key", "", big_key),
        ErrorKind::InvalidArgument,
        "prepare with a 4097-byte key",
    )?;
    expect_error(
        sn.view("too-big-view", "", too_big.clone()),
        ErrorKind::InvalidArgument,
        "view with a 4097-byte label",
    )?;
    expect_error(
        sn.stat("too-big"),
        ErrorKind::NotFound,
        "stat after a rejected prepare",
    )?;
    expect_error(
        sn.stat("too-big-view"),
        ErrorKind::NotFound,
        "stat after a rejected view",
    )?;

    expect_error(
        sn.commit("fits-committed", "fits", too_big.clone()),
        ErrorKind::InvalidArgument,
        "commit with a 4097-byte label",
    )?;
    ensure_eq(
        sn.stat("fits").context("stat fits")?.kind,
        Kind::Active,
        "kind of fits after a rejected commit",
    )?;
    expect_error(
        sn.stat("fits-committed"),
        ErrorKind::NotFound,
        "stat after a rejected commit",
    )?;
    sn.commit("fits-committed", "fits", fits.clone())
        .context("commit with a 4096-byte label")?;

    let mut info = sn.stat("fits-committed").context("stat fits-committed")?;
    let before = info.clone();
    info.labels = too_big.clone();
    expect_error(
        sn.update(info.clone(), &[]),
        ErrorKind::InvalidArgument,
        "update to a 4097-byte label",
    )?;
    expect_error(
        sn.update(info.clone(), &strings(&["labels.k"])),
        ErrorKind::InvalidArgument,
        "update labels.k to 4097 bytes",
    )?;
    ensure_eq(
        sn.stat("fits-committed").context("stat fits-committed")?,
        before,
        "fits-committed after rejected updates",
    )?;

    let many: Labels = (0..64)
        .map(|i| (format!("label-{i}"), "x".repeat(4000)))
        .collect();
    sn.prepare("many", "", many.clone())
        .context("prepare with 64 labels of 4 KB")?;
    ensure_eq(
        sn.stat("many").context("stat many")?.labels,
        many,
        "labels of many",
    )
}

/// Times come with nanosecond precision and survive a round trip exactly; commit
/// sets created = updated to the commit time; each update moves updated forward.
pub(crate) fn timestamps(sn: &dyn Snapshotter, _work: &Path) -> CheckResult {
    let mut infos = Vec::new();
    for i in 0..8 {
        let key = format!("t{i}");
        sn.prepare(&key, "", gc_labels())
            .context(format!("prepare {key}"))?;
        infos.push(sn.stat(&key).context(format!("stat {key}"))?);
    }
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    };
    ensure(infos.iter().any(|i| nanos(i.created) % 1000 != 0), || {
        format!(
            "created times of 8 snapshots all have microsecond precision or less: {:?}",
            infos.iter().map(|i| i.created).collect::<Vec<_>>()
        )
    })?;
    let mut walked = Vec::new();
    sn.walk(&[], &mut |info| {
        walked.push(info.clone());
        Ok(())
    })
    .context("walk")?;
    for info in &infos {
        let found = walked.iter().find(|w| w.name == info.name);
        ensure_eq(found, Some(info), format!("walk's info for {}", info.name))?;
    }

    let before_commit = SystemTime::now();
    sn.commit("t0-committed", "t0", gc_labels())
        .context("commit t0")?;
    let after_commit = SystemTime::now();
    let committed = sn.stat("t0-committed").context("stat t0-committed")?;
    within(
        committed.created,
        before_commit,
        after_commit,
        "created of a committed snapshot",
    )?;
    ensure_eq(
        committed.updated,
        committed.created,
        "updated of a fresh commit",
    )?;

    let mut previous = committed;
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(2));
        let mut info = previous.clone();
        info.labels.insert("round".to_owned(), round.to_string());
        let updated = sn
            .update(info, &strings(&["labels.round"]))
            .context("update labels.round")?;
        ensure(updated.updated > previous.updated, || {
            format!(
                "updated did not move forward: {:?} then {:?}",
                previous.updated, updated.updated
            )
        })?;
        ensure_eq(updated.created, previous.created, "created after an update")?;
        ensure_eq(
            &sn.stat("t0-committed").context("stat t0-committed")?,
            &updated,
            "stat after an update",
        )?;
        previous = updated;
    }
    Ok(())
}

/// Usage counts a snapshot's own files: a committed layer with a 1 MiB file uses at
/// least 1 MiB and one inode more than an empty one; its figure stays the same
/// while a child grows; an active snapshot's usage grows as it is written.
pub(crate) fn usage(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    const MIB: i64 = 1 << 20;
    let payload: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8 + 1).collect();

    sn.prepare("empty", "", gc_labels())
        .context("prepare empty")?;
    sn.commit("empty-committed", "empty", gc_labels())
        .context("commit empty")?;
    let empty = sn
        .usage("empty-committed")
        .context("usage of empty-committed")?;

    let mounts = sn
        .prepare("one-file", "", gc_labels())
        .context("prepare one-file")?;
    let before = sn
        .usage("one-file")
        .context("usage of one-file before writing")?;
    let mounted = MountedDir::mount(&mounts, &work.join("one-file"))?;
    fs_tree::apply(mounted.path(), &[file("/payload", &payload, 0o644)])
        .context("write /payload")?;
    mounted.unmount()?;
    let written = sn
        .usage("one-file")
        .context("usage of one-file after writing")?;
    ensure(written.size >= before.size + MIB, || {
        format!("usage of an active snapshot after writing 1 MiB: {before:?} then {written:?}")
    })?;
    ensure_eq(
        written.inodes,
        before.inodes + 1,
        "inodes of an active snapshot after writing one file",
    )?;

    sn.commit("one-file-committed", "one-file", gc_labels())
        .context("commit one-file")?;
    let committed = sn
        .usage("one-file-committed")
        .context("usage of one-file-committed")?;
    ensure(committed.size >= empty.size + MIB, || {
        format!("usage of a committed 1 MiB layer {committed:?}, of an empty one {empty:?}")
    })?;
    ensure_eq(
        committed.inodes,
        empty.inodes + 1,
        "inodes of a committed one-file layer compared with an empty one",
    )?;

    let mounts = sn
        .prepare("child", "one-file-committed", gc_labels())
        .context("prepare child")?;
    let mounted = MountedDir::mount(&mounts, &work.join("child"))?;
    fs_tree::apply(
        mounted.path(),
        &[
            file("/more", &payload, 0o644),
            file("/payload", b"rewritten", 0o600),
        ],
    )
    .context("write in child")?;
    mounted.unmount()?;
    let child = sn.usage("child").context("usage of child")?;
    ensure(child.size >= MIB, || {
        format!("usage of child after writing 1 MiB: {child:?}")
    })?;
    let parent_after: Usage = sn
        .usage("one-file-committed")
        .context("usage of one-file-committed after writes in its child")?;
    ensure_eq(
        parent_after,
        committed,
        "usage of a committed snapshot after writes in its child",
    )?;
    sn.commit("child-committed", "child", gc_labels())
        .context("commit child")?;
    ensure_eq(
        sn.usage("one-file-committed")
            .context("usage of one-file-committed")?,
        committed,
        "usage of the parent after its child's commit",
    )?;
    let view_mounts = sn
        .view("view", "one-file-committed", gc_labels())
        .context("view one-file-committed")?;
    ensure(!view_mounts.is_empty(), || {
        "view returned no mounts".to_owned()
    })?;
    sn.usage("view").context("usage of a view")?;
    Ok(())
}
