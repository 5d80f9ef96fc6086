//! strata-fuse: the read-only FUSE filesystem that presents one lazily fetched layer.
//!
//! Role in Strata: the stargz snapshotter mounts one instance per remote layer, and the
//! mounts become the lower directories of a container's overlay rootfs. The filesystem is
//! built over two seams and knows nothing of HTTP or registries:
//! - a *layer index* ([`strata_formats::layer_index::LayerIndex`], format-neutral):
//!   paths, attributes, xattrs, and for each regular file its chunks (where each is in the
//!   file, its extent in the blob, its digest), turned into a [`LayerTree`]. Formats are
//!   adapters onto it: an eStargz TOC (`TocIndex::layer_index`), a raw blob as one file
//!   (`RawBlobFile`);
//! - a *chunk source* ([`ChunkSource`]): the bytes of a neutral chunk, fetched on demand
//!   and verified against the chunk's digest before they are returned (the hub's chunk
//!   cache; [`EstargzChunkSource`] and [`RawChunkSource`] read a blob directly).
//!
//! Overlay whiteouts and opaque directories are presented as overlayfs expects, so a layer
//! can be an overlay lower as it is.
//!
//! The FUSE protocol server is our own ([`FuseServer`]), not `fuser`: a daemon restart must
//! resume serving live connections without the INIT handshake, which `fuser` cannot do
//! (see [`server`] for the full reasoning).

mod abi;
pub mod chunk_source;
mod estargz_source;
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
mod mount;
mod ops;
mod raw_source;
mod recent;
pub mod server;

pub use chunk_source::{ChunkSource, FileRef};
pub use estargz_source::EstargzChunkSource;
pub use layer::{Inode, InodeKind, LayerTree};
pub use ops::LayerFs;
pub use raw_source::{RawChunkSource, raw_extent};
pub use server::{FuseError, FuseServer, InitState, ServeOptions};
