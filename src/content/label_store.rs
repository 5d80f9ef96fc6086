//! [`LabelStore`]: where the content store keeps what a blob file cannot hold.

use std::collections::BTreeMap;
use std::time::SystemTime;

use strata_formats::Digest;

/// The mutable facts about a committed blob: when it was committed, when its labels last
/// changed, and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// When the blob was committed.
    pub created: SystemTime,
    /// When the record last changed.
    pub updated: SystemTime,
    /// containerd-style labels (`containerd.io/gc.root`, `containerd.io/gc.ref.content.*`…).
    pub labels: BTreeMap<String, String>,
}

/// Durable storage for [`BlobRecord`]s, keyed by digest. The metadata database implements
/// it; each call is one transaction.
pub trait LabelStore: Send + Sync {
    /// The record of `digest`, if any.
    fn get(&self, digest: &Digest) -> Result<Option<BlobRecord>, String>;
    /// Creates or replaces the record of `digest`.
    fn put(&self, digest: &Digest, record: &BlobRecord) -> Result<(), String>;
    /// Removes the record of `digest` (no error if there is none).
    fn remove(&self, digest: &Digest) -> Result<(), String>;
}
