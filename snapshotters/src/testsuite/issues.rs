//! Checks for bugs older layering models had (Docker issues 21555, 25244, 20240,
//! 24913, 28391, 27298, 25409), as containerd's `issues.go` keeps them: each builds
//! a chain of layers and compares every layer's view with a plain directory.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fs_tree::{chown as chown_to, dir, file, remove_all, rename as rename_to};
use super::harness::{CheckResult, Context, verify_chain};
use crate::Snapshotter;

/// A file rewritten in a child with the same size and mode, and one whose mode
/// alone changes, show the child's version; run five times across second
/// boundaries, since the original bug depended on mtimes (Docker issue 21555).
pub(crate) fn layer_file_update(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            dir("/etc", 0o700),
            file("/etc/hosts", b"mydomain 10.0.0.1", 0o644),
            file("/etc/profile", b"PATH=/usr/bin", 0o644),
        ],
        vec![
            file("/etc/hosts", b"mydomain 10.0.0.2", 0o644),
            file("/etc/profile", b"PATH=/usr/bin", 0o666),
            dir("/root", 0o700),
            file("/root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644),
        ],
    ];
    for round in 0..5 {
        verify_chain(sn, work, &layers).context(format!("round {}", round + 1))?;
        // Start the next round at the next second boundary.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        std::thread::sleep(
            Duration::from_secs(1)
                .saturating_sub(Duration::from_nanos(u64::from(now.subsec_nanos()))),
        );
    }
    Ok(())
}

/// A directory removed and recreated in a child hides the lower directory's
/// content, also in the grandchild (Docker issue 25244).
pub(crate) fn remove_directory_in_lower_layer(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![dir("/lib", 0o700), file("/lib/hidden", b"", 0o644)],
        vec![
            remove_all("/lib"),
            dir("/lib", 0o700),
            file("/lib/not-hidden", b"", 0o644),
        ],
        vec![file("/lib/newfile", b"", 0o644)],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}

/// Ownership changed in a child, on directories and a file from a lower layer,
/// survives the commit (Docker issues 20240, 24913, 28391).
pub(crate) fn chown(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            dir("/opt", 0o700),
            dir("/opt/a", 0o700),
            dir("/opt/a/b", 0o700),
            file("/opt/a/b/file.txt", b"hello", 0o644),
        ],
        vec![
            chown_to("/opt", 1, 1),
            chown_to("/opt/a", 1, 1),
            chown_to("/opt/a/b", 1, 1),
            chown_to("/opt/a/b/file.txt", 1, 1),
        ],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}

/// Owners and modes of directories survive commits through chowns back and forth,
/// removal and re-creation (Docker issue 27298).
pub(crate) fn directory_permission_on_commit(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            dir("/dir1", 0o700),
            dir("/dir2", 0o700),
            dir("/dir3", 0o700),
            dir("/dir4", 0o700),
            file("/dir4/f1", b"...", 0o644),
            dir("/dir5", 0o700),
            file("/dir5/f1", b"...", 0o644),
            chown_to("/dir1", 1, 1),
            chown_to("/dir2", 1, 1),
            chown_to("/dir3", 1, 1),
            chown_to("/dir5", 1, 1),
            chown_to("/dir5/f1", 1, 1),
        ],
        vec![
            chown_to("/dir2", 0, 0),
            remove_all("/dir3"),
            chown_to("/dir4", 1, 1),
            chown_to("/dir4/f1", 1, 1),
        ],
        vec![
            dir("/dir3", 0o700),
            chown_to("/dir3", 1, 1),
            remove_all("/dir5"),
            dir("/dir5", 0o700),
            chown_to("/dir5", 1, 1),
        ],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}

/// Renames in a child: a directory from the lower layer, a new file over a lower
/// one, a lower file to a new name (Docker issue 25409). Where the filesystem
/// refuses to rename a lower directory (overlayfs without redirect_dir answers
/// EXDEV), the directory is moved as `mv` does, by copy and removal, which is what
/// containerd's suite leaves out for overlayfs.
pub(crate) fn rename(sn: &dyn Snapshotter, work: &Path) -> CheckResult {
    let layers = vec![
        vec![
            dir("/dir1", 0o700),
            file("/dir1/inside", b"moved along", 0o600),
            dir("/somefiles", 0o700),
            file("/somefiles/f1", b"was here first!", 0o644),
            file("/somefiles/f2", b"nothing interesting", 0o644),
        ],
        vec![
            rename_to("/dir1", "/dir2"),
            file("/somefiles/f1-overwrite", b"new content 1", 0o644),
            rename_to("/somefiles/f1-overwrite", "/somefiles/f1"),
            rename_to("/somefiles/f2", "/somefiles/f3"),
        ],
    ];
    verify_chain(sn, work, &layers).map(|_| ())
}
