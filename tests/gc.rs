//! Garbage collection: exactly the unreferenced blobs and stale ingests go; roots are
//! images, unexpired leases and `containerd.io/gc.root`; references are
//! `containerd.io/gc.ref.content.*` labels.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use oci_spec::image::{DescriptorBuilder, MediaType};
use strata::content::StreamSource;
use strata::metadata::gc::GcOptions;
use strata::metadata::{ImageRecord, LABEL_GC_EXPIRE, LeaseResource};
use strata::store::Store;
use strata_formats::Digest;

fn put(store: &Store, body: &str, labels: &[(&str, String)]) -> Digest {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    store
        .content()
        .ingest(
            body,
            &mut StreamSource(body.as_bytes()),
            None,
            None,
            labels,
            Duration::ZERO,
        )
        .unwrap()
        .0
}

fn image(name: &str, target: &Digest) -> ImageRecord {
    let desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(
            target
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
        .size(1u64)
        .build()
        .unwrap();
    let now = std::time::SystemTime::now();
    ImageRecord {
        name: name.into(),
        target: desc,
        labels: BTreeMap::new(),
        created: now,
        updated: now,
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn gc_removes_exactly_the_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    // An image: manifest → config + layer (by labels), plus a layer shared with garbage.
    let layer = put(&store, "layer", &[]);
    let config = put(&store, "config", &[]);
    let manifest = put(
        &store,
        "manifest",
        &[
            ("containerd.io/gc.ref.content.config", config.to_string()),
            ("containerd.io/gc.ref.content.l.0", layer.to_string()),
        ],
    );
    store
        .metadata()
        .put_image(&image("example.com/app:1", &manifest), false)
        .unwrap();

    // A pinned blob and what it references.
    let pinned_child = put(&store, "pinned-child", &[]);
    let pinned = put(
        &store,
        "pinned",
        &[
            ("containerd.io/gc.root", "2024".into()),
            ("containerd.io/gc.ref.content.x", pinned_child.to_string()),
        ],
    );

    // Leased content, one lease live, one expired.
    let leased = put(&store, "leased", &[]);
    let expired = put(&store, "expired-lease-content", &[]);
    let live_until = rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    let dead_since = rfc3339(std::time::SystemTime::now() - Duration::from_secs(1));
    store
        .metadata()
        .create_lease("live", [(LABEL_GC_EXPIRE.to_owned(), live_until)].into())
        .unwrap();
    store
        .metadata()
        .create_lease("dead", [(LABEL_GC_EXPIRE.to_owned(), dead_since)].into())
        .unwrap();
    let res = |d: &Digest| LeaseResource {
        kind: "content".into(),
        id: d.to_string(),
    };
    store
        .metadata()
        .add_lease_resource("live", res(&leased))
        .unwrap();
    store
        .metadata()
        .add_lease_resource("dead", res(&expired))
        .unwrap();

    // Garbage: unreferenced, and a blob only garbage references.
    let garbage_child = put(&store, "garbage-child", &[]);
    let garbage = put(
        &store,
        "garbage",
        &[("containerd.io/gc.ref.content.x", garbage_child.to_string())],
    );

    // Ingests: one stale, one leased, one held by a live writer.
    {
        let mut w = store.content().writer("stale-ingest", None, None).unwrap();
        w.write_all(b"old").unwrap();
    }
    {
        let mut w = store.content().writer("leased-ingest", None, None).unwrap();
        w.write_all(b"kept").unwrap();
    }
    store
        .metadata()
        .add_lease_resource(
            "live",
            LeaseResource {
                kind: "ingests".into(),
                id: "leased-ingest".into(),
            },
        )
        .unwrap();
    let live_writer = store.content().writer("live-ingest", None, None).unwrap();

    // A dry run reports without removing.
    let opts = GcOptions {
        ingest_grace: Duration::ZERO,
        dry_run: true,
    };
    let dry = store.gc(&opts).unwrap();
    assert_eq!(dry.removed_blobs.len(), 3);
    assert_eq!(store.content().list_digests().unwrap().len(), 9);

    let report = store
        .gc(&GcOptions {
            ingest_grace: Duration::ZERO,
            dry_run: false,
        })
        .unwrap();
    let mut removed = report.removed_blobs.clone();
    removed.sort();
    let mut want = vec![garbage, garbage_child, expired];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(report.kept, 6);
    assert_eq!(report.expired_leases, vec!["dead".to_owned()]);
    assert_eq!(report.removed_ingests, vec!["stale-ingest".to_owned()]);
    let left = store.content().list_digests().unwrap();
    for d in [&layer, &config, &manifest, &pinned, &pinned_child, &leased] {
        assert!(left.contains(d), "{d} was collected");
    }
    assert!(store.content().status("leased-ingest").is_ok());
    drop(live_writer);
    assert!(
        store.content().status("live-ingest").is_ok(),
        "a locked ingest is never swept"
    );

    // Deleting the image and the lease makes their content collectable.
    store.metadata().delete_image("example.com/app:1").unwrap();
    store.metadata().delete_lease("live").unwrap();
    let report = store
        .gc(&GcOptions {
            ingest_grace: Duration::ZERO,
            dry_run: false,
        })
        .unwrap();
    assert_eq!(report.removed_blobs.len(), 4);
    let left = store.content().list_digests().unwrap();
    assert_eq!(left.len(), 2, "only the pinned pair is left");
    assert!(
        store
            .content()
            .list_statuses(&strata_formats::filters::Filter::always())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn ingest_grace_protects_recent_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let mut w = store.content().writer("recent", None, None).unwrap();
        w.write_all(b"x").unwrap();
    }
    let r = store
        .gc(&GcOptions {
            ingest_grace: Duration::from_secs(3600),
            dry_run: false,
        })
        .unwrap();
    assert!(r.removed_ingests.is_empty());
    assert!(store.content().status("recent").is_ok());
}

#[test]
fn interrupted_gc_leaves_a_consistent_store() {
    // Simulate a collection killed between deleting a blob's file and its record: the
    // record is an orphan. Reads ignore it and the next collection removes it.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = put(&store, "doomed", &[("team", "x".into())]);
    std::fs::remove_file(store.content().blob_path(&d)).unwrap();
    assert!(store.content().info(&d).is_err());
    assert!(store.content().list_digests().unwrap().is_empty());
    let r = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.orphan_records, 1);
    assert!(store.metadata().blob_records().unwrap().is_empty());
}
