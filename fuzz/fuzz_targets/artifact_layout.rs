//! Arbitrary bytes as an artifact manifest: must lay out or fail, never panic; every file
//! path that comes out is clean (relative, no `.`/`..`/empty components, no NUL).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_formats::artifact::{ArtifactLayout, Entry, LayoutOptions};

fuzz_target!(|data: &[u8]| {
    for skip_unknown in [false, true] {
        if let Ok(layout) = ArtifactLayout::parse(data, LayoutOptions { skip_unknown }) {
            for e in &layout.entries {
                if let Entry::RawFile { path, .. } = e {
                    assert!(!path.is_empty() && !path.starts_with('/') && !path.contains('\0'));
                    assert!(
                        path.split('/')
                            .all(|c| !c.is_empty() && c != "." && c != "..")
                    );
                }
            }
        }
    }
});
