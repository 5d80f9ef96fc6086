//! The snapshotter's side of the remote-snapshot protocol ([`crate::remote`]), shared by
//! every snapshotter that takes a [`RemoteLayers`] provider (overlayfs, erofs): a Prepare
//! carrying `containerd.io/snapshot.ref=<chainID>` is offered to the provider; when it
//! provides the layer, `<chainID>` is committed here and the Prepare answers
//! AlreadyExists naming it. Otherwise the Prepare is a normal one.
//!
//! Order, so that nothing half-made is ever visible: a `new-*` directory is created and
//! the layer provided into it outside any transaction (a provider may take long), and the
//! snapshotter finishes it ([`RemoteHost::finish_provided`]: the erofs snapshotter builds
//! its `layer.erofs` here when the provider filled `fs`); then one write transaction
//! records the snapshot, commits it under the chainID and renames the directory into
//! place. A crash before that commit leaves only a `new-*` directory, which Cleanup
//! removes; a failure removes it at once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    LABEL_REMOTE, LABEL_TARGET_REF, LayerRequest, LayerTarget, Provision, REMOTE_VALUE,
    RemoteLayers,
};
use crate::apply::WhiteoutMode;
use crate::metastore::MetaStore;
use crate::metastore::snapshot_dirs::{SnapshotDirs, make_dir, remove_tree};
use crate::{ErrorKind, Kind, Labels, SnapshotError, Usage};

/// A configured provider (a named trait object, printable for `Debug`).
#[derive(Clone)]
pub(crate) struct RemoteProvider(pub(crate) Arc<dyn RemoteLayers>);

impl std::fmt::Debug for RemoteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RemoteProvider")
            .field(&self.0.name())
            .finish()
    }
}

/// What a snapshotter lends the protocol: its metadata, its directories, and how it
/// turns a provided directory into a committed layer.
pub(crate) trait RemoteHost {
    /// The snapshotter's metadata.
    fn store(&self) -> &MetaStore;
    /// The snapshotter's snapshot directories (`snapshots/<id>`, each with an `fs`).
    fn dirs(&self) -> &SnapshotDirs;
    /// How whiteouts must be written into a provided `fs`.
    fn whiteouts(&self) -> WhiteoutMode;
    /// Where, in the new snapshot directory `dir`, a provider may write the layer as an
    /// EROFS image instead of filling `fs` ([`LayerTarget::image`]).
    fn layer_image(&self, dir: &Path) -> Option<PathBuf>;
    /// Whether a layer the provider mounts and keeps serving ([`Provision::Mounted`]) can
    /// be a layer of this snapshotter.
    fn takes_mounted_layers(&self) -> bool;
    /// Makes the layer provided into the new snapshot directory `dir` (as
    /// [`Provision::Provided`]) ready to commit, and measures it.
    ///
    /// # Errors
    ///
    /// The layer cannot be finished (the Prepare falls back to a normal one).
    fn finish_provided(&self, key: &str, dir: &Path) -> Result<Usage, SnapshotError>;
}

/// What the metadata says about a remote Prepare before the provider is asked.
enum Plan {
    /// The target is committed already over the same parent: answer AlreadyExists.
    Exists,
    /// Provide over these parents (`fs` directories, nearest first).
    Provide {
        parents: Vec<PathBuf>,
        parent_chain_id: Option<String>,
        parent_id: Option<u64>,
    },
    /// Not a case for the provider (key taken, target taken otherwise, parent not
    /// committed): a normal Prepare says what is wrong, or succeeds.
    Normal(String),
}

fn target_exists(target: &str, by: &str) -> SnapshotError {
    SnapshotError::already_exists(format!("target snapshot {target}: already exists ({by})"))
}

/// Hands every committed remote snapshot to the provider to bring its layer back
/// (a mount that outlived the previous process, or one lost to a reboot).
pub(crate) fn restore_remote(
    host: &impl RemoteHost,
    remote: &dyn RemoteLayers,
) -> Result<(), SnapshotError> {
    let snapshots = host.store().read(|t| t.walk(&[]))?;
    for (id, info) in snapshots {
        if info.kind != Kind::Committed || !info.labels.contains_key(LABEL_REMOTE) {
            continue;
        }
        let fs = host.dirs().path(id).join("fs");
        if let Err(e) = remote.restore(&info.name, &info.labels, &fs) {
            tracing::error!(provider = remote.name(), snapshot = info.name, error = %e, "restoring a remote snapshot's layer");
        }
    }
    remote.restored();
    Ok(())
}

/// Offers the Prepare of `key` to the provider. `Some(error)` is the Prepare's answer
/// (AlreadyExists naming the committed target); `None` means go on with a normal
/// Prepare (the reason is logged).
pub(crate) fn prepare_remote(
    host: &impl RemoteHost,
    remote: &dyn RemoteLayers,
    key: &str,
    parent: &str,
    labels: &Labels,
    mut request: LayerRequest,
) -> Option<SnapshotError> {
    let target = request.chain_id.clone();
    let fallback = |reason: &str| {
        tracing::info!(
            provider = remote.name(),
            key,
            target,
            reason,
            "remote snapshot: falling back to a normal prepare"
        );
    };
    let (parents, parent_id) = match plan_remote(host, key, parent, &target) {
        Ok(Plan::Exists) => return Some(target_exists(&target, "committed earlier")),
        Ok(Plan::Normal(reason)) => {
            fallback(&reason);
            return None;
        }
        Ok(Plan::Provide {
            parents,
            parent_chain_id,
            parent_id,
        }) => {
            request.parent_chain_id = parent_chain_id;
            request.has_parent = parent_id.is_some();
            (parents, parent_id)
        }
        Err(e) => {
            fallback(&e.to_string());
            return None;
        }
    };
    let temp = match host.dirs().temp() {
        Ok(t) => t,
        Err(e) => {
            fallback(&e.to_string());
            return None;
        }
    };
    let fs = temp.path().join("fs");
    let image = host.layer_image(temp.path());
    let provided = make_dir(&fs, 0o755)
        .and_then(|()| own_like_parent(host, key, &fs, parent_id))
        .and_then(|()| {
            remote.provide(
                &request,
                &LayerTarget {
                    fs: &fs,
                    parents: &parents,
                    whiteouts: host.whiteouts(),
                    image: image.as_deref(),
                },
            )
        });
    let mounted_usage = match provided {
        Ok(Provision::Provided) => None,
        Ok(Provision::Mounted { usage }) => Some(usage),
        Ok(Provision::Declined(reason)) => {
            fallback(&format!("declined: {reason}"));
            return None;
        }
        Err(e) => {
            tracing::warn!(provider = remote.name(), key, target, error = %e, "remote snapshot: provider failed; falling back to a normal prepare");
            return None;
        }
    };
    // From here on a failure must take the provider's mount away before the directory goes.
    let release = |fs: &Path| {
        if mounted_usage.is_some()
            && let Err(e) = remote.release(&target, fs)
        {
            tracing::warn!(provider = remote.name(), key, target, error = %e, "remote snapshot: releasing a layer after a failed prepare");
        }
    };
    let usage = match mounted_usage {
        Some(_) if !host.takes_mounted_layers() => {
            release(&fs);
            fallback("the provider mounted the layer, and this snapshotter's layers are images");
            return None;
        }
        Some(usage) => usage,
        None => match host.finish_provided(key, temp.path()) {
            Ok(u) => u,
            Err(e) => {
                fallback(&e.to_string());
                return None;
            }
        },
    };
    let mut committed_labels = labels.clone();
    committed_labels.insert(LABEL_REMOTE.to_owned(), REMOTE_VALUE.to_owned());
    let mut installed: Option<PathBuf> = None;
    let result = host.store().write(|t| {
        let (snapshot, _) = t.create(Kind::Active, key, parent, labels.clone())?;
        t.commit_active(key, &target, usage, committed_labels)?;
        installed = Some(host.dirs().install(temp, snapshot.id)?);
        Ok(())
    });
    match result {
        Ok(()) => {
            tracing::info!(
                provider = remote.name(),
                key,
                target,
                layer = request.layer_digest.as_deref().unwrap_or(""),
                "remote snapshot: layer provided and committed"
            );
            Some(target_exists(
                &target,
                &format!("provided by {}", remote.name()),
            ))
        }
        Err(e) => {
            match installed {
                Some(dir) => {
                    // The transaction did not commit: the directory belongs to nothing.
                    release(&dir.join("fs"));
                    let _ = remove_tree(&dir);
                }
                None => release(&fs),
            }
            if e.kind() == ErrorKind::AlreadyExists
                && plan_remote(host, key, parent, &target).is_ok_and(|p| matches!(p, Plan::Exists))
            {
                // A concurrent Prepare committed the same target meanwhile.
                return Some(target_exists(&target, "committed concurrently"));
            }
            fallback(&format!("commit: {e}"));
            None
        }
    }
}

/// Reads what the metadata says about `key`, `parent` and `target`.
fn plan_remote(
    host: &impl RemoteHost,
    key: &str,
    parent: &str,
    target: &str,
) -> Result<Plan, SnapshotError> {
    let upper = |id: u64| host.dirs().path(id).join("fs");
    host.store().read(|t| {
        let found = |name: &str| match t.info(name) {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        if found(key)?.is_some() {
            return Ok(Plan::Normal(format!("key {key} exists")));
        }
        let wanted_parent = (!parent.is_empty()).then(|| parent.to_owned());
        if let Some((_, info, _)) = found(target)? {
            if info.kind == Kind::Committed && info.parent == wanted_parent {
                return Ok(Plan::Exists);
            }
            return Ok(Plan::Normal(format!(
                "{target} exists as {} with parent {:?}",
                info.kind, info.parent
            )));
        }
        let Some((parent_id, parent_info, _)) =
            wanted_parent.as_deref().map(found).transpose()?.flatten()
        else {
            if parent.is_empty() {
                return Ok(Plan::Provide {
                    parents: Vec::new(),
                    parent_chain_id: None,
                    parent_id: None,
                });
            }
            return Ok(Plan::Normal(format!("parent {parent} not found")));
        };
        if parent_info.kind != Kind::Committed {
            return Ok(Plan::Normal(format!("parent {parent} is not committed")));
        }
        let parent_chain_id = parent_info.labels.get(LABEL_TARGET_REF).cloned();
        let mut parents = vec![upper(parent_id)];
        let mut next = parent_info.parent;
        while let Some(name) = next {
            let (id, info, _) = t.info(&name)?;
            parents.push(upper(id));
            next = info.parent;
        }
        Ok(Plan::Provide {
            parents,
            parent_chain_id,
            parent_id: Some(parent_id),
        })
    })
}

/// Gives `fs` the owner of the parent's root, as a normal Prepare does.
fn own_like_parent(
    host: &impl RemoteHost,
    key: &str,
    fs: &Path,
    parent_id: Option<u64>,
) -> Result<(), SnapshotError> {
    let Some(parent_id) = parent_id else {
        return Ok(());
    };
    let parent_fs = host.dirs().path(parent_id).join("fs");
    let meta = std::fs::metadata(&parent_fs).map_err(|e| {
        SnapshotError::io(
            format_args!("snapshot {key}: stat parent {}", parent_fs.display()),
            e,
        )
    })?;
    std::os::unix::fs::lchown(fs, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| SnapshotError::io(format_args!("snapshot {key}: chown {}", fs.display()), e))
}
