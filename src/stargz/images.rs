//! The layers of an image as the stargz provider needs them: digest, size, TOC digest
//! (`containerd.io/snapshot/stargz/toc.digest`, absent for layers that are not eStargz)
//! and, for layers `strata convert` wrote, where the prioritized files end; read from the
//! registry once per image reference.

use strata_formats::Digest;
use strata_formats::estargz::{PREFETCH_END_ANNOTATION, TOC_DIGEST_ANNOTATION, TOC_OFFSET_ANNOTATION};

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
pub async fn image_layers(client: &RegistryClient, reference: &Reference, platform: &Platform) -> Result<Vec<ImageLayer>, String> {
    // One GET: the tag's manifest, or its index and then the platform's manifest.
    let (desc, mut bytes) = client.get_manifest(reference).await.map_err(|e| e.to_string())?;
    if media::is_index(desc.media_type().as_ref()) {
        let index = parse_index(&bytes, "index").map_err(|e| e.to_string())?;
        let desc = platform.select(&index).cloned().ok_or_else(|| format!("no manifest for platform {platform}"))?;
        bytes = client.fetch_manifest(reference, &desc).await.map_err(|e| e.to_string())?;
    }
    let manifest = parse_manifest(&bytes, "manifest").map_err(|e| e.to_string())?;
    manifest
        .layers()
        .iter()
        .map(|l| {
            let digest = descriptor_digest(l).map_err(|e| e.to_string())?;
            let toc_digest = match l.annotations().as_ref().and_then(|a| a.get(TOC_DIGEST_ANNOTATION)) {
                Some(t) => Some(t.parse::<Digest>().map_err(|e| format!("layer {digest}: {TOC_DIGEST_ANNOTATION}: {e}"))?),
                None => None,
            };
            // A hint only (every chunk is still checked against the TOC): a malformed or
            // out-of-range value is ignored.
            let hint = |key: &str| l.annotations().as_ref().and_then(|a| a.get(key)).and_then(|v| v.parse::<u64>().ok());
            let prefetch_end = hint(PREFETCH_END_ANNOTATION).filter(|&end| end > 0 && end <= l.size());
            let toc_offset = hint(TOC_OFFSET_ANNOTATION).filter(|&off| off < l.size());
            Ok(ImageLayer { digest, size: l.size(), toc_digest, prefetch_end, toc_offset })
        })
        .collect()
}
