//! Pushing an image from the store to a registry (containerd's `ctr image push`).
//!
//! Children before parents, so a registry never sees a manifest whose blobs it lacks:
//! config and layers first (skipped when the registry has them, mounted from another
//! repository of the same registry when the blob's `containerd.io/distribution.source.*`
//! label says where it came from, uploaded otherwise), then each platform's manifest by
//! digest, then the root (index or manifest) under the tag.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use oci_spec::image::Descriptor;
use strata_formats::Digest;

use super::error::ImageError;
use super::media;
use super::platform::Platform;
use super::pull::LABEL_DISTRIBUTION_SOURCE_PREFIX;
use super::walk::{MAX_MANIFEST_SIZE, descriptor_digest, parse_index, parse_manifest};
use crate::metadata::ImageRecord;
use crate::registry::{Reference, RegistryClient, RegistryError};
use crate::store::Store;

/// How a push behaves.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Push only this platform's manifest of a multi-platform image (the tag then points
    /// at that manifest). Without it, every manifest of an index must be in the store.
    pub platform: Option<Platform>,
    /// Blobs uploaded at once (0 means 3).
    pub max_concurrent_uploads: usize,
    /// Progress reports, called from several tasks.
    pub progress: Option<PushEventSink>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// How a blob reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it already.
    Exists,
    /// Mounted from another repository of the same registry (no bytes sent).
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Where progress events go: called from several tasks at once.
pub type PushEventSink = Arc<dyn Fn(&PushEvent) + Send + Sync>;

/// What a push reports as it goes.
#[derive(Debug, Clone)]
pub enum PushEvent {
    /// A blob is being checked or uploaded.
    BlobStarted {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob is in the registry.
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// How it got there.
        outcome: BlobOutcome,
    },
    /// A manifest or index was put.
    ManifestPushed {
        /// Its digest.
        digest: Digest,
        /// Where (`repo:tag` or `repo@digest`).
        reference: String,
    },
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Talking to the registry failed.
    #[error("push {reference}: {source}")]
    Registry {
        /// The target reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<RegistryError>,
    },
    /// Reading the image from the store failed.
    #[error("push {reference}: {source}")]
    Image {
        /// The target reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<ImageError>,
    },
}

impl PushError {
    /// The error's category.
    pub fn kind(&self) -> strata_formats::ErrorKind {
        match self {
            Self::Registry { source, .. } => source.kind(),
            Self::Image { source, .. } => source.kind(),
        }
    }
}

/// Pushes the image `image` from `store` to `target`. Returns the pushed root descriptor.
pub async fn push(
    store: &Store,
    client: &RegistryClient,
    image: &ImageRecord,
    target: &Reference,
    opts: &PushOptions,
) -> Result<Descriptor, PushError> {
    let name = target.to_string();
    let img = |source: ImageError| PushError::Image {
        reference: name.clone(),
        source: Box::new(source),
    };
    let reg = |source: RegistryError| PushError::Registry {
        reference: name.clone(),
        source: Box::new(source),
    };
    let read = |d: &Descriptor| -> Result<Vec<u8>, PushError> {
        let digest = descriptor_digest(d).map_err(img)?;
        store
            .content()
            .read_all(&digest, MAX_MANIFEST_SIZE)
            .map_err(|e| img(e.into()))
    };

    // Work out the root and its manifests from the store.
    let mut root = image.target.clone();
    let mut manifests: Vec<Descriptor> = Vec::new();
    if media::is_index(root.media_type().as_ref()) {
        let root_digest = descriptor_digest(&root).map_err(img)?;
        let index = parse_index(&read(&root)?, &format!("index {root_digest}")).map_err(img)?;
        if let Some(platform) = &opts.platform {
            let chosen = platform.select(&index).cloned().ok_or_else(|| {
                img(ImageError::NotFound(format!(
                    "index {root_digest} has no manifest for platform {platform}"
                )))
            })?;
            root = chosen.clone();
            manifests.push(chosen);
        } else {
            for m in index.manifests() {
                let d = descriptor_digest(m).map_err(img)?;
                if !store.content().exists(&d) {
                    return Err(img(ImageError::NotFound(format!(
                        "manifest {d} of index {root_digest} is not in the store (pulled for one platform only?); \
                         push one platform with --platform"
                    ))));
                }
                manifests.push(m.clone());
            }
        }
    } else {
        manifests.push(root.clone());
    }

    // Every config and layer, once.
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut documents: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    for m in &manifests {
        let bytes = read(m)?;
        let digest = descriptor_digest(m).map_err(img)?;
        if media::is_manifest(m.media_type().as_ref()) {
            let manifest = parse_manifest(&bytes, &format!("manifest {digest}")).map_err(img)?;
            for b in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
                if seen.insert(b.digest().to_string()) {
                    blobs.push(b.clone());
                }
            }
        }
        documents.push((m.clone(), bytes));
    }

    let limit = if opts.max_concurrent_uploads == 0 {
        3
    } else {
        opts.max_concurrent_uploads
    };
    let results: Vec<Result<(), PushError>> = futures_util::stream::iter(blobs.iter())
        .map(|b| push_blob(store, client, target, b, opts))
        .buffer_unordered(limit)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<()>, PushError>>()?;

    let bare = Reference::new(target.registry(), target.repository(), None, None).map_err(reg)?;
    let by_digest = |d: &Digest| bare.with_digest(d.clone());
    let root_digest = descriptor_digest(&root).map_err(img)?;
    for (m, bytes) in documents {
        let digest = descriptor_digest(&m).map_err(img)?;
        if digest == root_digest {
            continue;
        }
        client
            .push_manifest(
                &by_digest(&digest),
                m.media_type().as_ref(),
                Bytes::from(bytes),
            )
            .await
            .map_err(reg)?;
        event(
            opts,
            PushEvent::ManifestPushed {
                digest,
                reference: by_digest(&descriptor_digest(&m).map_err(img)?).to_string(),
            },
        );
    }
    let root_bytes = Bytes::from(read(&root)?);
    let at = match target.tag() {
        Some(tag) => bare.with_tag(tag).map_err(reg)?,
        None => by_digest(&root_digest),
    };
    let pushed = client
        .push_manifest(&at, root.media_type().as_ref(), root_bytes)
        .await
        .map_err(reg)?;
    if pushed != root_digest {
        return Err(reg(RegistryError::DigestMismatch {
            what: format!("manifest pushed to {at}"),
            expected: root_digest.clone(),
            actual: pushed,
        }));
    }
    event(
        opts,
        PushEvent::ManifestPushed {
            digest: root_digest,
            reference: at.to_string(),
        },
    );
    Ok(root)
}

fn event(opts: &PushOptions, e: PushEvent) {
    if let Some(p) = &opts.progress {
        p(&e);
    }
}

async fn push_blob(
    store: &Store,
    client: &RegistryClient,
    target: &Reference,
    desc: &Descriptor,
    opts: &PushOptions,
) -> Result<(), PushError> {
    let name = target.to_string();
    let img = |source: ImageError| PushError::Image {
        reference: name.clone(),
        source: Box::new(source),
    };
    let reg = |source: RegistryError| PushError::Registry {
        reference: name.clone(),
        source: Box::new(source),
    };
    let digest = descriptor_digest(desc).map_err(img)?;
    let size = desc.size();
    event(
        opts,
        PushEvent::BlobStarted {
            digest: digest.clone(),
            size,
        },
    );
    if client
        .blob_size(target, &digest)
        .await
        .map_err(reg)?
        .is_some()
    {
        event(
            opts,
            PushEvent::BlobDone {
                digest,
                size,
                outcome: BlobOutcome::Exists,
            },
        );
        return Ok(());
    }
    let info = store.content().info(&digest).map_err(|e| img(e.into()))?;
    let source_key = format!("{LABEL_DISTRIBUTION_SOURCE_PREFIX}{}", target.registry());
    if let Some(repo) = info
        .labels
        .get(&source_key)
        .filter(|r| *r != target.repository())
    {
        let from = Reference::new(target.registry(), repo, None, None).map_err(reg)?;
        if client
            .mount_blob(target, &digest, &from)
            .await
            .map_err(reg)?
        {
            event(
                opts,
                PushEvent::BlobDone {
                    digest,
                    size,
                    outcome: BlobOutcome::Mounted,
                },
            );
            return Ok(());
        }
    }
    let path = store.content().blob_path(&digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| img(ImageError::io(format!("open {}", path.display()), e)))?;
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    client
        .push_blob(target, &digest, size, body)
        .await
        .map_err(reg)?;
    event(
        opts,
        PushEvent::BlobDone {
            digest,
            size,
            outcome: BlobOutcome::Uploaded,
        },
    );
    Ok(())
}
