//! [`MetadataDb`]: the redb file, its tables, and one-transaction-per-call access.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use strata_formats::Digest;

use super::error::MetadataError;
use crate::content::{BlobRecord, LabelStore};

pub(super) const BLOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blobs");
pub(super) const IMAGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("images");
pub(super) const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");

/// How long an operation waits for another process to release the database.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The metadata database of one Strata root. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetadataDb {
    path: PathBuf,
    wait: Duration,
    shared: Arc<Mutex<Weak<Database>>>,
}

/// Nanoseconds since the epoch: containerd keeps timestamps at nanosecond precision.
pub(crate) fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

#[derive(Serialize, Deserialize)]
struct StoredBlob {
    created: u64,
    updated: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl MetadataDb {
    /// Opens (creating if needed) the database at `path`, with all its tables.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, MetadataError> {
        let db = Self {
            path: path.into(),
            wait: DEFAULT_WAIT,
            shared: Arc::default(),
        };
        db.write(|txn| {
            for t in [BLOBS, IMAGES, LEASES] {
                txn.open_table(t).map_err(|e| db.err(e))?;
            }
            Ok(())
        })?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, e: impl std::fmt::Display) -> MetadataError {
        MetadataError::Database {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The open database. Tasks of this process that overlap share one handle (redb lets
    /// one handle per file exist); the file is closed when the last of them is done, so
    /// other `strata` processes get their turn between operations.
    fn database(&self) -> Result<Arc<Database>, MetadataError> {
        let mut shared = self.shared.lock().expect("invariant: not poisoned");
        if let Some(db) = shared.upgrade() {
            return Ok(db);
        }
        let start = Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            match Database::create(&self.path) {
                Ok(db) => {
                    let db = Arc::new(db);
                    *shared = Arc::downgrade(&db);
                    return Ok(db);
                }
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < self.wait => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(MetadataError::Busy {
                        path: self.path.display().to_string(),
                        waited_ms: start.elapsed().as_millis(),
                    });
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Runs `f` in one write transaction, committed if `f` succeeds.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let db = self.database()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&txn)?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Runs `f` in one read transaction.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        f(&txn)
    }

    /// Every blob record, by digest (the garbage collector's view of labels).
    pub fn blob_records(&self) -> Result<BTreeMap<String, BlobRecord>, MetadataError> {
        self.read(|txn| {
            let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut out = BTreeMap::new();
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                out.insert(k.value().to_owned(), decode_blob(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Removes blob records by digest string, in one transaction.
    pub fn remove_blob_records(&self, digests: &[String]) -> Result<(), MetadataError> {
        self.write(|txn| {
            let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            for d in digests {
                table.remove(d.as_str()).map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }
}

fn decode_blob(key: &str, bytes: &[u8]) -> Result<BlobRecord, MetadataError> {
    let s: StoredBlob = serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        what: "blob",
        name: key.to_owned(),
        message: e.to_string(),
    })?;
    Ok(BlobRecord {
        created: from_nanos(s.created),
        updated: from_nanos(s.updated),
        labels: s.labels,
    })
}

impl LabelStore for MetadataDb {
    fn get(&self, digest: &Digest) -> Result<Option<BlobRecord>, String> {
        let key = digest.to_string();
        self.read(|txn| {
            let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            match table.get(key.as_str()).map_err(|e| self.err(e))? {
                Some(v) => decode_blob(&key, v.value()).map(Some),
                None => Ok(None),
            }
        })
        .map_err(|e| e.to_string())
    }

    fn put(&self, digest: &Digest, record: &BlobRecord) -> Result<(), String> {
        let stored = StoredBlob {
            created: to_nanos(record.created),
            updated: to_nanos(record.updated),
            labels: record.labels.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        self.write(|txn| {
            let mut table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            table
                .insert(digest.to_string().as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
            Ok(())
        })
        .map_err(|e| e.to_string())
    }

    fn remove(&self, digest: &Digest) -> Result<(), String> {
        self.remove_blob_records(&[digest.to_string()])
            .map_err(|e| e.to_string())
    }
}
