//! Classic `docker save` archives (no `index.json`): turning `manifest.json` into Docker
//! schema2 manifests, as containerd's archive importer does.
//!
//! `manifest.json` lists images as
//! `[{"Config":"<hex>.json","RepoTags":["name:tag"],"Layers":["<id>/layer.tar",…]}]`.
//! For each, the config and layers (already in the store after the archive pass) get
//! descriptors: the config `application/vnd.docker.container.image.v1+json`, each layer a
//! Docker layer type picked by sniffing its first bytes (gzip → `…diff.tar.gzip`, zstd →
//! `…diff.tar.zstd`, else `…diff.tar`). The layers' uncompressed digests must equal the
//! config's `rootfs.diff_ids`, in order, and each layer blob is labelled
//! `containerd.io/uncompressed=<diffID>`. The manifest is serialised byte for byte as
//! containerd 1.6's importer writes it (compact JSON), so the same archive gives the same
//! manifest digest under `ctr image import` and Strata.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Cursor};

use oci_spec::image::{Descriptor, MediaType};
use serde::{Deserialize, Serialize};
use strata_formats::{Digest, Digester, ReadAt as _, ReadAtCursor};

use super::archive::{LOCK_WAIT, Resolved, Scanned};
use super::error::ImageError;
use super::import::Session;
use super::media::{self, Compression};
use super::walk::oci_digest;
use crate::content::{LABEL_UNCOMPRESSED, LocalContentStore, StreamSource};

/// The largest image config read.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// One image of `manifest.json`.
#[derive(Debug, Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigRootfs {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The manifest containerd writes for a `docker save` image, field for field.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

/// An image of a `docker save` archive, with its manifest now in the store.
#[derive(Debug)]
pub(crate) struct DockerImage {
    /// Its names (normalised RepoTags), possibly none.
    pub(crate) names: Vec<String>,
    /// The Docker schema2 manifest written for it.
    pub(crate) manifest: Descriptor,
}

/// Builds and stores a manifest for every image of `manifest_json`.
pub(crate) fn convert(
    session: &mut Session<'_>,
    scanned: &Scanned,
    manifest_json: &[u8],
) -> Result<Vec<DockerImage>, ImageError> {
    let entries: Vec<SaveEntry> = serde_json::from_slice(manifest_json).map_err(|e| {
        ImageError::invalid("manifest.json", format!("not a docker-save manifest: {e}"))
    })?;
    if entries.is_empty() {
        return Err(ImageError::invalid("manifest.json", "lists no images"));
    }
    let content = session.store.content().clone();
    let mut diff_ids: HashMap<Digest, Digest> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let tags = entry.repo_tags.clone().unwrap_or_default();
        let referrer = if tags.is_empty() {
            format!("manifest.json entry {i}")
        } else {
            format!("manifest.json entry {i} ({})", tags.join(", "))
        };
        let names = tags
            .iter()
            .map(|t| normalize_reference(t))
            .collect::<Result<Vec<_>, _>>()?;
        let (config, config_size) = resolve(scanned, &entry.config, "config", &referrer)?;
        let layers = entry
            .layers
            .iter()
            .map(|l| resolve(scanned, l, "layer", &referrer))
            .collect::<Result<Vec<_>, _>>()?;

        let expected = read_diff_ids(&content, &config, config_size)?;
        if expected.len() != layers.len() {
            return Err(ImageError::invalid(
                format!("config {config}"),
                format!(
                    "rootfs.diff_ids lists {} layers but {referrer} lists {}",
                    expected.len(),
                    layers.len()
                ),
            ));
        }
        let mut layer_descs = Vec::with_capacity(layers.len());
        for (index, ((digest, size), path)) in layers.iter().zip(&entry.layers).enumerate() {
            let compression = sniff(&content, digest)?;
            let actual = match diff_ids.get(digest) {
                Some(d) => d.clone(),
                None => {
                    let d = diff_id(&content, digest, compression, path)?;
                    diff_ids.insert(digest.clone(), d.clone());
                    d
                }
            };
            if actual != expected[index] {
                return Err(ImageError::DiffIdMismatch {
                    layer: path.clone(),
                    digest: digest.clone(),
                    index,
                    expected: expected[index].clone(),
                    actual,
                });
            }
            let changes =
                BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), Some(actual.to_string()))]);
            content.update_labels(digest, &changes)?;
            layer_descs.push(Descriptor::new(
                MediaType::from(compression.docker_layer_media_type()),
                *size,
                oci_digest(digest)?,
            ));
        }
        let config_desc = Descriptor::new(
            MediaType::from(media::DOCKER_CONFIG),
            config_size,
            oci_digest(&config)?,
        );
        let bytes = manifest_bytes(&config_desc, &layer_descs)?;
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        let existed = content.exists(&digest);
        if !existed {
            content
                .ingest(
                    &format!("import-{digest}"),
                    &mut StreamSource(Cursor::new(bytes)),
                    Some(size),
                    Some(&digest),
                    BTreeMap::new(),
                    LOCK_WAIT,
                )
                .map_err(|e| ImageError::from_ingest(e, Some(&digest)))?;
        }
        session.note_ingested(&digest, size, existed);
        out.push(DockerImage {
            names,
            manifest: Descriptor::new(
                MediaType::from(media::DOCKER_MANIFEST),
                size,
                oci_digest(&digest)?,
            ),
        });
    }
    Ok(out)
}

fn resolve(
    scanned: &Scanned,
    path: &str,
    what: &'static str,
    referrer: &str,
) -> Result<(Digest, u64), ImageError> {
    match scanned.resolve(path) {
        Resolved::File { digest, size } => Ok((digest, size)),
        Resolved::Missing => Err(ImageError::MissingEntry {
            what,
            path: path.to_owned(),
            referrer: referrer.to_owned(),
        }),
        Resolved::Unsafe => Err(ImageError::UnsafePath {
            what,
            path: path.to_owned(),
            referrer: referrer.to_owned(),
        }),
    }
}

fn read_diff_ids(
    content: &LocalContentStore,
    config: &Digest,
    size: u64,
) -> Result<Vec<Digest>, ImageError> {
    let what = format!("config {config}");
    if size > MAX_CONFIG_SIZE {
        return Err(ImageError::TooLarge {
            what,
            size,
            max: MAX_CONFIG_SIZE,
        });
    }
    let bytes = content.read_all(config, MAX_CONFIG_SIZE)?;
    let parsed: ConfigRootfs = serde_json::from_slice(&bytes).map_err(|e| {
        ImageError::invalid(
            &what,
            format!("not an image config with rootfs.diff_ids: {e}"),
        )
    })?;
    parsed
        .rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e| ImageError::invalid(&what, format!("rootfs.diff_ids: {e}")))
        })
        .collect()
}

fn sniff(content: &LocalContentStore, digest: &Digest) -> Result<Compression, ImageError> {
    let head = content
        .reader_at(digest)?
        .read_range(0, 4)
        .map_err(|e| ImageError::io(format!("read {}", content.blob_path(digest).display()), e))?;
    Ok(Compression::sniff(&head))
}

/// The digest of the layer's uncompressed bytes: its diffID.
fn diff_id(
    content: &LocalContentStore,
    digest: &Digest,
    compression: Compression,
    path: &str,
) -> Result<Digest, ImageError> {
    let mut reader = match compression {
        Compression::None => return Ok(digest.clone()),
        Compression::Gzip => {
            let blob =
                BufReader::with_capacity(1 << 20, ReadAtCursor::new(content.reader_at(digest)?));
            flate2::read::MultiGzDecoder::new(blob)
        }
        Compression::Zstd => {
            return Err(ImageError::Unsupported(format!(
                "layer {path:?} ({digest}): zstd-compressed layers in docker-save archives are not supported"
            )));
        }
    };
    let mut digester = Digester::new();
    io::copy(&mut reader, &mut digester).map_err(|e| {
        ImageError::invalid(
            format!("layer {path:?} ({digest})"),
            format!("bad gzip stream: {e}"),
        )
    })?;
    Ok(digester.digest())
}

/// The manifest bytes, as containerd 1.6's importer writes them (Go's `json.Marshal`:
/// compact, fields in declaration order).
fn manifest_bytes(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<u8>, ImageError> {
    let manifest = Schema2Manifest {
        schema_version: 2,
        media_type: media::DOCKER_MANIFEST,
        config,
        layers,
    };
    serde_json::to_vec(&manifest).map_err(|e| ImageError::invalid("docker manifest", e))
}

/// Normalises a Docker reference as containerd's `docker.ParseDockerRef` does:
/// `busybox` → `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`,
/// `registry.local:5000/app` → `registry.local:5000/app:latest`; with a digest, the tag
/// is dropped. The grammar is [`Reference`](crate::registry::Reference)'s, so imported
/// names and pulled names are normalised identically.
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    match reference.parse::<crate::registry::Reference>() {
        Ok(r) => Ok(r.to_docker_ref().to_string()),
        Err(crate::registry::RegistryError::InvalidReference { reason, .. }) => Err(
            ImageError::invalid(format!("image reference {reference:?}"), reason),
        ),
        Err(e) => Err(ImageError::invalid(
            format!("image reference {reference:?}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        let n = |s| normalize_reference(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("me/app:1"), "docker.io/me/app:1");
        assert_eq!(n("index.docker.io/me/app"), "docker.io/me/app:latest");
        assert_eq!(n("localhost/app:dev"), "localhost/app:dev");
        assert_eq!(
            n("registry.local:5000/team/app"),
            "registry.local:5000/team/app:latest"
        );
        let d = Digest::of(b"x");
        assert_eq!(
            n(&format!("app:1@{d}")),
            format!("docker.io/library/app@{d}")
        );
        for bad in [
            "",
            "UPPER",
            "a b",
            "app:",
            "app@sha256:xyz",
            "app:-x",
            "/app",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn manifest_is_compact_like_containerd() {
        let config = Descriptor::new(
            MediaType::from(media::DOCKER_CONFIG),
            2,
            oci_digest(&Digest::of(b"{}")).unwrap(),
        );
        let text = String::from_utf8(manifest_bytes(&config, &[]).unwrap()).unwrap();
        let expected = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            Digest::of(b"{}")
        );
        assert_eq!(text, expected);
    }
}
