//! Reading an image tar (an OCI layout tar or a `docker save` tar) in one streaming pass.
//!
//! The pass works on any input that can be read once, front to back: a file, a gzip-compressed
//! file (detected by its magic bytes), or a pipe such as `docker save … | strata image import
//! /dev/stdin`. For each tar entry:
//! - `index.json`, `oci-layout`, `manifest.json` (bounded by [`MAX_JSON_SIZE`]) are kept
//!   in memory; `repositories` is skipped;
//! - `blobs/sha256/<hex>` is streamed into the content store with `<hex>` as the expected
//!   digest and the entry size as the expected size, so a corrupted blob is never stored
//!   (blobs the store already has are skipped without reading them);
//! - any other regular file is streamed into the store under the digest of its bytes: in a
//!   `docker save` tar these are the config (`<hex>.json`) and layers (`<id>/layer.tar`),
//!   and `manifest.json`, which says which is which, may come last. Files that turn out to
//!   be unreferenced (`<id>/json`, `VERSION`) are left for the next garbage collection, as
//!   containerd's importer leaves them;
//! - symlinks and hard links are recorded, so that names can be resolved through them
//!   (`docker save` links duplicate layers to one copy).
//!
//! Entry names are untrusted and never touch the host file system: they are only keys of an
//! in-memory map. Names that are absolute or climb out with `..` are not recorded, so
//! nothing can refer to them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use strata_formats::Digest;
use tar::EntryType;

use super::error::ImageError;
use super::import::{ImportEvent, Session};
use crate::content::{ContentError, LocalContentStore};

/// The largest `index.json`, `manifest.json` or `oci-layout` read from an archive.
pub const MAX_JSON_SIZE: u64 = 4 << 20;
/// How long an ingest waits for another writer holding the same ref.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How many links are followed when resolving a name.
const MAX_LINK_HOPS: usize = 16;

/// A file of the archive, as recorded by [`scan`].
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A regular file, now in the content store.
    File { digest: Digest, size: u64 },
    /// A symlink or hard link to another name (already cleaned and joined), or `None` if its
    /// target is unsafe.
    Link(Option<String>),
}

/// What one pass over an archive found.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// `index.json`, if present.
    pub(crate) index_json: Option<Vec<u8>>,
    /// `oci-layout`, if present.
    pub(crate) oci_layout: Option<Vec<u8>>,
    /// `manifest.json`, if present.
    pub(crate) manifest_json: Option<Vec<u8>>,
    /// Every other regular file and link, by cleaned name.
    pub(crate) entries: BTreeMap<String, Entry>,
}

/// Where a name in the archive leads.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// A file, in the content store.
    File { digest: Digest, size: u64 },
    /// Nothing (or a link loop, or a link to nothing).
    Missing,
    /// The name, or a link on the way, is absolute or climbs out with `..`.
    Unsafe,
}

impl Scanned {
    /// Resolves `name` (as written in `manifest.json`) through links.
    pub(crate) fn resolve(&self, name: &str) -> Resolved {
        let Some(mut name) = clean_path(name) else {
            return Resolved::Unsafe;
        };
        for _ in 0..=MAX_LINK_HOPS {
            match self.entries.get(&name) {
                Some(Entry::File { digest, size }) => {
                    return Resolved::File {
                        digest: digest.clone(),
                        size: *size,
                    };
                }
                Some(Entry::Link(Some(target))) => name = target.clone(),
                Some(Entry::Link(None)) => return Resolved::Unsafe,
                None => return Resolved::Missing,
            }
        }
        Resolved::Missing
    }
}

/// Cleans a relative archive path lexically: drops `.` and empty components (so `./a//b`
/// is `a/b`). Returns `None` for absolute paths, paths with `..`, and empty paths.
pub(crate) fn clean_path(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Joins a symlink target to the directory of the link, lexically, without leaving the
/// archive root. Returns `None` for absolute targets and for targets that climb out.
fn join_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Opens `path` for one streaming read, undoing gzip compression if the first bytes say so.
fn open_stream(path: &Path) -> Result<Box<dyn Read>, ImageError> {
    let file =
        File::open(path).map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader
        .fill_buf()
        .map_err(|e| ImageError::io(format!("read {}", path.display()), e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads the archive at `path` once, ingesting its files into the store (see the module
/// documentation).
pub(crate) fn scan(session: &mut Session<'_>, path: &Path) -> Result<Scanned, ImageError> {
    let content = session.store.content().clone();
    let mut archive = tar::Archive::new(open_stream(path)?);
    let mut scanned = Scanned::default();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        crate::metadata::unique_suffix()
    );
    let entries = archive
        .entries()
        .map_err(|e| ImageError::invalid("not a tar archive", e))?;
    for (ordinal, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| {
            // The tar reader may quote raw header bytes: keep the message printable and short.
            let reason: String = e
                .to_string()
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .take(120)
                .collect();
            ImageError::invalid("not a tar archive", format!("entry {ordinal}: {reason}"))
        })?;
        let Ok(raw) = String::from_utf8(entry.path_bytes().into_owned()) else {
            continue;
        };
        let Some(name) = clean_path(&raw) else {
            tracing::debug!(entry = %raw, "skipping tar entry with an unsafe name");
            continue;
        };
        let link_target = || {
            entry
                .link_name_bytes()
                .and_then(|l| String::from_utf8(l.into_owned()).ok())
        };
        match entry.header().entry_type() {
            EntryType::Symlink => {
                let target = link_target().and_then(|t| join_link(&name, &t));
                scanned.entries.insert(name, Entry::Link(target));
            }
            EntryType::Link => {
                let target = link_target().and_then(|t| clean_path(&t));
                scanned.entries.insert(name, Entry::Link(target));
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                let slot = match name.as_str() {
                    "index.json" => Some(&mut scanned.index_json),
                    "oci-layout" => Some(&mut scanned.oci_layout),
                    "manifest.json" => Some(&mut scanned.manifest_json),
                    "repositories" => continue,
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot = Some(read_small(&mut entry, &name, size)?);
                    continue;
                }
                let expected = name
                    .strip_prefix("blobs/sha256/")
                    .and_then(|hex| Digest::from_hex(hex).ok());
                if name.starts_with("blobs/") && expected.is_none() {
                    // Another algorithm, or a stray file: nothing can refer to it by digest.
                    tracing::debug!(entry = %name, "skipping blob entry that is not sha256:<hex>");
                    continue;
                }
                let digest = match &expected {
                    Some(d) if content.exists(d) => {
                        session.emit(ImportEvent::BlobDone {
                            digest: d.clone(),
                            size,
                            existed: true,
                        });
                        d.clone()
                    }
                    Some(d) => {
                        session.emit(ImportEvent::BlobStarted {
                            name: d.to_string(),
                            size,
                        });
                        let (digest, existed) = ingest_entry(
                            &content,
                            &format!("import-{d}"),
                            &mut entry,
                            size,
                            Some(d),
                        )
                        .map_err(|e| ImageError::from_ingest(e, Some(d)))?;
                        session.note_ingested(&digest, size, existed);
                        digest
                    }
                    None => {
                        session.emit(ImportEvent::BlobStarted {
                            name: name.clone(),
                            size,
                        });
                        let reference = format!("import-{unique}-{name}");
                        let (digest, existed) =
                            ingest_entry(&content, &reference, &mut entry, size, None).map_err(
                                |e| match ImageError::from_ingest(e, None) {
                                    ImageError::Content(c) => {
                                        ImageError::invalid(format!("tar entry {name:?}"), c)
                                    }
                                    other => other,
                                },
                            )?;
                        session.note_ingested(&digest, size, existed);
                        digest
                    }
                };
                scanned.entries.insert(name, Entry::File { digest, size });
            }
            _ => {}
        }
    }
    Ok(scanned)
}

fn read_small(entry: &mut dyn Read, name: &str, size: u64) -> Result<Vec<u8>, ImageError> {
    if size > MAX_JSON_SIZE {
        return Err(ImageError::TooLarge {
            what: name.to_owned(),
            size,
            max: MAX_JSON_SIZE,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(MAX_JSON_SIZE)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::io(format!("read tar entry {name:?}"), e))?;
    Ok(buf)
}

/// Streams `src` (exactly `size` bytes) into the store under `reference`, as
/// [`LocalContentStore::ingest`] does for sources that are `Send` (a tar entry is not).
/// A stream cannot seek, so an interrupted earlier ingest of the ref restarts from 0.
/// Returns the digest and whether the blob was already there.
pub(crate) fn ingest_entry(
    content: &LocalContentStore,
    reference: &str,
    src: &mut dyn Read,
    size: u64,
    expected: Option<&Digest>,
) -> Result<(Digest, bool), ContentError> {
    let mut writer = match content.writer_wait(reference, Some(size), expected, LOCK_WAIT) {
        Ok(w) => w,
        Err(ContentError::AlreadyExists(d)) => return Ok((d, true)),
        // A leftover of an interrupted import of a different archive under the same ref.
        Err(ContentError::TotalMismatch { .. }) => {
            content.abort(reference)?;
            match content.writer_wait(reference, Some(size), expected, LOCK_WAIT) {
                Ok(w) => w,
                Err(ContentError::AlreadyExists(d)) => return Ok((d, true)),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let result = (|| {
        if writer.status().offset > 0 {
            writer.truncate(0)?;
        }
        writer.copy_from(src)?;
        writer.commit(Some(size), expected, BTreeMap::new())
    })();
    match result {
        Ok(d) => Ok((d, false)),
        Err(ContentError::AlreadyExists(d)) => Ok((d, true)),
        Err(e) => {
            if !matches!(e, ContentError::Locked(_)) {
                let _ = content.abort(reference);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_rejects_paths() {
        assert_eq!(
            clean_path("./blobs//sha256/./ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            clean_path("manifest.json").as_deref(),
            Some("manifest.json")
        );
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", "."] {
            assert_eq!(clean_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn joins_links_inside_the_archive() {
        assert_eq!(
            join_link("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(
            join_link("abc/layer.tar", "other.tar").as_deref(),
            Some("abc/other.tar")
        );
        assert_eq!(join_link("abc/layer.tar", "../../etc/passwd"), None);
        assert_eq!(join_link("abc/layer.tar", "/etc/passwd"), None);
    }

    #[test]
    fn resolves_through_links_and_stops_at_loops() {
        let d = Digest::of(b"x");
        let mut s = Scanned::default();
        s.entries.insert(
            "a/layer.tar".into(),
            Entry::File {
                digest: d.clone(),
                size: 1,
            },
        );
        s.entries.insert(
            "b/layer.tar".into(),
            Entry::Link(Some("a/layer.tar".into())),
        );
        s.entries.insert(
            "c/layer.tar".into(),
            Entry::Link(Some("b/layer.tar".into())),
        );
        s.entries
            .insert("loop".into(), Entry::Link(Some("loop".into())));
        s.entries.insert("bad".into(), Entry::Link(None));
        assert!(matches!(s.resolve("./c/layer.tar"), Resolved::File { digest, .. } if digest == d));
        assert!(matches!(s.resolve("loop"), Resolved::Missing));
        assert!(matches!(s.resolve("nope"), Resolved::Missing));
        assert!(matches!(s.resolve("bad"), Resolved::Unsafe));
        assert!(matches!(s.resolve("../a/layer.tar"), Resolved::Unsafe));
    }
}
