//! Arbitrary bytes as an eStargz blob: footer detection, TOC parsing and validation, and
//! reading every chunk the TOC claims must never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::estargz::EstargzReader;

fuzz_target!(|data: Vec<u8>| {
    if let Ok(reader) = EstargzReader::open(data, None) {
        let _ = reader.verify_all();
    }
});
