//! The snapshotters one daemon serves, by request name: each implementation is opened once,
//! however many names map to it, and closed once at shutdown. At open, each instance runs
//! Cleanup, so directories a crash left half-made (`new-*`, `rm-*`) are gone before the
//! first request. Remote-layer providers, when configured, are given to the overlayfs,
//! stargz and erofs implementations.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_snapshotters::erofs::ErofsSnapshotter;
use strata_snapshotters::overlay::OverlaySnapshotter;
use strata_snapshotters::remote::RemoteLayers;
use strata_snapshotters::{SnapshotError, Snapshotter};

use crate::snapshots::{SnapshotterOptions, open_snapshotter, snapshotter_root};

/// Request name → snapshotter, with the opened instances.
pub struct ServedSnapshotters {
    by_name: BTreeMap<String, Arc<dyn Snapshotter>>,
    /// Implementation name → the one instance, for closing.
    instances: BTreeMap<String, Arc<dyn Snapshotter>>,
}

impl std::fmt::Debug for ServedSnapshotters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedSnapshotters")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("instances", &self.instances.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The remote-layer providers, by the implementation they serve.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct Providers {
    /// Given to the overlayfs implementation (e.g. local content).
    pub overlayfs: Option<Arc<dyn RemoteLayers>>,
    /// Given to the stargz implementation (lazy eStargz layers).
    pub stargz: Option<Arc<dyn RemoteLayers>>,
    /// Given to the erofs implementation (e.g. local content, written as EROFS images).
    pub erofs: Option<Arc<dyn RemoteLayers>>,
}

/// Opens `implementation` and runs its Cleanup.
fn open_cleaned(
    root: &Path,
    implementation: &str,
    options: &SnapshotterOptions,
    providers: &Providers,
) -> Result<Arc<dyn Snapshotter>, SnapshotError> {
    let dir = snapshotter_root(root, implementation);
    let instance: Arc<dyn Snapshotter> = match implementation {
        "overlayfs" | "stargz" => {
            let remote = if implementation == "overlayfs" {
                &providers.overlayfs
            } else {
                &providers.stargz
            };
            match remote {
                Some(remote) => Arc::new(OverlaySnapshotter::with_remote(
                    &dir,
                    options.overlay.clone(),
                    Arc::clone(remote),
                )?),
                None => open_snapshotter(root, implementation, options)?,
            }
        }
        "erofs" => match &providers.erofs {
            Some(remote) => Arc::new(ErofsSnapshotter::with_remote(
                &dir,
                options.erofs.clone(),
                Arc::clone(remote),
            )?),
            None => open_snapshotter(root, implementation, options)?,
        },
        _ => open_snapshotter(root, implementation, options)?,
    };
    // The daemon holds the snapshotter alone now: Strata's own unpacks left active were
    // interrupted (containerd's are namespaced and left to containerd).
    match crate::image::unpack::remove_interrupted_unpacks(&*instance) {
        Ok(keys) => {
            for key in keys {
                tracing::info!(
                    snapshotter = implementation,
                    key,
                    "removed the active snapshot of an interrupted unpack"
                );
            }
        }
        Err(e) => {
            tracing::warn!(snapshotter = implementation, error = %e, "removing interrupted unpacks")
        }
    }
    if let Err(e) = instance.cleanup() {
        let _ = instance.close();
        return Err(SnapshotError::new(
            e.kind(),
            format!("cleanup at start: {e}"),
        ));
    }
    Ok(instance)
}

impl ServedSnapshotters {
    /// Opens the implementations `names` (request name → implementation) needs under
    /// `root`, each with its provider when given, and cleans each up.
    ///
    /// # Errors
    ///
    /// The first implementation that fails to open or clean up (the ones opened before
    /// are closed).
    pub fn open(
        root: &Path,
        names: &BTreeMap<String, String>,
        options: &SnapshotterOptions,
        providers: &Providers,
    ) -> Result<Self, SnapshotError> {
        let mut served = ServedSnapshotters {
            by_name: BTreeMap::new(),
            instances: BTreeMap::new(),
        };
        for (name, implementation) in names {
            let instance = match served.instances.get(implementation) {
                Some(instance) => Arc::clone(instance),
                None => match open_cleaned(root, implementation, options, providers) {
                    Ok(instance) => {
                        served
                            .instances
                            .insert(implementation.clone(), Arc::clone(&instance));
                        instance
                    }
                    Err(e)
                        if e.kind() == strata_snapshotters::ErrorKind::NotImplemented
                            && crate::snapshots::SNAPSHOTTERS.contains(&name.as_str()) =>
                    {
                        // A built-in name the host cannot serve (erofs without EROFS in
                        // the kernel) is skipped, as containerd skips such a plugin;
                        // requests for it get "snapshotter not loaded".
                        tracing::warn!(snapshotter = implementation, error = %e, "not served");
                        continue;
                    }
                    Err(e) => {
                        served.close();
                        return Err(SnapshotError::new(
                            e.kind(),
                            format!("snapshotter {implementation}: {e}"),
                        ));
                    }
                },
            };
            served.by_name.insert(name.clone(), instance);
        }
        Ok(served)
    }

    /// The snapshotter answering request name `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Snapshotter>> {
        self.by_name.get(name).cloned()
    }

    /// The request names served, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Closes every instance once, logging failures (shutdown goes on regardless).
    pub fn close(&self) {
        for (implementation, instance) in &self.instances {
            if let Err(e) = instance.close() {
                tracing::warn!(snapshotter = %implementation, error = %e, "close failed");
            }
        }
    }
}
