//! The transactional metadata store every local snapshotter keeps in `<root>/metadata.db`
//! (containerd's `snapshots/storage`, on redb instead of bolt).
//!
//! It records each snapshot by key: a numeric id (which names the snapshot's directory and
//! never changes, even when an active snapshot is committed under a new name), its kind,
//! parent, labels, created/updated times in nanoseconds, and for committed snapshots the
//! usage measured at commit. A parent → child index makes "has children" one range lookup.
//!
//! A snapshotter runs each operation in one [`Transaction`]: checks and changes happen
//! together, and directory work done inside the transaction (rename into place, rename to
//! trash) is ordered so that a crash leaves either the old state or an unreferenced
//! directory for `Cleanup`. redb commits with fsync. The file stays open for the
//! snapshotter's lifetime; redb lets one process hold it, so a second process gets
//! [`ErrorKind::Unavailable`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use strata_formats::ErrorKind;
use strata_formats::filters::Filter;
use strata_formats::labels::validate_labels;

use crate::{Info, Kind, Labels, SnapshotError, Usage};

pub(crate) mod snapshot_dirs;

/// Snapshot records by key (or name, once committed), JSON-encoded [`Record`]s.
const SNAPSHOTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshots");
/// (parent id, child id) → child key: answers "does this snapshot have children".
const CHILDREN: TableDefinition<'_, (u64, u64), &str> = TableDefinition::new("children");
/// Counters; `snapshot-id` is the last id handed out.
const SEQUENCES: TableDefinition<'_, &str, u64> = TableDefinition::new("sequences");
const ID_SEQUENCE: &str = "snapshot-id";

/// One snapshot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: u8,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    labels: Labels,
    created: u64,
    updated: u64,
    #[serde(default)]
    inodes: i64,
    #[serde(default)]
    size: i64,
}

impl Record {
    fn kind(&self, key: &str) -> Result<Kind, SnapshotError> {
        Kind::from_i32(i32::from(self.kind)).ok_or_else(|| {
            SnapshotError::internal(format!(
                "snapshot {key}: stored kind {} is not valid",
                self.kind
            ))
        })
    }

    fn info(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(Info {
            name: key.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind(key)?,
            labels: self.labels.clone(),
            created: from_nanos(self.created),
            updated: from_nanos(self.updated),
        })
    }

    fn usage(&self) -> Usage {
        Usage {
            inodes: self.inodes,
            size: self.size,
        }
    }
}

/// What a snapshotter needs to lay out an active snapshot or view: its id and kind, and
/// the ids of its parent chain, nearest parent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id; its directory is named after it.
    pub id: u64,
    /// Active or view.
    pub kind: Kind,
    /// Parent ids, nearest first (the overlay `lowerdir` order).
    pub parent_ids: Vec<u64>,
}

/// Nanoseconds since the epoch (containerd keeps nanosecond precision).
fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

/// The current time, rounded to what the store keeps, so that what an operation returns
/// equals what a later Stat reads back.
fn now() -> SystemTime {
    from_nanos(to_nanos(SystemTime::now()))
}

/// Labels as containerd stores them: a label with an empty value is not stored.
fn stored_labels(labels: Labels) -> Labels {
    labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

fn check_labels(what: &str, labels: &Labels) -> Result<(), SnapshotError> {
    validate_labels(labels)
        .map_err(|e| SnapshotError::new(e.kind(), format!("snapshot {what}: {e}")))
}

/// The metadata database of one snapshotter root. Share it behind an `Arc` or own it in
/// the snapshotter; all methods take `&self`.
#[derive(Debug)]
pub struct MetaStore {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl MetaStore {
    /// Opens (creating if needed) the store at `path` and keeps it open until
    /// [`MetaStore::close`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`] when another process holds the file; Internal for
    /// any other failure to open or initialise it.
    pub fn open(path: &Path) -> Result<MetaStore, SnapshotError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(SnapshotError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "snapshot metadata {}: held open by another process (is `strata serve` running?)",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(SnapshotError::internal(format!(
                    "snapshot metadata {}: open: {e}",
                    path.display()
                )));
            }
        };
        let store = MetaStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        };
        store.write(|txn| {
            let t = txn.writer()?;
            t.open_table(SNAPSHOTS).map_err(|e| txn.err(e))?;
            t.open_table(CHILDREN).map_err(|e| txn.err(e))?;
            t.open_table(SEQUENCES).map_err(|e| txn.err(e))?;
            Ok(())
        })?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn database(&self) -> Result<Arc<Database>, SnapshotError> {
        let guard = self
            .db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.clone().ok_or_else(|| {
            SnapshotError::failed_precondition(format!(
                "snapshot metadata {}: the snapshotter is closed",
                self.path.display()
            ))
        })
    }

    /// Runs `f` in a read transaction (a consistent snapshot of the store).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        f(&Transaction {
            path: &self.path,
            inner: Inner::Read(txn),
        })
    }

    /// Runs `f` in the write transaction (one at a time; others wait) and commits it,
    /// durably, if `f` succeeds. When `f` fails nothing it did to the store remains.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let db = self.database()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let txn = Transaction {
            path: &self.path,
            inner: Inner::Write(Box::new(txn)),
        };
        let out = f(&txn)?;
        match txn.inner {
            Inner::Write(t) => t.commit().map_err(|e| self.err(e))?,
            Inner::Read(_) => {
                return Err(SnapshotError::internal(
                    "invariant: write() holds a write transaction",
                ));
            }
        }
        Ok(out)
    }

    /// Closes the database file. Operations afterwards fail with FailedPrecondition;
    /// closing twice is not an error. A transaction still running finishes first: the
    /// file is released when it ends.
    pub fn close(&self) {
        let mut guard = self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.take();
    }

    fn err(&self, e: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::internal(format!("snapshot metadata {}: {e}", self.path.display()))
    }
}

enum Inner {
    Read(redb::ReadTransaction),
    Write(Box<redb::WriteTransaction>),
}

/// One transaction on the store: every check and change of a snapshotter operation.
pub struct Transaction<'a> {
    path: &'a Path,
    inner: Inner,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let writable = matches!(self.inner, Inner::Write(_));
        f.debug_struct("Transaction")
            .field("path", &self.path)
            .field("writable", &writable)
            .finish()
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapshotError> {
    serde_json::from_slice(bytes).map_err(|e| {
        SnapshotError::internal(format!("snapshot {key}: stored record is corrupt: {e}"))
    })
}

fn all_records<T>(table: &T) -> Result<Vec<(String, Vec<u8>)>, redb::StorageError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

impl Transaction<'_> {
    fn err(&self, e: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::internal(format!("snapshot metadata {}: {e}", self.path.display()))
    }

    fn writer(&self) -> Result<&redb::WriteTransaction, SnapshotError> {
        match &self.inner {
            Inner::Write(t) => Ok(t),
            Inner::Read(_) => Err(SnapshotError::internal(
                "invariant: changing the store needs a write transaction",
            )),
        }
    }

    fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, SnapshotError> {
        let bytes = match &self.inner {
            Inner::Read(t) => {
                let table = t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
                table
                    .get(key)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value().to_vec())
            }
            Inner::Write(t) => {
                let table = t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
                table
                    .get(key)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value().to_vec())
            }
        };
        Ok(bytes)
    }

    fn record(&self, key: &str) -> Result<Option<Record>, SnapshotError> {
        self.raw(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    fn existing(&self, key: &str) -> Result<Record, SnapshotError> {
        self.record(key)?
            .ok_or_else(|| SnapshotError::not_found(format!("snapshot {key}: not found")))
    }

    fn records(&self) -> Result<Vec<(String, Record)>, SnapshotError> {
        let rows = match &self.inner {
            Inner::Read(t) => all_records(&t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?),
            Inner::Write(t) => all_records(&t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?),
        }
        .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(k, v)| decode(&k, &v).map(|r| (k, r)))
            .collect()
    }

    /// The ids of `record`'s parents, nearest first.
    fn parent_ids(&self, key: &str, record: &Record) -> Result<Vec<u64>, SnapshotError> {
        let mut ids = Vec::new();
        let mut next = record.parent.clone();
        while let Some(parent) = next {
            let p = self.record(&parent)?.ok_or_else(|| {
                SnapshotError::not_found(format!(
                    "snapshot {key}: parent {parent} in its chain not found"
                ))
            })?;
            ids.push(p.id);
            next = p.parent;
        }
        Ok(ids)
    }

    /// The id, information and stored usage of `key` (zero unless committed).
    pub fn info(&self, key: &str) -> Result<(u64, Info, Usage), SnapshotError> {
        let record = self.existing(key)?;
        Ok((record.id, record.info(key)?, record.usage()))
    }

    /// The active snapshot or view `key` with its parent chain.
    ///
    /// # Errors
    ///
    /// NotFound; FailedPrecondition when `key` is committed.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot, SnapshotError> {
        let record = self.existing(key)?;
        let kind = record.kind(key)?;
        if kind == Kind::Committed {
            return Err(SnapshotError::failed_precondition(format!(
                "snapshot {key}: is committed, not active or a view"
            )));
        }
        Ok(Snapshot {
            id: record.id,
            kind,
            parent_ids: self.parent_ids(key, &record)?,
        })
    }

    /// Every snapshot matching any of `filters` (containerd's syntax; empty matches all),
    /// in key order, with its id.
    ///
    /// # Errors
    ///
    /// InvalidArgument when a filter does not parse.
    pub fn walk(&self, filters: &[String]) -> Result<Vec<(u64, Info)>, SnapshotError> {
        let filter =
            Filter::parse_any(filters).map_err(|e| SnapshotError::new(e.kind(), e.to_string()))?;
        let mut out = Vec::new();
        for (key, record) in self.records()? {
            let info = record.info(&key)?;
            if filter.matches(&|path: &[String]| field(&info, path)) {
                out.push((record.id, info));
            }
        }
        Ok(out)
    }

    /// Every snapshot id with its key: the directories that must be kept.
    pub fn ids(&self) -> Result<BTreeMap<u64, String>, SnapshotError> {
        Ok(self
            .records()?
            .into_iter()
            .map(|(key, record)| (record.id, key))
            .collect())
    }

    fn next_id(&self) -> Result<u64, SnapshotError> {
        let t = self.writer()?;
        let mut table = t.open_table(SEQUENCES).map_err(|e| self.err(e))?;
        let last = table
            .get(ID_SEQUENCE)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value());
        let id = last
            .checked_add(1)
            .ok_or_else(|| self.err("snapshot ids exhausted"))?;
        table.insert(ID_SEQUENCE, id).map_err(|e| self.err(e))?;
        Ok(id)
    }

    fn put(&self, key: &str, record: &Record) -> Result<(), SnapshotError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| self.err(format!("encode snapshot {key}: {e}")))?;
        let t = self.writer()?;
        let mut table = t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        table
            .insert(key, bytes.as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        let t = self.writer()?;
        let mut table = t.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        table.remove(key).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn link_child(&self, parent_id: u64, child_id: u64, child: &str) -> Result<(), SnapshotError> {
        let t = self.writer()?;
        let mut table = t.open_table(CHILDREN).map_err(|e| self.err(e))?;
        table
            .insert((parent_id, child_id), child)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn unlink_child(&self, parent_id: u64, child_id: u64) -> Result<(), SnapshotError> {
        let t = self.writer()?;
        let mut table = t.open_table(CHILDREN).map_err(|e| self.err(e))?;
        table
            .remove((parent_id, child_id))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether the snapshot with `id` is the parent of any snapshot.
    pub fn has_children(&self, id: u64) -> Result<bool, SnapshotError> {
        let range = (id, 0)..=(id, u64::MAX);
        let found = match &self.inner {
            Inner::Read(t) => {
                let table = t.open_table(CHILDREN).map_err(|e| self.err(e))?;
                table
                    .range(range)
                    .map_err(|e| self.err(e))?
                    .next()
                    .is_some()
            }
            Inner::Write(t) => {
                let table = t.open_table(CHILDREN).map_err(|e| self.err(e))?;
                table
                    .range(range)
                    .map_err(|e| self.err(e))?
                    .next()
                    .is_some()
            }
        };
        Ok(found)
    }

    /// Records the new active snapshot or view `key` over the committed `parent` ("" for
    /// none), created and updated now.
    ///
    /// # Errors
    ///
    /// As containerd: InvalidArgument for an empty key, a committed `kind` or bad labels;
    /// NotFound when `parent` does not exist; InvalidArgument when it is not committed;
    /// AlreadyExists when `key` is taken.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<(Snapshot, Info), SnapshotError> {
        if key.is_empty() {
            return Err(SnapshotError::invalid_argument(
                "snapshot key must not be empty",
            ));
        }
        if kind == Kind::Committed {
            return Err(SnapshotError::invalid_argument(format!(
                "snapshot {key}: only active snapshots and views can be created"
            )));
        }
        check_labels(key, &labels)?;
        let mut parent_ids = Vec::new();
        if !parent.is_empty() {
            let p = self.record(parent)?.ok_or_else(|| {
                SnapshotError::not_found(format!("snapshot {key}: parent {parent} not found"))
            })?;
            if p.kind(parent)? != Kind::Committed {
                return Err(SnapshotError::invalid_argument(format!(
                    "snapshot {key}: parent {parent} is not a committed snapshot"
                )));
            }
            parent_ids.push(p.id);
            parent_ids.extend(self.parent_ids(parent, &p)?);
        }
        if self.raw(key)?.is_some() {
            return Err(SnapshotError::already_exists(format!(
                "snapshot {key}: already exists"
            )));
        }
        let id = self.next_id()?;
        let t = now();
        let record = Record {
            id,
            kind: kind as u8,
            parent: (!parent.is_empty()).then(|| parent.to_owned()),
            labels: stored_labels(labels),
            created: to_nanos(t),
            updated: to_nanos(t),
            inodes: 0,
            size: 0,
        };
        self.put(key, &record)?;
        if let Some(&parent_id) = parent_ids.first() {
            self.link_child(parent_id, id, key)?;
        }
        let info = record.info(key)?;
        Ok((
            Snapshot {
                id,
                kind,
                parent_ids,
            },
            info,
        ))
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`, keeping its id
    /// and parent, with `labels` and the `usage` measured by the caller. Returns the id.
    ///
    /// # Errors
    ///
    /// InvalidArgument for an empty name or bad labels; NotFound when `key` does not
    /// exist; AlreadyExists when `name` does; FailedPrecondition when `key` is not active.
    pub fn commit_active(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        labels: Labels,
    ) -> Result<u64, SnapshotError> {
        if name.is_empty() {
            return Err(SnapshotError::invalid_argument(format!(
                "snapshot {key}: commit name must not be empty"
            )));
        }
        check_labels(name, &labels)?;
        let record = self.existing(key)?;
        if self.raw(name)?.is_some() {
            return Err(SnapshotError::already_exists(format!(
                "snapshot {name}: already exists"
            )));
        }
        let kind = record.kind(key)?;
        if kind != Kind::Active {
            return Err(SnapshotError::failed_precondition(format!(
                "snapshot {key}: is {kind}, only active snapshots can be committed"
            )));
        }
        let t = to_nanos(now());
        let committed = Record {
            kind: Kind::Committed as u8,
            labels: stored_labels(labels),
            created: t,
            updated: t,
            inodes: usage.inodes,
            size: usage.size,
            ..record
        };
        self.delete(key)?;
        self.put(name, &committed)?;
        if let Some(parent) = &committed.parent {
            let p = self.existing(parent)?;
            self.link_child(p.id, committed.id, name)?;
        }
        Ok(committed.id)
    }

    /// Removes the record of `key`; returns its id and kind.
    ///
    /// # Errors
    ///
    /// NotFound; FailedPrecondition when `key` has children.
    pub fn remove(&self, key: &str) -> Result<(u64, Kind), SnapshotError> {
        let record = self.existing(key)?;
        if self.has_children(record.id)? {
            return Err(SnapshotError::failed_precondition(format!(
                "snapshot {key}: cannot remove a snapshot that has children"
            )));
        }
        if let Some(parent) = &record.parent {
            let p = self.existing(parent)?;
            self.unlink_child(p.id, record.id)?;
        }
        self.delete(key)?;
        Ok((record.id, record.kind(key)?))
    }

    /// Updates the labels of `info.name` as containerd does: no `fieldpaths` or `labels`
    /// replaces them all, `labels.<k>` sets `k` to `info.labels[k]` (removing it when
    /// absent or empty); `updated` becomes now. Returns the id and the new information.
    ///
    /// # Errors
    ///
    /// InvalidArgument for an empty name, bad labels or any other field path; NotFound.
    pub fn update(&self, info: Info, fieldpaths: &[String]) -> Result<(u64, Info), SnapshotError> {
        let name = info.name.as_str();
        if name.is_empty() {
            return Err(SnapshotError::invalid_argument(
                "snapshot name must not be empty",
            ));
        }
        let mut record = self.existing(name)?;
        let mut labels = record.labels.clone();
        if fieldpaths.is_empty() {
            labels = info.labels.clone();
        }
        for path in fieldpaths {
            if let Some(label) = path.strip_prefix("labels.") {
                match info.labels.get(label) {
                    Some(value) => labels.insert(label.to_owned(), value.clone()),
                    None => labels.remove(label),
                };
            } else if path == "labels" {
                labels = info.labels.clone();
            } else {
                return Err(SnapshotError::invalid_argument(format!(
                    "snapshot {name}: cannot update field {path:?}, only labels can be updated"
                )));
            }
        }
        let labels = stored_labels(labels);
        check_labels(name, &labels)?;
        record.labels = labels;
        record.updated = to_nanos(now());
        self.put(name, &record)?;
        Ok((record.id, record.info(name)?))
    }
}

/// containerd's snapshot filter adaptor: `kind`, `name`, `parent` (present, possibly
/// empty), and `labels.<key>` (absent when the snapshot has no labels).
fn field(info: &Info, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "kind" => Some(info.kind.as_str().to_owned()),
        "name" => Some(info.name.clone()),
        "parent" => Some(info.parent.clone().unwrap_or_default()),
        "labels" => {
            if info.labels.is_empty() {
                return None;
            }
            info.labels.get(&rest.join(".")).cloned()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
