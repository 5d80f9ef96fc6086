//! Arbitrary bytes as an uncompressed layer, read by the one tar reader both ways it is
//! used: the unpacker's entries (PAX, GNU long names, old-GNU and PAX sparse maps, paths,
//! whiteouts) with every payload read, and the eStargz converter copying the headers.
//! Neither may panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::estargz::{WriteOptions, convert};
use strata_formats::tar_layer::{Limits, TarLayer};

fuzz_target!(|data: &[u8]| {
    let mut layer = TarLayer::new(data, Limits::default());
    let mut buf = [0u8; 4096];
    while let Ok(Some(_)) = layer.next_entry() {
        while matches!(layer.read_data(&mut buf), Ok(n) if n > 0) {}
    }
    let opts = WriteOptions {
        threads: 1,
        ..WriteOptions::default()
    };
    let _ = convert(data, std::io::sink(), &opts);
});
