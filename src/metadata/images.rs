//! Image records: a name pointing at a target descriptor (a manifest or an index).

use std::collections::BTreeMap;
use std::time::SystemTime;

use oci_spec::image::Descriptor;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use strata_formats::filters::{Adaptor, Filter};

use super::db::{IMAGES, MetadataDb, from_nanos, to_nanos};
use super::error::MetadataError;

/// A named image: containerd's `images.Image`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The image name, e.g. `docker.io/library/alpine:3.20`.
    pub name: String,
    /// What the name points at: a manifest or an index.
    pub target: Descriptor,
    /// Labels (`containerd.io/gc.*` and user labels).
    pub labels: BTreeMap<String, String>,
    /// When the record was created.
    pub created: SystemTime,
    /// When it last changed.
    pub updated: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct StoredImage {
    target: Descriptor,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created: u64,
    updated: u64,
}

impl Adaptor for ImageRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" if path.len() == 1 => Some(self.name.clone()),
            "target" => match path.get(1).map(String::as_str)? {
                "digest" => Some(self.target.digest().to_string()),
                "mediatype" => Some(self.target.media_type().to_string()),
                _ => None,
            },
            "labels" if path.len() >= 2 => self.labels.get(&path[1..].join(".")).cloned(),
            _ => None,
        }
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<ImageRecord, MetadataError> {
    let s: StoredImage = serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        what: "image",
        name: name.to_owned(),
        message: e.to_string(),
    })?;
    Ok(ImageRecord {
        name: name.to_owned(),
        target: s.target,
        labels: s.labels,
        created: from_nanos(s.created),
        updated: from_nanos(s.updated),
    })
}

fn encode(r: &ImageRecord) -> Result<Vec<u8>, MetadataError> {
    let s = StoredImage {
        target: r.target.clone(),
        labels: r.labels.clone(),
        created: to_nanos(r.created),
        updated: to_nanos(r.updated),
    };
    serde_json::to_vec(&s)
        .map_err(|e| MetadataError::InvalidArgument(format!("image {:?}: {e}", r.name)))
}

fn validate(r: &ImageRecord) -> Result<(), MetadataError> {
    if r.name.is_empty() {
        return Err(MetadataError::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    for (k, v) in &r.labels {
        strata_formats::labels::validate_label(k, v)
            .map_err(|e| MetadataError::InvalidArgument(format!("image {:?}: {e}", r.name)))?;
    }
    Ok(())
}

const TABLE: TableDefinition<'_, &str, &[u8]> = IMAGES;

impl MetadataDb {
    /// Creates an image record, or — if `replace` — replaces the target and labels of an
    /// existing one (keeping its creation time), as a re-import or re-pull does.
    pub fn put_image(
        &self,
        record: &ImageRecord,
        replace: bool,
    ) -> Result<ImageRecord, MetadataError> {
        validate(record)?;
        self.write(|txn| {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let existing = match table.get(record.name.as_str()).map_err(|e| self.err(e))? {
                Some(v) => Some(decode(&record.name, v.value())?),
                None => None,
            };
            let now = SystemTime::now();
            let stored = match existing {
                Some(_) if !replace => {
                    return Err(MetadataError::AlreadyExists {
                        what: "image",
                        name: record.name.clone(),
                    });
                }
                Some(old) => ImageRecord {
                    created: old.created,
                    updated: now,
                    ..record.clone()
                },
                None => ImageRecord {
                    created: now,
                    updated: now,
                    ..record.clone()
                },
            };
            table
                .insert(record.name.as_str(), encode(&stored)?.as_slice())
                .map_err(|e| self.err(e))?;
            Ok(stored)
        })
    }

    /// The image named `name`.
    pub fn image(&self, name: &str) -> Result<ImageRecord, MetadataError> {
        self.read(|txn| {
            let table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            match table.get(name).map_err(|e| self.err(e))? {
                Some(v) => decode(name, v.value()),
                None => Err(MetadataError::NotFound {
                    what: "image",
                    name: name.to_owned(),
                }),
            }
        })
    }

    /// Every image matching `filter` (fields `name`, `target.digest`, `target.mediatype`,
    /// `labels.<key>`), sorted by name.
    pub fn images(&self, filter: &Filter) -> Result<Vec<ImageRecord>, MetadataError> {
        self.read(|txn| {
            let table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let r = decode(k.value(), v.value())?;
                if filter.matches(&r) {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// Deletes the image named `name` (its content stays until garbage collection).
    pub fn delete_image(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|txn| {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            match table.remove(name).map_err(|e| self.err(e))? {
                Some(_) => Ok(()),
                None => Err(MetadataError::NotFound {
                    what: "image",
                    name: name.to_owned(),
                }),
            }
        })
    }
}
