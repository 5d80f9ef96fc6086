//! OCI images in the store: importing image layouts and `docker save` archives.
//!
//! - [`import()`]: the entry point, with containerd's `ctr image import` semantics: OCI
//!   image-layout directories, OCI layout tars (`docker save` ≥ 25, `skopeo copy
//!   oci-archive:`) and classic `docker save` tars, detected automatically; every blob is
//!   verified against its digest on the way in, and one image record is created per name.
//! - [`walk`]: walking an image graph (index → manifests → config + layers) in the content
//!   store and setting containerd's `containerd.io/gc.ref.content.*` labels on every parent,
//!   so garbage collection from an image record reaches all of the image's blobs.
//! - [`media`]: media-type constants and classification, layer compression sniffing.
//! - [`pull`](pull::pull) and [`push`](push::push): images between a registry and the store.
//! - [`platform`]: platform parsing, normalisation and selection from an index.
//! - [`ImageError`]: the module's typed error, with [`ImageError::kind`].

mod archive;
pub mod convert;
pub mod convert_erofs;
mod docker;
mod error;
mod import;
pub mod local;
pub mod media;
pub mod platform;
pub mod pull;
pub mod push;
pub mod rootfs;
pub mod unpack;
pub(crate) mod unpack_erofs;
pub mod walk;

pub use archive::MAX_JSON_SIZE;
pub use docker::{MAX_CONFIG_SIZE, normalize_reference};
pub use error::ImageError;
pub use import::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ImportEvent, ImportOptions, Imported, import,
};
pub use local::find_image;
pub use walk::{ImageWalk, MAX_MANIFEST_SIZE};
