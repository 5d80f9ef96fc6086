//! The content store through its library API: ingest, resume, locking, commit rules,
//! labels, walk, delete.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use strata::content::{ContentError, LocalContentStore, StreamSource};
use strata::metadata::MetadataDb;
use strata_formats::filters::Filter;
use strata_formats::{Digest, ErrorKind, ReadAt};

fn store(dir: &tempfile::TempDir) -> LocalContentStore {
    let db = MetadataDb::open(dir.path().join("metadata.db")).unwrap();
    LocalContentStore::open(dir.path().join("content"), Arc::new(db)).unwrap()
}

fn blob_files(s: &LocalContentStore) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ingest_dirs(s: &LocalContentStore) -> usize {
    std::fs::read_dir(s.root().join("ingest")).unwrap().count()
}

#[test]
fn writer_commits_to_digest_path_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = b"hello, strata".repeat(1000);
    let mut w = s.writer("r1", Some(data.len() as u64), None).unwrap();
    w.write_all(&data[..5000]).unwrap();
    w.write_all(&data[5000..]).unwrap();
    assert_eq!(w.status().offset, data.len() as u64);
    let d = w
        .commit(
            Some(data.len() as u64),
            Some(&Digest::of(&data)),
            BTreeMap::new(),
        )
        .unwrap();
    assert_eq!(d, Digest::of(&data));
    assert_eq!(blob_files(&s), vec![d.encoded().to_owned()]);
    assert_eq!(ingest_dirs(&s), 0, "ingest directory removed after commit");
    let r = s.reader_at(&d).unwrap();
    assert_eq!(r.size(), data.len() as u64);
    assert_eq!(r.read_range(7, 6).unwrap(), b"strata");
    let mode = std::fs::metadata(s.blob_path(&d)).unwrap().permissions();
    assert!(mode.readonly(), "committed blobs are read-only");
    let info = s.info(&d).unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert!(info.created <= std::time::SystemTime::now());
}

#[test]
fn resumed_writer_continues_at_recorded_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    {
        let mut w = s.writer("resume", Some(data.len() as u64), None).unwrap();
        w.write_all(&data[..123_457]).unwrap();
        // Dropped without commit: the writer "dies".
    }
    let st = s.status("resume").unwrap();
    assert_eq!(st.offset, 123_457);
    assert_eq!(st.total, Some(data.len() as u64));
    let mut w = s.writer("resume", None, None).unwrap();
    assert_eq!(w.status().offset, 123_457, "resumes at the recorded offset");
    w.write_all(&data[123_457..]).unwrap();
    let d = w
        .commit(None, Some(&Digest::of(&data)), BTreeMap::new())
        .unwrap();
    assert_eq!(d, Digest::of(&data));
}

#[test]
fn total_mismatch_on_resume_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    drop(s.writer("t", Some(10), None).unwrap());
    let err = s.writer("t", Some(11), None).unwrap_err();
    assert!(
        matches!(
            err,
            ContentError::TotalMismatch {
                provided: 11,
                recorded: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn second_writer_on_locked_ref_gets_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let _w = s.writer("busy-ref", None, None).unwrap();
    let err = s.writer("busy-ref", None, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("ref \"busy-ref\" is locked"),
        "{err}"
    );
    // A different ref is independent.
    s.writer("other-ref", None, None).unwrap();
}

#[test]
fn lock_is_released_when_writer_drops() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    drop(s.writer("x", None, None).unwrap());
    s.writer("x", None, None).unwrap();
}

#[test]
fn wrong_expected_digest_leaves_nothing_in_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let wrong = Digest::of(b"something else");
    let mut w = s.writer("bad", None, None).unwrap();
    w.write_all(b"actual bytes").unwrap();
    let err = w.commit(None, Some(&wrong), BTreeMap::new()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("expected {wrong}")), "{msg}");
    assert!(
        msg.contains(&Digest::of(b"actual bytes").to_string()),
        "{msg}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(blob_files(&s).is_empty());
    // The high-level ingest aborts the ingest as well.
    let err = s
        .ingest(
            "bad2",
            &mut StreamSource(&b"actual bytes"[..]),
            None,
            Some(&wrong),
            BTreeMap::new(),
            Duration::ZERO,
        )
        .unwrap_err();
    assert!(matches!(err, ContentError::DigestMismatch { .. }));
    assert!(blob_files(&s).is_empty());
    assert!(s.status("bad2").is_err(), "failed ingest is discarded");
}

#[test]
fn wrong_size_is_rejected_and_overflow_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut w = s.writer("sz", None, None).unwrap();
    w.write_all(b"12345").unwrap();
    let err = w.commit(Some(4), None, BTreeMap::new()).unwrap_err();
    assert!(
        matches!(
            err,
            ContentError::SizeMismatch {
                expected: 4,
                actual: 5,
                ..
            }
        ),
        "{err}"
    );
    let mut w = s.writer("ovf", Some(3), None).unwrap();
    let err = w.write_all(b"1234").unwrap_err();
    assert!(
        err.to_string().contains("past the expected size 3"),
        "{err}"
    );
}

#[test]
fn committing_existing_content_reports_already_exists_and_discards_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let (d, _) = s
        .ingest(
            "a",
            &mut StreamSource(&b"same"[..]),
            None,
            None,
            BTreeMap::new(),
            Duration::ZERO,
        )
        .unwrap();
    let mut w = s.writer("b", None, None).unwrap();
    w.write_all(b"same").unwrap();
    let err = w.commit(None, None, BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, ContentError::AlreadyExists(x) if *x == d),
        "{err}"
    );
    assert_eq!(ingest_dirs(&s), 0);
    // Opening a writer with an expected digest that exists fails before writing.
    assert!(matches!(
        s.writer("c", None, Some(&d)),
        Err(ContentError::AlreadyExists(_))
    ));
}

#[test]
fn concurrent_ingests_of_same_content_end_with_one_blob() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i % 251) as u8).collect());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                // Half share a ref (they queue on the lock), half have their own.
                let r = if i % 2 == 0 {
                    "shared".to_owned()
                } else {
                    format!("own-{i}")
                };
                s.ingest(
                    &r,
                    &mut StreamSource(&data[..]),
                    None,
                    None,
                    BTreeMap::new(),
                    Duration::from_secs(30),
                )
            })
        })
        .collect();
    let digests: Vec<Digest> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap().0)
        .collect();
    assert!(digests.iter().all(|d| *d == Digest::of(&data)));
    assert_eq!(blob_files(&s).len(), 1);
    assert_eq!(ingest_dirs(&s), 0);
}

#[test]
fn labels_walk_filters_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut digests = Vec::new();
    for (i, labels) in [
        vec![("containerd.io/gc.root", "x")],
        vec![("app", "web"), ("tier", "1")],
        vec![],
    ]
    .into_iter()
    .enumerate()
    {
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let body = format!("blob {i}");
        let (d, _) = s
            .ingest(
                &format!("l{i}"),
                &mut StreamSource(body.as_bytes()),
                None,
                None,
                labels,
                Duration::ZERO,
            )
            .unwrap();
        digests.push(d);
    }
    let walk = |f: &str| -> Vec<Digest> {
        s.walk(&Filter::parse(f).unwrap())
            .unwrap()
            .into_iter()
            .map(|i| i.digest)
            .collect()
    };
    assert_eq!(
        walk(r#"labels."containerd.io/gc.root""#),
        vec![digests[0].clone()]
    );
    assert_eq!(
        walk("labels.app==web,labels.tier==1"),
        vec![digests[1].clone()]
    );
    assert_eq!(
        walk(&format!("digest=={}", digests[2])),
        vec![digests[2].clone()]
    );
    assert_eq!(walk("").len(), 3);
    let any = Filter::parse_any(&["labels.app==web", r#"labels."containerd.io/gc.root""#]).unwrap();
    assert_eq!(s.walk(&any).unwrap().len(), 2);

    // Update: set one, remove one.
    let before = s.info(&digests[1]).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let changes: BTreeMap<String, Option<String>> = [
        ("app".to_owned(), None),
        ("new".to_owned(), Some("v".to_owned())),
    ]
    .into_iter()
    .collect();
    let after = s.update_labels(&digests[1], &changes).unwrap();
    assert_eq!(after.labels.get("new").map(String::as_str), Some("v"));
    assert!(!after.labels.contains_key("app"));
    assert_eq!(after.created, before.created);
    assert!(
        after.updated > before.updated,
        "updated time moves on label change"
    );

    // containerd's label size limit.
    let big = "v".repeat(4096);
    let err = s
        .update_labels(
            &digests[1],
            &[("k".to_owned(), Some(big))].into_iter().collect(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    s.delete(&digests[2]).unwrap();
    assert!(matches!(
        s.info(&digests[2]),
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        s.delete(&digests[2]),
        Err(ContentError::NotFound(_))
    ));
    assert_eq!(walk("").len(), 2);
}

#[test]
fn abort_and_list_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    {
        let mut w = s.writer("job-1", None, None).unwrap();
        w.write_all(b"partial").unwrap();
    }
    let w2 = s.writer("job-2", Some(100), None).unwrap();
    let all = s.list_statuses(&Filter::always()).unwrap();
    assert_eq!(
        all.iter().map(|s| s.reference.as_str()).collect::<Vec<_>>(),
        ["job-1", "job-2"]
    );
    let one = s
        .list_statuses(&Filter::parse("ref==job-1").unwrap())
        .unwrap();
    assert_eq!(one[0].offset, 7);
    assert!(
        matches!(s.abort("job-2"), Err(ContentError::Locked(_))),
        "cannot abort a live writer"
    );
    drop(w2);
    s.abort("job-2").unwrap();
    s.abort("job-1").unwrap();
    assert!(matches!(
        s.abort("job-1"),
        Err(ContentError::IngestNotFound(_))
    ));
    assert_eq!(ingest_dirs(&s), 0);
}
