//! The layers of an image as the stargz provider needs them: digest, size, TOC digest
//! (`containerd.io/snapshot/stargz/toc.digest`, absent for layers that are not eStargz)
//! and, for layers `strata convert` wrote, where the prioritized files end; read from the
//! registry once per image reference.

use strata_formats::Digest;
use strata_formats::estargz::{
    PREFETCH_END_ANNOTATION, TOC_DIGEST_ANNOTATION, TOC_OFFSET_ANNOTATION,
};

use crate::image::media;
use crate::image::platform::Platform;
use crate::image::walk::{descriptor_digest, parse_index, parse_manifest};
use crate::registry::{Reference, RegistryClient};

/// One layer of an image's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its TOC digest when the layer is eStargz.
    pub toc_digest: Option<Digest>,
    /// Where its prioritized files end ([`PREFETCH_END_ANNOTATION`], from `strata convert`),
    /// within the blob; a hint for starting the prefetch before the TOC is in.
    pub prefetch_end: Option<u64>,
    /// Where its TOC starts ([`TOC_OFFSET_ANNOTATION`], from `strata convert`): a hint for
    /// fetching the footer and TOC in one request of their size.
    pub toc_offset: Option<u64>,
}

/// The layers of `reference`'s manifest for `platform`, bottom first.
///
/// # Errors
///
/// A message naming what failed (resolve, fetch, parse, no manifest for the platform).
pub async fn image_layers(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<Vec<ImageLayer>, String> {
    // One GET: the tag's manifest, or its index and then the platform's manifest.
    let (desc, mut bytes) = client
        .get_manifest(reference)
        .await
        .map_err(|e| crate::error_chain::chain(&e))?;
    if media::is_index(desc.media_type().as_ref()) {
        let index = parse_index(&bytes, "index").map_err(|e| e.to_string())?;
        let desc = platform
            .select(&index)
            .cloned()
            .ok_or_else(|| format!("no manifest for platform {platform}"))?;
        bytes = client
            .fetch_manifest(reference, &desc)
            .await
            .map_err(|e| crate::error_chain::chain(&e))?;
    }
    let manifest = parse_manifest(&bytes, "manifest").map_err(|e| e.to_string())?;
    manifest
        .layers()
        .iter()
        .map(|l| {
            let digest = descriptor_digest(l).map_err(|e| e.to_string())?;
            let toc_digest = match l
                .annotations()
                .as_ref()
                .and_then(|a| a.get(TOC_DIGEST_ANNOTATION))
            {
                Some(t) => Some(
                    t.parse::<Digest>()
                        .map_err(|e| format!("layer {digest}: {TOC_DIGEST_ANNOTATION}: {e}"))?,
                ),
                None => None,
            };
            // A hint only (every chunk is still checked against the TOC): a malformed or
            // out-of-range value is ignored.
            let hint = |key: &str| {
                l.annotations()
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let prefetch_end =
                hint(PREFETCH_END_ANNOTATION).filter(|&end| end > 0 && end <= l.size());
            let toc_offset = hint(TOC_OFFSET_ANNOTATION).filter(|&off| off < l.size());
            Ok(ImageLayer {
                digest,
                size: l.size(),
                toc_digest,
                prefetch_end,
                toc_offset,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use strata_testdata::registry::RegistryServer;

    use super::*;
    use crate::registry::ClientOptions;

    /// A manifest of three layers: eStargz with Strata's hints (one out of range, one not a
    /// number), eStargz without them, and a plain gzip layer.
    #[test]
    fn layers_carry_their_toc_digest_and_only_plausible_hints() {
        let registry = RegistryServer::start().unwrap();
        let toc = Digest::of(b"toc").to_string();
        // The registry checks that the blobs a manifest names exist.
        let config = registry.push_blob("images/app", b"{}").unwrap();
        let digests: Vec<String> = [1000usize, 2000, 3000]
            .iter()
            .map(|&n| {
                registry
                    .push_blob("images/app", &vec![n as u8; n])
                    .unwrap()
                    .digest
            })
            .collect();
        let blob = |n: u8| {
            if n == 0 {
                config.digest.clone()
            } else {
                digests[n as usize - 1].clone()
            }
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(0), "size": 2 },
            "layers": [
                { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(1), "size": 1000,
                  "annotations": { TOC_DIGEST_ANNOTATION: toc, PREFETCH_END_ANNOTATION: "400", TOC_OFFSET_ANNOTATION: "5000" } },
                { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(2), "size": 2000,
                  "annotations": { TOC_DIGEST_ANNOTATION: toc, PREFETCH_END_ANNOTATION: "lots" } },
                { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(3), "size": 3000 }
            ]
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        registry
            .push_manifest(
                "images/app",
                "1",
                "application/vnd.oci.image.manifest.v1+json",
                &bytes,
            )
            .unwrap();
        let client = RegistryClient::new(ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        })
        .unwrap();
        let reference: Reference = format!("{}/images/app:1", registry.host()).parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let layers = runtime
            .block_on(image_layers(&client, &reference, &Platform::host()))
            .unwrap();
        let toc: Digest = toc.parse().unwrap();
        assert_eq!(
            layers,
            vec![
                ImageLayer {
                    digest: blob(1).parse().unwrap(),
                    size: 1000,
                    toc_digest: Some(toc.clone()),
                    prefetch_end: Some(400),
                    toc_offset: None
                },
                ImageLayer {
                    digest: blob(2).parse().unwrap(),
                    size: 2000,
                    toc_digest: Some(toc),
                    prefetch_end: None,
                    toc_offset: None
                },
                ImageLayer {
                    digest: blob(3).parse().unwrap(),
                    size: 3000,
                    toc_digest: None,
                    prefetch_end: None,
                    toc_offset: None
                },
            ],
            "a TOC offset past the blob and a prefetch end that is not a number are dropped"
        );
    }
}
