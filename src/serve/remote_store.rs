//! The local-content layer provider (`[remote] local_content = true`): a layer whose blob
//! is already in Strata's own content store (`<root>/content`, e.g. put there by `strata
//! pull --no-unpack`) is applied straight into the snapshot that containerd's unpacker
//! prepares, and committed under its chainID by the snapshotter (the remote-snapshot
//! protocol, [`strata_snapshotters::remote`]). containerd then neither downloads nor
//! unpacks it.
//!
//! The layer is identified by the digest label `ctr-remote image rpull` or CRI put on the
//! Prepare. Blobs in the content store were verified against their digest on ingest; the
//! applied stream is verified against the chainID: a base layer's diffID is its chainID,
//! and an upper layer's chainID must equal `sha256(parent chainID + " " + diffID)`. A
//! layer that cannot be verified so is declined, and containerd unpacks it as usual.
//!
//! For the erofs snapshotter, which offers an image path, the blob is written as the
//! layer's `layer.erofs` instead: a tar streamed through Strata's EROFS writer (as `strata
//! pull --snapshotter erofs` does), a native EROFS blob copied and validated before any
//! mount. The same chainID check applies.
//!
//! Only blob files are read (no content metadata), so the daemon never holds Strata's
//! metadata database and `strata pull` can run beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use strata_formats::{Digest, ReadAt, ReadAtCursor};
use strata_snapshotters::SnapshotError;
use strata_snapshotters::apply::{ApplyOptions, apply_layer};
use strata_snapshotters::remote::{LayerRequest, LayerTarget, Provision, RemoteLayers};

use crate::content::LocalContentStore;
use crate::content::{BlobRecord, LabelStore};
use crate::image::ImageError;
use crate::image::unpack_erofs::{copy_validated, looks_like_erofs, tar_to_erofs};

/// The provider's name in log lines.
pub const LOCAL_CONTENT: &str = "local-content";

/// Provides layers from the content store of a Strata root.
#[derive(Debug, Clone)]
pub struct LocalContentLayers {
    content: LocalContentStore,
}

/// A label store for a reader that never looks at labels: the provider only opens blob
/// files, and must not take the metadata database (held by `strata pull` and friends).
struct NoLabels;

impl LabelStore for NoLabels {
    fn get(&self, _digest: &Digest) -> Result<Option<BlobRecord>, String> {
        Ok(None)
    }

    fn put(&self, digest: &Digest, _record: &BlobRecord) -> Result<(), String> {
        Err(format!(
            "blob {digest}: the local-content layer provider reads blobs only"
        ))
    }

    fn remove(&self, digest: &Digest) -> Result<(), String> {
        Err(format!(
            "blob {digest}: the local-content layer provider reads blobs only"
        ))
    }
}

impl LocalContentLayers {
    /// A provider reading blobs under `root/content` (the Strata root's content store).
    ///
    /// # Errors
    ///
    /// Internal when the content directories cannot be created.
    pub fn open(root: &Path) -> Result<LocalContentLayers, SnapshotError> {
        let dir: PathBuf = root.join("content");
        let content = LocalContentStore::open(&dir, Arc::new(NoLabels)).map_err(|e| {
            SnapshotError::internal(format!("local-content layers: open {}: {e}", dir.display()))
        })?;
        Ok(LocalContentLayers { content })
    }
}

impl RemoteLayers for LocalContentLayers {
    fn name(&self) -> &str {
        LOCAL_CONTENT
    }

    fn provide(
        &self,
        layer: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        let declined = |reason: String| Ok(Provision::Declined(reason));
        let Some(digest_text) = layer.layer_digest.as_deref() else {
            return declined("the Prepare names no layer digest (no cri.layer-digest or remote/stargz.digest label)".into());
        };
        let Ok(digest) = digest_text.parse::<Digest>() else {
            return declined(format!("layer digest {digest_text:?} is not a digest"));
        };
        let Ok(chain_id) = layer.chain_id.parse::<Digest>() else {
            return declined(format!("chainID {:?} is not a digest", layer.chain_id));
        };
        let parent_chain = match (&layer.parent_chain_id, layer.has_parent) {
            (_, false) => None,
            (Some(p), true) => match p.parse::<Digest>() {
                Ok(p) => Some(p),
                Err(_) => return declined(format!("parent chainID {p:?} is not a digest")),
            },
            (None, true) => {
                return declined(
                    "the parent snapshot has no chainID label: the layer could not be verified"
                        .into(),
                );
            }
        };
        if !self.content.exists(&digest) {
            return declined(format!("blob {digest} is not in Strata's content store"));
        }
        let context = |what: &str, e: &dyn std::fmt::Display| {
            SnapshotError::internal(format!("layer {digest} for {chain_id}: {what}: {e}"))
        };
        let blob = self
            .content
            .reader_at(&digest)
            .map_err(|e| context("open blob", &e))?;
        let started = Instant::now();
        let (diff_id, size) = match target.image {
            Some(image) => write_image(blob, &digest, image).map_err(|e| context("write", &e))?,
            None => {
                let mut options = ApplyOptions::new(digest.to_string(), target.whiteouts);
                options.parents = target.parents.to_vec();
                let report = apply_layer(ReadAtCursor::new(blob), target.fs, &options)
                    .map_err(|e| context("apply", &e))?;
                (report.diff_id, report.size)
            }
        };
        // A base layer's chainID is its diffID; an upper one's hashes its parent's with it.
        let computed = match &parent_chain {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        if computed != chain_id {
            return Err(context(
                "verify",
                &match &parent_chain {
                    None => format!("its diffID {diff_id} is not the chainID"),
                    Some(parent) => {
                        format!("diffID {diff_id} over parent {parent} gives chainID {computed}")
                    }
                },
            ));
        }
        tracing::info!(
            provider = LOCAL_CONTENT,
            layer = %digest,
            chain_id = %chain_id,
            bytes = size,
            erofs = target.image.is_some(),
            millis = started.elapsed().as_millis() as u64,
            "provided layer from the local content store"
        );
        Ok(Provision::Provided)
    }
}

/// Writes the layer blob `blob` as the EROFS image `image` (for the erofs snapshotter):
/// a tar layer streamed through Strata's EROFS writer (the UUID derived from the blob's
/// digest, as unpacking does), a native EROFS layer copied and validated (its diffID is
/// its digest). Returns the diffID and the uncompressed size; the caller verifies them.
/// The image is synced; on error a partial file may be left, which the snapshotter
/// removes with its directory.
fn write_image(
    blob: impl ReadAt + 'static,
    digest: &Digest,
    image: &Path,
) -> Result<(Digest, u64), ImageError> {
    let what = format!("write {}", image.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(|e| ImageError::io(what.clone(), e))?;
    let result = if looks_like_erofs(&blob) {
        let size = copy_validated(&mut ReadAtCursor::new(blob), &mut file, &what)?;
        (digest.clone(), size)
    } else {
        let (writer, diff_id, size) = tar_to_erofs(
            ReadAtCursor::new(blob),
            digest,
            std::io::BufWriter::new(&mut file),
            &what,
        )?;
        writer
            .into_inner()
            .map_err(|e| ImageError::io(what.clone(), e.into_error()))?;
        (diff_id, size)
    };
    file.sync_all().map_err(|e| ImageError::io(what, e))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use strata_snapshotters::apply::WhiteoutMode;

    use super::*;

    fn layer(files: &[(&str, &str)]) -> (Vec<u8>, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        let raw = tar.into_inner().unwrap();
        let diff_id = Digest::of(&raw);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        (gz.finish().unwrap(), diff_id)
    }

    fn put_blob(root: &Path, blob: &[u8]) -> Digest {
        let digest = Digest::of(blob);
        let dir = root.join("content/blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(digest.encoded()), blob).unwrap();
        digest
    }

    fn request(chain: &Digest, digest: Option<&Digest>, parent: Option<&Digest>) -> LayerRequest {
        LayerRequest {
            chain_id: chain.to_string(),
            parent_chain_id: parent.map(Digest::to_string),
            has_parent: parent.is_some(),
            layer_digest: digest.map(Digest::to_string),
            image_ref: None,
            image_layers: Vec::new(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn applies_blobs_it_has_and_verifies_the_chain() {
        let root = tempfile::tempdir().unwrap();
        let provider = LocalContentLayers::open(root.path()).unwrap();
        let (base, base_diff) = layer(&[("a.txt", "a")]);
        let (upper, upper_diff) = layer(&[("b.txt", "b")]);
        let base_digest = put_blob(root.path(), &base);
        let upper_digest = put_blob(root.path(), &upper);
        let upper_chain = Digest::of(format!("{base_diff} {upper_diff}").as_bytes());
        let whiteouts = WhiteoutMode::Overlay { userxattr: false };
        let fs = |name: &str| {
            let p = root.path().join(name);
            std::fs::create_dir(&p).unwrap();
            p
        };

        let base_fs = fs("base");
        let target = LayerTarget {
            fs: &base_fs,
            parents: &[],
            whiteouts,
            image: None,
        };
        let got = provider
            .provide(&request(&base_diff, Some(&base_digest), None), &target)
            .unwrap();
        assert_eq!(got, Provision::Provided);
        assert_eq!(std::fs::read_to_string(base_fs.join("a.txt")).unwrap(), "a");

        let upper_fs = fs("upper");
        let parents = [base_fs.clone()];
        let target = LayerTarget {
            fs: &upper_fs,
            parents: &parents,
            whiteouts,
            image: None,
        };
        let got = provider
            .provide(
                &request(&upper_chain, Some(&upper_digest), Some(&base_diff)),
                &target,
            )
            .unwrap();
        assert_eq!(got, Provision::Provided);
        assert_eq!(
            std::fs::read_to_string(upper_fs.join("b.txt")).unwrap(),
            "b"
        );

        // The wrong chainID for the blob: an error, whichever way it is checked.
        let wrong = fs("wrong");
        let target = LayerTarget {
            fs: &wrong,
            parents: &[],
            whiteouts,
            image: None,
        };
        assert!(
            provider
                .provide(&request(&upper_chain, Some(&base_digest), None), &target)
                .is_err()
        );
        let target = LayerTarget {
            fs: &wrong,
            parents: &parents,
            whiteouts,
            image: None,
        };
        assert!(
            provider
                .provide(
                    &request(&base_diff, Some(&upper_digest), Some(&base_diff)),
                    &target
                )
                .is_err()
        );
    }

    #[test]
    fn declines_what_it_cannot_provide_or_verify() {
        let root = tempfile::tempdir().unwrap();
        let provider = LocalContentLayers::open(root.path()).unwrap();
        let (base, base_diff) = layer(&[("a.txt", "a")]);
        let fs = root.path().join("fs");
        std::fs::create_dir(&fs).unwrap();
        let target = LayerTarget {
            fs: &fs,
            parents: &[],
            whiteouts: WhiteoutMode::Overlay { userxattr: false },
            image: None,
        };
        let absent = Digest::of(&base);
        let declined = |r: &LayerRequest| {
            matches!(
                provider.provide(r, &target).unwrap(),
                Provision::Declined(_)
            )
        };
        assert!(declined(&request(&base_diff, None, None)));
        assert!(declined(&request(&base_diff, Some(&absent), None)));
        let present = put_blob(root.path(), &base);
        let mut unverifiable = request(&base_diff, Some(&present), None);
        unverifiable.has_parent = true;
        assert!(declined(&unverifiable));
        assert_eq!(std::fs::read_dir(&fs).unwrap().count(), 0);
    }

    #[test]
    fn writes_verified_images_when_the_snapshotter_takes_images() {
        let root = tempfile::tempdir().unwrap();
        let provider = LocalContentLayers::open(root.path()).unwrap();
        let (base, base_diff) = layer(&[("a.txt", "a"), ("dir/b.txt", "b")]);
        let (upper, upper_diff) = layer(&[("c.txt", "c")]);
        let base_digest = put_blob(root.path(), &base);
        let upper_digest = put_blob(root.path(), &upper);
        let upper_chain = Digest::of(format!("{base_diff} {upper_diff}").as_bytes());
        let whiteouts = WhiteoutMode::Overlay { userxattr: false };
        let provide = |name: &str, request: &LayerRequest| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(dir.join("fs")).unwrap();
            let image = dir.join("layer.erofs");
            let target = LayerTarget {
                fs: &dir.join("fs"),
                parents: &[],
                whiteouts,
                image: Some(&image),
            };
            let got = provider.provide(request, &target);
            assert_eq!(
                std::fs::read_dir(dir.join("fs")).unwrap().count(),
                0,
                "{name}: fs is left empty"
            );
            got.map(|p| (p, image))
        };
        let summary = |image: &Path| {
            let file =
                strata_formats::FileReadAt::new(std::fs::File::open(image).unwrap()).unwrap();
            strata_formats::erofs::validate(&file).unwrap()
        };

        let (got, image) = provide("base", &request(&base_diff, Some(&base_digest), None)).unwrap();
        assert_eq!(got, Provision::Provided);
        let s = summary(&image);
        assert_eq!((s.directories, s.files), (2, 2), "{s:?}");

        let (got, image) = provide(
            "upper",
            &request(&upper_chain, Some(&upper_digest), Some(&base_diff)),
        )
        .unwrap();
        assert_eq!(got, Provision::Provided);
        assert_eq!(summary(&image).files, 1);

        // A blob that is not the chainID's layer is refused after the write.
        assert!(provide("wrong", &request(&upper_chain, Some(&base_digest), None)).is_err());

        // A native EROFS layer: copied as it is, validated; its diffID is its digest.
        let native = std::fs::read(root.path().join("base/layer.erofs")).unwrap();
        let native_digest = put_blob(root.path(), &native);
        let (got, image) = provide(
            "native",
            &request(&native_digest, Some(&native_digest), None),
        )
        .unwrap();
        assert_eq!(got, Provision::Provided);
        assert_eq!(std::fs::read(&image).unwrap(), native);

        // One that claims to be EROFS and is not well formed never reaches a mount.
        let mut broken = native.clone();
        broken[1024 + 8..1024 + 12].copy_from_slice(&[0xff; 4]);
        broken.truncate(4096);
        let broken_digest = put_blob(root.path(), &broken);
        let err = provide(
            "broken",
            &request(&broken_digest, Some(&broken_digest), None),
        )
        .unwrap_err();
        assert!(err.to_string().contains("EROFS"), "{err}");
    }
}
