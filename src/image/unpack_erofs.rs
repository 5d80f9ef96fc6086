//! Layers as EROFS images: one streaming pass from a layer blob to an EROFS image, shared
//! by the unpacker and `strata convert --erofs`.
//!
//! When the active snapshot is the erofs snapshotter's
//! ([`strata_snapshotters::erofs::staged_image_path`]), the unpacker writes the layer
//! straight into the snapshot's `layer.erofs`, and Commit takes that image as the layer:
//! one pass, no directory tree, no `mkfs.erofs`.
//!
//! - A tar layer (gzip, zstd or plain) is decompressed and hashed on a helper thread
//!   ([`read_ahead`]) while [`strata_formats::erofs::build_from_tar`] writes the image (OCI
//!   whiteouts become overlay whiteouts as `mkfs.erofs --tar=f --aufs` makes them; file
//!   data not inlined, 4 KiB blocks, the volume UUID derived from the blob's digest when
//!   unpacking, as containerd's EROFS differ does, and from the diffID when converting, as
//!   its converter does). The stream must hash to the config's diffID.
//! - A native EROFS layer (`application/vnd.erofs.layer.v1`, e.g. from `strata convert
//!   --erofs`) is untrusted input the kernel will mount: it is copied as it
//!   is, and the copy validated ([`strata_formats::erofs::validate`]) before anything
//!   mounts it. Its diffID is its digest.
//!
//! The image is written under a temporary name, synced, and renamed into place only once
//! it is complete and checked.

use std::io::{Read, Seek, Write};
use std::path::Path;

use strata_formats::erofs::{self, BuildOptions};
use strata_formats::tar_layer::read_ahead;
use strata_formats::{Digest, ErrorKind, ReadAtCursor};

use super::error::ImageError;
use super::media;
use super::unpack::LayerPlan;
use crate::store::Store;

/// Streams the layer blob `blob` (compressed or not) into an EROFS image written to
/// `out`; the uncompressed stream must hash to `diff_id`. The volume UUID is derived from
/// `uuid_digest` (containerd's differ takes the blob's digest, its converter the diffID).
/// Returns `out` and the uncompressed size. Errors name `what`.
pub(super) fn layer_to_erofs<W: Write + Seek>(
    blob: impl Read + Send,
    diff_id: &Digest,
    uuid_digest: &Digest,
    out: W,
    what: &str,
) -> Result<(W, u64), ImageError> {
    let (out, actual, size) = tar_to_erofs(blob, uuid_digest, out, what)?;
    if actual != *diff_id {
        return Err(ImageError::Unpack {
            context: String::new(),
            kind: ErrorKind::DataCorrupt,
            reason: format!(
                "{what}: uncompressed digest {actual} does not match the config's diffID {diff_id}"
            ),
        });
    }
    Ok((out, size))
}

/// Streams the layer blob `blob` (compressed or not) into an EROFS image written to
/// `out`, as [`layer_to_erofs`] does, for a caller that verifies the layer itself.
/// Returns `out`, the uncompressed stream's digest (the diffID) and its size.
pub(crate) fn tar_to_erofs<W: Write + Seek>(
    blob: impl Read + Send,
    uuid_digest: &Digest,
    out: W,
    what: &str,
) -> Result<(W, Digest, u64), ImageError> {
    let build = BuildOptions {
        uuid: erofs::layer_uuid(&uuid_digest.to_string()),
        inline_data: false,
        ..BuildOptions::default()
    };
    let (out, actual, size) = std::thread::scope(|scope| {
        let (mut stream, helper) = read_ahead(scope, blob, None);
        let built = erofs::build_from_tar(&mut stream, out, &build)
            .map_err(|e| ImageError::invalid(what, e))
            // The tar reader stops at the end-of-archive blocks; what follows still
            // counts in the diffID, so the helper must see the stream to its end.
            .and_then(|(out, _)| {
                std::io::copy(&mut stream, &mut std::io::sink())
                    .map(|_| out)
                    .map_err(|e| ImageError::io(format!("{what}: reading the layer"), e))
            });
        drop(stream);
        let hashed = helper.join();
        let out = built?;
        match hashed {
            Ok(Ok((digest, size))) => Ok((out, digest, size)),
            Ok(Err(e)) => Err(ImageError::io(format!("{what}: reading the layer"), e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    Ok((out, actual, size))
}

/// Writes `layer` as the EROFS image `image`; returns the uncompressed size.
pub(super) fn unpack_to_image(
    store: &Store,
    layer: &LayerPlan,
    image: &Path,
) -> Result<u64, ImageError> {
    let partial = image.with_extension("erofs.unpacking");
    let result = write_image(store, layer, image, &partial);
    result.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        // Named once, as the applier's errors are.
        ImageError::Unpack {
            context: format!("unpack layer {}", layer.digest),
            kind: e.kind(),
            reason: e.to_string(),
        }
    })
}

fn write_image(
    store: &Store,
    layer: &LayerPlan,
    image: &Path,
    partial: &Path,
) -> Result<u64, ImageError> {
    let what = format!("write {}", image.display());
    // Read back too: a native layer's copy is validated.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(partial)
        .map_err(|e| ImageError::io(format!("create {}", partial.display()), e))?;
    let (file, size) = if media::is_erofs_layer(layer.descriptor.media_type().as_ref()) {
        copy_native_layer(store, layer, file, &what)?
    } else {
        let blob = ReadAtCursor::new(store.content().reader_at(&layer.digest)?);
        // The UUID as containerd's EROFS differ derives it: from the blob's digest.
        let (file, size) = layer_to_erofs(
            blob,
            &layer.diff_id,
            &layer.digest,
            std::io::BufWriter::new(file),
            &what,
        )?;
        let file = file
            .into_inner()
            .map_err(|e| ImageError::io(what.clone(), e.into_error()))?;
        (file, size)
    };
    // Commit empties nothing here, but the metadata it records must not name an image
    // that a power loss could leave half-written.
    file.sync_all()
        .map_err(|e| ImageError::io(what.clone(), e))?;
    std::fs::rename(partial, image).map_err(|e| ImageError::io(what, e))?;
    Ok(size)
}

/// A native EROFS layer, validated, copied into `file`.
fn copy_native_layer(
    store: &Store,
    layer: &LayerPlan,
    mut file: std::fs::File,
    what: &str,
) -> Result<(std::fs::File, u64), ImageError> {
    let media_type = layer.descriptor.media_type().to_string();
    if media_type != media::EROFS_LAYER {
        return Err(ImageError::Unsupported(format!(
            "layer {}: media type {media_type}: only uncompressed EROFS layers ({}) are supported",
            layer.digest,
            media::EROFS_LAYER
        )));
    }
    // Uncompressed: the blob is the layer, so the config must name it as its diffID.
    if layer.diff_id != layer.digest {
        return Err(ImageError::Unpack {
            context: String::new(),
            kind: ErrorKind::DataCorrupt,
            reason: format!(
                "EROFS layer {}: the config's diffID {} is not its digest",
                layer.digest, layer.diff_id
            ),
        });
    }
    let mut source = std::fs::File::open(store.content().blob_path(&layer.digest))
        .map_err(|e| ImageError::io(format!("open layer {}", layer.digest), e))?;
    let size = copy_validated(&mut source, &mut file, what)?;
    Ok((file, size))
}

/// Copies the native EROFS image `source` into `file` (opened for reading and writing)
/// and validates the copy, which is what the kernel will mount. Returns its size.
pub(crate) fn copy_validated(
    source: &mut impl Read,
    file: &mut std::fs::File,
    what: &str,
) -> Result<u64, ImageError> {
    let size = std::io::copy(source, file).map_err(|e| ImageError::io(what, e))?;
    let copy = file
        .try_clone()
        .and_then(strata_formats::FileReadAt::new)
        .map_err(|e| ImageError::io(what, e))?;
    // The caller names the layer.
    erofs::validate(&copy).map_err(|e| ImageError::invalid("invalid EROFS image", e))?;
    Ok(size)
}

/// Whether the blob `blob` starts as an EROFS image does (its superblock's magic at byte
/// 1024): a native EROFS layer rather than a tar, when nothing says its media type.
pub(crate) fn looks_like_erofs(blob: &impl strata_formats::ReadAt) -> bool {
    let mut magic = [0u8; 4];
    blob.read_exact_at(&mut magic, 1024).is_ok() && u32::from_le_bytes(magic) == 0xE0F5_E1E2
}
