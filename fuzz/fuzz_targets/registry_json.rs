//! Arbitrary bytes as what a registry sends as JSON: a manifest or index (media type
//! sniffed, then parsed both ways) and a token endpoint's answer. Must parse or fail,
//! never panic (a token's lifetime arithmetic included).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata::fuzzing::manifest_json(data);
    if let Ok((token, _lifetime)) = strata::fuzzing::token_response(data) {
        assert!(!token.is_empty());
    }
});
