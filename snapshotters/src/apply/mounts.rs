//! Applying a layer to the mounts of an active snapshot, as containerd's applier does:
//! straight into an overlay's upper directory or a bind mount's source when it can,
//! otherwise through a temporary mount.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Mount;
use crate::mount::{mount_all, unmount_all};

use super::{ApplyError, ApplyOptions, ApplyReport, WhiteoutMode, apply_layer};

/// The value of `key=` among mount options.
fn option<'m>(mount: &'m Mount, key: &str) -> Option<&'m str> {
    mount
        .options
        .iter()
        .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn has_option(mount: &Mount, flag: &str) -> bool {
    mount.options.iter().any(|o| o == flag)
}

/// Applies the layer from `reader` to the filesystem `mounts` describe.
///
/// - one `overlay` mount with an `upperdir`: written into the upper directory with
///   overlay whiteouts (`userxattr` honoured), its `lowerdir`s as parents (containerd's
///   shortcut, which avoids mounting);
/// - one bind mount: written into its source with whiteouts carried out by deletion;
/// - anything else: mounted on a temporary directory under `scratch`, written with
///   whiteouts carried out by deletion, and unmounted.
///
/// `options.whiteouts` and `options.parents` are chosen here; the rest is used as given.
pub fn apply_to_mounts(
    reader: impl Read + Send,
    mounts: &[Mount],
    scratch: &Path,
    options: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let unsupported = |reason: &str| ApplyError::Unsupported {
        layer: options.layer.clone(),
        reason: reason.to_owned(),
    };
    if mounts.is_empty() {
        return Err(unsupported("no mounts to apply the layer to"));
    }
    if mounts.iter().any(|m| has_option(m, "ro")) {
        return Err(unsupported(
            "the mounts are read-only (a view cannot take a layer)",
        ));
    }
    if let [m] = mounts {
        if m.kind == "overlay" {
            let Some(upper) = option(m, "upperdir") else {
                return Err(unsupported("overlay mount without an upperdir"));
            };
            let parents = option(m, "lowerdir")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default();
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Overlay {
                    userxattr: has_option(m, "userxattr"),
                },
                parents,
                ..options.clone()
            };
            return apply_layer(reader, Path::new(upper), &opts);
        }
        if m.kind == "bind" || has_option(m, "bind") || has_option(m, "rbind") {
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                parents: Vec::new(),
                ..options.clone()
            };
            return apply_layer(reader, Path::new(&m.source), &opts);
        }
    }
    let target = temp_dir(scratch).map_err(|source| ApplyError::Target {
        layer: options.layer.clone(),
        context: "creating a temporary mount point under".into(),
        path: scratch.to_path_buf(),
        source,
    })?;
    let result = mount_all(mounts, &target)
        .map_err(|source| ApplyError::Target {
            layer: options.layer.clone(),
            context: "mounting on".into(),
            path: target.clone(),
            source,
        })
        .and_then(|()| {
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                parents: Vec::new(),
                ..options.clone()
            };
            apply_layer(reader, &target, &opts)
        });
    let unmounted = unmount_all(&target, false).map_err(|source| ApplyError::Target {
        layer: options.layer.clone(),
        context: "unmounting".into(),
        path: target.clone(),
        source,
    });
    // Only an empty, unmounted directory is removed: never anything the mount showed.
    if unmounted.is_ok() {
        let _ = std::fs::remove_dir(&target);
    }
    let report = result?;
    unmounted?;
    Ok(report)
}

/// A new directory under `scratch` that nothing else uses.
fn temp_dir(scratch: &Path) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = scratch.join(format!("apply-{}-{n}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
