//! OCI artifacts (models above all) between a directory and a registry:
//! `strata artifact push` and `strata index`.
//!
//! - [`plan`]: a directory's files and the layers they become (ModelPack or ORAS).
//! - [`push`]: [`push_dir`]: hash, upload, manifest, chunk index referrer.
//! - [`index`]: the chunk index of a manifest already pushed
//!   ([`index_reference`]), pushed as its referrer, and blobs checked against it.
//!
//! The formats themselves (manifest layouts, chunk index) are pure code in
//! `strata_formats::{artifact, chunk_index}`.

mod error;
pub mod index;
pub mod plan;
pub mod push;

pub use error::ArtifactError;
pub use index::{
    IndexPush, check_blobs, download_blob, fetch_chunk_index, index_reference, push_chunk_index,
};
pub use plan::{ArtifactFormat, FileKind, LARGE_FILE};
pub use push::{ArtifactEvent, ArtifactPushOptions, PushedArtifact, push_dir};
