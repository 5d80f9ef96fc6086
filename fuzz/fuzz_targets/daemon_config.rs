//! Arbitrary text as the daemon's config.toml: must parse or fail, never panic; what
//! parses has a valid snapshotter mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = strata::fuzzing::daemon_config(text) {
        assert!(config.resolved_snapshotters().is_ok());
    }
});
