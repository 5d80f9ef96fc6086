//! Garbage collection: mark what images, leases and labels reach; sweep the rest.
//!
//! Mark and sweep never hold a database transaction across file-system work, and the sweep
//! deletes a blob's file before its record. An interrupted collection therefore leaves at
//! worst records without files (ignored by reads, removed by the next run) and never a
//! referenced blob missing. Callers serialise collections against writers (see
//! [`crate::store::Store::gc`]).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use strata_formats::Digest;

use super::db::MetadataDb;
use super::error::MetadataError;
use crate::content::{ContentError, LABEL_GC_REF_CONTENT_PREFIX, LABEL_GC_ROOT, LocalContentStore};

/// What a collection may do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Ingests not written for this long (and not leased, not locked) are removed.
    pub ingest_grace: Duration,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            ingest_grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// What a collection found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs still referenced.
    pub kept: usize,
    /// Blobs removed (or, in a dry run, that would be).
    pub removed_blobs: Vec<Digest>,
    /// Bytes of removed blobs.
    pub removed_bytes: u64,
    /// Ingest refs removed.
    pub removed_ingests: Vec<String>,
    /// Expired leases deleted.
    pub expired_leases: Vec<String>,
    /// Blob records whose file was already gone, deleted.
    pub orphan_records: usize,
}

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The metadata database failed.
    #[error("gc: {0}")]
    Metadata(#[from] MetadataError),
    /// The content store failed.
    #[error("gc: {0}")]
    Content(#[from] ContentError),
}

/// Runs one collection over `content`, with roots and references from `db`.
pub fn collect(
    db: &MetadataDb,
    content: &LocalContentStore,
    opts: &GcOptions,
) -> Result<GcReport, GcError> {
    let now = SystemTime::now();
    let mut report = GcReport::default();

    // Expired leases protect nothing; drop them first, as containerd does.
    let mut leases = db.leases()?;
    leases.retain(|l| {
        if l.expired_at(now) {
            report.expired_leases.push(l.id.clone());
            false
        } else {
            true
        }
    });
    if !opts.dry_run {
        for id in &report.expired_leases {
            match db.delete_lease(id) {
                Ok(()) | Err(MetadataError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Mark.
    let records = db.blob_records()?;
    let mut roots: Vec<String> = Vec::new();
    roots.extend(
        db.images(&strata_formats::filters::Filter::always())?
            .iter()
            .map(|i| i.target.digest().to_string()),
    );
    let mut leased_ingests = BTreeSet::new();
    for lease in &leases {
        for r in &lease.resources {
            match r.kind.as_str() {
                "content" => roots.push(r.id.clone()),
                "ingests" => {
                    leased_ingests.insert(r.id.clone());
                }
                _ => {}
            }
        }
    }
    roots.extend(
        records
            .iter()
            .filter(|(_, r)| r.labels.contains_key(LABEL_GC_ROOT))
            .map(|(d, _)| d.clone()),
    );
    let mut marked: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.into_iter().collect();
    while let Some(d) = queue.pop_front() {
        if !marked.insert(d.clone()) {
            continue;
        }
        if let Some(rec) = records.get(&d) {
            for (k, v) in &rec.labels {
                if k.starts_with(LABEL_GC_REF_CONTENT_PREFIX) && !marked.contains(v) {
                    queue.push_back(v.clone());
                }
            }
        }
    }

    // Sweep blobs: file first, record after.
    let mut gone_records = Vec::new();
    let on_disk = content.list_digests()?;
    for digest in &on_disk {
        if marked.contains(&digest.to_string()) {
            report.kept += 1;
            continue;
        }
        let size = content.info(digest).map(|i| i.size).unwrap_or(0);
        if !opts.dry_run {
            match content.delete(digest) {
                Ok(()) | Err(ContentError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        report.removed_bytes += size;
        report.removed_blobs.push(digest.clone());
    }
    let on_disk: BTreeSet<String> = on_disk.iter().map(Digest::to_string).collect();
    for d in records.keys() {
        if !on_disk.contains(d) {
            gone_records.push(d.clone());
        }
    }
    report.orphan_records = gone_records.len();
    if !opts.dry_run && !gone_records.is_empty() {
        db.remove_blob_records(&gone_records)?;
    }

    // Sweep ingests nobody leases or has touched within the grace period.
    let cutoff = now
        .checked_sub(opts.ingest_grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let stale = |s: &crate::content::IngestStatus| {
        !leased_ingests.contains(&s.reference) && s.updated <= cutoff
    };
    if opts.dry_run {
        report.removed_ingests = content
            .list_statuses(&strata_formats::filters::Filter::always())?
            .into_iter()
            .filter(|s| stale(s))
            .map(|s| s.reference)
            .collect();
    } else {
        let (refs, _) = content.sweep_ingests(stale)?;
        report.removed_ingests = refs;
    }
    Ok(report)
}
