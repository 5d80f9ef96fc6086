//! The metadata database: images, leases and blob labels in one transactional store, and
//! the garbage collector that decides which blobs are still wanted.
//!
//! The database is a single [redb](https://docs.rs/redb) file, `<root>/metadata.db`. redb
//! lets one process open a file at a time, and several `strata` commands may run at once,
//! so [`MetadataDb`] opens the file for each transaction and waits while another process
//! has it; every operation is one ACID transaction, so a crash leaves either the old or the
//! new state.
//!
//! Garbage collection ([`gc::collect`]) follows containerd: roots are image targets, the
//! resources of unexpired leases and blobs labelled `containerd.io/gc.root`; references are
//! the `containerd.io/gc.ref.content.*` labels on blobs. Everything unreachable is swept.

mod db;
mod error;
pub mod gc;
mod images;
mod leases;

pub use db::MetadataDb;
pub use error::MetadataError;
pub use images::ImageRecord;
pub use leases::{LABEL_GC_EXPIRE, Lease, LeaseResource};

/// A short, unique-enough suffix for generated ids (leases, refs): nanoseconds since the
/// epoch in hex.
pub fn unique_suffix() -> String {
    format!("{:x}", db::to_nanos(std::time::SystemTime::now()))
}
