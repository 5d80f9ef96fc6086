//! Arbitrary text as a registry's hosts.toml (containerd's format): hosts, capabilities,
//! headers, CA and client-certificate paths. Must parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = strata::fuzzing::hosts_toml(text);
});
