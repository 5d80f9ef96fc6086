use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::artifact::manifest::{Descriptor, Manifest, OCI_MANIFEST};
use crate::artifact::path::PathError;

fn layer(media_type: &str, seed: &str, annotations: &[(&str, &str)]) -> Descriptor {
    let mut d = Descriptor::of(media_type, seed.as_bytes());
    d.annotations = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    d
}

fn manifest(artifact_type: Option<&str>, config: &str, layers: Vec<Descriptor>) -> Manifest {
    let mut c = Descriptor::empty();
    c.media_type = config.to_owned();
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: artifact_type.map(str::to_owned),
        config: c,
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    }
}

fn modelpack(layers: Vec<Descriptor>) -> Manifest {
    manifest(Some(modelpack::ARTIFACT_TYPE), modelpack::CONFIG, layers)
}

const FP: &str = modelpack::FILEPATH;

#[test]
fn modelpack_raw_files_and_tars() {
    let m = modelpack(vec![
        layer(
            &modelpack::layer("weight", "raw"),
            "w",
            &[(FP, "model/w.safetensors")],
        ),
        layer(
            &modelpack::layer("weight.config", "raw"),
            "c",
            &[(FP, "./config.json")],
        ),
        layer(&modelpack::layer("code", "tar"), "t", &[(FP, "src")]),
        layer(&modelpack::layer("dataset", "tar+zstd"), "d", &[]),
        layer(&modelpack::layer("doc", "tar+gzip"), "g", &[]),
    ]);
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(l.kind, ManifestKind::Artifact(ArtifactKind::ModelPack));
    let Entry::RawFile { path, .. } = &l.entries[0] else {
        panic!("{:?}", l.entries[0])
    };
    assert_eq!(path, "model/w.safetensors");
    let Entry::RawFile { path, .. } = &l.entries[1] else {
        panic!()
    };
    assert_eq!(path, "config.json");
    let compressions: Vec<_> = l.entries[2..]
        .iter()
        .map(|e| match e {
            Entry::Tar {
                compression,
                path_prefix,
                ..
            } => {
                assert_eq!(path_prefix, "");
                *compression
            }
            Entry::RawFile { .. } => panic!("tar expected"),
        })
        .collect();
    assert_eq!(
        compressions,
        [Compression::None, Compression::Zstd, Compression::Gzip]
    );
    let readable: Vec<bool> = l.entries.iter().map(Entry::is_range_readable).collect();
    assert_eq!(readable, [true, true, true, false, false]);
}

#[test]
fn escaping_annotations_are_refused_naming_layer_and_annotation() {
    for bad in ["../../etc/passwd", "/etc/passwd", "a/../..", "", "a\0b"] {
        let w = layer(&modelpack::layer("weight", "raw"), "w", &[(FP, bad)]);
        let err =
            ArtifactLayout::from_manifest(&modelpack(vec![w.clone()]), LayoutOptions::default())
                .unwrap_err();
        let LayoutError::BadPath {
            digest, annotation, ..
        } = &err
        else {
            panic!("{bad:?}: {err:?}")
        };
        assert_eq!(digest, &w.digest);
        assert_eq!(annotation, FP);
        let msg = err.to_string();
        assert!(
            msg.contains(&w.digest.to_string()) && msg.contains(FP),
            "{msg}"
        );
    }
    // Also on tar layers, whose annotation is informational.
    let t = layer(&modelpack::layer("code", "tar"), "t", &[(FP, "../x")]);
    assert!(matches!(
        ArtifactLayout::from_manifest(&modelpack(vec![t]), LayoutOptions::default()),
        Err(LayoutError::BadPath {
            reason: PathError::Escapes,
            ..
        })
    ));
}

#[test]
fn duplicates_and_file_directory_collisions_are_refused() {
    let raw = modelpack::layer("weight", "raw");
    for (a, b) in [("a/b", "a//b"), ("a", "a/b"), ("a/b/c", "a/b")] {
        let m = modelpack(vec![
            layer(&raw, "1", &[(FP, a)]),
            layer(&raw, "2", &[(FP, b)]),
        ]);
        let err = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap_err();
        assert!(
            matches!(err, LayoutError::Duplicate { .. }),
            "{a} {b}: {err:?}"
        );
    }
    // Siblings with a shared prefix are fine.
    let m = modelpack(vec![
        layer(&raw, "1", &[(FP, "a/b")]),
        layer(&raw, "2", &[(FP, "a/bc")]),
        layer(&raw, "3", &[(FP, "a/b.c")]),
    ]);
    ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
}

#[test]
fn a_raw_layer_without_a_path_is_refused() {
    let m = modelpack(vec![layer(&modelpack::layer("weight", "raw"), "w", &[])]);
    assert!(matches!(
        ArtifactLayout::from_manifest(&m, LayoutOptions::default()),
        Err(LayoutError::NoPath { .. })
    ));
}

#[test]
fn unknown_media_types_fail_or_are_skipped() {
    let odd = layer("application/x-odd", "o", &[]);
    let bad_kind = layer(
        "application/vnd.cncf.model.secret.v1.raw",
        "s",
        &[(FP, "s")],
    );
    let ok = layer(&modelpack::layer("doc", "raw"), "d", &[(FP, "README.md")]);
    let m = modelpack(vec![ok, odd.clone(), bad_kind.clone()]);
    let err = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap_err();
    assert!(err.to_string().contains("application/x-odd"), "{err}");
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions { skip_unknown: true }).unwrap();
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.skipped, vec![odd, bad_kind]);
}

#[test]
fn oras_files_and_unpacked_directories() {
    let t = oras::TITLE;
    let m = manifest(
        Some("application/vnd.example+type"),
        "application/vnd.oci.empty.v1+json",
        vec![
            layer(
                "application/vnd.oci.image.layer.v1.tar",
                "f",
                &[(t, "hello.txt")],
            ),
            layer(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "d",
                &[(t, "dir"), (oras::UNPACK, "true")],
            ),
            layer("application/x.tar.gz", "g", &[(t, "archive.tar.gz")]),
        ],
    );
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(l.kind, ManifestKind::Artifact(ArtifactKind::Oras));
    assert!(matches!(&l.entries[0], Entry::RawFile { path, .. } if path == "hello.txt"));
    assert!(matches!(
        &l.entries[1],
        Entry::Tar {
            compression: Compression::Gzip,
            ..
        }
    ));
    assert!(matches!(&l.entries[2], Entry::RawFile { path, .. } if path == "archive.tar.gz"));
}

#[test]
fn docker_model_runner_and_kitops() {
    let m = manifest(
        None,
        docker_model::CONFIG,
        vec![
            layer(docker_model::GGUF, "g", &[(oras::TITLE, "model.Q4.gguf")]),
            layer(docker_model::SAFETENSORS, "s", &[]),
            layer(docker_model::LICENSE, "l1", &[]),
            layer(docker_model::LICENSE, "l2", &[]),
        ],
    );
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(l.kind, ManifestKind::Artifact(ArtifactKind::DockerModel));
    let paths: Vec<&str> = l
        .entries
        .iter()
        .map(|e| match e {
            Entry::RawFile { path, .. } => path.as_str(),
            Entry::Tar { .. } => panic!(),
        })
        .collect();
    assert_eq!(&paths[..2], ["model.Q4.gguf", "model.safetensors"]);
    assert!(paths[2].starts_with("licenses/") && paths[2] != paths[3]);

    let m = manifest(
        None,
        kitops::CONFIG,
        vec![
            layer("application/vnd.kitops.modelkit.model.v1.tar", "m", &[]),
            layer("application/vnd.kitops.modelkit.docs.v1.tar+gzip", "d", &[]),
            layer("application/vnd.kitops.modelkit.code.v1.tar+zstd", "c", &[]),
        ],
    );
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(l.kind, ManifestKind::Artifact(ArtifactKind::KitOps));
    assert_eq!(
        l.entries.iter().filter(|e| e.is_range_readable()).count(),
        1
    );
}

#[test]
fn images_are_told_from_artifacts() {
    let m = manifest(
        None,
        OCI_IMAGE_CONFIG,
        vec![layer(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "l",
            &[],
        )],
    );
    let l = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(l.kind, ManifestKind::Image);
    assert!(matches!(
        l.entries[0],
        Entry::Tar {
            compression: Compression::Gzip,
            ..
        }
    ));
    // An image config with an artifactType is an artifact.
    let m = manifest(Some("application/x"), OCI_IMAGE_CONFIG, vec![]);
    assert_eq!(classify(&m), ManifestKind::Artifact(ArtifactKind::Oras));
}

proptest! {
    /// Whatever the annotations say, every file path that comes out is clean and unique.
    #[test]
    fn laid_out_paths_are_clean_and_unique(paths in proptest::collection::vec("[a./]{0,8}", 0..6)) {
        let raw = modelpack::layer("weight", "raw");
        let layers = paths
            .iter()
            .enumerate()
            .map(|(i, p)| layer(&raw, &i.to_string(), &[(FP, p)]))
            .collect();
        if let Ok(l) = ArtifactLayout::from_manifest(&modelpack(layers), LayoutOptions::default()) {
            let mut seen = std::collections::BTreeSet::new();
            for e in &l.entries {
                let Entry::RawFile { path, .. } = e else { panic!() };
                prop_assert!(!path.is_empty() && !path.starts_with('/'));
                prop_assert!(path.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
                prop_assert!(seen.insert(path.clone()));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ArtifactLayout::parse(&bytes, LayoutOptions { skip_unknown: true });
    }
}
