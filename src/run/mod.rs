//! `strata run`'s machinery: a container started from an image with runc, over a
//! snapshot Strata prepared — the thin task layer the design puts on top of storage.
//!
//! - [`spec`]: the OCI runtime spec from the image's config and the command line;
//! - [`user`]: `--user` resolved in the image's own `/etc/passwd` and `/etc/group`;
//! - [`runc`]: the runc binary (`run` in the foreground, `delete`, `state`);
//! - [`record`]: `<root>/containers/<id>/`, the bundle and its record, so that a later
//!   command cleans up after a `strata run` that was killed.
//!
//! The lifecycle: the image is pulled (or, on the `stargz` snapshotter, its layers
//! mounted lazily by `strata serve`), an active snapshot keyed `strata-run:<id>` is
//! prepared over its chainID and mounted on the bundle's `rootfs`, the spec written, and
//! runc run in the foreground with the caller's stdio; its exit status is the container's.
//! Then [`cleanup`] takes down runc's state and the mounts, and with `--rm` the snapshot
//! and the bundle.

pub mod record;
pub mod runc;
pub mod spec;
pub mod user;

use std::path::Path;

use strata_snapshotters::{ErrorKind, Snapshotter, mount};

use record::{ContainerRecord, ContainerStore};
use runc::Runc;

/// Errors of `strata run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// runc is not installed.
    #[error("runc not found (in $STRATA_RUNC, PATH, /usr/sbin): install it (apt install runc)")]
    MissingRunc,
    /// runc failed.
    #[error("{0}")]
    Runc(String),
    /// Neither the image nor the command line names a command.
    #[error("the image has no command (no Entrypoint or Cmd): give one after the image")]
    NoCommand,
    /// The user cannot be resolved in the image.
    #[error("{0}")]
    User(String),
    /// The image's config or files are not usable.
    #[error("{0}")]
    Image(String),
    /// The spec cannot be built.
    #[error("runtime spec: {0}")]
    Spec(String),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The snapshot key of container `id`'s rootfs.
pub fn snapshot_key(id: &str) -> String {
    format!("strata-run:{id}")
}

/// Takes container `record` down: runc's state, its volumes and rootfs mounts, and, when
/// `remove`, its snapshot (in `sn`) and bundle. Every step is tried; the first failure is
/// returned.
///
/// # Errors
///
/// runc, an unmount, or the snapshot removal failed.
pub fn cleanup(
    store: &ContainerStore,
    runc: &Runc,
    sn: &dyn Snapshotter,
    record: &ContainerRecord,
    remove: bool,
) -> Result<(), RunError> {
    let mut errors: Vec<RunError> = Vec::new();
    let mut note = |r: Result<(), RunError>| errors.extend(r.err());
    note(runc.delete(&record.id));
    let volumes = crate::volume::VolumeStore::new(store.root());
    for volume in &record.volumes {
        note(
            crate::volume::unmount_volume(sn, volume)
                .map_err(|e| RunError::Io {
                    context: format!("unmount volume {}", volume.display()),
                    source: std::io::Error::other(e.to_string()),
                })
                .and_then(|()| {
                    volumes.remove(volume).map_err(|source| RunError::Io {
                        context: format!("forget volume {}", volume.display()),
                        source,
                    })
                }),
        );
    }
    let rootfs = store.bundle(&record.id).join("rootfs");
    if mount::is_mounted(&rootfs) {
        note(
            mount::unmount_all(&rootfs, false)
                .or_else(|_| mount::unmount_all(&rootfs, true))
                .map_err(|source| RunError::Io {
                    context: format!("unmount {}", rootfs.display()),
                    source,
                }),
        );
    }
    if remove && errors.is_empty() {
        match sn.remove(&record.snapshot_key) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => errors.push(RunError::Io {
                context: format!("remove snapshot {}", record.snapshot_key),
                source: std::io::Error::other(e.to_string()),
            }),
        }
        if errors.is_empty()
            && let Err(source) = store.remove(&record.id)
        {
            errors.push(RunError::Io {
                context: format!("remove {}", store.bundle(&record.id).display()),
                source,
            });
        }
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}

/// The containers whose `strata run` is gone (killed) and whose process is not running
/// any more: what [`cleanup`] should take down. A container still running under runc is
/// left alone.
pub fn orphans(store: &ContainerStore, runc: &Runc) -> Vec<ContainerRecord> {
    store
        .list()
        .into_iter()
        .filter(|r| r.exit_code.is_none() && !record::alive(r.owner_pid))
        .filter(|r| runc.status(&r.id).as_deref() != Some("running"))
        .collect()
}

/// Whether `path` lies under `root` (for refusing bundle paths outside the root).
pub fn is_under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}
