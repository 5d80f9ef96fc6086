//! Unpacking a layer straight into an EROFS image: when the active snapshot is the erofs
//! snapshotter's ([`strata_snapshotters::erofs::staged_image_path`]), the decompressed
//! tar streams through [`strata_formats::erofs::build_from_tar`] into the snapshot's
//! `layer.erofs` (OCI whiteouts become overlay whiteouts as `mkfs.erofs --tar=f --aufs`
//! makes them; file data not inlined, 4 KiB blocks, the UUID derived from the diffID, as
//! containerd's EROFS differ does), and Commit takes that image as the layer: one pass,
//! no directory tree, no `mkfs.erofs`. The tar is hashed as it streams and must match the
//! diffID; the image is written under a temporary name and renamed into place only then.

use std::io::Read;
use std::path::Path;

use strata_formats::erofs::{self, BuildOptions};
use strata_formats::{Digester, ErrorKind, ReadAtCursor, estargz};

use super::error::ImageError;
use super::unpack::LayerPlan;
use crate::store::Store;

/// Writes `layer` as the EROFS image `image`; returns the uncompressed size.
pub(super) fn unpack_to_image(
    store: &Store,
    layer: &LayerPlan,
    image: &Path,
) -> Result<u64, ImageError> {
    let what = || format!("write {}", image.display());
    let blob = store.content().reader_at(&layer.digest)?;
    let tar = estargz::decompress_layer(ReadAtCursor::new(blob))
        .map_err(|e| ImageError::invalid(what(), e))?;
    let mut hashed = HashingRead {
        inner: tar,
        digester: Digester::new(),
    };
    let partial = image.with_extension("erofs.unpacking");
    let file = std::fs::File::create(&partial)
        .map_err(|e| ImageError::io(format!("create {}", partial.display()), e))?;
    let result = (|| {
        let build = BuildOptions {
            uuid: erofs::layer_uuid(&layer.diff_id.to_string()),
            inline_data: false,
            ..BuildOptions::default()
        };
        let (file, _) = erofs::build_from_tar(&mut hashed, std::io::BufWriter::new(file), &build)
            .map_err(|e| ImageError::invalid(what(), e))?;
        // The tar reader stops at the end-of-archive blocks; what follows still counts.
        std::io::copy(&mut hashed, &mut std::io::sink()).map_err(|e| {
            ImageError::io(format!("{}: reading past the archive's end", what()), e)
        })?;
        let actual = hashed.digester.digest();
        if actual != layer.diff_id {
            return Err(ImageError::Unpack {
                context: String::new(),
                kind: ErrorKind::DataCorrupt,
                reason: format!(
                    "uncompressed digest {actual} does not match the config's diffID {}",
                    layer.diff_id
                ),
            });
        }
        let file = file
            .into_inner()
            .map_err(|e| ImageError::io(what(), e.into_error()))?;
        // Commit empties nothing here, but the metadata it records must not name an
        // image that a power loss could leave half-written.
        file.sync_all().map_err(|e| ImageError::io(what(), e))?;
        std::fs::rename(&partial, image).map_err(|e| ImageError::io(what(), e))?;
        Ok(hashed.digester.len())
    })();
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

struct HashingRead<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}
