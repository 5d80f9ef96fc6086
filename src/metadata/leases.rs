//! Leases: named, optionally expiring holds on content and ingests, so work in progress is
//! not garbage-collected (containerd's `leases` package).

use std::collections::BTreeMap;
use std::time::SystemTime;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::db::{LEASES, MetadataDb, from_nanos, to_nanos};
use super::error::MetadataError;

/// The lease label holding its expiry time (RFC 3339); an expired lease is deleted by the
/// next garbage collection and protects nothing.
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

/// One thing a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseResource {
    /// `content` (a blob digest) or `ingests` (an ingest ref), as containerd names them.
    pub kind: String,
    /// The digest or ref.
    pub id: String,
}

/// A lease: containerd's `leases.Lease` plus its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id.
    pub id: String,
    /// When it was created.
    pub created: SystemTime,
    /// Its labels (`containerd.io/gc.expire`).
    pub labels: BTreeMap<String, String>,
    /// What it holds.
    pub resources: Vec<LeaseResource>,
}

impl Lease {
    /// When the lease expires, if it has a valid expiry label.
    pub fn expires(&self) -> Option<SystemTime> {
        let v = self.labels.get(LABEL_GC_EXPIRE)?;
        let t =
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()?;
        Some(SystemTime::from(t))
    }

    /// Whether the lease has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|e| e <= now)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredLease {
    created: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resources: Vec<LeaseResource>,
}

fn decode(id: &str, bytes: &[u8]) -> Result<Lease, MetadataError> {
    let s: StoredLease = serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        what: "lease",
        name: id.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Lease {
        id: id.to_owned(),
        created: from_nanos(s.created),
        labels: s.labels,
        resources: s.resources,
    })
}

fn encode(l: &Lease) -> Vec<u8> {
    let s = StoredLease {
        created: to_nanos(l.created),
        labels: l.labels.clone(),
        resources: l.resources.clone(),
    };
    serde_json::to_vec(&s).expect("invariant: lease records serialize")
}

impl MetadataDb {
    /// Creates a lease with no resources.
    pub fn create_lease(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease, MetadataError> {
        if id.is_empty() {
            return Err(MetadataError::InvalidArgument(
                "lease id must not be empty".into(),
            ));
        }
        for (k, v) in &labels {
            strata_formats::labels::validate_label(k, v)
                .map_err(|e| MetadataError::InvalidArgument(format!("lease {id:?}: {e}")))?;
        }
        if let Some(v) = labels.get(LABEL_GC_EXPIRE) {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    MetadataError::InvalidArgument(format!(
                        "lease {id:?}: {LABEL_GC_EXPIRE}={v:?} is not RFC 3339: {e}"
                    ))
                })?;
        }
        let lease = Lease {
            id: id.to_owned(),
            created: SystemTime::now(),
            labels,
            resources: Vec::new(),
        };
        self.write(|txn| {
            let mut table = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            if table.get(id).map_err(|e| self.err(e))?.is_some() {
                return Err(MetadataError::AlreadyExists {
                    what: "lease",
                    name: id.to_owned(),
                });
            }
            table
                .insert(id, encode(&lease).as_slice())
                .map_err(|e| self.err(e))?;
            Ok(lease.clone())
        })
    }

    /// Adds a resource to a lease (idempotent).
    pub fn add_lease_resource(
        &self,
        id: &str,
        resource: LeaseResource,
    ) -> Result<(), MetadataError> {
        self.write(|txn| {
            let mut table = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            let mut lease = match table.get(id).map_err(|e| self.err(e))? {
                Some(v) => decode(id, v.value())?,
                None => {
                    return Err(MetadataError::NotFound {
                        what: "lease",
                        name: id.to_owned(),
                    });
                }
            };
            if !lease.resources.contains(&resource) {
                lease.resources.push(resource);
                lease.resources.sort();
            }
            table
                .insert(id, encode(&lease).as_slice())
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Every lease, sorted by id.
    pub fn leases(&self) -> Result<Vec<Lease>, MetadataError> {
        self.read(|txn| {
            let table = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Deletes a lease; what it held becomes collectable.
    pub fn delete_lease(&self, id: &str) -> Result<(), MetadataError> {
        self.write(|txn| {
            let mut table = txn.open_table(LEASES).map_err(|e| self.err(e))?;
            match table.remove(id).map_err(|e| self.err(e))? {
                Some(_) => Ok(()),
                None => Err(MetadataError::NotFound {
                    what: "lease",
                    name: id.to_owned(),
                }),
            }
        })
    }
}
