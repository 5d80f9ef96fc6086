//! The second adapter through the real kernel: a raw (uncompressed) blob mounted as one
//! file, read in fixed-size chunks that are each verified against their own digest — the
//! shape of a model artifact's weight layer. Proves the FUSE seam is not eStargz's: the
//! tree and the chunk source see only the neutral layer index.

mod fixture;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use fixture::Mounted;
use rand::{Rng, SeedableRng};
use strata_formats::Digest;
use strata_formats::layer_index::raw::RawBlobFile;
use strata_fuse::{LayerFs, LayerTree, RawChunkSource};

const CHUNK: u64 = 64 << 10;
const LEN: usize = 16 * (64 << 10) + 12345;
const PATH: &str = "models/tiny/model.safetensors";

fn blob() -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut v = vec![0u8; LEN];
    rng.fill(&mut v[..]);
    v
}

/// The mount of `served` under an index whose digests are those of `indexed`.
fn mount(indexed: &[u8], served: Vec<u8>) -> Mounted {
    let index = RawBlobFile {
        path: PATH.into(),
        size: indexed.len() as u64,
        chunk_size: CHUNK,
        digests: indexed.chunks(CHUNK as usize).map(Digest::of).collect(),
        mode: 0o444,
        mtime: 1_700_000_000,
    }
    .layer_index()
    .unwrap();
    let tree = LayerTree::build("raw-blob", index);
    Mounted::new(Arc::new(LayerFs::new(
        tree,
        Arc::new(RawChunkSource::new(served)),
    )))
}

#[test]
fn a_raw_blob_reads_as_one_file() {
    let data = blob();
    let m = mount(&data, data.clone());
    let names: Vec<String> = fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["models"]);
    let meta = fs::metadata(m.join(PATH)).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), LEN as u64);
    assert_eq!(meta.mode() & 0o7777, 0o444);
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert_eq!(fs::read(m.join(PATH)).unwrap(), data);
    // Reads at arbitrary offsets (a loader touching tensors in any order), across chunks.
    let f = fs::File::open(m.join(PATH)).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    for _ in 0..64 {
        let at = rng.random_range(0..LEN);
        let len = rng.random_range(1..200_000).min(LEN - at);
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, at as u64).unwrap();
        assert_eq!(buf, data[at..at + len], "at {at}, {len} bytes");
    }
}

#[test]
fn a_corrupt_chunk_gives_eio_never_wrong_bytes() {
    let data = blob();
    let mut served = data.clone();
    // A byte flipped in the fourth chunk of what the "registry" serves.
    served[3 * CHUNK as usize + 100] ^= 0x20;
    let m = mount(&data, served);
    let f = fs::File::open(m.join(PATH)).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..4096]);
    let err = f.read_exact_at(&mut buf, 3 * CHUNK + 50).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        fs::read(m.join(PATH)).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // The chunks after it still read.
    f.read_exact_at(&mut buf, 4 * CHUNK).unwrap();
    assert_eq!(buf, data[4 * CHUNK as usize..4 * CHUNK as usize + 4096]);
}
