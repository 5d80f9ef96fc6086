//! Deterministic generators for Strata's test fixtures.
//!
//! Nothing large is committed to the repository: tests and `make demo` build
//! their container images on the fly with this crate. Everything here is a
//! pure function of its inputs (a seed and a spec), so two runs produce
//! byte-identical tars, blobs and digests.
//!
//! * [`LayerSpec`] describes one layer's file tree (files, directories,
//!   symlinks, hardlinks, OCI whiteouts and opaque markers) and builds the
//!   uncompressed tar plus its gzip blob ([`BuiltLayer`]).
//! * [`ImageSpec`] stacks layers with a platform and runtime config and
//!   builds the OCI config and manifest ([`BuiltImage`]).
//! * [`write_oci_layout`] / [`write_oci_layout_tar`] write an OCI
//!   image-layout (directory or tar), single- or multi-platform
//!   ([`LayoutImage`]); [`write_docker_save_tar`] writes a classic
//!   `docker save` archive.
//! * [`sample_image`] / [`sample_multiplatform`] give a small realistic image.
//! * [`random_file`] / [`RandomReader`] produce fast seeded pseudo-random data.
//! * [`model::write_model_dir`] writes a sharded safetensors model checkout (real
//!   headers, seeded tensor bytes, config and tokenizer files).
//!
//! Harnesses for the real components tests and benchmarks run against: a registry
//! ([`registry`]), a private containerd ([`containerd`]), daemon processes ([`daemon`]),
//! and what a test needs from the machine, with the rule for tests that need root
//! ([`host`]).
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let image = strata_testdata::sample_image(7);
//! let summary = strata_testdata::write_oci_layout(
//!     dir.path(),
//!     &[("docker.io/library/sample:1.0", image.into())],
//! )
//! .unwrap();
//! assert_eq!(summary.refs[0].target.media_type, "application/vnd.oci.image.manifest.v1+json");
//! ```

pub mod containerd;
pub mod daemon;
pub mod debian_image;
pub mod docker_save;
pub mod file_tree;
pub mod host;
pub mod image;
pub mod layer;
pub mod layout;
pub mod model;
pub mod random;
pub mod registry;
pub mod sample;

#[cfg(test)]
mod testutil;

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use docker_save::{DockerSaveSummary, docker_save_tar_bytes, write_docker_save_tar};
pub use image::{BlobRef, BuiltImage, ImageSpec, ImageSummary, Platform};
pub use layer::{BuiltLayer, Content, Entry, EntryKind, LayerSpec};
pub use layout::{
    LayoutImage, LayoutSummary, RefSummary, oci_layout_tar_bytes, write_oci_layout,
    write_oci_layout_tar,
};
pub use random::{RandomReader, parse_size, random_bytes, random_file};
pub use registry::{FaultProxy, RegistryServer, TokenAuthGateway};
pub use sample::{sample_image, sample_multiplatform};

/// Errors returned by the fixture generators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file on disk failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Encoding a tar or gzip stream in memory failed.
    #[error("encoding archive entry {entry:?} failed")]
    Encode {
        /// The archive entry being written.
        entry: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A layer entry path is empty, contains `..`, or is otherwise unusable.
    #[error("invalid layer entry path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Two entries of one layer resolve to the same archive path.
    #[error("duplicate entry {0:?} in layer")]
    DuplicatePath(String),
    /// A `docker save` repo tag is not of the form `name:tag`.
    #[error("invalid repo tag {0:?}: expected name:tag")]
    InvalidRepoTag(String),
    /// The same reference name was given twice for one layout.
    #[error("duplicate reference name {0:?} in layout")]
    DuplicateRef(String),
    /// A multi-platform image was given without any platform image.
    #[error("multi-platform image {0:?} has no platform images")]
    EmptyIndex(String),
    /// A size string (e.g. `256MiB`) could not be parsed.
    #[error(
        "invalid size {0:?}: expected a number with an optional unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
    )]
    InvalidSize(String),
    /// Building an OCI structure with `oci-spec` failed.
    #[error("building OCI structure failed")]
    Spec(#[from] oci_spec::OciSpecError),
    /// Serializing JSON failed.
    #[error("serializing JSON failed")]
    Json(#[from] serde_json::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn encode(entry: &str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Encode {
            entry: entry.to_owned(),
            source,
        }
    }
}

/// Returns `sha256:<hex>` of `bytes`, the OCI digest string.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Returns the lowercase hex SHA-256 of `bytes` (no `sha256:` prefix).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Returns the hex part of a `sha256:<hex>` digest (the input unchanged if it has no prefix).
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Serializes `value` as compact JSON with object keys sorted recursively.
///
/// `oci-spec` keeps annotations and labels in `HashMap`s, whose iteration
/// order changes between runs; sorting makes every blob deterministic.
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.sort_keys();
                map.values_mut().for_each(sort);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(value)?;
    sort(&mut value);
    Ok(serde_json::to_vec(&value)?)
}
