//! Unpacking an image from an OCI layout with tools that are not Strata, to
//! get the reference tree a snapshotter's mount is compared with.
//!
//! * [`reference_unpack`] runs `umoci unpack` (Debian's umoci, as root), the
//!   OCI reference implementation of layer application.
//! * [`gnu_tar_unpack`] extracts each layer with GNU tar after applying the
//!   layer's OCI whiteouts itself: `.wh.<name>` deletes `<name>` from the
//!   layers below, `.wh..wh..opq` empties its directory, and an entry whose
//!   kind differs from what lies below (file over directory, directory over
//!   file) replaces it. Whiteouts of a layer never touch that layer's own
//!   entries, so all of a layer's deletions happen before it is extracted.
//!
//! Both need root: owners, devices and `security.*` xattrs are restored.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, ImageIndexBuilder, ImageManifest,
    MediaType,
};

use super::{Error, Result};
use crate::digest_hex;
use crate::layer::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Unpacks an image of `layout` with `umoci unpack` into the bundle
/// directory `bundle` (which must not exist yet) and returns its `rootfs`.
///
/// `tag_or_digest` is the image's `org.opencontainers.image.ref.name` in
/// the layout's `index.json`, or its manifest digest (`sha256:…`). umoci 0.4
/// selects images by name only, so for a digest it is given a view of the
/// layout beside the bundle (`<bundle>.layout`: the same blobs, through a
/// symlink, and an `index.json` naming that manifest), removed afterwards.
pub fn reference_unpack(layout: &Path, tag_or_digest: &str, bundle: &Path) -> Result<PathBuf> {
    if !tag_or_digest.starts_with("sha256:") {
        umoci_unpack(layout, tag_or_digest, bundle)?;
        return Ok(bundle.join("rootfs"));
    }
    let mut view = bundle.as_os_str().to_owned();
    view.push(".layout");
    let view = PathBuf::from(view);
    fs::create_dir_all(&view).map_err(Error::io(&view))?;
    let result = write_digest_view(layout, tag_or_digest, &view)
        .and_then(|()| umoci_unpack(&view, VIEW_REF_NAME, bundle));
    fs::remove_dir_all(&view).map_err(Error::io(&view))?;
    result.map(|()| bundle.join("rootfs"))
}

/// The name the manifest gets in a layout view made for a digest.
const VIEW_REF_NAME: &str = "by-digest";

fn umoci_unpack(layout: &Path, ref_name: &str, bundle: &Path) -> Result<()> {
    let image = format!("{}:{ref_name}", layout.display());
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(&image)
        .arg(bundle))
}

/// Fills `view` with `oci-layout`, a `blobs` symlink to `layout`'s blobs and
/// an `index.json` naming the manifest `digest` [`VIEW_REF_NAME`].
fn write_digest_view(layout: &Path, digest: &str, view: &Path) -> Result<()> {
    let blobs = fs::canonicalize(layout.join("blobs")).map_err(Error::io(layout))?;
    let manifest_path = blobs.join("sha256").join(digest_hex(digest));
    let size = fs::metadata(&manifest_path)
        .map_err(Error::io(&manifest_path))?
        .len();
    let manifest = ImageManifest::from_file(&manifest_path).map_err(|e| Error::Layout {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    let media_type = manifest
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest);
    std::os::unix::fs::symlink(&blobs, view.join("blobs")).map_err(Error::io(view))?;
    let oci_layout = layout.join("oci-layout");
    fs::copy(&oci_layout, view.join("oci-layout")).map_err(Error::io(&oci_layout))?;
    let digest = Digest::from_str(digest).map_err(|e| Error::Layout {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    let mut descriptor = Descriptor::new(media_type, size, digest);
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        VIEW_REF_NAME.to_owned(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(crate::Error::from)?;
    let path = view.join("index.json");
    fs::write(&path, crate::canonical_json(&index)?).map_err(Error::io(&path))
}

/// Extracts the layers of `<layout>:<ref_name>` in order into `dest`
/// (created if missing) with GNU tar, applying OCI whiteouts between layers.
///
/// Layer entries below a symlink are refused (they would make the
/// whiteout step follow the link); images written by this crate have none.
pub fn gnu_tar_unpack(layout: &Path, ref_name: &str, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).map_err(Error::io(dest))?;
    for (blob, gzip) in layer_blobs(layout, ref_name)? {
        apply_whiteouts(&blob, gzip, dest)?;
        let mut tar = Command::new("tar");
        tar.arg("--extract")
            .arg("--file")
            .arg(&blob)
            .arg("--directory")
            .arg(dest);
        if gzip {
            tar.arg("--gzip");
        }
        tar.args([
            "--same-permissions",
            "--same-owner",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--exclude=.wh.*",
        ]);
        run(&mut tar)?;
    }
    Ok(())
}

/// The layer blobs of the image named `ref_name`, bottom first, with
/// whether each is gzip-compressed.
fn layer_blobs(layout: &Path, ref_name: &str) -> Result<Vec<(PathBuf, bool)>> {
    let index_path = layout.join("index.json");
    let invalid = |path: &Path, reason: String| Error::Layout {
        path: path.to_path_buf(),
        reason,
    };
    let index =
        ImageIndex::from_file(&index_path).map_err(|e| invalid(&index_path, e.to_string()))?;
    let descriptor = index
        .manifests()
        .iter()
        .find(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .map(String::as_str)
                == Some(ref_name)
        })
        .ok_or_else(|| invalid(&index_path, format!("no manifest named {ref_name:?}")))?;
    let blob = |digest: &str| layout.join("blobs").join("sha256").join(digest_hex(digest));
    let manifest_path = blob(descriptor.digest().as_ref());
    let manifest = ImageManifest::from_file(&manifest_path)
        .map_err(|e| invalid(&manifest_path, e.to_string()))?;
    manifest
        .layers()
        .iter()
        .map(|layer| {
            let media_type = layer.media_type().to_string();
            let path = blob(layer.digest().as_ref());
            if media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") {
                Ok((path, true))
            } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
                Ok((path, false))
            } else {
                Err(invalid(
                    &path,
                    format!("unsupported layer media type {media_type}"),
                ))
            }
        })
        .collect()
}

/// Deletes what the layer at `blob` whites out, and whatever its entries
/// replace with a different kind, from the tree at `dest`.
fn apply_whiteouts(blob: &Path, gzip: bool, dest: &Path) -> Result<()> {
    let file = fs::File::open(blob).map_err(Error::io(blob))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let bad = |reason: String| Error::Layout {
        path: blob.to_path_buf(),
        reason,
    };
    let mut replaced = Vec::new();
    for entry in archive.entries().map_err(Error::io(blob))? {
        let entry = entry.map_err(Error::io(blob))?;
        let raw = entry.path().map_err(Error::io(blob))?.into_owned();
        let path = relative(&raw)
            .ok_or_else(|| bad(format!("entry {} escapes the root", raw.display())))?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        if below_symlink(dest, parent)? {
            return Err(bad(format!(
                "entry {} lies below a symlink",
                path.display()
            )));
        }
        if name == OPAQUE_MARKER {
            let dir = dest.join(parent);
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                for child in fs::read_dir(&dir).map_err(Error::io(&dir))? {
                    remove(&child.map_err(Error::io(&dir))?.path())?;
                }
            }
        } else if let Some(deleted) = name.strip_prefix(WHITEOUT_PREFIX) {
            remove(&dest.join(parent).join(deleted))?;
        } else {
            replaced.push((path, entry.header().entry_type().is_dir()));
        }
    }
    for (path, is_dir) in replaced {
        let target = dest.join(&path);
        if let Ok(meta) = fs::symlink_metadata(&target)
            && !(is_dir && meta.is_dir())
        {
            remove(&target)?;
        }
    }
    Ok(())
}

/// `raw` without leading `/` or `./`; `None` if it has `..` or is empty.
fn relative(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Whether some existing ancestor directory `dir` (relative to `root`) is a symlink.
fn below_symlink(root: &Path, dir: &Path) -> Result<bool> {
    let mut current = root.to_path_buf();
    for component in dir.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(true),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(Error::Io {
                    path: current,
                    source,
                });
            }
        }
    }
    Ok(false)
}

/// Removes `path` whatever it is; nothing to do if it does not exist.
fn remove(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => Err(error),
    };
    result.map_err(Error::io(path))
}

/// Runs `command`, failing with its status and standard error.
fn run(command: &mut Command) -> Result<()> {
    let line = format!("{command:?}");
    let output = command.output().map_err(|source| Error::Command {
        command: line.clone(),
        status: format!("could not start: {source}"),
        stderr: String::new(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    Err(Error::Command {
        command: line,
        status: output.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}
