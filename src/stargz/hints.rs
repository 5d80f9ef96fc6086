//! Content-aware prefetch: when a file of a lazily mounted layer is complete, what its
//! content says will be read next is fetched at once instead of one miss at a time.
//!
//! For an ELF file (an executable being started, a library being loaded, a Python
//! extension module): the dynamic loader will open its `PT_INTERP` loader, glibc's
//! `/etc/ld.so.cache`, and each `DT_NEEDED` library, one after another, each a round trip
//! when it misses. [`Hints`] finds those files in the layer and the layers under it
//! ([`LayerStack`], [`loader_neighbours`]: search directories, symlinks, whiteouts, from
//! the TOCs alone) and has their layers fetch them whole, together, while the loader is
//! still mapping the file that named them. The libraries' own needs follow the same way
//! when they are complete. A wrong guess costs bytes, never correctness: every chunk is
//! still verified before it is served.
//!
//! The work runs on a thread of its own, fed by the layers' decoding threads.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use strata_formats::ReadAt;
use strata_formats::elf::parse_elf;
use strata_formats::estargz::Node;
use strata_formats::prefetch::loader_neighbours;

use super::fetch::{FileSink, LayerFetch};
use super::stack::LayerStack;

/// ELF files smaller than this are not worth a look (a header alone is 64 bytes).
const MIN_ELF: i64 = 64;

/// The hint worker (see the module docs).
#[derive(Debug)]
pub(super) struct Hints {
    tx: Mutex<Sender<(Weak<LayerFetch>, u32)>>,
}

impl Hints {
    /// Starts the worker thread; it ends when the last [`Hints`] handle is dropped.
    pub(super) fn start() -> Arc<Self> {
        let (tx, rx) = channel::<(Weak<LayerFetch>, u32)>();
        let spawned = std::thread::Builder::new()
            .name("stargz-hints".into())
            .spawn(move || {
                while let Ok((layer, file)) = rx.recv() {
                    if let Some(layer) = layer.upgrade() {
                        examine(&layer, file);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "stargz: cannot start the hint worker; files are fetched as they are read");
        }
        Arc::new(Self { tx: Mutex::new(tx) })
    }
}

impl FileSink for Hints {
    fn file_complete(&self, layer: &Arc<LayerFetch>, file: u32) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((Arc::downgrade(layer), file));
    }
}

/// A complete file of a layer, read from the chunk cache.
struct LocalFile<'a> {
    layer: &'a LayerFetch,
    node: &'a Node,
}

impl ReadAt for LocalFile<'_> {
    fn size(&self) -> u64 {
        u64::try_from(self.node.entry.size).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.layer.read_local(self.node, offset, buf)
    }
}

/// Looks at file `file` of `layer`, now complete, and fetches what it names.
fn examine(layer: &Arc<LayerFetch>, file: u32) {
    let index = layer.reader().index();
    let Some(node) = index.node(layer.map().file(file).node) else {
        return;
    };
    if node.entry.size < MIN_ELF {
        return;
    }
    let data = LocalFile { layer, node };
    let mut magic = [0u8; 4];
    if data.read_at(&mut magic, 0).ok() != Some(4) || magic != *b"\x7fELF" {
        return;
    }
    let info = match parse_elf(&data) {
        Ok(Some(info)) if info.interpreter.is_some() || !info.needed.is_empty() => info,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(layer = layer.name(), file = node.path, error = %e, "stargz: not a usable ELF file; no hint");
            return;
        }
    };
    let stack = layer.stack();
    let fs = LayerStack::new(stack.iter().map(|l| l.reader().index()).collect());
    let path = format!("/{}", node.path);
    let mut wanted: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for found in loader_neighbours(&fs, &path, &info) {
        if let Some((at, id)) = fs.locate(&found.path)
            && let Some(f) = stack[at].map().file_of_node(id)
        {
            wanted.entry(at).or_default().push(f);
        }
    }
    for (at, files) in wanted {
        stack[at].want_files(&files);
    }
}
