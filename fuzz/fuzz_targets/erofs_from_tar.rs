//! Arbitrary bytes as a tar layer turned into EROFS images (copied and tar-index): the
//! writer must never panic, and every image it does write must pass the validator.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use strata_formats::erofs::{BuildOptions, build_from_tar, build_tar_index, validate};

fuzz_target!(|data: &[u8]| {
    let opts = BuildOptions {
        max_inodes: 1 << 16,
        ..BuildOptions::default()
    };
    if let Ok((out, _)) = build_from_tar(data, Cursor::new(Vec::new()), &opts) {
        let image = out.into_inner();
        if let Err(e) = validate(&image) {
            panic!("our image fails validation: {e}");
        }
    }
    if let Ok((out, _)) = build_tar_index(Cursor::new(data), Cursor::new(Vec::new()), &opts) {
        let image = out.into_inner();
        if let Err(e) = validate(&image) {
            panic!("our tar-index image fails validation: {e}");
        }
    }
});
