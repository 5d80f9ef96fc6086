//! Layer file trees ([`LayerSpec`]) and their deterministic tar and
//! tar+gzip encodings ([`BuiltLayer`]).
//!
//! Entries are written with GNU tar headers (long names and link targets use
//! the GNU `L`/`K` extensions), sorted by archive path with hardlinks moved
//! after everything else so their targets always precede them. Parent
//! directories that were not listed are added implicitly (mode `0755`)
//! unless [`LayerSpec::implicit_dirs`] turns that off. Whiteouts follow the
//! OCI layer spec: deleting `a/b` is the empty file `a/.wh.b`, and an opaque
//! directory `d` is marked by the empty file `d/.wh..wh..opq`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read, Write as _};

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::image::BlobRef;
use crate::random::RandomReader;
use crate::{Error, Result, sha256_digest};

/// Default modification time of entries: 2024-01-01T00:00:00Z.
pub const DEFAULT_MTIME: u64 = 1_704_067_200;

/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The bytes of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// `len` bytes of the [`RandomReader`] stream for `seed`, generated
    /// while the tar is written (nothing is held in memory beforehand).
    Random {
        /// Seed of the stream.
        seed: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl Content {
    /// Size of the content in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Random { len, .. } => *len,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Materializes the content.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        // Reading from a slice or the RNG cannot fail.
        let _ = self.reader().read_to_end(&mut out);
        out
    }

    /// A reader over the content.
    pub fn reader(&self) -> Box<dyn Read + '_> {
        match self {
            Content::Bytes(bytes) => Box::new(bytes.as_slice()),
            Content::Random { seed, len } => Box::new(RandomReader::new(*seed).take(*len)),
        }
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        Content::Bytes(bytes)
    }
}

impl From<&[u8]> for Content {
    fn from(bytes: &[u8]) -> Self {
        Content::Bytes(bytes.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Content {
    fn from(bytes: &[u8; N]) -> Self {
        Content::Bytes(bytes.to_vec())
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Content::Bytes(text.as_bytes().to_vec())
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Content::Bytes(text.into_bytes())
    }
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File(Content),
    /// A directory.
    Dir,
    /// A symbolic link; the target is stored verbatim (relative or absolute).
    Symlink {
        /// Link target.
        target: String,
    },
    /// A hard link to another archive path (normalized like entry paths).
    Hardlink {
        /// Path of the linked file inside the layer.
        target: String,
    },
    /// Deletes `path` from lower layers: written as `dir/.wh.name`.
    Whiteout,
    /// Hides the lower-layer contents of directory `path`: written as
    /// `path/.wh..wh..opq`.
    Opaque,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the layer; leading `/` and `./` are ignored. For
    /// [`EntryKind::Whiteout`] it is the deleted path, for
    /// [`EntryKind::Opaque`] the opaque directory.
    pub path: String,
    /// The kind of entry and its payload.
    pub kind: EntryKind,
    /// Permission bits (e.g. `0o755`; setuid/setgid/sticky allowed).
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

impl Entry {
    /// The path this entry has in the tar (e.g. `etc/.wh.motd` for a
    /// whiteout of `/etc/motd`).
    pub fn archive_path(&self) -> Result<String> {
        let path = normalize(&self.path)?;
        Ok(match self.kind {
            EntryKind::Whiteout => match path.rsplit_once('/') {
                Some((dir, name)) => format!("{dir}/{WHITEOUT_PREFIX}{name}"),
                None => format!("{WHITEOUT_PREFIX}{path}"),
            },
            EntryKind::Opaque => format!("{path}/{OPAQUE_MARKER}"),
            _ => path,
        })
    }
}

/// Normalizes a layer path: drops leading `/`, `.` components and repeated
/// slashes; rejects `..`, NUL and the empty path.
pub(crate) fn normalize(path: &str) -> Result<String> {
    let invalid = |reason| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(invalid("contains `..`"));
    }
    if parts.is_empty() {
        return Err(invalid("names the layer root"));
    }
    Ok(parts.join("/"))
}

/// A layer's file tree, built fluently.
///
/// Entries added by the builder methods take the current defaults for
/// owner ([`LayerSpec::owner`]) and mtime ([`LayerSpec::mtime`]).
///
/// ```
/// use strata_testdata::LayerSpec;
/// let layer = LayerSpec::new()
///     .file("etc/os-release", 0o644, "ID=strata\n")
///     .random_file("usr/lib/libfoo.so", 0o755, 1, 4096)
///     .symlink("usr/lib/libfoo.so.1", "libfoo.so")
///     .hardlink("usr/lib/libfoo-copy.so", "usr/lib/libfoo.so")
///     .whiteout("etc/motd")
///     .opaque("var/cache")
///     .build()
///     .unwrap();
/// assert!(layer.diff_id.starts_with("sha256:"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    entries: Vec<Entry>,
    uid: u64,
    gid: u64,
    mtime: u64,
    implicit_dirs: bool,
    created_by: Option<String>,
}

impl Default for LayerSpec {
    fn default() -> Self {
        LayerSpec::new()
    }
}

impl LayerSpec {
    /// An empty layer; defaults: owner `0:0`, mtime [`DEFAULT_MTIME`],
    /// implicit parent directories on.
    pub fn new() -> Self {
        LayerSpec {
            entries: Vec::new(),
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            implicit_dirs: true,
            created_by: None,
        }
    }

    /// Sets the owner of entries added after this call.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the mtime of entries added after this call (and of implicit directories).
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Whether missing parent directories are added to the tar (default `true`).
    pub fn implicit_dirs(mut self, on: bool) -> Self {
        self.implicit_dirs = on;
        self
    }

    /// Sets the `created_by` text of this layer's image history entry.
    pub fn created_by(mut self, text: impl Into<String>) -> Self {
        self.created_by = Some(text.into());
        self
    }

    fn push(mut self, path: impl Into<String>, kind: EntryKind, mode: u32) -> Self {
        self.entries.push(Entry {
            path: path.into(),
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
        });
        self
    }

    /// Adds a directory.
    pub fn dir(self, path: impl Into<String>, mode: u32) -> Self {
        self.push(path, EntryKind::Dir, mode)
    }

    /// Adds a regular file with the given content.
    pub fn file(self, path: impl Into<String>, mode: u32, content: impl Into<Content>) -> Self {
        self.push(path, EntryKind::File(content.into()), mode)
    }

    /// Adds a regular file of `len` pseudo-random bytes from `seed`.
    pub fn random_file(self, path: impl Into<String>, mode: u32, seed: u64, len: u64) -> Self {
        self.push(path, EntryKind::File(Content::Random { seed, len }), mode)
    }

    /// Adds a symlink (mode `0777`) pointing at `target`.
    pub fn symlink(self, path: impl Into<String>, target: impl Into<String>) -> Self {
        let target = target.into();
        self.push(path, EntryKind::Symlink { target }, 0o777)
    }

    /// Adds a hardlink to the layer path `target` (mode `0644`; readers use the target's).
    pub fn hardlink(self, path: impl Into<String>, target: impl Into<String>) -> Self {
        let target = target.into();
        self.push(path, EntryKind::Hardlink { target }, 0o644)
    }

    /// Deletes `path` from lower layers (an empty `.wh.` file with mode `0`, as docker writes it).
    pub fn whiteout(self, path: impl Into<String>) -> Self {
        self.push(path, EntryKind::Whiteout, 0)
    }

    /// Marks directory `dir` opaque (an empty `.wh..wh..opq` file with mode `0755`).
    pub fn opaque(self, dir: impl Into<String>) -> Self {
        self.push(dir, EntryKind::Opaque, 0o755)
    }

    /// Adds a fully specified entry.
    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// The entries added so far, in insertion order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The `created_by` history text, if set.
    pub fn history_created_by(&self) -> Option<&str> {
        self.created_by.as_deref()
    }

    /// The entries as they will appear in the tar: `(archive path, entry)`,
    /// including implicit parent directories, in archive order.
    pub fn archive_entries(&self) -> Result<Vec<(String, Cow<'_, Entry>)>> {
        let mut by_path: BTreeMap<String, Cow<'_, Entry>> = BTreeMap::new();
        for entry in &self.entries {
            let name = entry.archive_path()?;
            if by_path.insert(name.clone(), Cow::Borrowed(entry)).is_some() {
                return Err(Error::DuplicatePath(name));
            }
        }
        if self.implicit_dirs {
            let names: Vec<String> = by_path.keys().cloned().collect();
            for name in names {
                let mut end = 0;
                while let Some(slash) = name[end..].find('/') {
                    end += slash;
                    let parent = &name[..end];
                    if !by_path.contains_key(parent) {
                        let dir = Entry {
                            path: parent.to_owned(),
                            kind: EntryKind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            mtime: self.mtime,
                        };
                        by_path.insert(parent.to_owned(), Cow::Owned(dir));
                    }
                    end += 1;
                }
            }
        }
        let (links, mut ordered): (Vec<_>, Vec<_>) = by_path
            .into_iter()
            .partition(|(_, entry)| matches!(entry.kind, EntryKind::Hardlink { .. }));
        ordered.extend(links);
        Ok(ordered)
    }

    /// Encodes the uncompressed layer tar.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, entry) in self.archive_entries()? {
            append_entry(&mut builder, &name, &entry).map_err(Error::encode(&name))?;
        }
        builder
            .into_inner()
            .map_err(Error::encode("end of archive"))
    }

    /// Builds the tar, its gzip blob and their digests.
    pub fn build(&self) -> Result<BuiltLayer> {
        let tar = self.tar()?;
        let gzip = gzip(&tar).map_err(Error::encode("gzip stream"))?;
        Ok(BuiltLayer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&gzip),
            size: gzip.len() as u64,
            uncompressed_size: tar.len() as u64,
            tar,
            gzip,
            created_by: self.created_by.clone(),
        })
    }
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, name: &str, entry: &Entry) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_size(0);
    match &entry.kind {
        EntryKind::File(content) => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(content.len());
            builder.append_data(&mut header, name, content.reader())
        }
        EntryKind::Dir => {
            header.set_entry_type(EntryType::Directory);
            builder.append_data(&mut header, name, io::empty())
        }
        EntryKind::Whiteout | EntryKind::Opaque => {
            header.set_entry_type(EntryType::Regular);
            builder.append_data(&mut header, name, io::empty())
        }
        EntryKind::Symlink { target } => {
            header.set_entry_type(EntryType::Symlink);
            builder.append_link(&mut header, name, target)
        }
        EntryKind::Hardlink { target } => {
            header.set_entry_type(EntryType::Link);
            let target = normalize(target).map_err(io::Error::other)?;
            builder.append_link(&mut header, name, target)
        }
    }
}

/// Gzip-compresses `data` deterministically (level 6, mtime 0, OS "unknown", as Go writes it).
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(data.len() / 2 + 64), Compression::new(6));
    encoder.write_all(data)?;
    encoder.finish()
}

/// A built layer: the tar, its gzip blob and their digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip-compressed tar (the layer blob).
    pub gzip: Vec<u8>,
    /// `sha256:<hex>` of [`Self::tar`] (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// `sha256:<hex>` of [`Self::gzip`] (the manifest's layer digest).
    pub digest: String,
    /// Length of [`Self::gzip`].
    pub size: u64,
    /// Length of [`Self::tar`].
    pub uncompressed_size: u64,
    /// History text copied from [`LayerSpec::created_by`].
    pub created_by: Option<String>,
}

impl BuiltLayer {
    /// The manifest descriptor of the gzip blob.
    pub fn blob_ref(&self) -> BlobRef {
        BlobRef {
            media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
            digest: self.digest.clone(),
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests;
