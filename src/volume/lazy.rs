//! Lazy image volumes: an eStargz image's layers mounted by `strata serve`'s `stargz`
//! snapshotter, as `ctr-remote image rpull` has them mounted — each layer Prepared with
//! the remote-snapshot labels (`containerd.io/snapshot.ref`, the image reference, the
//! layer's digest, the layers above it, and the layer's `containerd.io/snapshot/`
//! annotations), which the daemon answers by mounting the layer over FUSE
//! and committing it (AlreadyExists). Only the manifest and config are fetched here; the
//! daemon fetches file data when it is read, verified chunk by chunk, and keeps serving
//! it across its restarts (its fd holder), so the volume outlives this process.

use std::collections::BTreeMap;

use strata_formats::{Digest, ErrorKind};
use strata_snapshotters::Snapshotter;
use strata_snapshotters::remote::{
    ANNOTATION_PREFIX, LABEL_STARGZ_DIGEST, LABEL_STARGZ_LAYERS, LABEL_STARGZ_REFERENCE,
    LABEL_TARGET_REF,
};

use super::VolumeError;
use crate::image::media;
use crate::image::platform::Platform;
use crate::image::unpack::{chain_ids, config_diff_ids};
use crate::image::walk::{descriptor_digest, parse_index, parse_manifest};
use crate::registry::{Reference, RegistryClient};

/// Largest image config read.
const MAX_CONFIG: u64 = crate::image::MAX_CONFIG_SIZE;

/// One layer of a remote image.
#[derive(Debug, Clone)]
pub struct RemoteLayer {
    /// The layer blob's digest.
    pub digest: Digest,
    /// The chainID of the image's layers up to this one.
    pub chain_id: Digest,
    /// The layer descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A remote image's manifest digest and layers, bottom first.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// The platform's manifest digest.
    pub manifest: Digest,
    /// The image config (verified against its digest).
    pub config: Vec<u8>,
    /// Its layers.
    pub layers: Vec<RemoteLayer>,
}

fn registry_error(what: &str, e: &(dyn std::error::Error + 'static)) -> VolumeError {
    VolumeError::Remote(format!("{what}: {}", crate::error_chain::chain(e)))
}

/// Fetches `reference`'s manifest for `platform` and its config (both verified), nothing
/// else.
///
/// # Errors
///
/// Registry failures, a platform the index lacks, malformed documents.
pub async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<RemoteImage, VolumeError> {
    let mut desc = client
        .resolve(reference)
        .await
        .map_err(|e| registry_error("resolve", &e))?;
    if media::is_index(desc.media_type().as_ref()) {
        let bytes = client
            .fetch_manifest(reference, &desc)
            .await
            .map_err(|e| registry_error("fetch the index", &e))?;
        let index = parse_index(&bytes, "index").map_err(|e| registry_error("index", &e))?;
        desc = platform
            .select(&index)
            .cloned()
            .ok_or_else(|| VolumeError::Remote(format!("no manifest for platform {platform}")))?;
    }
    let manifest_digest = descriptor_digest(&desc).map_err(|e| registry_error("manifest", &e))?;
    let bytes = client
        .fetch_manifest(reference, &desc)
        .await
        .map_err(|e| registry_error("fetch the manifest", &e))?;
    let manifest =
        parse_manifest(&bytes, "manifest").map_err(|e| registry_error("manifest", &e))?;
    let config = manifest.config();
    if config.size() > MAX_CONFIG {
        return Err(VolumeError::Remote(format!(
            "config: {} bytes, more than the {MAX_CONFIG} allowed",
            config.size()
        )));
    }
    let config_digest = descriptor_digest(config).map_err(|e| registry_error("config", &e))?;
    let resp = client
        .fetch_blob(reference, &config_digest, None)
        .await
        .map_err(|e| registry_error("fetch the config", &e))?;
    let body = resp
        .bytes()
        .await
        .map_err(|e| registry_error("read the config", &e))?;
    if body.len() as u64 > MAX_CONFIG || Digest::of(&body) != config_digest {
        return Err(VolumeError::Remote(format!(
            "config {config_digest}: the registry sent {} bytes that do not match its digest",
            body.len()
        )));
    }
    let diff_ids = config_diff_ids(&body, "config").map_err(|e| registry_error("config", &e))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(VolumeError::Remote(format!(
            "the config names {} layers, the manifest {}",
            diff_ids.len(),
            manifest.layers().len()
        )));
    }
    let chains = chain_ids(&diff_ids);
    let layers = manifest
        .layers()
        .iter()
        .zip(chains)
        .map(|(l, chain_id)| {
            Ok(RemoteLayer {
                digest: descriptor_digest(l).map_err(|e| registry_error("layer", &e))?,
                chain_id,
                annotations: l
                    .annotations()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, VolumeError>>()?;
    Ok(RemoteImage {
        manifest: manifest_digest,
        config: body.to_vec(),
        layers,
    })
}

/// Has the daemon's lazy snapshotter `sn` mount every layer of `image` (named `reference`
/// in the labels, as the daemon will fetch it). Layers committed already are kept.
///
/// # Errors
///
/// A layer the daemon would not mount lazily (not eStargz, unreachable registry: its log
/// says why) is an error naming it; its Prepare is undone.
pub fn prepare_lazily(
    sn: &dyn Snapshotter,
    reference: &str,
    image: &RemoteImage,
) -> Result<(), VolumeError> {
    let mut parent = String::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let chain = layer.chain_id.to_string();
        if sn.stat(&chain).is_ok() {
            parent = chain;
            continue;
        }
        let above: Vec<String> = image.layers[i..]
            .iter()
            .map(|l| l.digest.to_string())
            .collect();
        // As containerd's unpacker: the layer's annotations under the snapshot prefix
        // (e.g. the TOC digest) are passed on as they are.
        let mut labels: BTreeMap<String, String> = layer
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_TARGET_REF.to_owned(), chain.clone());
        labels.insert(LABEL_STARGZ_REFERENCE.to_owned(), reference.to_owned());
        labels.insert(LABEL_STARGZ_DIGEST.to_owned(), layer.digest.to_string());
        labels.insert(LABEL_STARGZ_LAYERS.to_owned(), above.join(","));
        let key = format!(
            "strata-volume-extract-{} {chain}",
            crate::metadata::unique_suffix()
        );
        match sn.prepare(&key, &parent, labels) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists && sn.stat(&chain).is_ok() => {}
            Err(source) => return Err(VolumeError::Snapshot { key, source }),
            Ok(_) => {
                let _ = sn.remove(&key);
                return Err(VolumeError::Remote(format!(
                    "layer {} was not mounted lazily by the daemon (not eStargz, or its \
                     registry unreachable from the daemon: see `strata serve`'s log); \
                     mount the image with another --snapshotter",
                    layer.digest
                )));
            }
        }
        parent = chain;
    }
    Ok(())
}
