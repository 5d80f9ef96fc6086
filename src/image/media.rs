//! Media types of OCI and Docker schema2 images, how containerd classifies them, and layer
//! compression sniffing.
//!
//! The classification mirrors containerd's `images` package (`IsIndexType`,
//! `IsManifestType`, `IsKnownConfig`, `IsLayerType`, `ChildGCLabels`), so the GC labels set
//! on an imported image are the ones containerd would set.

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The prefix every OCI layer media type (including non-distributable ones) shares.
pub const OCI_LAYER_PREFIX: &str = "application/vnd.oci.image.layer.";

/// Docker manifest list (the Docker counterpart of an OCI index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema1 manifest (signed); not supported.
pub const DOCKER_MANIFEST_SCHEMA1: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema1 manifest (unsigned); not supported.
pub const DOCKER_MANIFEST_SCHEMA1_UNSIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, uncompressed tar.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, zstd-compressed tar (as containerd names it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign (non-distributable) layer, gzip-compressed.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// The prefix every Docker layer media type shares.
pub const DOCKER_LAYER_PREFIX: &str = "application/vnd.docker.image.rootfs.";

/// The GC label a parent carries for its config child.
pub const GC_REF_CONFIG: &str = "containerd.io/gc.ref.content.config";
/// The GC label prefix a parent carries for manifest (and index) children: `m.<i>`.
pub const GC_REF_MANIFEST_PREFIX: &str = "containerd.io/gc.ref.content.m.";
/// The GC label prefix a parent carries for layer children: `l.<i>`.
pub const GC_REF_LAYER_PREFIX: &str = "containerd.io/gc.ref.content.l.";
/// The GC label prefix for any other child: `<i>`.
pub const GC_REF_OTHER_PREFIX: &str = "containerd.io/gc.ref.content.";

/// Whether `media_type` is an image index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// Whether `media_type` is an image manifest (OCI or Docker schema2).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// Whether `media_type` is a Docker schema1 manifest, which Strata does not read.
pub fn is_schema1(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_MANIFEST_SCHEMA1 | DOCKER_MANIFEST_SCHEMA1_UNSIGNED
    )
}

/// Whether `media_type` is an image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// Whether `media_type` is a layer (any OCI or Docker layer type, compressed or not,
/// including suffixed variants such as `+encrypted`, and native EROFS layers).
pub fn is_layer(media_type: &str) -> bool {
    media_type.starts_with(OCI_LAYER_PREFIX)
        || media_type.starts_with(DOCKER_LAYER_PREFIX)
        || is_erofs_layer(media_type)
}

/// A native EROFS layer, as containerd 2.x's erofs snapshotter and converter name it.
pub const EROFS_LAYER: &str = "application/vnd.erofs.layer.v1";

/// Whether `media_type` is a native EROFS layer (`application/vnd.erofs.layer.v1`, or a
/// suffixed variant such as `+zstd`), as containerd's `erofsutils.IsErofsMediaType` says.
pub fn is_erofs_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.erofs.layer")
}

/// The GC label prefix (ending in `.`) or full key (for configs) a parent uses for a child
/// of this media type: containerd's `images.ChildGCLabels`.
pub fn child_gc_label(media_type: &str) -> &'static str {
    if is_config(media_type) {
        GC_REF_CONFIG
    } else if is_manifest(media_type) || is_index(media_type) {
        GC_REF_MANIFEST_PREFIX
    } else if is_layer(media_type) {
        GC_REF_LAYER_PREFIX
    } else {
        GC_REF_OTHER_PREFIX
    }
}

/// How a layer blob is compressed, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (a plain tar, or anything unrecognised).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Sniffs the compression from a blob's first bytes (at least 4 for zstd).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The Docker schema2 layer media type for this compression, as containerd's archive
    /// importer picks it for `docker save` layers.
    pub fn docker_layer_media_type(self) -> &'static str {
        match self {
            Self::None => DOCKER_LAYER,
            Self::Gzip => DOCKER_LAYER_GZIP,
            Self::Zstd => DOCKER_LAYER_ZSTD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_containerd() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST) && !is_index(OCI_MANIFEST));
        assert!(is_manifest(DOCKER_MANIFEST) && !is_manifest(OCI_CONFIG));
        assert!(is_layer(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        ));
        assert!(is_layer(DOCKER_LAYER_FOREIGN_GZIP));
        assert!(!is_layer("application/vnd.in-toto+json"));
        assert!(is_layer(EROFS_LAYER) && is_erofs_layer(EROFS_LAYER));
        assert!(!is_erofs_layer(OCI_LAYER_GZIP));
        assert_eq!(child_gc_label(DOCKER_CONFIG), GC_REF_CONFIG);
        assert_eq!(child_gc_label(OCI_INDEX), GC_REF_MANIFEST_PREFIX);
        assert_eq!(child_gc_label(OCI_LAYER_ZSTD), GC_REF_LAYER_PREFIX);
        assert_eq!(
            child_gc_label("application/vnd.in-toto+json"),
            GC_REF_OTHER_PREFIX
        );
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
        assert_eq!(
            Compression::Gzip.docker_layer_media_type(),
            DOCKER_LAYER_GZIP
        );
    }
}
