//! Arbitrary strings as containerd filter expressions must parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::filters::Filter;

fuzz_target!(|data: &str| {
    if let Ok(f) = Filter::parse(data) {
        let _ = f.matches(&|path: &[String]| Some(path.join(".")));
    }
});
