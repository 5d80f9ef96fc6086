//! Arbitrary bytes as a chunk index: must parse or fail, never panic; a parsed index has
//! exactly ceil(size / chunkSize) chunks per layer and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::chunk_index::{ChunkIndex, chunk_count};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = ChunkIndex::parse(data) {
        for l in &index.layers {
            assert_eq!(l.chunks.len() as u64, chunk_count(l.size, index.chunk_size));
            let last = l.chunks.len().saturating_sub(1) as u64;
            let _ = l.verify_chunk(index.chunk_size, last, &data[..data.len().min(16)]);
        }
        assert_eq!(ChunkIndex::parse(&index.to_json()).as_ref(), Ok(&index));
    }
});
