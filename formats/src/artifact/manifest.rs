//! The OCI manifest and descriptor as artifacts use them: only the fields an artifact
//! reader needs, parsed from untrusted JSON (size-bounded, digests validated) and written
//! back deterministically (fields in a fixed order, absent ones left out).

use std::collections::BTreeMap;

use crate::Digest;

/// The most bytes of manifest JSON [`Manifest::parse`] accepts (as registries do, 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI empty descriptor's media type (`{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The digest of the OCI empty blob `{}`.
pub const OCI_EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The content of the OCI empty blob.
pub const OCI_EMPTY_CONTENT: &[u8] = b"{}";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the content.
    pub media_type: String,
    /// The digest of the content.
    pub digest: Digest,
    /// The size of the content in bytes.
    pub size: u64,
    /// The type of an artifact manifest this descriptor points at (in referrer indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations: untrusted strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type` and no annotations.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The OCI empty descriptor (`{}`), the config of artifacts without one.
    pub fn empty() -> Self {
        Self::of(OCI_EMPTY, OCI_EMPTY_CONTENT)
    }

    /// The annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An OCI image manifest (images and artifacts alike).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// `application/vnd.oci.image.manifest.v1+json` (or absent in old manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact's type (OCI 1.1); absent for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (a referrer's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations: untrusted strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Why bytes are not a manifest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// More bytes than [`MAX_MANIFEST_SIZE`].
    #[error("manifest of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON of a manifest's shape (a bad digest included).
    #[error("invalid manifest JSON: {0}")]
    Json(String),
    /// A manifest of another media type (an index, a Docker schema 1 manifest, …).
    #[error("not an image manifest: media type {0:?}")]
    MediaType(String),
    /// `schemaVersion` other than 2.
    #[error("unsupported manifest schemaVersion {0} (expected 2)")]
    SchemaVersion(u32),
}

impl Manifest {
    /// Parses untrusted manifest JSON (OCI, or Docker schema 2, which has the same shape).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                max: MAX_MANIFEST_SIZE,
            });
        }
        let m: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if m.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(m.schema_version));
        }
        if let Some(t) = &m.media_type
            && t != OCI_MANIFEST
            && t != DOCKER_MANIFEST
        {
            return Err(ManifestError::MediaType(t.clone()));
        }
        Ok(m)
    }

    /// The JSON bytes (deterministic: the same manifest always gives the same digest).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: a manifest serialises")
    }
}

/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_descriptor_has_the_spec_digest() {
        assert_eq!(Descriptor::empty().digest.to_string(), OCI_EMPTY_DIGEST);
        assert_eq!(Descriptor::empty().size, 2);
    }

    #[test]
    fn round_trips_and_refuses_indexes_and_giants() {
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: Some("application/x".into()),
            config: Descriptor::empty(),
            layers: vec![Descriptor::of("application/octet-stream", b"abc")],
            subject: None,
            annotations: BTreeMap::new(),
        };
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}}"#;
        assert!(matches!(
            Manifest::parse(idx),
            Err(ManifestError::MediaType(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(
            Manifest::parse(&big),
            Err(ManifestError::TooLarge { .. })
        ));
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:../x","size":2}}"#;
        assert!(matches!(
            Manifest::parse(bad_digest),
            Err(ManifestError::Json(_))
        ));
    }
}
