//! OCI artifacts (model artifacts above all) read into one neutral layout: which file
//! each layer is, or which directory a tar layer merges into.
//!
//! - [`manifest`]: the OCI manifest and descriptor types, parsed from untrusted JSON and
//!   written deterministically.
//! - [`path`]: cleaning of the annotated paths (no escapes, no absolute paths, no NUL).
//! - [`layout`]: [`ArtifactLayout::from_manifest`], recognising CNCF ModelPack, ORAS,
//!   Docker Model Runner and KitOps manifests, and telling images from artifacts.
//!
//! Pure: the caller fetches the manifest; nothing here does I/O.

pub mod layout;
pub mod manifest;
pub mod path;

pub use layout::{
    ArtifactKind, ArtifactLayout, Compression, Entry, LayoutError, LayoutOptions, ManifestKind,
    classify,
};
pub use manifest::{Descriptor, Manifest, ManifestError};
pub use path::{PathError, clean_path};

/// CNCF ModelPack media types and annotations.
pub mod modelpack {
    /// The artifact type of a ModelPack manifest.
    pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
    /// The ModelPack config media type.
    pub const CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
    /// The annotation naming a layer's path in the model directory.
    pub const FILEPATH: &str = "org.cncf.model.filepath";
    /// The media type prefix every ModelPack layer has.
    pub const LAYER_PREFIX: &str = "application/vnd.cncf.model.";
    /// The layer kinds (`application/vnd.cncf.model.<kind>.v1.<format>`).
    pub const KINDS: [&str; 5] = ["weight", "weight.config", "doc", "code", "dataset"];
    /// The layer formats.
    pub const FORMATS: [&str; 4] = ["raw", "tar", "tar+gzip", "tar+zstd"];

    /// `application/vnd.cncf.model.<kind>.v1.<format>`.
    pub fn layer(kind: &str, format: &str) -> String {
        format!("{LAYER_PREFIX}{kind}.v1.{format}")
    }
}

/// ORAS annotations.
pub mod oras {
    /// The file name of a layer (OCI's title annotation).
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// `true` on a tar+gzip layer that is a directory to unpack.
    pub const UNPACK: &str = "io.deis.oras.content.unpack";
    /// The default artifact type `strata artifact push --type oras` sets.
    pub const DEFAULT_ARTIFACT_TYPE: &str = "application/vnd.oras.file.v1";
}

/// Docker Model Runner media types.
pub mod docker_model {
    /// The config media type.
    pub const CONFIG: &str = "application/vnd.docker.ai.model.config.v0.1+json";
    /// A GGUF weights file.
    pub const GGUF: &str = "application/vnd.docker.ai.gguf.v3";
    /// A safetensors weights file.
    pub const SAFETENSORS: &str = "application/vnd.docker.ai.safetensors";
    /// A license text.
    pub const LICENSE: &str = "application/vnd.docker.ai.license";
}

/// KitOps ModelKit media types.
pub mod kitops {
    /// The config media type.
    pub const CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";
    /// The media type prefix of every ModelKit layer.
    pub const LAYER_PREFIX: &str = "application/vnd.kitops.modelkit.";
    /// The layer kinds.
    pub const KINDS: [&str; 5] = ["model", "modelpart", "dataset", "code", "docs"];
}
