use super::*;

fn store() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(&dir.path().join("metadata.db")).expect("open");
    (dir, store)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn create(
    store: &MetaStore,
    kind: Kind,
    key: &str,
    parent: &str,
) -> Result<(Snapshot, Info), SnapshotError> {
    store.write(|t| t.create(kind, key, parent, Labels::new()))
}

fn commit(store: &MetaStore, key: &str, name: &str) -> Result<u64, SnapshotError> {
    store.write(|t| {
        t.commit_active(
            key,
            name,
            Usage {
                inodes: 3,
                size: 4096,
            },
            Labels::new(),
        )
    })
}

#[test]
fn create_commit_chain_keeps_ids_and_parents() {
    let (_d, s) = store();
    let (a, info) = create(&s, Kind::Active, "a", "").unwrap();
    assert_eq!(a.parent_ids, Vec::<u64>::new());
    assert_eq!(info.created, info.updated);
    assert_eq!(commit(&s, "a", "base").unwrap(), a.id);
    let (b, _) = create(&s, Kind::Active, "b", "base").unwrap();
    assert_eq!(b.parent_ids, vec![a.id]);
    commit(&s, "b", "second").unwrap();
    let (v, info) = create(&s, Kind::View, "v", "second").unwrap();
    assert_eq!(v.parent_ids, vec![b.id, a.id]);
    assert_eq!(info.parent.as_deref(), Some("second"));

    let (id, info, usage) = s.read(|t| t.info("base")).unwrap();
    assert_eq!(id, a.id);
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(
        usage,
        Usage {
            inodes: 3,
            size: 4096
        }
    );
    assert_eq!(
        s.read(|t| t.info("a")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.read(|t| t.snapshot("v")).unwrap().parent_ids,
        vec![b.id, a.id]
    );
    assert_eq!(
        s.read(|t| t.snapshot("base")).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn create_errors_follow_containerd() {
    let (_d, s) = store();
    assert_eq!(
        create(&s, Kind::Active, "", "").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        create(&s, Kind::Committed, "c", "").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    create(&s, Kind::Active, "a", "").unwrap();
    let err = create(&s, Kind::Active, "a", "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.message(), "snapshot a: already exists");
    assert_eq!(
        create(&s, Kind::Active, "x", "missing").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // containerd's bolt store: a parent that is not committed is an invalid argument.
    assert_eq!(
        create(&s, Kind::View, "x", "a").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let big = "v".repeat(4096);
    let err = s
        .write(|t| t.create(Kind::Active, "y", "", labels(&[("k", &big)])))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // Failed creations leave nothing behind.
    assert_eq!(s.read(|t| t.ids()).unwrap().len(), 1);
}

#[test]
fn commit_errors_follow_containerd() {
    let (_d, s) = store();
    create(&s, Kind::Active, "a", "").unwrap();
    commit(&s, "a", "c").unwrap();
    create(&s, Kind::Active, "b", "c").unwrap();
    create(&s, Kind::View, "v", "c").unwrap();
    assert_eq!(
        commit(&s, "missing", "n").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        commit(&s, "b", "c").unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        commit(&s, "v", "n").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        commit(&s, "c", "n").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        commit(&s, "b", "").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // The failed commits changed nothing.
    assert_eq!(s.read(|t| t.info("b")).unwrap().1.kind, Kind::Active);
}

#[test]
fn remove_checks_children_and_unlinks_parent() {
    let (_d, s) = store();
    let (a, _) = create(&s, Kind::Active, "a", "").unwrap();
    commit(&s, "a", "c").unwrap();
    create(&s, Kind::Active, "b", "c").unwrap();
    assert!(s.read(|t| t.has_children(a.id)).unwrap());
    let err = s.write(|t| t.remove("c")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    commit(&s, "b", "c2").unwrap();
    assert_eq!(
        s.write(|t| t.remove("c")).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(s.write(|t| t.remove("c2")).unwrap().1, Kind::Committed);
    assert!(!s.read(|t| t.has_children(a.id)).unwrap());
    assert_eq!(s.write(|t| t.remove("c")).unwrap(), (a.id, Kind::Committed));
    assert_eq!(
        s.write(|t| t.remove("c")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn update_labels_as_containerd() {
    let (_d, s) = store();
    let (_, info) = create(&s, Kind::Active, "a", "").unwrap();
    let mut want = info.clone();
    want.labels = labels(&[("l1", "v1"), ("l2", "v2"), ("l3", "v3")]);
    want.parent = Some("ignored".into());
    let (_, got) = s.write(|t| t.update(want.clone(), &[])).unwrap();
    assert_eq!(got.labels, want.labels);
    assert_eq!(got.parent, None);
    assert_eq!(got.created, info.created);
    assert!(got.updated >= info.updated);

    want.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
    let paths = vec!["labels.l1".to_string(), "labels.l2".to_string()];
    let (_, got) = s.write(|t| t.update(want.clone(), &paths)).unwrap();
    assert_eq!(got.labels, labels(&[("l1", "updated"), ("l3", "v3")]));
    assert_eq!(s.read(|t| t.info("a")).unwrap().1, got);

    want.labels = labels(&[("l4", "v4"), ("empty", "")]);
    let (_, got) = s
        .write(|t| t.update(want.clone(), &["labels".to_string()]))
        .unwrap();
    assert_eq!(got.labels, labels(&[("l4", "v4")]));

    for path in ["parent", "name", "kind", "created"] {
        let err = s
            .write(|t| t.update(want.clone(), &[path.to_string()]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
    }
    want.name = "missing".into();
    assert_eq!(
        s.write(|t| t.update(want.clone(), &[])).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn walk_filters_like_containerd() {
    let (_d, s) = store();
    s.write(|t| {
        t.create(
            Kind::Active,
            "a",
            "",
            labels(&[("containerd.io/gc.root", "x"), ("k", "v")]),
        )
    })
    .unwrap();
    commit(&s, "a", "base").unwrap();
    s.write(|t| t.create(Kind::Active, "b", "base", labels(&[("k", "v")])))
        .unwrap();
    create(&s, Kind::View, "v", "base").unwrap();
    let names = |filters: &[&str]| -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        s.read(|t| t.walk(&filters))
            .unwrap()
            .into_iter()
            .map(|(_, i)| i.name)
            .collect()
    };
    assert_eq!(names(&[]), vec!["b", "base", "v"]);
    assert_eq!(names(&["kind==view"]), vec!["v"]);
    assert_eq!(names(&["parent==base"]), vec!["b", "v"]);
    assert_eq!(names(&["labels.k==v"]), vec!["b"]);
    assert_eq!(names(&["name==base", "kind==active"]), vec!["b", "base"]);
    assert_eq!(names(&["parent==base,labels.k"]), vec!["b"]);
    let err = s
        .read(|t| t.walk(&["name==".to_string(), "kind===".to_string()]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn second_open_is_unavailable_and_close_is_idempotent() {
    let (dir, s) = store();
    let path = dir.path().join("metadata.db");
    let err = MetaStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains("metadata.db") && err.message().contains("strata serve"),
        "{err}"
    );
    create(&s, Kind::Active, "a", "").unwrap();
    s.close();
    s.close();
    assert_eq!(
        s.read(|t| t.info("a")).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    // Once closed, the file can be opened again and holds what was committed.
    let s = MetaStore::open(&path).unwrap();
    assert_eq!(s.read(|t| t.info("a")).unwrap().1.kind, Kind::Active);
}

#[test]
fn failed_write_rolls_back() {
    let (_d, s) = store();
    let err = s
        .write(|t| {
            t.create(Kind::Active, "a", "", Labels::new())?;
            Err::<(), _>(SnapshotError::internal("abandon"))
        })
        .unwrap_err();
    assert_eq!(err.message(), "abandon");
    assert_eq!(
        s.read(|t| t.info("a")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The id sequence rolled back too.
    let (a, _) = create(&s, Kind::Active, "a", "").unwrap();
    assert_eq!(a.id, 1);
}
