//! Strata's formats: pure, synchronous parsers and writers with no I/O of their own.
//!
//! Everything here reads through a [`ReadAt`] (random access to a blob) or a plain
//! `Read`, and writes to a plain `Write`; nothing here knows about files, HTTP, tokio or
//! FUSE. Every parser takes untrusted bytes: sizes are bounded, offsets checked, and
//! malformed input is an error, never a panic.
//!
//! - [`artifact`]: OCI artifacts (ModelPack, ORAS, Docker Model Runner, KitOps) laid
//!   out as files and tar layers, with untrusted annotated paths cleaned and checked.
//! - [`chunk_index`]: Strata's chunk index, per-chunk SHA-256 digests of blobs so
//!   range reads can be verified (`docs/chunk-index.md`).
//! - [`read_at`]: the [`ReadAt`] seam every higher layer implements (local blobs,
//!   remote blobs through a range fetcher, cached blobs).
//! - [`buffer`]: byte buffers shared between threads without a copy.
//! - [`digest`]: OCI content digests (`sha256:<hex>`), parsed and verified.
//! - [`elf`]: ELF program interpreter and dynamic section (`DT_NEEDED`, `DT_RUNPATH`, …).
//! - [`filters`]: containerd's filter expression syntax (`labels."k"==v,name~=^x`).
//! - [`labels`]: containerd's label rules (key + value ≤ 4096 bytes).
//! - [`prefetch`]: the files a container reads at start (command, `#!` interpreters,
//!   ELF loader and libraries), derived statically from the root filesystem and config.
//! - [`errdefs`]: the error categories every crate maps its errors to.
//! - [`estargz`]: eStargz layers (gzip and zstd:chunked): TOC, footers, writer, reader.
//! - [`erofs`]: EROFS images: a streaming writer (from tar layers or entries, also
//!   tar-index images) and a validator for untrusted images.
//! - [`layer_index`]: the format-neutral layer index a lazy mount is built from (entries,
//!   and per regular file its chunks: blob extents and digests), with the raw-blob adapter;
//!   eStargz's adapter is [`estargz::TocIndex::layer_index`].

pub mod artifact;
pub mod buffer;
pub mod chunk_index;
pub mod digest;
pub mod elf;
pub mod erofs;
pub mod errdefs;
pub mod estargz;
pub mod filters;
pub mod labels;
pub mod layer_index;
pub mod prefetch;
pub mod read_at;
pub mod tar_layer;

pub use digest::{Digest, DigestError, Digester};
pub use errdefs::ErrorKind;
pub use read_at::{FileReadAt, ReadAt, ReadAtCursor};
