//! What the stargz provider keeps on disk for each layer it mounted, so that a restarted
//! daemon can serve the layer again without the registry: a small JSON record (which
//! image and blob, its size and TOC digest) and the blob's tail ([`super::tail`]), both
//! named by the snapshot's chainID.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_formats::Digest;

/// One mounted layer, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The snapshot (the layer's chainID).
    pub chain_id: String,
    /// The image reference chunks are fetched through.
    pub image_ref: String,
    /// The layer blob.
    pub layer_digest: String,
    /// The blob's size.
    pub size: u64,
    /// The TOC digest from the layer's annotation.
    pub toc_digest: String,
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// Records under `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<RecordDir> {
        std::fs::create_dir_all(dir)?;
        Ok(RecordDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The file stem for `chain_id`; `None` when it is not a digest (nothing is ever
    /// written under a name taken from a label unchecked).
    fn stem(chain_id: &str) -> Option<String> {
        let digest: Digest = chain_id.parse().ok()?;
        Some(digest.to_string().replace(':', "-"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The JSON record's path.
    pub fn record_path(&self, chain_id: &str) -> Option<PathBuf> {
        Self::stem(chain_id).map(|s| self.dir.join(format!("{s}.json")))
    }

    /// The tail's path.
    pub fn tail_path(&self, chain_id: &str) -> Option<PathBuf> {
        Self::stem(chain_id).map(|s| self.dir.join(format!("{s}.tail")))
    }

    /// Saves `record` (temp file + rename, synced, the directory too).
    pub fn save(&self, record: &LayerRecord) -> std::io::Result<()> {
        let path = self
            .record_path(&record.chain_id)
            .ok_or_else(|| bad_name(&record.chain_id))?;
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&path)
    }

    /// The record of `chain_id`.
    pub fn load(&self, chain_id: &str) -> std::io::Result<LayerRecord> {
        let path = self
            .record_path(chain_id)
            .ok_or_else(|| bad_name(chain_id))?;
        let bytes = std::fs::read(&path)?;
        let record: LayerRecord = serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        if record.chain_id != chain_id {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: the record is for {}", path.display(), record.chain_id),
            ));
        }
        Ok(record)
    }

    /// Removes the record and tail of `chain_id` (missing files are fine).
    pub fn remove(&self, chain_id: &str) {
        for path in [self.record_path(chain_id), self.tail_path(chain_id)]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The chainIDs that have a record.
    pub fn chain_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("sha256-"))
            .filter_map(|n| {
                let stem = n
                    .strip_suffix(".json")
                    .or_else(|| n.strip_suffix(".tail"))?;
                Some(stem.replacen('-', ":", 1))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Syncs the directory holding `path`, so a rename into it survives a power cut (a lost
/// record would leave the layer unserved after a reboot).
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn bad_name(chain_id: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("chainID {chain_id:?} is not a digest"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordDir::open(dir.path()).unwrap();
        let chain = Digest::of(b"x").to_string();
        let r = LayerRecord {
            chain_id: chain.clone(),
            image_ref: "reg/app:1".into(),
            layer_digest: Digest::of(b"l").to_string(),
            size: 10,
            toc_digest: Digest::of(b"t").to_string(),
        };
        records.save(&r).unwrap();
        assert_eq!(records.load(&chain).unwrap(), r);
        assert_eq!(records.chain_ids(), std::slice::from_ref(&chain));
        assert!(records.record_path("../../etc/passwd").is_none());
        assert!(
            records
                .save(&LayerRecord {
                    chain_id: "../x".into(),
                    ..r
                })
                .is_err()
        );
        records.remove(&chain);
        assert!(records.chain_ids().is_empty());
    }
}
