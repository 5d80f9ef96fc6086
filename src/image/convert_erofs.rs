//! Converting a layer to a native EROFS layer (`strata convert --erofs`), as containerd
//! 2.x's EROFS converter does it: the layer's tar is turned into an EROFS image by
//! [`strata_formats::erofs::build_from_tar`] (OCI whiteouts become overlay whiteouts, as
//! `mkfs.erofs --tar=f --aufs` makes them; file data not inlined, as containerd's
//! `-Enoinline_data`; 4 KiB blocks; the volume UUID derived from the layer's diffID, so
//! the same layer always gives the same bytes), stored uncompressed with media type
//! `application/vnd.erofs.layer.v1`. The blob is its own uncompressed form, so its digest
//! becomes the layer's diffID, and `erofs` joins the
//! platform's `os.features` (in the config and the index).
//!
//! The tar is written by [`super::unpack_erofs::layer_to_erofs`] (which checks the
//! config's diffID as it streams) into an unnamed temporary file in the Strata root
//! (nothing is left by a crash), then ingested. An EROFS source layer is validated and
//! passed through.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use oci_spec::image::Descriptor;
use serde_json::Value;
use strata_formats::erofs;
use strata_formats::{Digest, Digester};

use super::convert::{ConvertOptions, LayerOutcome, LayerResult, descriptor};
use super::error::ImageError;
use super::media;
use super::walk::descriptor_digest;
use crate::content::LABEL_UNCOMPRESSED;
use crate::store::Store;

/// The `os.features` entry containerd adds to EROFS images' platforms.
pub const EROFS_OS_FEATURE: &str = "erofs";

/// Converts `layer` (whose uncompressed digest the config says is `diff_id`) to EROFS.
pub(super) fn convert_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    opts: &ConvertOptions,
) -> Result<LayerResult, ImageError> {
    let source = descriptor_digest(layer)?;
    if media::is_erofs_layer(layer.media_type().as_ref()) {
        let blob = store.content().reader_at(&source)?;
        erofs::validate(&blob).map_err(|e| ImageError::invalid(format!("layer {source}"), e))?;
        let outcome = LayerOutcome {
            source: source.clone(),
            converted: source,
            size: layer.size(),
            toc_digest: String::new(),
            passed_through: true,
            missed_prioritized: Vec::new(),
        };
        return Ok((layer.clone(), None, outcome));
    }
    let what = || format!("layer {source}");
    let blob = super::convert::source_blob(store, layer, &source, opts)?;
    let file = tempfile::tempfile_in(store.root())
        .map_err(|e| ImageError::io(format!("{}: a temporary file", what()), e))?;
    let (file, _) = super::unpack_erofs::layer_to_erofs(
        blob,
        diff_id,
        diff_id,
        std::io::BufWriter::new(file),
        &what(),
    )?;
    let mut file = file
        .into_inner()
        .map_err(|e| ImageError::io(what(), e.into_error()))?;

    // Hash the image, then ingest it verified against that digest.
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ImageError::io(what(), e))?;
    let mut digester = Digester::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ImageError::io(what(), e))?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    let (blob_digest, blob_size) = (digester.digest(), digester.len());
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ImageError::io(what(), e))?;
    // The same layer in two platforms' manifests converts to the same bytes: store once.
    if !store.content().exists(&blob_digest) {
        ingest(store, &source, &mut file, &blob_digest, blob_size)?;
    }
    let mut desc = descriptor(media::EROFS_LAYER, &blob_digest, blob_size)?;
    // Keep the source layer's own annotations, except those describing its old encoding.
    let annotations: std::collections::HashMap<String, String> = layer
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with("containerd.io/snapshot/stargz")
                && !k.starts_with("io.containers.estargz")
                && !k.starts_with("io.github.containers.zstd-chunked")
                && !k.starts_with("io.strata.")
        })
        .collect();
    if !annotations.is_empty() {
        desc.set_annotations(Some(annotations));
    }
    let outcome = LayerOutcome {
        source: source.clone(),
        converted: blob_digest.clone(),
        size: blob_size,
        toc_digest: String::new(),
        passed_through: false,
        missed_prioritized: Vec::new(),
    };
    Ok((desc, Some(blob_digest), outcome))
}

/// Stores the image in `file` as blob `digest` (verified on commit).
fn ingest(
    store: &Store,
    source: &Digest,
    file: &mut std::fs::File,
    digest: &Digest,
    size: u64,
) -> Result<(), ImageError> {
    let reference = format!(
        "convert-erofs-{source}-{}",
        crate::metadata::unique_suffix()
    );
    let mut writer = match store.content().writer(&reference, Some(size), Some(digest)) {
        Ok(w) => w,
        Err(crate::content::ContentError::AlreadyExists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = std::io::copy(file, &mut writer) {
        drop(writer);
        let _ = store.content().abort(&reference);
        return Err(ImageError::io(
            format!("layer {source}: storing its EROFS image"),
            e,
        ));
    }
    let labels = BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), digest.to_string())]);
    match writer.commit(Some(size), Some(digest), labels) {
        Ok(_) | Err(crate::content::ContentError::AlreadyExists(_)) => Ok(()),
        Err(e) => {
            let _ = store.content().abort(&reference);
            Err(e.into())
        }
    }
}

/// Checks the EROFS layer blob `digest`: its bytes against the digest, then its image
/// ([`erofs::validate`]). Returns the image's inode count, or why it is invalid.
pub(super) fn check_layer(store: &Store, digest: &Digest) -> Result<usize, String> {
    let mut file = std::fs::File::open(store.content().blob_path(digest))
        .map_err(|e| format!("opening the blob: {e}"))?;
    let mut digester = Digester::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("reading the blob: {e}"))?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    if digester.digest() != *digest {
        return Err(format!("the blob's bytes hash to {}", digester.digest()));
    }
    let blob = store
        .content()
        .reader_at(digest)
        .map_err(|e| e.to_string())?;
    let summary = erofs::validate(&blob).map_err(|e| format!("invalid EROFS image: {e}"))?;
    Ok(usize::try_from(summary.inodes).unwrap_or(usize::MAX))
}

/// Adds `erofs` to the `os.features` of a config or of an index entry's platform (as
/// containerd's converter does).
pub(super) fn add_erofs_os_feature(config: &mut Value) {
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    let features = obj
        .entry("os.features")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = features {
        if !list.iter().any(|f| f == EROFS_OS_FEATURE) {
            list.push(Value::from(EROFS_OS_FEATURE));
        }
    } else {
        *features = Value::Array(vec![Value::from(EROFS_OS_FEATURE)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_features_get_erofs_once() {
        let mut config = serde_json::json!({"architecture": "amd64", "os": "linux"});
        add_erofs_os_feature(&mut config);
        add_erofs_os_feature(&mut config);
        assert_eq!(config["os.features"], serde_json::json!(["erofs"]));
    }
}
