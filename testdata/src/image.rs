//! Single-platform images ([`ImageSpec`]): layers plus platform and runtime
//! config, built into an OCI image config and manifest ([`BuiltImage`]) with
//! the `oci-spec` types.
//!
//! JSON blobs are compact with object keys sorted (see
//! `canonical_json`), so the same spec always yields the same digests.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{
    Arch, Config, Descriptor, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};

use crate::layer::{BuiltLayer, LayerSpec};
use crate::{Result, canonical_json, digest_hex, sha256_digest};

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Default `created` timestamp of configs and history: 2024-01-01T00:00:00Z.
pub const DEFAULT_CREATED: &str = "2024-01-01T00:00:00Z";

/// An OCI platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `GOOS` value, e.g. `linux`.
    pub os: String,
    /// `GOARCH` value, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8` for arm64.
    pub variant: Option<String>,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Platform::new("linux", "amd64", None)
    }

    /// `linux/arm64/v8`.
    pub fn linux_arm64() -> Self {
        Platform::new("linux", "arm64", Some("v8"))
    }

    /// The `oci-spec` form, for a descriptor's `platform` field.
    pub fn to_oci(&self) -> Result<oci_spec::image::Platform> {
        let mut builder = PlatformBuilder::default()
            .os(Os::from(self.os.as_str()))
            .architecture(Arch::from(self.architecture.as_str()));
        if let Some(variant) = &self.variant {
            builder = builder.variant(variant.clone());
        }
        Ok(builder.build()?)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A content descriptor in plain strings: media type, digest, size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// Media type, e.g. [`MEDIA_TYPE_MANIFEST`].
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

impl BlobRef {
    /// Describes `bytes` with `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        BlobRef {
            media_type: media_type.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }

    /// The hex part of the digest (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        digest_hex(&self.digest)
    }

    /// The `oci-spec` descriptor.
    pub fn to_descriptor(&self) -> Result<Descriptor> {
        let media_type = MediaType::from(self.media_type.as_str());
        Ok(Descriptor::new(
            media_type,
            self.size,
            Digest::from_str(&self.digest)?,
        ))
    }
}

/// A single-platform image: layers (bottom first), platform and runtime config.
///
/// ```
/// use strata_testdata::{ImageSpec, LayerSpec, Platform};
/// let image = ImageSpec::new(Platform::linux_amd64())
///     .layer(LayerSpec::new().file("hello", 0o755, "#!/bin/sh\necho hi\n"))
///     .entrypoint(["/hello"])
///     .env("PATH=/bin")
///     .build()
///     .unwrap();
/// assert_eq!(image.layers.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Layers, bottom first.
    pub layers: Vec<LayerSpec>,
    /// Platform recorded in the config (and, in an index, the manifest descriptor).
    pub platform: Platform,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.Env` (`KEY=value`), omitted when empty.
    pub env: Vec<String>,
    /// `config.WorkingDir`.
    pub working_dir: Option<String>,
    /// `created` of the config and of each history entry (RFC 3339).
    pub created: String,
    /// `author` of the config.
    pub author: Option<String>,
    /// `created_by` texts of extra history entries with `empty_layer: true`,
    /// appended after the layers' entries (as `docker build` records
    /// `ENV`/`CMD` steps). Consumers must skip them when pairing history
    /// with `rootfs.diff_ids`.
    pub empty_layer_history: Vec<String>,
}

impl ImageSpec {
    /// An image with no layers and no runtime config for `platform`.
    pub fn new(platform: Platform) -> Self {
        ImageSpec {
            layers: Vec::new(),
            platform,
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            created: DEFAULT_CREATED.to_owned(),
            author: None,
            empty_layer_history: Vec::new(),
        }
    }

    /// Appends a layer on top.
    pub fn layer(mut self, layer: LayerSpec) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets `Entrypoint`.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `Cmd`.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Appends one `KEY=value` to `Env`.
    pub fn env(mut self, var: impl Into<String>) -> Self {
        self.env.push(var.into());
        self
    }

    /// Sets `WorkingDir`.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Builds every layer, then the config and manifest.
    pub fn build(&self) -> Result<BuiltImage> {
        let layers = self
            .layers
            .iter()
            .map(LayerSpec::build)
            .collect::<Result<Vec<_>>>()?;
        let config_json = self.config_json(&layers)?;
        let config = BlobRef::of(MEDIA_TYPE_CONFIG, &config_json);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.to_descriptor()?)
            .layers(
                layers
                    .iter()
                    .map(|layer| layer.blob_ref().to_descriptor())
                    .collect::<Result<Vec<_>>>()?,
            )
            .build()?;
        let manifest_json = canonical_json(&manifest)?;
        Ok(BuiltImage {
            platform: self.platform.clone(),
            manifest: BlobRef::of(MEDIA_TYPE_MANIFEST, &manifest_json),
            manifest_json,
            config,
            config_json,
            layers,
        })
    }

    fn config_json(&self, layers: &[BuiltLayer]) -> Result<Vec<u8>> {
        let mut runtime = Config::default();
        runtime.set_entrypoint(self.entrypoint.clone());
        runtime.set_cmd(self.cmd.clone());
        runtime.set_env((!self.env.is_empty()).then(|| self.env.clone()));
        runtime.set_working_dir(self.working_dir.clone());

        let mut history = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            let created_by = layer
                .created_by
                .clone()
                .unwrap_or_else(|| format!("strata-testdata layer {index}"));
            history.push(
                HistoryBuilder::default()
                    .created(self.created.clone())
                    .created_by(created_by)
                    .build()?,
            );
        }
        for created_by in &self.empty_layer_history {
            history.push(
                HistoryBuilder::default()
                    .created(self.created.clone())
                    .created_by(created_by.clone())
                    .empty_layer(true)
                    .build()?,
            );
        }

        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()?;
        let mut config = ImageConfigurationBuilder::default()
            .created(self.created.clone())
            .os(Os::from(self.platform.os.as_str()))
            .architecture(Arch::from(self.platform.architecture.as_str()))
            .config(runtime)
            .rootfs(rootfs)
            .history(history)
            .build()?;
        config.set_variant(self.platform.variant.clone());
        config.set_author(self.author.clone());
        canonical_json(&config)
    }
}

/// A built image: layer blobs, config and manifest bytes with their descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image's platform.
    pub platform: Platform,
    /// Built layers, bottom first.
    pub layers: Vec<BuiltLayer>,
    /// The config blob.
    pub config_json: Vec<u8>,
    /// Descriptor of [`Self::config_json`].
    pub config: BlobRef,
    /// The manifest blob.
    pub manifest_json: Vec<u8>,
    /// Descriptor of [`Self::manifest_json`].
    pub manifest: BlobRef,
}

impl BuiltImage {
    /// The config's `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// Every blob of the image as `(digest, bytes)`: layers, config, manifest.
    pub fn blobs(&self) -> Vec<(&str, &[u8])> {
        let mut blobs: Vec<(&str, &[u8])> = self
            .layers
            .iter()
            .map(|l| (l.digest.as_str(), l.gzip.as_slice()))
            .collect();
        blobs.push((&self.config.digest, &self.config_json));
        blobs.push((&self.manifest.digest, &self.manifest_json));
        blobs
    }

    /// Descriptors and diff IDs, without the bytes.
    pub fn summary(&self) -> ImageSummary {
        ImageSummary {
            platform: self.platform.clone(),
            manifest: self.manifest.clone(),
            config: self.config.clone(),
            layers: self.layers.iter().map(BuiltLayer::blob_ref).collect(),
            diff_ids: self.diff_ids(),
        }
    }
}

/// What was written for one platform image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The image's platform.
    pub platform: Platform,
    /// Descriptor of the manifest.
    pub manifest: BlobRef,
    /// Descriptor of the config.
    pub config: BlobRef,
    /// Descriptors of the gzip layers, bottom first.
    pub layers: Vec<BlobRef>,
    /// `rootfs.diff_ids` (sha256 of each uncompressed layer).
    pub diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ImageConfiguration, ImageManifest};

    fn image() -> ImageSpec {
        let mut spec = ImageSpec::new(Platform::linux_arm64())
            .layer(LayerSpec::new().file("a", 0o644, "a").created_by("ADD a /"))
            .layer(LayerSpec::new().random_file("b", 0o644, 1, 10_000))
            .entrypoint(["/bin/sh", "-c"])
            .cmd(["echo hi"])
            .env("PATH=/bin")
            .env("LANG=C.UTF-8")
            .working_dir("/srv");
        spec.empty_layer_history.push("CMD [\"echo hi\"]".into());
        spec
    }

    #[test]
    fn config_and_manifest_are_consistent() {
        let built = image().build().unwrap();
        let config = ImageConfiguration::from_reader(built.config_json.as_slice()).unwrap();
        assert_eq!(config.rootfs().typ(), "layers");
        assert_eq!(config.rootfs().diff_ids(), &built.diff_ids());
        assert_eq!(config.architecture().to_string(), "arm64");
        assert_eq!(config.variant().as_deref(), Some("v8"));
        let runtime = config.config().as_ref().unwrap();
        assert_eq!(runtime.entrypoint().as_ref().unwrap(), &["/bin/sh", "-c"]);
        assert_eq!(
            runtime.env().as_ref().unwrap(),
            &["PATH=/bin", "LANG=C.UTF-8"]
        );
        assert_eq!(runtime.working_dir().as_deref(), Some("/srv"));
        let history = config.history().as_ref().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[0].created_by().as_deref(), Some("ADD a /"));
        assert_eq!(history[2].empty_layer(), Some(true));

        let manifest = ImageManifest::from_reader(built.manifest_json.as_slice()).unwrap();
        assert_eq!(manifest.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(manifest.config().digest().to_string(), built.config.digest);
        assert_eq!(manifest.config().size(), built.config_json.len() as u64);
        assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
        for (desc, layer) in manifest.layers().iter().zip(&built.layers) {
            assert_eq!(desc.media_type(), &MediaType::ImageLayerGzip);
            assert_eq!(desc.digest().to_string(), layer.digest);
            assert_eq!(desc.size(), layer.gzip.len() as u64);
        }
        assert_eq!(
            built.manifest,
            BlobRef::of(MEDIA_TYPE_MANIFEST, &built.manifest_json)
        );
        assert_eq!(built.blobs().len(), 4);
    }

    #[test]
    fn build_is_deterministic() {
        assert_eq!(image().build().unwrap(), image().build().unwrap());
    }

    #[test]
    fn platform_display_and_oci() {
        assert_eq!(Platform::linux_arm64().to_string(), "linux/arm64/v8");
        assert_eq!(Platform::linux_amd64().to_string(), "linux/amd64");
        let oci = Platform::linux_arm64().to_oci().unwrap();
        assert_eq!(oci.variant().as_deref(), Some("v8"));
    }
}
