//! FUSE passthrough: with the option on, a file the chunk source has whole on disk is read
//! by the kernel from that file, without a request to the daemon.

mod fixture;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fixture::{HELLO, Mounted, big_data, layer_blob};
use strata_formats::estargz::EstargzReader;
use strata_formats::layer_index::FileChunk;
use strata_fuse::{ChunkSource, EstargzChunkSource, FileRef, LayerFs, LayerTree, ServeOptions};

/// Serves chunks from the blob and, for passthrough, writes each opened file whole into a
/// directory first (what the chunk cache does for a fully fetched file). Counts chunk reads.
struct MaterializingSource {
    inner: EstargzChunkSource<Vec<u8>>,
    dir: tempfile::TempDir,
    chunk_reads: AtomicUsize,
}

impl ChunkSource for MaterializingSource {
    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        self.chunk_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.chunk(file, chunk)
    }

    fn backing_file(&self, file: &FileRef<'_>) -> Option<File> {
        let path = self.dir.path().join(file.ino.to_string());
        let mut data = Vec::new();
        for c in file.chunks {
            data.extend_from_slice(&self.inner.chunk(file, c).ok()?);
        }
        fs::write(&path, data).ok()?;
        File::open(path).ok()
    }
}

#[test]
fn passthrough_reads_skip_the_daemon() {
    let reader = Arc::new(EstargzReader::open(layer_blob(), None).unwrap());
    let tree = LayerTree::build("passthrough-layer", reader.index().layer_index().unwrap());
    let source = Arc::new(MaterializingSource {
        inner: EstargzChunkSource::new(reader),
        dir: tempfile::tempdir().unwrap(),
        chunk_reads: AtomicUsize::new(0),
    });
    let fs = Arc::new(LayerFs::new(
        tree,
        Arc::clone(&source) as Arc<dyn ChunkSource>,
    ));
    let m = Mounted::with_options(
        fs,
        &ServeOptions {
            passthrough: true,
            ..ServeOptions::default()
        },
    );
    assert!(
        m.server.as_ref().unwrap().init_state().passthrough(),
        "kernel 6.9+ offers passthrough"
    );

    let want = big_data();
    let big = File::open(m.join("big.bin")).unwrap();
    let before = source.chunk_reads.load(Ordering::SeqCst);
    let mut buf = vec![0u8; want.len()];
    big.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, want);
    let mut tail = vec![0u8; 100];
    big.read_exact_at(&mut tail, want.len() as u64 - 100)
        .unwrap();
    assert_eq!(tail, want[want.len() - 100..]);
    assert_eq!(
        source.chunk_reads.load(Ordering::SeqCst),
        before,
        "reads went to the backing file"
    );
    drop(big);
    assert_eq!(fs::read(m.join("etc/hello.txt")).unwrap(), HELLO);
}
