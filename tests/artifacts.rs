//! Model artifacts against a real registry (Debian's distribution 2.8, which has no
//! referrers API, so the tag-schema fallback is what runs): `strata artifact push`,
//! `strata index` (and `--check`), `strata pull` of an artifact, and refusals.

use std::path::{Path, PathBuf};
use std::process::Output;

use strata_formats::Digest;
use strata_formats::artifact::{
    ArtifactKind, ArtifactLayout, Entry, LayoutOptions, Manifest, ManifestKind, modelpack, oras,
};
use strata_formats::chunk_index::{self, ChunkIndex};
use strata_testdata::registry::RegistryServer;

mod support;

use support::Env;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn ok(out: Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "strata failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn err(out: Output) -> String {
    assert!(
        !out.status.success(),
        "strata unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `strata artifact push --plain-http DIR REFERENCE`, which must succeed: (stdout, stderr).
fn push_dir(env: &Env, dir: &Path, reference: &str) -> (String, String) {
    ok(env.strata(
        "root",
        &[
            "artifact",
            "push",
            "--plain-http",
            dir.to_str().unwrap(),
            reference,
        ],
    ))
}

/// A registry client for plain-HTTP loopback registries, with no credentials (`dir` gets
/// no file: the docker config it names does not exist).
fn plain_client(dir: &Path) -> strata::registry::RegistryClient {
    strata::registry::RegistryClient::new(strata::registry::ClientOptions {
        docker_config: Some(dir.join("no-config.json")),
        plain_http: true,
        ..strata::registry::ClientOptions::default()
    })
    .unwrap()
}

/// A small model checkout: a safetensors-shaped weights file (8-byte little-endian header
/// length, JSON header, then tensor bytes) of `weights_mib`, its config, tokenizer, README.
fn model_dir(root: &Path, weights_mib: usize) -> PathBuf {
    let dir = root.join("tiny-model");
    std::fs::create_dir_all(&dir).unwrap();
    let data_len = weights_mib << 20;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{data_len}]}},"__metadata__":{{"format":"pt"}}}}"#,
        data_len / 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..data_len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]));
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["TinyForCausalLM"],"hidden_size":64}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"version":"1.0","model":{}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "# tiny\nA test model.\n").unwrap();
    dir
}

fn get(registry: &RegistryServer, path: &str, accept: &str) -> Vec<u8> {
    let resp = registry.client().get(path, &[("Accept", accept)]).unwrap();
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    resp.body
}

fn manifest(registry: &RegistryServer, repo: &str, reference: &str) -> (Digest, Manifest) {
    let bytes = get(
        registry,
        &format!("/v2/{repo}/manifests/{reference}"),
        OCI_MANIFEST,
    );
    (Digest::of(&bytes), Manifest::parse(&bytes).unwrap())
}

fn blob(registry: &RegistryServer, repo: &str, digest: &Digest) -> Vec<u8> {
    let bytes = get(registry, &format!("/v2/{repo}/blobs/{digest}"), "*/*");
    assert_eq!(Digest::of(&bytes), *digest);
    bytes
}

/// The referrers the tag-schema fallback lists for `subject`.
fn fallback_referrers(
    registry: &RegistryServer,
    repo: &str,
    subject: &Digest,
) -> Vec<serde_json::Value> {
    let tag = format!("sha256-{}", subject.encoded());
    let bytes = get(registry, &format!("/v2/{repo}/manifests/{tag}"), OCI_INDEX);
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    index["manifests"].as_array().unwrap().clone()
}

/// The chunk index the referrer `referrer` carries, checked to name `subject`.
fn chunk_index_of(
    registry: &RegistryServer,
    repo: &str,
    referrer: &Digest,
    subject: &Digest,
) -> ChunkIndex {
    let (_, m) = manifest(registry, repo, &referrer.to_string());
    assert_eq!(m.artifact_type.as_deref(), Some(chunk_index::ARTIFACT_TYPE));
    assert_eq!(m.config.media_type, "application/vnd.oci.empty.v1+json");
    assert_eq!(&m.subject.as_ref().unwrap().digest, subject);
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, chunk_index::MEDIA_TYPE);
    ChunkIndex::parse(&blob(registry, repo, &m.layers[0].digest)).unwrap()
}

#[test]
fn modelpack_push_has_its_layers_config_and_a_chunk_index_referrer() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let dir = model_dir(env.dir.path(), 6);
    let reference = format!("{}/models/tiny:1", registry.host());
    let (out, stderr) = push_dir(&env, &dir, &reference);
    let pushed: Digest = out.trim().parse().unwrap();
    assert!(stderr.contains("listed in the referrers tag"), "{stderr}");

    let (digest, m) = manifest(&registry, "models/tiny", "1");
    assert_eq!(digest, pushed);
    assert_eq!(m.artifact_type.as_deref(), Some(modelpack::ARTIFACT_TYPE));
    assert_eq!(m.config.media_type, modelpack::CONFIG);
    let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "application/vnd.cncf.model.weight.v1.raw",
            "application/vnd.cncf.model.weight.config.v1.tar",
            "application/vnd.cncf.model.doc.v1.tar",
        ]
    );
    // The raw layer is the file, byte for byte, under its path.
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(m.layers[0].digest, Digest::of(&weights));
    assert_eq!(m.layers[0].size, weights.len() as u64);
    assert_eq!(
        m.layers[0].annotation(modelpack::FILEPATH),
        Some("model.safetensors")
    );
    assert_eq!(blob(&registry, "models/tiny", &m.layers[0].digest), weights);
    // The small files are in uncompressed tars, at their paths.
    let tar_names = |d: &Digest| -> Vec<String> {
        let bytes = blob(&registry, "models/tiny", d);
        tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    };
    assert_eq!(
        tar_names(&m.layers[1].digest),
        ["config.json", "tokenizer.json"]
    );
    assert_eq!(tar_names(&m.layers[2].digest), ["README.md"]);
    // The config: name, modelfs with one DiffID per layer.
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&registry, "models/tiny", &m.config.digest)).unwrap();
    assert_eq!(config["descriptor"]["name"], "tiny-model");
    assert_eq!(config["config"]["format"], "safetensors");
    assert_eq!(config["modelfs"]["type"], "layers");
    let diff_ids: Vec<String> = m.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(config["modelfs"]["diff_ids"], serde_json::json!(diff_ids));
    // The formats crate reads it back as a ModelPack layout.
    let layout = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(layout.kind, ManifestKind::Artifact(ArtifactKind::ModelPack));
    assert!(
        matches!(&layout.entries[0], Entry::RawFile { path, .. } if path == "model.safetensors")
    );

    // The chunk index, found through the fallback tag, covers every layer and verifies.
    let referrers = fallback_referrers(&registry, "models/tiny", &digest);
    assert_eq!(referrers.len(), 1, "{referrers:?}");
    assert_eq!(referrers[0]["artifactType"], chunk_index::ARTIFACT_TYPE);
    let referrer: Digest = referrers[0]["digest"].as_str().unwrap().parse().unwrap();
    let index = chunk_index_of(&registry, "models/tiny", &referrer, &digest);
    assert_eq!(index.chunk_size, chunk_index::DEFAULT_CHUNK_SIZE);
    assert_eq!(index.layers.len(), 3);
    let w = index.layer(&Digest::of(&weights)).unwrap();
    assert_eq!(w.chunks.len(), 2);
    for (i, chunk) in weights.chunks(index.chunk_size as usize).enumerate() {
        index.verify_chunk(&w.digest, i as u64, chunk).unwrap();
    }
    let (out, _) = ok(env.strata("root", &["index", "--check", "--plain-http", &reference]));
    assert_eq!(out.trim(), referrer.to_string());

    // Indexing again finds the same referrer; nothing new is listed.
    let (out, stderr) = ok(env.strata("root", &["index", "--plain-http", &reference]));
    assert_eq!(out.trim(), referrer.to_string());
    assert!(stderr.contains("already in the registry"), "{stderr}");
    assert_eq!(
        fallback_referrers(&registry, "models/tiny", &digest).len(),
        1
    );

    // Pushing the same directory again uploads nothing new and gives the same digests.
    let (out, stderr) = push_dir(&env, &dir, &reference);
    assert_eq!(out.trim(), digest.to_string());
    assert!(stderr.contains("already in the registry"), "{stderr}");
    assert_eq!(
        fallback_referrers(&registry, "models/tiny", &digest).len(),
        1
    );
}

#[test]
fn oras_push_names_every_file_by_its_title() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let dir = model_dir(env.dir.path(), 1);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/run.py"), "print('hi')\n").unwrap();
    let reference = format!("{}/files/tiny:oras", registry.host());
    ok(env.strata(
        "root",
        &[
            "artifact",
            "push",
            "--type",
            "oras",
            "--plain-http",
            dir.to_str().unwrap(),
            &reference,
        ],
    ));
    let (digest, m) = manifest(&registry, "files/tiny", "oras");
    assert_eq!(
        m.config.digest.to_string(),
        strata_formats::artifact::manifest::OCI_EMPTY_DIGEST
    );
    let titles: Vec<&str> = m
        .layers
        .iter()
        .map(|l| l.annotation(oras::TITLE).unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "sub/run.py",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        blob(&registry, "files/tiny", &m.layers[3].digest),
        b"print('hi')\n"
    );
    let layout = ArtifactLayout::from_manifest(&m, LayoutOptions::default()).unwrap();
    assert_eq!(layout.kind, ManifestKind::Artifact(ArtifactKind::Oras));
    assert_eq!(
        fallback_referrers(&registry, "files/tiny", &digest).len(),
        1
    );
}

/// An ORAS-style artifact pushed by another tool, without a chunk index: a 5 MiB raw file
/// (two chunks) and a gzip layer (not indexed).
fn push_foreign_artifact(registry: &RegistryServer, repo: &str, tag: &str) -> (Digest, Vec<u8>) {
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i % 253) as u8).collect();
    let raw = registry.push_blob(repo, &data).unwrap();
    let gz = registry.push_blob(repo, b"not really gzip").unwrap();
    let empty = registry.push_blob(repo, b"{}").unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.data",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": raw.digest, "size": raw.size,
             "annotations": {"org.opencontainers.image.title": "data/blob.bin"}},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": gz.digest, "size": gz.size,
             "annotations": {"org.opencontainers.image.title": "dir", "io.deis.oras.content.unpack": "true"}},
        ],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    registry
        .push_manifest(repo, tag, OCI_MANIFEST, &bytes)
        .unwrap();
    (Digest::of(&bytes), data)
}

#[test]
fn index_adds_a_chunk_index_to_an_artifact_and_catches_a_corrupted_chunk() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let (digest, data) = push_foreign_artifact(&registry, "data/set", "v1");
    let reference = format!("{}/data/set:v1", registry.host());

    // No index yet: --check says so.
    let e = err(env.strata("root", &["index", "--check", "--plain-http", &reference]));
    assert!(e.contains("has no chunk index"), "{e}");

    let (out, stderr) = ok(env.strata("root", &["index", "--plain-http", &reference]));
    let referrer: Digest = out.trim().parse().unwrap();
    assert!(
        stderr.contains("oras artifact") && stderr.contains("1 blobs"),
        "{stderr}"
    );
    let referrers = fallback_referrers(&registry, "data/set", &digest);
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0]["digest"], referrer.to_string());
    let index = chunk_index_of(&registry, "data/set", &referrer, &digest);
    // Only the raw file: the gzip layer is read whole, not by range.
    assert_eq!(index.layers.len(), 1);
    assert_eq!(index.layers[0].digest, Digest::of(&data));
    assert_eq!(index.layers[0].chunks.len(), 2);
    ok(env.strata("root", &["index", "--check", "--plain-http", &reference]));
    // Idempotent.
    let (again, _) = ok(env.strata("root", &["index", "--plain-http", &reference]));
    assert_eq!(again.trim(), referrer.to_string());
    assert_eq!(fallback_referrers(&registry, "data/set", &digest).len(), 1);

    // One flipped byte in the second chunk: --check names the blob and chunk 1.
    let path = registry.blob_data_path(&index.layers[0].digest.to_string());
    let mut stored = std::fs::read(&path).unwrap();
    stored[(4 << 20) + 1000] ^= 0xff;
    std::fs::write(&path, &stored).unwrap();
    let e = err(env.strata("root", &["index", "--check", "--plain-http", &reference]));
    assert!(
        e.contains(&format!("layer {}: chunk 1", index.layers[0].digest)),
        "{e}"
    );
    // The index computed from the corrupted blob fails too: its digest no longer matches.
    let e = err(env.strata("root", &["index", "--plain-http", &reference]));
    assert!(e.contains(&index.layers[0].digest.to_string()), "{e}");
}

#[test]
fn pull_stores_an_artifact_without_unpacking_and_lists_it() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let dir = model_dir(env.dir.path(), 2);
    let reference = format!("{}/models/pulled:1", registry.host());
    let (out, _) = push_dir(&env, &dir, &reference);
    let digest: Digest = out.trim().parse().unwrap();
    let (out, stderr) = ok(env.strata("root", &["pull", "--plain-http", &reference]));
    assert_eq!(out.trim(), digest.to_string());
    assert!(
        stderr.contains("an artifact (application/vnd.cncf.model.manifest.v1+json)")
            && stderr.contains("not unpacked"),
        "{stderr}"
    );
    let (_, m) = manifest(&registry, "models/pulled", "1");
    let blobs = env.path("root/content/blobs/sha256");
    for d in std::iter::once(&digest)
        .chain(std::iter::once(&m.config.digest))
        .chain(m.layers.iter().map(|l| &l.digest))
    {
        let bytes = std::fs::read(blobs.join(d.encoded())).unwrap();
        assert_eq!(Digest::of(&bytes), *d);
    }
    let (ls, _) = ok(env.strata("root", &["image", "ls"]));
    assert!(ls.contains(&reference), "{ls}");
    // Nothing was unpacked.
    let (snaps, _) = ok(env.strata("root", &["snapshot", "ls"]));
    assert_eq!(
        snaps.lines().filter(|l| l.starts_with("sha256:")).count(),
        0,
        "{snaps}"
    );

    // A corrupted weights blob is never stored: the pull fails naming it.
    let weights = &m.layers[0].digest;
    let path = registry.blob_data_path(&weights.to_string());
    let mut stored = std::fs::read(&path).unwrap();
    stored[100] ^= 0xff;
    std::fs::write(&path, &stored).unwrap();
    let e = err(env.strata("fresh", &["pull", "--plain-http", &reference]));
    assert!(e.contains(&weights.to_string()), "{e}");
    assert!(
        !env.path("fresh/content/blobs/sha256")
            .join(weights.encoded())
            .exists()
    );
}

#[test]
fn a_path_escaping_annotation_is_refused() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let repo = "evil/model";
    let weights = registry.push_blob(repo, b"weights").unwrap();
    let config = registry.push_blob(repo, b"{}").unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": modelpack::ARTIFACT_TYPE,
        "config": {"mediaType": modelpack::CONFIG, "digest": config.digest, "size": 2},
        "layers": [
            {"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": weights.digest,
             "size": weights.size, "annotations": {"org.cncf.model.filepath": "../../etc/cron.d/x"}},
        ],
    });
    registry
        .push_manifest(
            repo,
            "1",
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    let reference = format!("{}/{repo}:1", registry.host());
    let e = err(env.strata("root", &["index", "--plain-http", &reference]));
    assert!(
        e.contains(&weights.digest)
            && e.contains("org.cncf.model.filepath")
            && e.contains("escapes the root"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// The registry client's referrers against the real registry: none is an empty list (no
/// fallback tag yet), two referrers of different types are both in the fallback index,
/// the artifactType filter picks one, and pushing one again adds no entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_through_the_fallback_tag() {
    use std::collections::BTreeMap;
    use strata::registry::{Reference, ReferrersSource};
    use strata_formats::artifact::Descriptor;

    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start().unwrap();
    let client = plain_client(dir.path());
    let repo = "refs/subject";
    let (subject, _) = push_foreign_artifact(&registry, repo, "v1");
    let r: Reference = format!("{}/{repo}:v1", registry.host()).parse().unwrap();

    let (none, source) = client.referrers(&r, &subject, None).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(source, ReferrersSource::FallbackTag);

    let subject_desc = Descriptor {
        media_type: OCI_MANIFEST.to_owned(),
        digest: subject.clone(),
        size: 0,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let empty = registry.push_blob(repo, b"{}").unwrap();
    assert_eq!(
        empty.digest,
        strata_formats::artifact::manifest::OCI_EMPTY_DIGEST
    );
    let mut pushed = Vec::new();
    for (i, artifact_type) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let payload = registry
            .push_blob(repo, format!("payload {i}").as_bytes())
            .unwrap();
        let mut layer = Descriptor::of(
            "application/octet-stream",
            format!("payload {i}").as_bytes(),
        );
        layer.digest = payload.digest.parse().unwrap();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            artifact_type: Some((*artifact_type).to_owned()),
            config: Descriptor::empty(),
            layers: vec![layer],
            subject: Some(subject_desc.clone()),
            annotations: BTreeMap::new(),
        };
        let annotations = BTreeMap::from([("n".to_owned(), i.to_string())]);
        let bytes = bytes::Bytes::from(m.to_json());
        let push = client
            .push_referrer(&r, bytes.clone(), &subject, artifact_type, &annotations)
            .await
            .unwrap();
        assert_eq!(push.digest, Digest::of(&bytes));
        // distribution 2.8 ignores subject: the fallback tag carries it.
        assert!(!push.subject_processed);
        // Again: no second entry.
        client
            .push_referrer(&r, bytes, &subject, artifact_type, &annotations)
            .await
            .unwrap();
        pushed.push(push.digest);
    }
    // The tag the subject was pushed under still names the subject.
    let (_, m) = manifest(&registry, repo, "v1");
    assert_eq!(
        m.artifact_type.as_deref(),
        Some("application/vnd.example.data")
    );

    let (all, _) = client.referrers(&r, &subject, None).await.unwrap();
    let digests: Vec<Digest> = all.iter().map(|d| d.digest.clone()).collect();
    assert_eq!(digests, pushed);
    assert_eq!(all[1].annotations["n"], "1");
    let (sigs, _) = client
        .referrers(&r, &subject, Some("application/vnd.example.sig"))
        .await
        .unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, pushed[1]);
    assert_eq!(
        sigs[0].artifact_type.as_deref(),
        Some("application/vnd.example.sig")
    );
}

/// The referrers API path, against the manifests the real registry stored (distribution
/// 2.8 has no API of its own: `ReferrersGateway` lists them by subject, and hides the
/// fallback tags, so nothing is found but through the API).
#[tokio::test]
async fn chunk_indexes_are_found_through_the_referrers_api() {
    use strata::registry::{Reference, ReferrersSource};
    use strata_testdata::registry::ReferrersGateway;

    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let gateway = ReferrersGateway::start(&registry).unwrap();
    let dir = model_dir(env.dir.path(), 6);
    let reference = format!("{}/models/tiny:1", gateway.host());
    let (out, _) = push_dir(&env, &dir, &reference);
    let subject: Digest = out.trim().parse().unwrap();
    gateway.hide_fallback_tags(true);

    let client = plain_client(env.dir.path());
    let r: Reference = reference.parse().unwrap();
    let (found, source) = client
        .referrers(&r, &subject, Some(chunk_index::ARTIFACT_TYPE))
        .await
        .unwrap();
    assert_eq!(source, ReferrersSource::Api);
    assert_eq!(found.len(), 1, "{found:?}");
    let (none, source) = client
        .referrers(&r, &subject, Some("application/vnd.example.none"))
        .await
        .unwrap();
    assert_eq!((none.len(), source), (0, ReferrersSource::Api));

    let pinned = r.with_digest(subject.clone());
    let (index_digest, index) = strata::artifact::fetch_chunk_index(&client, &pinned)
        .await
        .unwrap()
        .expect("the chunk index, through the API");
    assert_eq!(index_digest, found[0].digest);
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        index
            .layers
            .iter()
            .any(|b| b.digest == Digest::of(&weights)),
        "the index covers the weights"
    );
    assert!(gateway.answered() >= 3);
}
