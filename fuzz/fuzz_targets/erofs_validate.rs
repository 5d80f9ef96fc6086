//! Arbitrary bytes as an EROFS image from a registry: the validator must never panic,
//! loop or allocate without bound, whatever the superblock, inodes and dirents claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::erofs::validate;

fuzz_target!(|data: &[u8]| {
    let _ = validate(data);
});
