//! Walking an image graph in the content store: index → manifests → config + layers.
//!
//! [`ImageWalk`] starts at a descriptor, asks a fetch hook to make each blob available in
//! the content store (an importer copies it in; a plain walk just checks), checks the
//! stored size against the descriptor, parses indexes and manifests (bounded by
//! [`MAX_MANIFEST_SIZE`]) and sets containerd's garbage-collection reference labels on
//! every parent, exactly as containerd's `images.SetChildrenMappedLabels` does:
//! - an index gets `containerd.io/gc.ref.content.m.<i>` = the digest of its `i`-th manifest
//!   (or nested index);
//! - a manifest gets `containerd.io/gc.ref.content.config` = its config digest and
//!   `containerd.io/gc.ref.content.l.<i>` = the digest of its `i`-th layer;
//! - any other child gets `containerd.io/gc.ref.content.<i>`, counted separately.
//!
//! With those labels a garbage collection that starts from an image record's target reaches
//! every blob of the image.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use strata_formats::Digest;

use super::error::ImageError;
use super::media;
use crate::content::{ContentError, LocalContentStore};

/// The largest index or manifest parsed (containerd's fetcher uses the same bound).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// How deeply indexes may nest (an index of indexes of manifests is depth 2).
pub const MAX_DEPTH: usize = 8;

/// The fetch hook of a walk: called once per distinct blob, before the walk reads it, with
/// the blob's digest, its descriptor and who refers to it (`index.json`,
/// `manifest sha256:…`). It makes the blob available in the content store, or fails.
pub type Fetch<'f> = dyn FnMut(&Digest, &Descriptor, &str) -> Result<(), ImageError> + 'f;

/// The digest of a descriptor as a Strata [`Digest`]; other algorithms than sha256 are
/// [`ImageError::Unsupported`].
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest, ImageError> {
    desc.digest()
        .to_string()
        .parse()
        .map_err(|e| ImageError::Unsupported(format!("descriptor of {}: {e}", desc.media_type())))
}

/// A Strata digest as an OCI one.
pub(crate) fn oci_digest(digest: &Digest) -> Result<oci_spec::image::Digest, ImageError> {
    digest.to_string().parse().map_err(|e| {
        ImageError::invalid(
            format!("digest {digest}"),
            format!("rejected by oci-spec: {e}"),
        )
    })
}

/// The GC reference labels a parent carries for `children`, numbered per kind in order:
/// containerd's `images.SetChildrenMappedLabels` with `images.ChildGCLabels`.
pub fn child_gc_labels(children: &[Descriptor]) -> BTreeMap<String, String> {
    let mut counters: HashMap<&'static str, usize> = HashMap::new();
    let mut labels = BTreeMap::new();
    for child in children {
        let key = media::child_gc_label(child.media_type().as_ref());
        let key = if key.ends_with('.') {
            let n = counters.entry(key).or_default();
            let numbered = format!("{key}{n}");
            *n += 1;
            numbered
        } else {
            key.to_owned()
        };
        labels.insert(key, child.digest().to_string());
    }
    labels
}

/// Parses an image index (or Docker manifest list). `what` names the document in errors.
pub fn parse_index(bytes: &[u8], what: &str) -> Result<ImageIndex, ImageError> {
    let index: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid(what, format!("not a valid image index: {e}")))?;
    if let Some(mt) = index.media_type()
        && media::is_manifest(mt.as_ref())
    {
        return Err(ImageError::invalid(
            what,
            format!("expected an index but the document is a {mt}"),
        ));
    }
    Ok(index)
}

/// Parses an image manifest (OCI or Docker schema2). `what` names the document in errors.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest, ImageError> {
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid(what, format!("not a valid image manifest: {e}")))?;
    if let Some(mt) = manifest.media_type()
        && media::is_index(mt.as_ref())
    {
        return Err(ImageError::invalid(
            what,
            format!("expected a manifest but the document is a {mt}"),
        ));
    }
    Ok(manifest)
}

/// A walk over one or more image graphs sharing a content store. Blobs reached twice
/// (layers shared by several platforms or images) are fetched and checked once.
#[derive(Debug)]
pub struct ImageWalk<'a> {
    content: &'a LocalContentStore,
    visited: BTreeMap<Digest, u64>,
}

impl<'a> ImageWalk<'a> {
    /// A walk over `content` that has visited nothing yet.
    pub fn new(content: &'a LocalContentStore) -> Self {
        Self {
            content,
            visited: BTreeMap::new(),
        }
    }

    /// Every blob visited so far, with its size.
    pub fn visited(&self) -> &BTreeMap<Digest, u64> {
        &self.visited
    }

    /// Walks the graph under `root` (which `referrer` refers to), calling `fetch` for each
    /// blob not visited before and labelling every index and manifest for GC.
    ///
    /// Fails with [`ImageError::MissingBlob`] if a blob is not in the store after `fetch`,
    /// [`ImageError::SizeMismatch`] if its size differs from its descriptor,
    /// [`ImageError::TooLarge`] / [`ImageError::Invalid`] for a bad index or manifest, and
    /// [`ImageError::Unsupported`] for Docker schema1 manifests and non-sha256 digests.
    pub fn walk(
        &mut self,
        root: &Descriptor,
        referrer: &str,
        fetch: &mut Fetch<'_>,
    ) -> Result<(), ImageError> {
        self.visit(root, referrer, fetch, 0)
    }

    fn visit(
        &mut self,
        desc: &Descriptor,
        referrer: &str,
        fetch: &mut Fetch<'_>,
        depth: usize,
    ) -> Result<(), ImageError> {
        let digest = descriptor_digest(desc)?;
        if let Some(&size) = self.visited.get(&digest) {
            return check_size(&digest, desc.size(), size);
        }
        let media_type = desc.media_type().to_string();
        if media::is_schema1(&media_type) {
            return Err(ImageError::Unsupported(format!(
                "manifest {digest} referenced by {referrer}: Docker schema1 manifests ({media_type}) are not supported"
            )));
        }
        fetch(&digest, desc, referrer)?;
        let size = match self.content.info(&digest) {
            Ok(info) => info.size,
            Err(ContentError::NotFound(_)) => {
                return Err(ImageError::MissingBlob {
                    digest,
                    referrer: referrer.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        check_size(&digest, desc.size(), size)?;
        self.visited.insert(digest.clone(), size);

        let (kind, children) = if media::is_index(&media_type) {
            let what = format!("index {digest}");
            let index = parse_index(&self.read_document(&digest, size, &what)?, &what)?;
            ("index", index.manifests().clone())
        } else if media::is_manifest(&media_type) {
            let what = format!("manifest {digest}");
            let manifest = parse_manifest(&self.read_document(&digest, size, &what)?, &what)?;
            let mut children = Vec::with_capacity(manifest.layers().len() + 1);
            children.push(manifest.config().clone());
            children.extend(manifest.layers().iter().cloned());
            ("manifest", children)
        } else {
            return Ok(());
        };
        if depth >= MAX_DEPTH {
            return Err(ImageError::invalid(
                format!("{kind} {digest}"),
                format!("indexes nest more than {MAX_DEPTH} deep"),
            ));
        }
        let labels = child_gc_labels(&children);
        if !labels.is_empty() {
            let changes = labels.into_iter().map(|(k, v)| (k, Some(v))).collect();
            self.content.update_labels(&digest, &changes)?;
        }
        let me = format!("{kind} {digest}");
        for child in &children {
            self.visit(child, &me, fetch, depth + 1)?;
        }
        Ok(())
    }

    fn read_document(&self, digest: &Digest, size: u64, what: &str) -> Result<Vec<u8>, ImageError> {
        if size > MAX_MANIFEST_SIZE {
            return Err(ImageError::TooLarge {
                what: what.to_owned(),
                size,
                max: MAX_MANIFEST_SIZE,
            });
        }
        Ok(self.content.read_all(digest, MAX_MANIFEST_SIZE)?)
    }
}

fn check_size(digest: &Digest, expected: u64, actual: u64) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::SizeMismatch {
            digest: digest.clone(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    fn desc(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor::new(
            MediaType::from(media_type),
            data.len() as u64,
            oci_digest(&Digest::of(data)).unwrap(),
        )
    }

    #[test]
    fn labels_are_numbered_per_kind() {
        let children = [
            desc(media::OCI_CONFIG, b"config"),
            desc(media::OCI_LAYER_GZIP, b"l0"),
            desc("application/vnd.in-toto+json", b"other"),
            desc(media::OCI_LAYER, b"l1"),
        ];
        let labels = child_gc_labels(&children);
        assert_eq!(labels.len(), 4);
        assert_eq!(
            labels["containerd.io/gc.ref.content.config"],
            Digest::of(b"config").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.l.0"],
            Digest::of(b"l0").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.l.1"],
            Digest::of(b"l1").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.0"],
            Digest::of(b"other").to_string()
        );
        let index_children = [
            desc(media::OCI_MANIFEST, b"m0"),
            desc(media::OCI_INDEX, b"i1"),
        ];
        let labels = child_gc_labels(&index_children);
        assert_eq!(
            labels["containerd.io/gc.ref.content.m.0"],
            Digest::of(b"m0").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.m.1"],
            Digest::of(b"i1").to_string()
        );
    }

    #[test]
    fn documents_must_match_their_kind() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(parse_index(index, "x").is_ok());
        assert!(parse_manifest(index, "x").is_err());
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},
            "layers":[]}"#;
        assert!(parse_manifest(manifest, "x").is_ok());
        let err = parse_index(manifest, "index.json").unwrap_err();
        assert!(err.to_string().starts_with("index.json: "), "{err}");
        assert!(parse_index(b"{", "x").is_err());
    }
}
