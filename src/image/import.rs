//! [`import`]: OCI image layouts (directories and tars) and `docker save` archives into a
//! [`Store`], with containerd's `ctr image import` semantics. The archive pass lives in
//! [`archive`](super::archive), the `docker save` conversion in [`docker`](super::docker),
//! the graph walk and GC labels in [`walk`](super::walk).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use oci_spec::image::Descriptor;
use strata_formats::Digest;

use super::archive::{self, LOCK_WAIT, MAX_JSON_SIZE, Scanned};
use super::docker;
use super::error::ImageError;
use super::walk::{ImageWalk, descriptor_digest, parse_index};
use crate::metadata::ImageRecord;
use crate::store::Store;

/// The annotation containerd writes with an image's full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in a layout (often just a tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What an import reports as it goes, for per-blob progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportEvent {
    /// A blob is about to be copied into the store. `name` is its digest, or its path in
    /// the archive when the digest is not known yet.
    BlobStarted {
        /// The digest or archive path.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A blob is in the store; `existed` if it was there before (nothing was copied).
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Whether the store had it already.
        existed: bool,
    },
    /// An image record was created or replaced.
    ImageStored {
        /// The record's name.
        name: String,
        /// Its target's digest.
        target: Digest,
    },
}

/// How to import.
#[derive(Default, Clone)]
pub struct ImportOptions<'a> {
    /// The name prefix for entries that carry only a tag, or no name at all (default: the
    /// input's file name without its tar extension).
    pub base_name: Option<String>,
    /// Called for each [`ImportEvent`], on the importing thread.
    pub progress: Option<&'a dyn Fn(&ImportEvent)>,
}

impl fmt::Debug for ImportOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("base_name", &self.base_name)
            .field("progress", &self.progress.map(|_| "Fn"))
            .finish()
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The image records created or replaced, in the order of the input.
    pub images: Vec<ImageRecord>,
    /// Distinct blobs the imported images reference (all now in the store).
    pub blobs: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Of those, blobs this import wrote (the others were in the store already).
    pub new_blobs: usize,
    /// Bytes of the blobs this import wrote.
    pub new_bytes: u64,
}

/// The state of one import, shared by its parts.
pub(crate) struct Session<'a> {
    pub(crate) store: &'a Store,
    progress: Option<&'a dyn Fn(&ImportEvent)>,
    /// Blobs this import committed, with their sizes.
    written: BTreeMap<Digest, u64>,
}

impl Session<'_> {
    pub(crate) fn emit(&self, event: ImportEvent) {
        if let Some(p) = self.progress {
            p(&event);
        }
    }

    /// Records a blob as ingested (or found) and reports it.
    pub(crate) fn note_ingested(&mut self, digest: &Digest, size: u64, existed: bool) {
        if !existed {
            self.written.insert(digest.clone(), size);
        }
        self.emit(ImportEvent::BlobDone {
            digest: digest.clone(),
            size,
            existed,
        });
    }
}

/// Imports the OCI image layout directory, OCI layout tar or `docker save` tar at `path`
/// into `store`, with containerd's `ctr image import` semantics.
///
/// The input form is detected:
/// 1. **A directory** is an OCI image layout: `index.json`, optional `oci-layout`,
///    `blobs/sha256/<hex>`. The graph of every `index.json` entry is walked, and each blob
///    it reaches is ingested from its file with its digest and size as expected values
///    (blobs the store has already are skipped).
/// 2. **A file** (or a pipe such as `/dev/stdin`; gzip-compressed or not) is a tar, read
///    once, front to back: every blob lands in the store, verified against its digest
///    (`blobs/sha256/<hex>` entries) or under the digest of its bytes (other files). If the
///    tar has an `index.json` it is an OCI layout tar (`docker save` ≥ 25,
///    `skopeo copy oci-archive:`) and its graph is walked as for a directory; otherwise its
///    `manifest.json` makes it a classic `docker save` tar, and a Docker schema2 manifest is
///    written for each image, byte for byte as containerd 1.6 writes it, after checking the
///    layers against the config's `rootfs.diff_ids`. Archive paths are only ever keys of an
///    in-memory map; absolute or `..` paths cannot be referenced.
///
/// Every index and manifest gets containerd's GC reference labels (see [`ImageWalk`]), then
/// one image record per name is created or replaced. Garbage collection is held off for the
/// whole import ([`Store::hold_gc`]), so blobs that are stored but not yet referenced by a
/// record are never swept. A failed import creates no records; blobs it stored stay until
/// the next collection (as do the unreferenced files of a `docker save` tar, such as
/// `<id>/json`).
///
/// **Names.** For OCI layouts each `index.json` entry is named by its annotation
/// `io.containerd.image.name`, else `org.opencontainers.image.ref.name`. A bare tag (no `/`
/// and no `:`, e.g. `1.0`) becomes `<base>:<tag>`; an entry without a name annotation
/// becomes `<base>@<digest>`. Names that parse as references are then normalised as for
/// `docker save` tars (`sample:1.0` → `docker.io/library/sample:1.0`); others are kept as
/// they are. The base is [`ImportOptions::base_name`] or else the input's
/// file name without `.tar`, `.tar.gz`, `.tgz` or `.tar.zst` (a directory's name is used
/// whole; `/dev/stdin` gives `stdin`). For `docker save` tars each RepoTag becomes a record,
/// normalised as containerd does ([`normalize_reference`](super::normalize_reference):
/// `busybox:1.36` → `docker.io/library/busybox:1.36`); an image without RepoTags is named
/// `<base>@<digest>`. The record's target is the `index.json` entry (so a multi-platform
/// image targets its index) or the generated manifest.
///
/// Errors are [`ImageError::Import`] naming `path`, wrapping the cause: a blob whose bytes
/// do not match its digest ([`ImageError::DigestMismatch`]; nothing is stored under that
/// digest), a referenced blob or file missing from the archive
/// ([`ImageError::MissingBlob`], [`ImageError::MissingEntry`]), a layer whose uncompressed
/// digest is not the config's diffID ([`ImageError::DiffIdMismatch`]), malformed or
/// oversized documents, unsafe paths, or store failures.
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions<'_>,
) -> Result<Imported, ImageError> {
    import_inner(store, path, opts).map_err(|cause| ImageError::Import {
        archive: path.display().to_string(),
        cause: Box::new(cause),
    })
}

fn import_inner(
    store: &Store,
    path: &Path,
    opts: &ImportOptions<'_>,
) -> Result<Imported, ImageError> {
    let _gc = store.hold_gc()?;
    let meta =
        fs::metadata(path).map_err(|e| ImageError::io(format!("stat {}", path.display()), e))?;
    let base = match &opts.base_name {
        Some(b) if !b.is_empty() => b.clone(),
        _ => default_base_name(path, meta.is_dir()),
    };
    let mut session = Session {
        store,
        progress: opts.progress,
        written: BTreeMap::new(),
    };
    let content = store.content().clone();
    let mut walk = ImageWalk::new(&content);
    let mut targets: Vec<(String, Descriptor)> = Vec::new();

    if meta.is_dir() {
        let index = read_layout_file(path, "index.json")?
            .ok_or_else(|| ImageError::invalid("not an OCI image layout", "no index.json"))?;
        check_oci_layout(read_layout_file(path, "oci-layout")?.as_deref())?;
        let index = parse_index(&index, "index.json")?;
        for desc in index.manifests() {
            walk.walk(desc, "index.json", &mut |digest, desc, referrer| {
                fetch_layout_blob(&mut session, path, digest, desc, referrer)
            })?;
            targets.push((oci_name(desc, &base)?, desc.clone()));
        }
    } else {
        let scanned = archive::scan(&mut session, path)?;
        let Scanned {
            index_json,
            oci_layout,
            manifest_json,
            ..
        } = &scanned;
        if let Some(index) = index_json {
            check_oci_layout(oci_layout.as_deref())?;
            let index = parse_index(index, "index.json")?;
            for desc in index.manifests() {
                walk.walk(desc, "index.json", &mut |_, _, _| Ok(()))?;
                targets.push((oci_name(desc, &base)?, desc.clone()));
            }
        } else if let Some(manifest_json) = manifest_json {
            for image in docker::convert(&mut session, &scanned, manifest_json)? {
                walk.walk(&image.manifest, "manifest.json", &mut |_, _, _| Ok(()))?;
                if image.names.is_empty() {
                    targets.push((
                        super::local::record_name(&format!("{base}@{}", image.manifest.digest())),
                        image.manifest,
                    ));
                } else {
                    targets.extend(image.names.into_iter().map(|n| (n, image.manifest.clone())));
                }
            }
        } else {
            return Err(ImageError::invalid(
                "not an OCI layout or docker-save archive",
                "no index.json or manifest.json",
            ));
        }
    }

    let mut images: Vec<ImageRecord> = Vec::with_capacity(targets.len());
    for (name, target) in targets {
        let now = SystemTime::now();
        let record = ImageRecord {
            name,
            target,
            labels: BTreeMap::new(),
            created: now,
            updated: now,
        };
        let stored = store.metadata().put_image(&record, true)?;
        session.emit(ImportEvent::ImageStored {
            name: stored.name.clone(),
            target: descriptor_digest(&stored.target)?,
        });
        match images.iter_mut().find(|i| i.name == stored.name) {
            Some(earlier) => *earlier = stored,
            None => images.push(stored),
        }
    }
    let visited = walk.visited();
    let new: Vec<u64> = visited
        .keys()
        .filter_map(|d| session.written.get(d).copied())
        .collect();
    Ok(Imported {
        images,
        blobs: visited.len(),
        bytes: visited.values().sum(),
        new_blobs: new.len(),
        new_bytes: new.iter().sum(),
    })
}

/// Copies one blob of a layout directory into the store, unless it is there already.
fn fetch_layout_blob(
    session: &mut Session<'_>,
    dir: &Path,
    digest: &Digest,
    desc: &Descriptor,
    referrer: &str,
) -> Result<(), ImageError> {
    let content = session.store.content();
    if content.exists(digest) {
        session.note_ingested(digest, desc.size(), true);
        return Ok(());
    }
    let path = dir
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.encoded());
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::MissingBlob {
                digest: digest.clone(),
                referrer: referrer.to_owned(),
            });
        }
        Err(e) => return Err(ImageError::io(format!("open {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ImageError::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(ImageError::invalid(
            path.display().to_string(),
            "blob is not a regular file",
        ));
    }
    if meta.len() != desc.size() {
        return Err(ImageError::SizeMismatch {
            digest: digest.clone(),
            expected: desc.size(),
            actual: meta.len(),
        });
    }
    session.emit(ImportEvent::BlobStarted {
        name: digest.to_string(),
        size: desc.size(),
    });
    content
        .ingest(
            &format!("import-{digest}"),
            &mut file,
            Some(desc.size()),
            Some(digest),
            BTreeMap::new(),
            LOCK_WAIT,
        )
        .map_err(|e| ImageError::from_ingest(e, Some(digest)))?;
    session.note_ingested(digest, desc.size(), false);
    Ok(())
}

/// Reads a small file at the top of a layout directory, if it exists.
fn read_layout_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io(format!("open {}", path.display()), e)),
    };
    let size = file
        .metadata()
        .map_err(|e| ImageError::io(format!("stat {}", path.display()), e))?
        .len();
    if size > MAX_JSON_SIZE {
        return Err(ImageError::TooLarge {
            what: name.to_owned(),
            size,
            max: MAX_JSON_SIZE,
        });
    }
    let mut buf = Vec::new();
    file.take(MAX_JSON_SIZE)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::io(format!("read {}", path.display()), e))?;
    Ok(Some(buf))
}

/// Checks `oci-layout` (if present) declares a 1.x layout.
fn check_oci_layout(bytes: Option<&[u8]>) -> Result<(), ImageError> {
    #[derive(serde::Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let Some(bytes) = bytes else { return Ok(()) };
    let layout: Layout =
        serde_json::from_slice(bytes).map_err(|e| ImageError::invalid("oci-layout", e))?;
    if layout.version == "1" || layout.version.starts_with("1.") {
        Ok(())
    } else {
        Err(ImageError::Unsupported(format!(
            "oci-layout: image layout version {:?} is not supported",
            layout.version
        )))
    }
}

/// The record name of an `index.json` entry (see the module documentation).
fn oci_name(desc: &Descriptor, base: &str) -> Result<String, ImageError> {
    let annotations = desc.annotations().as_ref();
    let name = annotations
        .and_then(|a| {
            a.get(ANNOTATION_IMAGE_NAME)
                .or_else(|| a.get(ANNOTATION_REF_NAME))
        })
        .filter(|n| !n.is_empty());
    let name = match name {
        Some(tag) if !tag.contains(['/', ':']) => format!("{base}:{tag}"),
        Some(name) => name.clone(),
        None => format!("{base}@{}", descriptor_digest(desc)?),
    };
    Ok(super::local::record_name(&name))
}

/// The default base name: the input's file name without a tar extension.
fn default_base_name(path: &Path, is_dir: bool) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            path.canonicalize()
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "import".to_owned());
    if is_dir {
        return name;
    }
    for ext in [".tar.gz", ".tgz", ".tar.zst", ".tar"] {
        if let Some(stem) = name.strip_suffix(ext).filter(|s| !s.is_empty()) {
            return stem.to_owned();
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;
    use std::collections::HashMap;

    #[test]
    fn base_names_drop_tar_extensions() {
        assert_eq!(
            default_base_name(Path::new("/x/sample.tar"), false),
            "sample"
        );
        assert_eq!(default_base_name(Path::new("app.tar.gz"), false), "app");
        assert_eq!(default_base_name(Path::new("app.tgz"), false), "app");
        assert_eq!(default_base_name(Path::new("/dev/stdin"), false), "stdin");
        assert_eq!(
            default_base_name(Path::new("/x/my.layout"), true),
            "my.layout"
        );
    }

    #[test]
    fn names_from_annotations() {
        let d = Digest::of(b"m");
        let mut desc = Descriptor::new(
            MediaType::ImageManifest,
            1,
            super::super::walk::oci_digest(&d).unwrap(),
        );
        assert_eq!(
            oci_name(&desc, "base").unwrap(),
            format!("docker.io/library/base@{d}")
        );
        desc.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_owned(),
            "1.0".to_owned(),
        )])));
        assert_eq!(oci_name(&desc, "reg/app").unwrap(), "docker.io/reg/app:1.0");
        assert_eq!(
            oci_name(&desc, "R").unwrap(),
            "R:1.0",
            "not a reference: as is"
        );
        desc.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_owned(), "1.0".to_owned()),
            (
                ANNOTATION_IMAGE_NAME.to_owned(),
                "docker.io/library/app:1.0".to_owned(),
            ),
        ])));
        assert_eq!(oci_name(&desc, "x").unwrap(), "docker.io/library/app:1.0");
    }
}
