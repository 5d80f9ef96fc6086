//! [`ArtifactLayout`]: what a manifest's layers become in a directory tree, whatever
//! convention produced it.
//!
//! Each layer is either one file (the blob *is* the file: ModelPack `.raw` layers, ORAS
//! files, Docker Model Runner layers) or a tar to merge into a directory (ModelPack tar
//! layers, ORAS directories with `io.deis.oras.content.unpack=true`, KitOps layers, image
//! layers). Tar layers of these tools carry their own paths in their entries (a packed
//! directory `d` holds `d/…`), so they merge at the root; the entry's `path_prefix` says
//! where. Annotations are untrusted: every path is cleaned ([`clean_path`]) and a layer
//! whose path escapes, duplicates another, or turns a file into a directory is refused,
//! naming the layer and the annotation.

use std::collections::BTreeMap;

use super::manifest::{DOCKER_MANIFEST, Descriptor, Manifest, ManifestError};
use super::path::clean_path;
use super::{docker_model, kitops, modelpack, oras};
use crate::Digest;

/// The OCI image config media type.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The Docker image config media type.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Whether a manifest is a container image or an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A container image: an image config, layers are changesets applied in order.
    Image,
    /// An artifact of this convention.
    Artifact(ArtifactKind),
}

/// The convention an artifact follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// CNCF ModelPack (`application/vnd.cncf.model.*`).
    ModelPack,
    /// Docker Model Runner (`application/vnd.docker.ai.*`).
    DockerModel,
    /// KitOps ModelKit (`application/vnd.kitops.modelkit.*`).
    KitOps,
    /// ORAS, or any other artifact whose files are named by the title annotation.
    Oras,
}

impl std::fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Image => "image",
            Self::Artifact(ArtifactKind::ModelPack) => "modelpack artifact",
            Self::Artifact(ArtifactKind::DockerModel) => "docker model artifact",
            Self::Artifact(ArtifactKind::KitOps) => "kitops artifact",
            Self::Artifact(ArtifactKind::Oras) => "oras artifact",
        })
    }
}

/// How a tar layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// One layer's place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The blob is the file at `path` (cleaned, relative).
    RawFile {
        /// Where the file appears.
        path: String,
        /// The layer.
        descriptor: Descriptor,
    },
    /// The blob is a tar whose entries merge into the directory `path_prefix` (`""`: the
    /// root).
    Tar {
        /// The directory the entries merge into.
        path_prefix: String,
        /// The layer.
        descriptor: Descriptor,
        /// Its compression.
        compression: Compression,
    },
}

impl Entry {
    /// The layer this entry is.
    pub fn descriptor(&self) -> &Descriptor {
        match self {
            Self::RawFile { descriptor, .. } | Self::Tar { descriptor, .. } => descriptor,
        }
    }

    /// Whether a reader reads this blob by byte range (a raw file or an uncompressed tar),
    /// which is what a chunk index is for.
    pub fn is_range_readable(&self) -> bool {
        matches!(
            self,
            Self::RawFile { .. }
                | Self::Tar {
                    compression: Compression::None,
                    ..
                }
        )
    }
}

/// How [`ArtifactLayout::from_manifest`] treats layers it does not know.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayoutOptions {
    /// List unknown layers in [`ArtifactLayout::skipped`] instead of failing.
    pub skip_unknown: bool,
}

/// A manifest's layers as files and directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactLayout {
    /// Image or artifact, and which convention.
    pub kind: ManifestKind,
    /// The layers in manifest order, each as a file or a tar to merge.
    pub entries: Vec<Entry>,
    /// Layers of unknown media types (only with [`LayoutOptions::skip_unknown`]).
    pub skipped: Vec<Descriptor>,
}

/// Why a manifest has no layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The bytes are not a manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An annotated path is unusable (escapes, absolute, empty, NUL, too long).
    #[error("layer {digest}: annotation {annotation}={path:?}: {reason}")]
    BadPath {
        /// The layer.
        digest: Digest,
        /// The annotation key.
        annotation: String,
        /// The path as annotated (untrusted).
        path: String,
        /// What is wrong with it.
        reason: super::path::PathError,
    },
    /// A file layer names no path.
    #[error("layer {digest} ({media_type}) has no path annotation ({annotation})")]
    NoPath {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// The annotation(s) looked for.
        annotation: String,
    },
    /// Two layers claim one path, or one's file is the other's directory.
    #[error(
        "layer {digest}: annotation {annotation}: path {path:?} collides with {other:?} of layer {other_digest}"
    )]
    Duplicate {
        /// The later layer.
        digest: Digest,
        /// The annotation key that named its path.
        annotation: String,
        /// Its (cleaned) path.
        path: String,
        /// The earlier layer.
        other_digest: Digest,
        /// The earlier layer's path.
        other: String,
    },
    /// A layer of a media type no known convention uses.
    #[error(
        "layer {digest}: unknown media type {media_type:?} (skip such layers with skip_unknown)"
    )]
    UnknownMediaType {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
}

/// Whether `m` is an image or an artifact, and of which convention.
pub fn classify(m: &Manifest) -> ManifestKind {
    let config = m.config.media_type.as_str();
    let artifact_type = m.artifact_type.as_deref();
    if artifact_type.is_none()
        && (config == OCI_IMAGE_CONFIG
            || config == DOCKER_IMAGE_CONFIG
            || m.media_type.as_deref() == Some(DOCKER_MANIFEST))
    {
        return ManifestKind::Image;
    }
    let kind = if artifact_type == Some(modelpack::ARTIFACT_TYPE) || config == modelpack::CONFIG {
        ArtifactKind::ModelPack
    } else if config == docker_model::CONFIG {
        ArtifactKind::DockerModel
    } else if config == kitops::CONFIG {
        ArtifactKind::KitOps
    } else {
        ArtifactKind::Oras
    };
    ManifestKind::Artifact(kind)
}

impl ArtifactLayout {
    /// Parses manifest JSON (untrusted, at most [`MAX_MANIFEST_SIZE`](super::manifest::MAX_MANIFEST_SIZE)
    /// bytes) and lays out its layers.
    pub fn parse(bytes: &[u8], opts: LayoutOptions) -> Result<Self, LayoutError> {
        Self::from_manifest(&Manifest::parse(bytes)?, opts)
    }

    /// Lays out `m`'s layers: each one a file or a tar, paths cleaned and checked.
    pub fn from_manifest(m: &Manifest, opts: LayoutOptions) -> Result<Self, LayoutError> {
        let kind = classify(m);
        let mut entries = Vec::with_capacity(m.layers.len());
        let mut skipped = Vec::new();
        let mut paths = PathSet::default();
        for layer in &m.layers {
            match entry_for(layer, kind)? {
                Some((entry, annotation)) => {
                    if let Entry::RawFile { path, descriptor } = &entry {
                        paths.insert(path, &descriptor.digest, &annotation)?;
                    }
                    entries.push(entry);
                }
                None if opts.skip_unknown => skipped.push(layer.clone()),
                None => {
                    return Err(LayoutError::UnknownMediaType {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                    });
                }
            }
        }
        Ok(Self {
            kind,
            entries,
            skipped,
        })
    }
}

/// A layer's entry and the annotation its path came from; `None` for an unknown layer.
fn entry_for(
    layer: &Descriptor,
    kind: ManifestKind,
) -> Result<Option<(Entry, String)>, LayoutError> {
    let mt = layer.media_type.as_str();
    let raw = |path: String, annotation: &str| {
        Some((
            Entry::RawFile {
                path,
                descriptor: layer.clone(),
            },
            annotation.to_owned(),
        ))
    };
    let tar = |compression| {
        Some((
            Entry::Tar {
                path_prefix: String::new(),
                descriptor: layer.clone(),
                compression,
            },
            String::new(),
        ))
    };
    if kind == ManifestKind::Image {
        return Ok(image_layer_compression(mt).and_then(tar));
    }
    if let Some(rest) = mt.strip_prefix(modelpack::LAYER_PREFIX) {
        let Some((k, format)) = rest.split_once(".v1.") else {
            return Ok(None);
        };
        if !modelpack::KINDS.contains(&k) {
            return Ok(None);
        }
        // Untrusted even where unused (tar layers carry their own paths): refuse escapes.
        let named = annotated_path(layer, &[modelpack::FILEPATH, oras::TITLE])?;
        return Ok(match format {
            "raw" => match named {
                Some((path, key)) => raw(path, key),
                None => return Err(no_path(layer, "org.cncf.model.filepath or title")),
            },
            _ => tar_compression(format).and_then(tar),
        });
    }
    if let Some(rest) = mt.strip_prefix(kitops::LAYER_PREFIX) {
        let Some((k, format)) = rest.split_once(".v1.") else {
            return Ok(None);
        };
        annotated_path(layer, &[modelpack::FILEPATH, oras::TITLE])?;
        if !kitops::KINDS.contains(&k) {
            return Ok(None);
        }
        return Ok(tar_compression(format).and_then(tar));
    }
    if matches!(
        mt,
        docker_model::GGUF | docker_model::SAFETENSORS | docker_model::LICENSE
    ) {
        return Ok(match annotated_path(layer, &[oras::TITLE])? {
            Some((path, key)) => raw(path, key),
            // Older Docker models carry no names: one weights file each, licenses by digest.
            None => match mt {
                docker_model::GGUF => raw("model.gguf".into(), "(none)"),
                docker_model::SAFETENSORS => raw("model.safetensors".into(), "(none)"),
                _ => raw(
                    format!("licenses/{}.txt", &layer.digest.encoded()[..12]),
                    "(none)",
                ),
            },
        });
    }
    let Some((path, key)) = annotated_path(layer, &[oras::TITLE])? else {
        return Ok(None);
    };
    if layer.annotation(oras::UNPACK) == Some("true") {
        let compression = if mt.ends_with("tar+gzip") || mt.ends_with("tar.gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("tar+zstd") || mt.ends_with("tar.zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        };
        return Ok(compression.and_then(tar));
    }
    Ok(raw(path, key))
}

fn no_path(layer: &Descriptor, annotation: &str) -> LayoutError {
    LayoutError::NoPath {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        annotation: annotation.to_owned(),
    }
}

/// The first of `keys` present on `layer`, its value cleaned.
fn annotated_path<'k>(
    layer: &Descriptor,
    keys: &[&'k str],
) -> Result<Option<(String, &'k str)>, LayoutError> {
    for key in keys {
        if let Some(raw) = layer.annotation(key) {
            return clean_path(raw).map(|p| Some((p, *key))).map_err(|reason| {
                LayoutError::BadPath {
                    digest: layer.digest.clone(),
                    annotation: (*key).to_owned(),
                    path: raw.chars().take(256).collect(),
                    reason,
                }
            });
        }
    }
    Ok(None)
}

/// `tar`, `tar+gzip`, `tar+zstd` → their compression.
fn tar_compression(format: &str) -> Option<Compression> {
    match format {
        "tar" => Some(Compression::None),
        "tar+gzip" => Some(Compression::Gzip),
        "tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The compression of an OCI or Docker image layer media type.
fn image_layer_compression(mt: &str) -> Option<Compression> {
    match mt {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The file paths claimed so far, refusing duplicates and file/directory collisions.
#[derive(Default)]
struct PathSet {
    files: BTreeMap<String, Digest>,
}

impl PathSet {
    fn insert(&mut self, path: &str, digest: &Digest, annotation: &str) -> Result<(), LayoutError> {
        let collision = |other: &str, other_digest: &Digest| LayoutError::Duplicate {
            digest: digest.clone(),
            annotation: annotation.to_owned(),
            path: path.to_owned(),
            other_digest: other_digest.clone(),
            other: other.to_owned(),
        };
        if let Some(d) = self.files.get(path) {
            return Err(collision(path, d));
        }
        // A file where another path needs a directory, either way round.
        for (i, _) in path.match_indices('/') {
            if let Some(d) = self.files.get(&path[..i]) {
                return Err(collision(&path[..i], d));
            }
        }
        let below = format!("{path}/");
        if let Some((p, d)) = self.files.range(below.clone()..).next()
            && p.starts_with(&below)
        {
            return Err(collision(p, d));
        }
        self.files.insert(path.to_owned(), digest.clone());
        Ok(())
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
