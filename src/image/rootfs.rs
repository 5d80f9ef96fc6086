//! An image's merged root filesystem, rebuilt from its layers in the content store, as the
//! [`RootFs`] that [`strata_formats::prefetch::prioritized_files`] walks: the files
//! `strata convert --prioritize-auto` puts first in each eStargz layer (issue #4, item 3).
//!
//! [`LayeredRootFs`] applies the layers bottom first as an overlay mount shows them: OCI
//! whiteouts (`.wh.NAME` hides `NAME`, `.wh..wh..opq` hides a directory's lower contents)
//! act on lower layers only; a non-directory hides a lower directory's whole subtree; an
//! entry's missing parents become directories (hiding a lower non-directory there, as in
//! a layer unpacked on its own); a hardlink takes its target's current contents.
//! Entry names are untrusted: they are normalised (`./usr/bin` → `/usr/bin`) and a name
//! with a `..` component, or that is not UTF-8, is skipped. Nothing touches the host
//! filesystem.
//!
//! Memory: an image may be gigabytes, but a start replay reads little of each file, and
//! always the same bytes for the same contents. So each regular file keeps only what the
//! replay reads: for an ELF file, the byte ranges [`parse_elf`] reads (headers,
//! `PT_INTERP`, the dynamic section and its strings: a few KiB), recorded by parsing it
//! once while the layer streams past (the file is held in memory alone, up to
//! [`MAX_ELF_SIZE`]); for the loader's configuration (`/etc/ld*`), its first
//! [`MAX_CONF_BYTES`]; for a `#!` script, its first [`MAX_SHEBANG_LEN`] bytes; for any
//! other file, its first 4 bytes (enough to tell it is neither). A view shorter than its
//! file reports its own length as the size, which answers those reads exactly as the whole
//! file would. The trade-off: a replay of anything but [`prioritized_files`] may read bytes
//! that were not kept (an error, not wrong data), and an `ld.so.conf` `include` outside
//! `/etc/ld*` is seen truncated. The whole tree is bounded by [`MAX_TREE_BYTES`]. The
//! price is one more decompression of every layer, before conversion starts.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, ImageManifest};
use serde_json::Value;
use strata_formats::elf::parse_elf;
use strata_formats::estargz::decompress_layer;
use strata_formats::prefetch::{
    FileKind, ImageConfigLite, MAX_PATH_LEN, MAX_SHEBANG_LEN, PrefetchError, RootFs,
    prioritized_files,
};
use strata_formats::{ErrorKind, ReadAt, ReadAtCursor};

use super::docker::MAX_CONFIG_SIZE;
use super::error::ImageError;
use super::walk::descriptor_digest;
use crate::store::Store;

/// Largest ELF file parsed (held in memory while it is); a larger one keeps only its first
/// bytes, so a replay that reaches it fails with a read error instead of guessing.
pub const MAX_ELF_SIZE: u64 = 256 << 20;
/// Bytes of a loader configuration file kept: what the loader replay reads of one.
pub const MAX_CONF_BYTES: u64 = 64 << 10;
/// Memory the merged tree may take (paths, link targets, kept bytes, per-entry overhead,
/// counted over every entry ever added); past it the image is refused.
pub const MAX_TREE_BYTES: u64 = 1 << 30;
/// Tree entries whiteouts and replaced directories may look at in all, bounding the work
/// a layer of many whiteouts over a deep tree can cause (a real image looks at each entry
/// a few times).
pub const MAX_SCANNED: u64 = 1 << 30;
/// What one tree entry is counted as, beyond its path and data.
const ENTRY_OVERHEAD: u64 = 96;
/// Bytes kept of a file that is neither ELF, `#!` nor loader configuration.
const MAGIC_LEN: usize = 4;

/// What a replay may read of one regular file: sorted, disjoint byte ranges of a file of
/// `size` bytes. Reading outside them fails with [`io::ErrorKind::Unsupported`].
#[derive(Debug)]
struct Kept {
    size: u64,
    ranges: Vec<(u64, Box<[u8]>)>,
}

impl Kept {
    /// A view of the first bytes of a file, whose size is theirs (see the module docs).
    fn prefix(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len() as u64,
            ranges: vec![(0, bytes.into())],
        }
    }

    fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(_, d)| d.len() as u64).sum()
    }
}

impl ReadAt for Kept {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.is_empty() || offset >= self.size {
            return Ok(0);
        }
        let i = self.ranges.partition_point(|(start, _)| *start <= offset);
        if let Some((start, data)) = i.checked_sub(1).map(|i| &self.ranges[i]) {
            let rel = usize::try_from(offset - start).unwrap_or(usize::MAX);
            if rel < data.len() {
                let n = buf.len().min(data.len() - rel);
                buf[..n].copy_from_slice(&data[rel..rel + n]);
                return Ok(n);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("byte {offset} of the file was not kept for the replay"),
        ))
    }
}

/// A [`ReadAt`] over a whole file that records which ranges are read.
struct Recorder<'a> {
    data: &'a [u8],
    reads: Mutex<Vec<(u64, u64)>>,
}

impl ReadAt for Recorder<'_> {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.data.read_at(buf, offset)?;
        if n > 0 {
            self.reads
                .lock()
                .map_err(|_| io::Error::other("recorder lock poisoned"))?
                .push((offset, offset + n as u64));
        }
        Ok(n)
    }
}

/// Parses `data` as [`parse_elf`] does and keeps exactly the bytes it read.
fn keep_elf(data: &[u8]) -> Kept {
    let rec = Recorder {
        data,
        reads: Mutex::new(Vec::new()),
    };
    // The result is not needed: the replay parses the kept bytes again and gets the same
    // answer, error included.
    let _ = parse_elf(&rec);
    let mut reads = rec.reads.into_inner().unwrap_or_else(|e| e.into_inner());
    reads.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in reads {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let ranges = merged
        .into_iter()
        .filter_map(|(s, e)| {
            Some((
                s,
                data.get(usize::try_from(s).ok()?..usize::try_from(e).ok()?)?
                    .into(),
            ))
        })
        .collect();
    Kept {
        size: data.len() as u64,
        ranges,
    }
}

#[derive(Debug, Clone)]
enum NodeKind {
    File(Arc<Kept>),
    Symlink(String),
    Dir,
    Other,
}

#[derive(Debug, Clone)]
struct Node {
    kind: NodeKind,
    /// The layer that put it there: whiteouts act on lower layers only.
    layer: usize,
}

/// An image's merged root filesystem, built layer by layer (see the module docs).
#[derive(Debug)]
pub struct LayeredRootFs {
    nodes: BTreeMap<String, Node>,
    /// Bytes accounted so far, against [`MAX_TREE_BYTES`].
    bytes: u64,
    /// Entries looked at by whiteouts so far, against [`MAX_SCANNED`].
    scanned: u64,
    layers: usize,
}

impl Default for LayeredRootFs {
    fn default() -> Self {
        Self::new()
    }
}

/// `/a/b/` for `/a/b`, `/` for `/`: the key prefix of a directory's descendants.
fn subtree_prefix(dir: &str) -> String {
    if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    }
}

/// A tar entry name as a normalised absolute path; `None` for `..`, non-UTF-8 or overlong
/// names.
fn clean_name(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw)
        .ok()
        .filter(|s| s.len() <= MAX_PATH_LEN)?;
    let mut parts = Vec::new();
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

impl LayeredRootFs {
    /// A tree holding only `/`.
    pub fn new() -> Self {
        let root = Node {
            kind: NodeKind::Dir,
            layer: 0,
        };
        Self {
            nodes: BTreeMap::from([("/".to_owned(), root)]),
            bytes: 0,
            scanned: 0,
            layers: 0,
        }
    }

    /// The merged tree of `layers` (bottom first), read from the content store.
    ///
    /// Errors: a layer missing from the store, not a (gzip, zstd or plain) tar, or a tree
    /// past [`MAX_TREE_BYTES`].
    pub fn from_store(store: &Store, layers: &[Descriptor]) -> Result<Self, ImageError> {
        let mut fs = Self::new();
        for layer in layers {
            let digest = descriptor_digest(layer)?;
            let reader = store.content().reader_at(&digest)?;
            let tar = decompress_layer(ReadAtCursor::new(reader))
                .map_err(|e| ImageError::invalid(format!("layer {digest}"), e))?;
            fs.apply_layer(tar, &format!("layer {digest}"))?;
        }
        Ok(fs)
    }

    /// Entries in the merged tree, `/` included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree holds only `/`.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// Applies the uncompressed tar layer `tar` on top; `what` names it in errors.
    pub fn apply_layer(&mut self, tar: impl Read, what: &str) -> Result<(), ImageError> {
        self.layers += 1;
        let layer = self.layers;
        let mut archive = tar::Archive::new(tar);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::io(format!("{what}: reading tar"), e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::io(format!("{what}: reading tar"), e))?;
            let raw = entry.path_bytes().into_owned();
            let Some(path) = clean_name(&raw) else {
                tracing::debug!(entry = %String::from_utf8_lossy(&raw), "{what}: skipping entry with an unsafe name");
                continue;
            };
            if path == "/" {
                continue;
            }
            let (parent, name) = split_parent(&path);
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = parent.to_owned();
                self.ensure_parents(&path, layer, what)?;
                if hidden == ".wh..opq" {
                    self.remove_lower(&subtree_prefix(&parent), layer, what)?;
                } else if !hidden.is_empty() && !hidden.starts_with(".wh.") {
                    let target = if parent == "/" {
                        format!("/{hidden}")
                    } else {
                        format!("{parent}/{hidden}")
                    };
                    if self.nodes.get(&target).is_some_and(|n| n.layer < layer) {
                        self.nodes.remove(&target);
                    }
                    self.remove_lower(&subtree_prefix(&target), layer, what)?;
                    // This layer's own entries below it stay, so it stays their directory.
                    let below = subtree_prefix(&target);
                    if self
                        .nodes
                        .range(below.clone()..)
                        .next()
                        .is_some_and(|(k, _)| k.starts_with(&below))
                    {
                        self.nodes.insert(
                            target,
                            Node {
                                kind: NodeKind::Dir,
                                layer,
                            },
                        );
                    }
                }
                continue;
            }
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let size = entry.size();
                    NodeKind::File(Arc::new(keep(&path, size, &mut entry, what)?))
                }
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    match String::from_utf8(target) {
                        Ok(t) if t.len() <= MAX_PATH_LEN => NodeKind::Symlink(t),
                        _ => continue, // the resolver could not follow it either
                    }
                }
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().and_then(|l| clean_name(&l));
                    match target.and_then(|t| self.nodes.get(&t)) {
                        Some(n) if !matches!(n.kind, NodeKind::Dir) => n.kind.clone(),
                        _ => {
                            tracing::debug!(path, "{what}: skipping hardlink to a missing file");
                            continue;
                        }
                    }
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    NodeKind::Other
                }
                _ => continue, // global PAX headers and the like describe no file
            };
            self.insert(path, kind, layer, what)?;
        }
        Ok(())
    }

    fn account(&mut self, bytes: u64, what: &str) -> Result<(), ImageError> {
        self.bytes = self
            .bytes
            .saturating_add(bytes)
            .saturating_add(ENTRY_OVERHEAD);
        if self.bytes > MAX_TREE_BYTES {
            return Err(ImageError::TooLarge {
                what: format!("{what}: file tree for --prioritize-auto"),
                size: self.bytes,
                max: MAX_TREE_BYTES,
            });
        }
        Ok(())
    }

    /// Removes the entries under `prefix` that lower layers put there.
    /// `prefix` is a directory's (`/` for the root, which itself stays). Every entry looked
    /// at counts against [`MAX_SCANNED`].
    fn remove_lower(&mut self, prefix: &str, layer: usize, what: &str) -> Result<(), ImageError> {
        let mut scanned = 0u64;
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .inspect(|_| scanned += 1)
            .filter(|(k, n)| n.layer < layer && k.as_str() != prefix)
            .map(|(k, _)| k.clone())
            .collect();
        self.scanned = self.scanned.saturating_add(scanned);
        if self.scanned > MAX_SCANNED {
            return Err(ImageError::TooLarge {
                what: format!("{what}: entries scanned applying whiteouts for --prioritize-auto"),
                size: self.scanned,
                max: MAX_SCANNED,
            });
        }
        for k in doomed {
            self.nodes.remove(&k);
        }
        Ok(())
    }

    /// Makes every ancestor of `path` a directory.
    fn ensure_parents(&mut self, path: &str, layer: usize, what: &str) -> Result<(), ImageError> {
        let mut ancestors = Vec::new();
        let mut cur = split_parent(path).0;
        while cur != "/" {
            ancestors.push(cur.to_owned());
            cur = split_parent(cur).0;
        }
        for dir in ancestors.into_iter().rev() {
            match self.nodes.get(&dir) {
                Some(n) if matches!(n.kind, NodeKind::Dir) => {}
                _ => {
                    self.account(dir.len() as u64, what)?;
                    self.nodes.insert(
                        dir,
                        Node {
                            kind: NodeKind::Dir,
                            layer,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn insert(
        &mut self,
        path: String,
        kind: NodeKind,
        layer: usize,
        what: &str,
    ) -> Result<(), ImageError> {
        let extra = match &kind {
            NodeKind::File(k) => k.bytes(),
            NodeKind::Symlink(t) => t.len() as u64,
            NodeKind::Dir | NodeKind::Other => 0,
        };
        self.account(path.len() as u64 + extra, what)?;
        self.ensure_parents(&path, layer, what)?;
        let merges = matches!(kind, NodeKind::Dir)
            && self
                .nodes
                .get(&path)
                .is_some_and(|n| matches!(n.kind, NodeKind::Dir));
        if !merges {
            // A non-directory hides whatever a lower directory held.
            self.remove_lower(&subtree_prefix(&path), layer, what)?;
        }
        self.nodes.insert(path, Node { kind, layer });
        Ok(())
    }
}

/// Reads up to `buf.len()` bytes, fewer only at the end of `r`.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What to keep of the regular file at `path` of `size` bytes (as its header says) whose
/// contents `r` streams (module docs).
fn keep(path: &str, size: u64, r: &mut impl Read, what: &str) -> Result<Kept, ImageError> {
    let io_err = |e| ImageError::io(format!("{what}: reading {path:?}"), e);
    let conf = path.starts_with("/etc/ld") && path != "/etc/ld.so.cache";
    let head_len = if conf {
        MAX_CONF_BYTES as usize
    } else {
        MAX_SHEBANG_LEN
    };
    let mut head = vec![0u8; head_len];
    let n = read_full(r, &mut head).map_err(io_err)?;
    head.truncate(n);
    if head.starts_with(b"\x7fELF") {
        let mut data = head;
        let mut rest = r.take(MAX_ELF_SIZE - data.len() as u64 + 1);
        rest.read_to_end(&mut data).map_err(io_err)?;
        if data.len() as u64 > MAX_ELF_SIZE {
            tracing::warn!(
                path,
                max = MAX_ELF_SIZE,
                "{what}: ELF file too large to parse; a start needing it cannot be replayed"
            );
            return Ok(Kept {
                size,
                ranges: vec![(0, data[..MAGIC_LEN].into())],
            });
        }
        return Ok(keep_elf(&data));
    }
    if conf || head.starts_with(b"#!") {
        return Ok(Kept::prefix(&head));
    }
    Ok(Kept::prefix(&head[..head.len().min(MAGIC_LEN)]))
}

impl RootFs for LayeredRootFs {
    fn lookup(&self, path: &str) -> Option<FileKind> {
        Some(match &self.nodes.get(path)?.kind {
            NodeKind::File(_) => FileKind::Regular,
            NodeKind::Symlink(t) => FileKind::Symlink(t.clone()),
            NodeKind::Dir => FileKind::Dir,
            NodeKind::Other => FileKind::Other,
        })
    }

    fn open(&self, path: &str) -> Option<Box<dyn ReadAt + '_>> {
        match &self.nodes.get(path)?.kind {
            NodeKind::File(k) => Some(Box::new(Arc::clone(k))),
            _ => None,
        }
    }

    fn read_dir(&self, path: &str) -> Vec<String> {
        if !matches!(
            self.nodes.get(path),
            Some(Node {
                kind: NodeKind::Dir,
                ..
            })
        ) {
            return Vec::new();
        }
        let prefix = subtree_prefix(path);
        let mut names = std::collections::BTreeSet::new();
        // From `path/` (past `/` itself, its own prefix); past a child's subtree in one seek
        // ('0' follows '/'), so a listing costs two seeks per child, not a walk of the tree.
        let mut from = if path == "/" {
            Bound::Excluded(prefix.clone())
        } else {
            Bound::Included(prefix.clone())
        };
        while let Some((key, _)) = self.nodes.range((from.clone(), Bound::Unbounded)).next() {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                None => {
                    names.insert(rest.to_owned());
                    from = Bound::Excluded(key.clone());
                }
                Some((child, _)) => {
                    // Listed already unless an orphan; a sibling may sort between them.
                    names.insert(child.to_owned());
                    from = Bound::Included(format!("{prefix}{child}0"));
                }
            }
        }
        names.into_iter().collect()
    }
}

/// `config.Entrypoint`, `Cmd`, `Env` and `WorkingDir` of an OCI image config; `what`
/// names it in errors.
pub fn image_config_lite(config: &[u8], what: &str) -> Result<ImageConfigLite, ImageError> {
    let doc: Value = serde_json::from_slice(config).map_err(|e| ImageError::invalid(what, e))?;
    let c = &doc["config"];
    let strings = |key: &str| -> Result<Vec<String>, ImageError> {
        match &c[key] {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ImageError::invalid(what, format!("config.{key}: not a string"))
                    })
                })
                .collect(),
            _ => Err(ImageError::invalid(
                what,
                format!("config.{key}: not an array of strings"),
            )),
        }
    };
    Ok(ImageConfigLite {
        entrypoint: strings("Entrypoint")?,
        cmd: strings("Cmd")?,
        env: strings("Env")?,
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
    })
}

/// The files a container of the image `manifest` reads at start, in order, derived from
/// its config and layers without running it ([`prioritized_files`]); empty for an image
/// without a command (its layers are then not read). `what` names the manifest in errors.
///
/// Errors: the config or a layer missing or malformed, the tree too large, or the start
/// not replayable (the command or an interpreter missing or malformed): the message names
/// the path.
pub fn derive_prioritized_files(
    store: &Store,
    manifest: &ImageManifest,
    what: &str,
) -> Result<Vec<String>, ImageError> {
    let config_digest = descriptor_digest(manifest.config())?;
    let config_what = format!("config {config_digest}");
    if manifest.config().size() > MAX_CONFIG_SIZE {
        return Err(ImageError::TooLarge {
            what: config_what,
            size: manifest.config().size(),
            max: MAX_CONFIG_SIZE,
        });
    }
    let config = image_config_lite(
        &store.content().read_all(&config_digest, MAX_CONFIG_SIZE)?,
        &config_what,
    )?;
    if config.entrypoint.is_empty() && config.cmd.is_empty() {
        return Ok(Vec::new());
    }
    let fs = LayeredRootFs::from_store(store, manifest.layers())?;
    tracing::debug!(
        entries = fs.len(),
        bytes = fs.bytes,
        "{what}: merged file tree built"
    );
    prioritized_files(&fs, &config).map_err(|e: PrefetchError| {
        let msg = format!("{what}: cannot derive the files its start reads: {e}");
        match e.kind() {
            ErrorKind::NotFound => ImageError::NotFound(msg),
            _ => ImageError::invalid(
                what,
                format!("cannot derive the files its start reads: {e}"),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn kept_bytes_answer_the_replay_like_the_whole_file() {
        let script = b"#!/bin/sh -e\necho hi\n".repeat(40);
        let conf = b"include /etc/ld.so.conf.d/*.conf\n";
        let mut entries: Vec<(&str, &[u8])> = vec![
            ("app/run", &script),
            ("etc/ld.so.conf", conf),
            ("data", &[7u8; 4096]),
        ];
        let host = std::fs::read("/bin/ls").ok();
        if let Some(elf) = &host {
            entries.push(("bin/ls", elf));
        }
        let mut fs = LayeredRootFs::new();
        fs.apply_layer(&tar(&entries)[..], "layer").unwrap();
        let run = fs.open("/app/run").unwrap();
        assert_eq!(
            run.read_range(0, MAX_SHEBANG_LEN as u64).unwrap(),
            &script[..MAX_SHEBANG_LEN]
        );
        assert_eq!(
            fs.open("/etc/ld.so.conf")
                .unwrap()
                .read_range(0, MAX_CONF_BYTES)
                .unwrap(),
            conf
        );
        let data = fs.open("/data").unwrap();
        assert_eq!(data.read_range(0, 256).unwrap(), [7u8; 4]);
        if let Some(elf) = host {
            let kept = fs.open("/bin/ls").unwrap();
            assert_eq!(kept.size(), elf.len() as u64);
            let want = parse_elf(&elf).unwrap().unwrap();
            let got = parse_elf(&*kept).unwrap().unwrap();
            assert_eq!(
                (got.interpreter, got.needed),
                (want.interpreter, want.needed)
            );
            // Only headers and strings are kept, not the code.
            let Some(NodeKind::File(k)) = fs.nodes.get("/bin/ls").map(|n| &n.kind) else {
                panic!()
            };
            assert!(k.bytes() < 16 << 10, "{} bytes kept", k.bytes());
            assert_eq!(
                kept.read_range(elf.len() as u64 / 2, 16)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::Unsupported
            );
        }
    }

    #[test]
    fn config_fields_are_read_and_checked() {
        let c = br#"{"config":{"Entrypoint":["/bin/sh","-c"],"Cmd":null,"Env":["PATH=/bin"],"WorkingDir":""}}"#;
        let got = image_config_lite(c, "config").unwrap();
        assert_eq!(got.entrypoint, ["/bin/sh", "-c"]);
        assert!(got.cmd.is_empty());
        assert_eq!(got.env, ["PATH=/bin"]);
        assert_eq!(got.working_dir, None);
        assert_eq!(
            image_config_lite(b"{}", "config").unwrap(),
            ImageConfigLite::default()
        );
        assert!(image_config_lite(br#"{"config":{"Cmd":"ls"}}"#, "config").is_err());
        assert!(image_config_lite(br#"{"config":{"Cmd":[1]}}"#, "config").is_err());
    }
}
