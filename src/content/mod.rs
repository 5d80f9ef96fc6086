//! The content store: immutable blobs addressed by digest, with containerd's semantics.
//!
//! Lifecycle of a blob, as in containerd's `content` package:
//! 1. **Ingest.** [`LocalContentStore::writer`] opens (or resumes) an ingest by *ref*, a
//!    caller-chosen name such as `layer-sha256:ab12…`. Bytes land in
//!    `<root>/content/ingest/<sha256(ref)>/data`; the ref is locked by one writer at a
//!    time, across processes. A writer that dies (even by SIGKILL) leaves the ingest
//!    behind; reopening the same ref resumes at [`IngestStatus::offset`]. The bytes
//!    already there are hashed again at the resume, so the digest checked at commit
//!    covers the whole blob: a byte damaged while no writer held the ingest fails it.
//! 2. **Commit.** [`IngestWriter::commit`] checks size and digest, fsyncs, and renames
//!    the data to `<root>/content/blobs/sha256/<hex>` without replacing anything: a blob
//!    that exists already is reported as [`ContentError::AlreadyExists`] and the ingest
//!    is discarded. Nothing half-written is ever visible under `blobs/`.
//! 3. **Read.** [`LocalContentStore::reader_at`] gives random access ([`ReadAt`]).
//! 4. **Manage.** Info, label updates, [`walk`](LocalContentStore::walk) with containerd
//!    filters, delete. Labels and timestamps live in a [`LabelStore`] (the metadata
//!    database in production) because blob files are immutable.
//!
//! [`ReadAt`]: strata_formats::ReadAt

mod error;
mod ingest;
mod label_store;
mod store;

pub use error::ContentError;
pub use ingest::{IngestStatus, IngestWriter};
pub use label_store::{BlobRecord, LabelStore};
pub use store::{BlobInfo, IngestSource, LocalContentStore, StreamSource};

/// The label that makes a blob a garbage-collection root.
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
/// The prefix of labels that make a blob reference other blobs for garbage collection
/// (`containerd.io/gc.ref.content.<anything>=<digest>`).
pub const LABEL_GC_REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content.";
/// The label recording a compressed layer's uncompressed digest (its diffID).
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
