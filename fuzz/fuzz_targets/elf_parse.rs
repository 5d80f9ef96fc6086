//! Arbitrary bytes as an ELF file: headers, program headers and the dynamic section must
//! parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: Vec<u8>| {
    let _ = strata_formats::elf::parse_elf(&data);
});
