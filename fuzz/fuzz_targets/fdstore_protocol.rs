//! Arbitrary bytes as one fd-holder message, through the protocol's public API only
//! (`Message::decode`): must decode or fail, never panic; what decodes encodes back to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::fdstore::protocol::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode(), data);
    }
});
