//! Integration tests of `strata::image::import`: OCI image layouts (directory, tar, gzip tar,
//! pipe) and `docker save` tars, built on the fly with `strata-testdata`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use strata::content::LABEL_UNCOMPRESSED;
use strata::image::{ImageError, ImportEvent, ImportOptions, import, media, walk};
use strata::metadata::gc::GcOptions;
use strata::store::Store;
use strata_formats::filters::Filter;
use strata_formats::{Digest, ErrorKind};
use strata_testdata::{
    LayoutImage, LayoutSummary, docker_save_tar_bytes, oci_layout_tar_bytes, sample_image,
    sample_multiplatform, write_docker_save_tar, write_oci_layout, write_oci_layout_tar,
};
use tempfile::TempDir;

const GC_NOW: GcOptions = GcOptions {
    ingest_grace: Duration::ZERO,
    dry_run: false,
};

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

fn stored(store: &Store) -> BTreeSet<String> {
    store
        .content()
        .list_digests()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Every stored blob's bytes hash to its name.
fn assert_blobs_verified(store: &Store) {
    for d in store.content().list_digests().unwrap() {
        let bytes = std::fs::read(store.content().blob_path(&d)).unwrap();
        assert_eq!(Digest::of(&bytes), d, "blob {d} holds other bytes");
    }
}

fn label(store: &Store, blob: &str, key: &str) -> Option<String> {
    store
        .content()
        .info(&digest(blob))
        .unwrap()
        .labels
        .get(key)
        .cloned()
}

fn multi_layout() -> [(&'static str, LayoutImage); 1] {
    [(
        "docker.io/library/sample:1.0",
        LayoutImage::Multi(sample_multiplatform(1)),
    )]
}

/// The GC labels of an imported OCI layout: index → manifests, manifest → config + layers.
fn assert_gc_labels(store: &Store, summary: &LayoutSummary) {
    for r in &summary.refs {
        if r.target.media_type == media::OCI_INDEX {
            for (i, image) in r.images.iter().enumerate() {
                let key = format!("containerd.io/gc.ref.content.m.{i}");
                assert_eq!(
                    label(store, &r.target.digest, &key).as_deref(),
                    Some(image.manifest.digest.as_str())
                );
            }
        }
        for image in &r.images {
            let m = &image.manifest.digest;
            assert_eq!(
                label(store, m, "containerd.io/gc.ref.content.config").as_deref(),
                Some(image.config.digest.as_str())
            );
            for (i, layer) in image.layers.iter().enumerate() {
                let key = format!("containerd.io/gc.ref.content.l.{i}");
                assert_eq!(
                    label(store, m, &key).as_deref(),
                    Some(layer.digest.as_str()),
                    "{m} {key}"
                );
            }
        }
    }
}

/// Rewrites a tar entry by entry: `f` returns the new bytes of an entry, or `None` to drop it.
fn rewrite_tar(tar: &[u8], mut f: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let mut header = entry.header().clone();
        if let Some(data) = f(&path, data) {
            header.set_size(data.len() as u64);
            out.append_data(&mut header, &path, data.as_slice())
                .unwrap();
        }
    }
    out.into_inner().unwrap()
}

#[test]
fn multi_platform_layout_directory() {
    let tmp = TempDir::new().unwrap();
    let layout = tmp.path().join("layout");
    let summary = write_oci_layout(&layout, &multi_layout()).unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();

    let events = RefCell::new(Vec::new());
    let progress = |e: &ImportEvent| events.borrow_mut().push(e.clone());
    let opts = ImportOptions {
        base_name: None,
        progress: Some(&progress),
    };
    let imported = import(&store, &layout, &opts).unwrap();

    // One record, targeting the image index.
    assert_eq!(imported.images.len(), 1);
    let record = &imported.images[0];
    assert_eq!(record.name, "docker.io/library/sample:1.0");
    let target = &summary.refs[0].target;
    assert_eq!(record.target.digest().to_string(), target.digest);
    assert_eq!(record.target.media_type().to_string(), media::OCI_INDEX);
    assert_eq!(record.target.size(), target.size);
    assert_eq!(
        store.metadata().image(&record.name).unwrap().target,
        record.target
    );

    // Every blob of the layout, verified, and nothing else.
    let expected: BTreeSet<String> = summary.blobs.iter().cloned().collect();
    assert_eq!(stored(&store), expected);
    assert_blobs_verified(&store);
    assert_eq!(imported.blobs, expected.len());
    assert_eq!(imported.new_blobs, expected.len());
    assert!(imported.bytes > 0 && imported.bytes == imported.new_bytes);
    assert_gc_labels(&store, &summary);

    let events = events.into_inner();
    let done = events
        .iter()
        .filter(|e| matches!(e, ImportEvent::BlobDone { existed: false, .. }))
        .count();
    assert_eq!(done, expected.len());
    assert!(events.contains(&ImportEvent::ImageStored {
        name: record.name.clone(),
        target: digest(&target.digest)
    }));

    // Re-import: nothing new, the record is replaced.
    let again = import(&store, &layout, &ImportOptions::default()).unwrap();
    assert_eq!((again.blobs, again.new_blobs), (expected.len(), 0));
    assert_eq!(store.metadata().images(&Filter::always()).unwrap().len(), 1);

    // GC keeps everything the record reaches; without the record, everything goes.
    let report = store.gc(&GC_NOW).unwrap();
    assert!(
        report.removed_blobs.is_empty(),
        "gc removed {:?}",
        report.removed_blobs
    );
    assert_eq!(stored(&store), expected);
    store.metadata().delete_image(&record.name).unwrap();
    let report = store.gc(&GC_NOW).unwrap();
    assert_eq!(report.removed_blobs.len(), expected.len());
    assert!(stored(&store).is_empty());
}

#[test]
fn layout_tar_plain_gzip_and_piped() {
    let tmp = TempDir::new().unwrap();
    // A bare tag: the record is named after the file.
    let images = [("1.0", LayoutImage::Multi(sample_multiplatform(2)))];
    let plain = tmp.path().join("sample.tar");
    let summary = write_oci_layout_tar(&plain, &images).unwrap();
    let expected: BTreeSet<String> = summary.blobs.iter().cloned().collect();

    let store = Store::open(tmp.path().join("root")).unwrap();
    let imported = import(&store, &plain, &ImportOptions::default()).unwrap();
    assert_eq!(imported.images.len(), 1);
    assert_eq!(imported.images[0].name, "docker.io/library/sample:1.0");
    assert_eq!(
        imported.images[0].target.digest().to_string(),
        summary.refs[0].target.digest
    );
    assert_eq!(stored(&store), expected);
    assert_blobs_verified(&store);
    assert_gc_labels(&store, &summary);
    assert!(store.gc(&GC_NOW).unwrap().removed_blobs.is_empty());

    // The same tar gzip-compressed, into a fresh store, with a base name.
    let (bytes, _) = oci_layout_tar_bytes(&images).unwrap();
    let gz = tmp.path().join("other.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&bytes).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let store = Store::open(tmp.path().join("root-gz")).unwrap();
    let opts = ImportOptions {
        base_name: Some("registry.local/app".into()),
        ..Default::default()
    };
    let imported = import(&store, &gz, &opts).unwrap();
    assert_eq!(imported.images[0].name, "registry.local/app:1.0");
    assert_eq!(stored(&store), expected);
    assert_gc_labels(&store, &summary);

    // Through a pipe, as `docker save … | strata image import /dev/stdin`.
    let fifo = tmp.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        0o600.into(),
        0,
    )
    .unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(fifo)
                .unwrap()
                .write_all(&bytes)
        })
    };
    let store = Store::open(tmp.path().join("root-pipe")).unwrap();
    let imported = import(&store, &fifo, &ImportOptions::default()).unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(imported.images[0].name, "docker.io/library/pipe:1.0");
    assert_eq!(stored(&store), expected);
}

#[test]
fn docker_save_tar_with_manifest_last() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("save.tar");
    let summary = write_docker_save_tar(
        &path,
        &sample_image(3),
        &["sample:1.0", "example.com/team/app:v2"],
    )
    .unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    let imported = import(&store, &path, &ImportOptions::default()).unwrap();

    let names: Vec<&str> = imported.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["docker.io/library/sample:1.0", "example.com/team/app:v2"]
    );
    let target = &imported.images[0].target;
    assert_eq!(imported.images[1].target, *target);
    assert_eq!(target.media_type().to_string(), media::DOCKER_MANIFEST);

    // The manifest: docker config, layers whose digests are the config's diff_ids.
    let manifest_bytes = store
        .content()
        .read_all(&digest(target.digest().as_ref()), 1 << 20)
        .unwrap();
    let manifest = walk::parse_manifest(&manifest_bytes, "manifest").unwrap();
    assert_eq!(
        manifest.config().media_type().to_string(),
        media::DOCKER_CONFIG
    );
    assert_eq!(
        manifest.config().digest().to_string(),
        summary.config_digest
    );
    let layers: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    assert_eq!(layers, summary.diff_ids);
    assert!(
        manifest
            .layers()
            .iter()
            .all(|l| l.media_type().to_string() == media::DOCKER_LAYER)
    );
    assert_blobs_verified(&store);

    // GC labels reach config and layers; GC keeps them (and drops the unreferenced
    // `<id>/json` and `VERSION` files the archive pass stored).
    let m = target.digest().to_string();
    assert_eq!(
        label(&store, &m, "containerd.io/gc.ref.content.config").as_deref(),
        Some(summary.config_digest.as_str())
    );
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(
            label(&store, &m, &format!("containerd.io/gc.ref.content.l.{i}")).as_ref(),
            Some(l)
        );
    }
    assert_eq!(imported.blobs, 2 + layers.len());
    store.gc(&GC_NOW).unwrap();
    let mut wanted: BTreeSet<String> = layers.iter().cloned().collect();
    wanted.insert(summary.config_digest.clone());
    wanted.insert(m);
    assert_eq!(stored(&store), wanted);
    for name in names {
        store.metadata().delete_image(name).unwrap();
    }
    store.gc(&GC_NOW).unwrap();
    assert!(stored(&store).is_empty());
}

#[test]
fn docker_save_gzip_layers_get_gzip_media_type_and_uncompressed_label() {
    let tmp = TempDir::new().unwrap();
    let (tar, summary) = docker_save_tar_bytes(&sample_image(4), &["gz:1"]).unwrap();
    let layer_paths: BTreeSet<&str> = summary.layer_paths.iter().map(String::as_str).collect();
    let tar = rewrite_tar(&tar, |path, data| {
        Some(if layer_paths.contains(path) {
            strata_testdata::layer::gzip(&data).unwrap()
        } else {
            data
        })
    });
    let path = tmp.path().join("gz.tar");
    std::fs::write(&path, tar).unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    let imported = import(&store, &path, &ImportOptions::default()).unwrap();
    let target = &imported.images[0].target;
    let bytes = store
        .content()
        .read_all(&digest(target.digest().as_ref()), 1 << 20)
        .unwrap();
    let manifest = walk::parse_manifest(&bytes, "manifest").unwrap();
    for (layer, diff_id) in manifest.layers().iter().zip(&summary.diff_ids) {
        assert_eq!(layer.media_type().to_string(), media::DOCKER_LAYER_GZIP);
        assert_eq!(
            label(&store, layer.digest().as_ref(), LABEL_UNCOMPRESSED).as_ref(),
            Some(diff_id)
        );
    }
}

#[test]
fn corrupted_blob_fails_naming_it_and_is_not_stored() {
    let tmp = TempDir::new().unwrap();
    let (tar, summary) = oci_layout_tar_bytes(&multi_layout()).unwrap();
    let victim = summary.refs[0].images[0].layers[0].digest.clone();
    let entry = format!("blobs/sha256/{}", victim.strip_prefix("sha256:").unwrap());
    let tar = rewrite_tar(&tar, |path, mut data| {
        if path == entry {
            let mid = data.len() / 2;
            data[mid] ^= 0x01;
        }
        Some(data)
    });
    let path = tmp.path().join("corrupt.tar");
    std::fs::write(&path, tar).unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();

    let err = import(&store, &path, &ImportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::DataCorrupt, "{msg}");
    assert!(
        matches!(err.cause(), ImageError::DigestMismatch { digest, .. } if digest.to_string() == victim),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!(
            "import {}: blob {victim}: digest mismatch",
            path.display()
        )),
        "{msg}"
    );
    assert!(!store.content().blob_path(&digest(&victim)).exists());
    assert!(!stored(&store).contains(&victim));
    assert!(
        store
            .metadata()
            .images(&Filter::always())
            .unwrap()
            .is_empty()
    );
    // The failed ingest left nothing behind either.
    assert!(
        store
            .content()
            .list_statuses(&Filter::always())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn docker_save_missing_layer_fails_naming_it() {
    let tmp = TempDir::new().unwrap();
    let (tar, summary) = docker_save_tar_bytes(&sample_image(5), &["sample:1.0"]).unwrap();
    let missing = summary.layer_paths[1].clone();
    let tar = rewrite_tar(&tar, |path, data| (path != missing).then_some(data));
    let path = tmp.path().join("missing.tar");
    std::fs::write(&path, tar).unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();

    let err = import(&store, &path, &ImportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{msg}");
    assert!(
        matches!(err.cause(), ImageError::MissingEntry { path, .. } if *path == missing),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("layer {missing:?} referenced by manifest.json")),
        "{msg}"
    );
    assert!(msg.contains("missing from the archive"), "{msg}");
    assert!(
        store
            .metadata()
            .images(&Filter::always())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn docker_save_diff_id_mismatch_fails_naming_the_layer() {
    let tmp = TempDir::new().unwrap();
    let (tar, summary) = docker_save_tar_bytes(&sample_image(6), &["sample:1.0"]).unwrap();
    let tar = rewrite_tar(&tar, |path, data| {
        if path != summary.config_path {
            return Some(data);
        }
        let mut config: serde_json::Value = serde_json::from_slice(&data).unwrap();
        config["rootfs"]["diff_ids"][2] = Digest::of(b"not this layer").to_string().into();
        Some(serde_json::to_vec(&config).unwrap())
    });
    let path = tmp.path().join("diff.tar");
    std::fs::write(&path, tar).unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    let err = import(&store, &path, &ImportOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataCorrupt, "{err}");
    assert!(
        matches!(err.cause(), ImageError::DiffIdMismatch { index: 2, layer, .. } if *layer == summary.layer_paths[2]),
        "{err}"
    );
}

#[test]
fn layout_directory_missing_blob_and_not_an_archive() {
    let tmp = TempDir::new().unwrap();
    let layout = tmp.path().join("layout");
    let summary = write_oci_layout(&layout, &multi_layout()).unwrap();
    let config = &summary.refs[0].images[1].config.digest;
    std::fs::remove_file(
        layout
            .join("blobs/sha256")
            .join(config.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    let err = import(&store, &layout, &ImportOptions::default()).unwrap_err();
    let manifest = &summary.refs[0].images[1].manifest.digest;
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().ends_with(&format!(
            "blob {config} referenced by manifest {manifest} is missing from the archive"
        )),
        "{err}"
    );

    let junk = tmp.path().join("junk.tar");
    std::fs::write(
        &junk,
        b"definitely not a tar archive, just some bytes of text",
    )
    .unwrap();
    assert!(import(&store, &junk, &ImportOptions::default()).is_err());
    assert_eq!(
        import(
            &store,
            Path::new("/nonexistent/strata.tar"),
            &ImportOptions::default()
        )
        .unwrap_err()
        .kind(),
        ErrorKind::NotFound
    );
}
