//! Arbitrary bytes as one request read from /dev/fuse: our own decoding (the server is
//! ours, not fuser's) of the header, its length and every opcode's body, answered against
//! a small fixed layer. Must answer or refuse, never panic or read past the request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata_fuse::fuzzing::request(data);
});
