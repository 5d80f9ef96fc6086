//! `strata index`: the chunk index of a manifest already in a registry, computed with one
//! streaming read of each range-readable blob (raw files, uncompressed tars) and pushed as
//! a referrer of the manifest; and the check of a blob against a pushed index.
//!
//! The referrer is deterministic (same blobs, same chunk size, same digest), so an index
//! pushed before is found among the manifest's referrers and not pushed again.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use strata_formats::Digest;
use strata_formats::artifact::manifest::{OCI_EMPTY_CONTENT, OCI_INDEX};
use strata_formats::artifact::{ArtifactLayout, Descriptor, LayoutOptions, Manifest, ManifestKind};
use strata_formats::chunk_index::{
    self, ChunkIndex, ChunkIndexError, LayerChunker, LayerChunks, referrer_manifest,
};

use super::error::ArtifactError;
use super::push::push_bytes;
use crate::registry::{Reference, RegistryClient, RegistryError};

/// What pushing an index did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPush {
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// Whether the same referrer was there already (nothing was pushed).
    pub existed: bool,
    /// Whether the registry processed the `subject` itself (else the fallback tag holds
    /// it); `false` when `existed`.
    pub subject_processed: bool,
    /// How many blobs the index covers.
    pub layers: usize,
}

/// Progress of the blob reads: (blob digest, blob size, bytes read in this step).
pub type ReadProgress = Arc<dyn Fn(&Digest, u64, u64) + Send + Sync>;

/// Pushes `index` as the chunk index referrer of manifest `subject` in `target`'s
/// repository, unless the same referrer is listed already.
pub async fn push_chunk_index(
    client: &RegistryClient,
    target: &Reference,
    subject: &Descriptor,
    index: &ChunkIndex,
) -> Result<IndexPush, ArtifactError> {
    let reg = |e| ArtifactError::registry(target, e);
    let json = index.to_json();
    let referrer = referrer_manifest(subject, &json).to_json();
    let digest = Digest::of(&referrer);
    let (existing, _) = client
        .referrers(target, &subject.digest, Some(chunk_index::ARTIFACT_TYPE))
        .await
        .map_err(reg)?;
    let layers = index.layers.len();
    if existing.iter().any(|d| d.digest == digest) {
        return Ok(IndexPush {
            digest,
            existed: true,
            subject_processed: false,
            layers,
        });
    }
    push_bytes(
        client,
        target,
        &Descriptor::empty(),
        Bytes::from_static(OCI_EMPTY_CONTENT),
    )
    .await?;
    push_bytes(
        client,
        target,
        &Descriptor::of(chunk_index::MEDIA_TYPE, &json),
        Bytes::from(json),
    )
    .await?;
    let pushed = client
        .push_referrer(
            target,
            Bytes::from(referrer),
            &subject.digest,
            chunk_index::ARTIFACT_TYPE,
            &Default::default(),
        )
        .await
        .map_err(reg)?;
    Ok(IndexPush {
        digest: pushed.digest,
        existed: false,
        subject_processed: pushed.subject_processed,
        layers,
    })
}

/// The manifest `reference` names, its descriptor, and its layout (unknown layers
/// skipped: they are simply not indexed).
pub async fn fetch_layout(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<(Descriptor, ArtifactLayout), ArtifactError> {
    let (desc, bytes) = client
        .get_manifest(reference)
        .await
        .map_err(|e| ArtifactError::registry(reference, e))?;
    let media_type = desc.media_type().as_ref().to_owned();
    if media_type == OCI_INDEX || media_type.contains("manifest.list") {
        return Err(ArtifactError::IsIndex(reference.to_string()));
    }
    let manifest = Manifest::parse(&bytes).map_err(|e| ArtifactError::Layout {
        reference: reference.to_string(),
        source: Box::new(e.into()),
    })?;
    let layout = ArtifactLayout::from_manifest(&manifest, LayoutOptions { skip_unknown: true })
        .map_err(|source| ArtifactError::Layout {
            reference: reference.to_string(),
            source: Box::new(source),
        })?;
    Ok((Descriptor::of(&media_type, &bytes), layout))
}

/// The blobs of `layout` a reader reads by range, once each.
pub fn indexable(layout: &ArtifactLayout) -> Vec<Descriptor> {
    let mut seen = BTreeSet::new();
    layout
        .entries
        .iter()
        .filter(|e| e.is_range_readable())
        .map(|e| e.descriptor().clone())
        .filter(|d| seen.insert(d.digest.clone()))
        .collect()
}

/// Computes the chunk index of the manifest `reference` names and pushes it as its
/// referrer (found, not pushed again, when it exists). Returns what happened and whether
/// the manifest is an image or an artifact.
pub async fn index_reference(
    client: &RegistryClient,
    reference: &Reference,
    chunk_size: u64,
    progress: Option<ReadProgress>,
) -> Result<(IndexPush, ManifestKind), ArtifactError> {
    let (subject, layout) = fetch_layout(client, reference).await?;
    let mut index = ChunkIndex::new(chunk_size).map_err(|source| ArtifactError::ChunkIndex {
        what: "chunk size".to_owned(),
        source: Box::new(source),
    })?;
    for blob in indexable(&layout) {
        let mut chunker =
            LayerChunker::new(chunk_size).map_err(|source| ArtifactError::ChunkIndex {
                what: "chunk size".to_owned(),
                source: Box::new(source),
            })?;
        read_blob(client, reference, &blob, progress.as_ref(), |data| {
            chunker.update(data);
            Ok(())
        })
        .await?;
        let chunks = chunker
            .finish(&blob.digest)
            .map_err(|source| ArtifactError::ChunkIndex {
                what: format!("blob {} of {reference}", blob.digest),
                source: Box::new(source),
            })?;
        index.push(chunks);
    }
    let pushed = push_chunk_index(client, reference, &subject, &index).await?;
    Ok((pushed, layout.kind))
}

/// Streams blob `blob` through `f`, refusing more bytes than its size.
async fn read_blob(
    client: &RegistryClient,
    reference: &Reference,
    blob: &Descriptor,
    progress: Option<&ReadProgress>,
    mut f: impl FnMut(&[u8]) -> Result<(), ArtifactError>,
) -> Result<(), ArtifactError> {
    let reg = |e| ArtifactError::registry(reference, e);
    let mut resp = client
        .fetch_blob(reference, &blob.digest, None)
        .await
        .map_err(reg)?;
    let url = resp.url().clone();
    let mut read = 0u64;
    while let Some(data) = resp.chunk().await.map_err(|e| {
        reg(RegistryError::invalid_response(
            &url,
            format!("reading blob {}: {e}", blob.digest),
        ))
    })? {
        read += data.len() as u64;
        if read > blob.size {
            return Err(reg(RegistryError::TooLarge {
                what: format!("blob {}", blob.digest),
                size: read,
                max: blob.size,
            }));
        }
        f(&data)?;
        if let Some(p) = progress {
            p(&blob.digest, blob.size, data.len() as u64);
        }
    }
    Ok(())
}

/// Downloads blob `blob` of `reference`'s repository into the new file `path`, checking
/// its size and digest on the way; a blob that fails either leaves no file.
pub async fn download_blob(
    client: &RegistryClient,
    reference: &Reference,
    blob: &Descriptor,
    path: &std::path::Path,
) -> Result<(), ArtifactError> {
    use std::io::Write as _;
    let io = |e| ArtifactError::Io {
        what: format!("write blob {} to {}", blob.digest, path.display()),
        source: e,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    let mut digester = strata_formats::Digester::new();
    let mut len = 0u64;
    let result = read_blob(client, reference, blob, None, |data| {
        digester.update(data);
        len += data.len() as u64;
        file.write_all(data).map_err(io)
    })
    .await
    .and_then(|()| {
        let actual = digester.digest();
        if len != blob.size || actual != blob.digest {
            return Err(ArtifactError::registry(
                reference,
                RegistryError::DigestMismatch {
                    what: format!("blob {} ({len} bytes of {})", blob.digest, blob.size),
                    expected: blob.digest.clone(),
                    actual,
                },
            ));
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The chunk index referrer of the manifest `reference` names, if any: its digest and
/// the index (fetched, verified against its descriptor, parsed with bounds).
pub async fn fetch_chunk_index(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<Option<(Digest, ChunkIndex)>, ArtifactError> {
    let reg = |e| ArtifactError::registry(reference, e);
    // A reference pinned by digest names its manifest: no round trip to learn it.
    let subject = match reference.digest() {
        Some(digest) => digest.clone(),
        None => Digest::of(&client.get_manifest(reference).await.map_err(reg)?.1),
    };
    let (referrers, _) = client
        .referrers(reference, &subject, Some(chunk_index::ARTIFACT_TYPE))
        .await
        .map_err(reg)?;
    let Some(found) = referrers.last() else {
        return Ok(None);
    };
    let at = reference.with_digest(found.digest.clone());
    let (_, bytes) = client.get_manifest(&at).await.map_err(reg)?;
    let manifest = Manifest::parse(&bytes).map_err(|e| ArtifactError::Layout {
        reference: at.to_string(),
        source: Box::new(e.into()),
    })?;
    let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| l.media_type == chunk_index::MEDIA_TYPE)
    else {
        return Ok(None);
    };
    if layer.size > chunk_index::MAX_INDEX_SIZE as u64 {
        return Err(ArtifactError::ChunkIndex {
            what: format!("chunk index {}", layer.digest),
            source: Box::new(ChunkIndexError::TooLarge {
                size: layer.size as usize,
                max: chunk_index::MAX_INDEX_SIZE,
            }),
        });
    }
    let mut json = Vec::with_capacity(layer.size as usize);
    read_blob(client, reference, layer, None, |d| {
        json.extend_from_slice(d);
        Ok(())
    })
    .await?;
    let actual = Digest::of(&json);
    if actual != layer.digest {
        return Err(reg(RegistryError::DigestMismatch {
            what: format!("chunk index of {reference}"),
            expected: layer.digest.clone(),
            actual,
        }));
    }
    let index = ChunkIndex::parse(&json).map_err(|source| ArtifactError::ChunkIndex {
        what: format!("chunk index {}", layer.digest),
        source: Box::new(source),
    })?;
    Ok(Some((found.digest.clone(), index)))
}

/// Reads every blob `index` covers from `reference`'s repository and checks each chunk
/// against it: the first chunk that does not match is the error.
pub async fn check_blobs(
    client: &RegistryClient,
    reference: &Reference,
    index: &ChunkIndex,
) -> Result<(), ArtifactError> {
    for layer in &index.layers {
        check_blob(client, reference, index.chunk_size, layer).await?;
    }
    Ok(())
}

async fn check_blob(
    client: &RegistryClient,
    reference: &Reference,
    chunk_size: u64,
    layer: &LayerChunks,
) -> Result<(), ArtifactError> {
    let desc = Descriptor {
        media_type: String::new(),
        digest: layer.digest.clone(),
        size: layer.size,
        artifact_type: None,
        annotations: Default::default(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_size.min(layer.size) as usize);
    let mut next = 0u64;
    let what = format!("blob {} of {reference}", layer.digest);
    read_blob(client, reference, &desc, None, |mut data| {
        while !data.is_empty() {
            let want = layer.chunk_range(chunk_size, next);
            let need = (want.end - want.start) as usize - buf.len();
            let n = need.min(data.len());
            buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if buf.len() as u64 == want.end - want.start {
                layer
                    .verify_chunk(chunk_size, next, &buf)
                    .map_err(|source| ArtifactError::ChunkIndex {
                        what: what.clone(),
                        source: Box::new(source),
                    })?;
                buf.clear();
                next += 1;
            }
        }
        Ok(())
    })
    .await?;
    if next as usize != layer.chunks.len() {
        return Err(ArtifactError::ChunkIndex {
            what,
            source: Box::new(ChunkIndexError::NoSuchChunk {
                digest: layer.digest.clone(),
                index: next,
                count: layer.chunks.len(),
            }),
        });
    }
    Ok(())
}
