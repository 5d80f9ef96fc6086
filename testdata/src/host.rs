//! What a test needs from the machine: root, and the tools scripts/setup.sh installs.
//!
//! **The rule: a test that cannot run never counts as passed.** A test that needs root
//! (containerd, runc, FUSE and overlay mounts) is marked
//! `#[ignore = "needs root and …: make test runs it"]`, so a plain `cargo test` or
//! `cargo nextest run` lists it as ignored (skipped), never as passed. `make test` runs the
//! ignored tests too (`--run-ignored all`, as root after scripts/setup.sh), and so does
//! anyone who asks for them (`--run-ignored all`, `-- --ignored`); the test's first lines
//! then call [`require_tools`] and [`require_root`], which fail it with the missing tool or
//! privilege named, instead of letting it return early as a pass.
//!
//! ```no_run
//! use strata_testdata::containerd::{CONTAINERD, CTR};
//! #[test]
//! #[ignore = "needs root, containerd and ctr: make test runs it"]
//! fn pulls_with_containerd() {
//!     strata_testdata::host::require_tools(&[CONTAINERD, CTR]);
//!     strata_testdata::host::require_root("containerd unpacks through overlayfs mounts");
//!     // …
//! }
//! ```

use std::path::Path;

/// The paths of `tools` that do not exist.
pub fn missing(tools: &[&str]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| !Path::new(t).exists())
        .map(|t| (*t).to_owned())
        .collect()
}

/// Fails the test, naming them, unless every path in `tools` (binaries, device nodes)
/// exists.
pub fn require_tools(tools: &[&str]) {
    let missing = missing(tools);
    assert!(
        missing.is_empty(),
        "this test needs {}: not installed (run scripts/setup.sh)",
        missing.join(", ")
    );
}

/// Fails the test unless the process is root; `why` says what needs it.
pub fn require_root(why: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root ({why}): run it as root, e.g. `sudo make test`"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_only_the_absent_paths() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().to_str().unwrap().to_owned();
        let gone = dir.path().join("gone").to_str().unwrap().to_owned();
        assert_eq!(missing(&[&here, &gone]), [gone.as_str()]);
        let err = std::panic::catch_unwind(|| require_tools(&[&here, &gone])).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains(&gone) && !msg.contains(&format!("{here},")),
            "{msg}"
        );
        require_tools(&[&here]);
    }
}
