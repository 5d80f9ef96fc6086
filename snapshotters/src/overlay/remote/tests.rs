use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::mount::{mount_all, unmount_all};
use crate::overlay::OverlayOptions;
use crate::remote::{
    LABEL_CRI_LAYER_DIGEST, LABEL_REMOTE, LABEL_TARGET_REF, LayerRequest, LayerTarget, Provision,
    REMOTE_VALUE,
};
use crate::{ErrorKind, Kind, Labels, Mount, Snapshotter};

/// A provider that writes `<name>` holding the chainID into the target, or fails or
/// declines as told, and records what it was asked.
struct WritingProvider {
    behaviour: Behaviour,
    seen: Mutex<Vec<(LayerRequest, Vec<PathBuf>)>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Provide,
    FailAfterWriting,
    Decline,
}

impl WritingProvider {
    fn new(behaviour: Behaviour) -> Arc<WritingProvider> {
        Arc::new(WritingProvider {
            behaviour,
            seen: Mutex::new(Vec::new()),
        })
    }
}

impl RemoteLayers for WritingProvider {
    fn name(&self) -> &str {
        "test"
    }

    fn provide(
        &self,
        layer: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        self.seen
            .lock()
            .unwrap()
            .push((layer.clone(), target.parents.to_vec()));
        if self.behaviour == Behaviour::Decline {
            return Ok(Provision::Declined("not mine".to_owned()));
        }
        let name = layer.chain_id.replace(':', "-");
        std::fs::write(target.fs.join(&name), &layer.chain_id).unwrap();
        match self.behaviour {
            Behaviour::FailAfterWriting => Err(SnapshotError::internal("blob is corrupt")),
            _ => Ok(Provision::Provided),
        }
    }
}

fn open(provider: Arc<WritingProvider>) -> (tempfile::TempDir, OverlaySnapshotter) {
    let dir = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::with_remote(
        &dir.path().join("root"),
        OverlayOptions::default(),
        provider,
    )
    .unwrap();
    (dir, s)
}

fn unpack_labels(chain_id: &str) -> Labels {
    [
        (LABEL_TARGET_REF.to_owned(), chain_id.to_owned()),
        (
            LABEL_CRI_LAYER_DIGEST.to_owned(),
            format!("{chain_id}-blob"),
        ),
    ]
    .into()
}

fn snapshot_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("root/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Unmounted on drop, whatever the test did.
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[Mount], target: PathBuf) -> Mounted {
        std::fs::create_dir_all(&target).unwrap();
        let guard = Mounted(target);
        mount_all(mounts, &guard.0).expect("mount");
        guard
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(&self.0, true) {
            eprintln!("unmount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn provided_layer_is_committed_under_its_chain_id() {
    let provider = WritingProvider::new(Behaviour::Provide);
    let (dir, s) = open(Arc::clone(&provider));

    let err = s
        .prepare("extract-1 sha256:a", "", unpack_labels("sha256:a"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.message().contains("sha256:a"), "{err}");
    let info = s.stat("sha256:a").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, None);
    assert_eq!(
        info.labels.get(LABEL_REMOTE).map(String::as_str),
        Some(REMOTE_VALUE)
    );
    assert_eq!(
        info.labels.get(LABEL_TARGET_REF).map(String::as_str),
        Some("sha256:a")
    );
    assert_eq!(
        s.stat("extract-1 sha256:a").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(s.usage("sha256:a").unwrap().size > 0);

    // The second layer over the first: its provider sees the parent's chainID and fs.
    let err = s
        .prepare("extract-2 sha256:b", "sha256:a", unpack_labels("sha256:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let info = s.stat("sha256:b").unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Committed, Some("sha256:a"))
    );
    assert_eq!(
        s.stat("extract-2 sha256:b").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    {
        let seen = provider.seen.lock().unwrap();
        assert_eq!(seen[1].0.parent_chain_id.as_deref(), Some("sha256:a"));
        assert!(seen[1].0.has_parent);
        assert_eq!(seen[1].1, vec![dir.path().join("root/snapshots/1/fs")]);
        assert_eq!(seen[1].0.layer_digest.as_deref(), Some("sha256:b-blob"));
    }

    // containerd's metadata layer finds the target by this walk.
    let mut found = Vec::new();
    s.walk(
        &[format!(
            "labels.\"{LABEL_TARGET_REF}\"==sha256:b,parent==\"sha256:a\""
        )],
        &mut |i| {
            found.push((i.name.clone(), i.kind));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(found, vec![("sha256:b".to_owned(), Kind::Committed)]);

    // Asking again is answered from the metadata, without the provider.
    let err = s
        .prepare("extract-3 sha256:b", "sha256:a", unpack_labels("sha256:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(provider.seen.lock().unwrap().len(), 2);

    // A container over the chain sees both provided layers.
    let mounts = s.prepare("container", "sha256:b", Labels::new()).unwrap();
    let m = Mounted::new(&mounts, dir.path().join("mnt"));
    assert_eq!(
        std::fs::read_to_string(m.0.join("sha256-a")).unwrap(),
        "sha256:a"
    );
    assert_eq!(
        std::fs::read_to_string(m.0.join("sha256-b")).unwrap(),
        "sha256:b"
    );
    drop(m);
    assert_eq!(snapshot_entries(dir.path()), ["1", "2", "3"]);
}

#[test]
fn provider_failure_falls_back_to_a_normal_prepare() {
    for behaviour in [Behaviour::FailAfterWriting, Behaviour::Decline] {
        let provider = WritingProvider::new(behaviour);
        let (dir, s) = open(Arc::clone(&provider));
        let mounts = s
            .prepare("extract-1 sha256:a", "", unpack_labels("sha256:a"))
            .unwrap();
        assert_eq!(provider.seen.lock().unwrap().len(), 1);
        let info = s.stat("extract-1 sha256:a").unwrap();
        assert_eq!(info.kind, Kind::Active);
        assert!(!info.labels.contains_key(LABEL_REMOTE));
        assert_eq!(s.stat("sha256:a").unwrap_err().kind(), ErrorKind::NotFound);
        // Nothing the failed provider wrote survives: one fresh, empty snapshot directory.
        assert_eq!(snapshot_entries(dir.path()), ["1"]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("root/snapshots/1/fs"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(mounts[0].kind, "bind");
        s.commit("sha256:a", "extract-1 sha256:a", unpack_labels("sha256:a"))
            .unwrap();
        assert_eq!(s.stat("sha256:a").unwrap().kind, Kind::Committed);
    }
}

#[test]
fn cases_the_provider_is_not_asked() {
    let provider = WritingProvider::new(Behaviour::Provide);
    let (_dir, s) = open(Arc::clone(&provider));
    // No target label: an ordinary Prepare.
    s.prepare("plain", "", Labels::new()).unwrap();
    // A key that exists keeps containerd's AlreadyExists for the key.
    let err = s
        .prepare("plain", "", unpack_labels("sha256:a"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(s.stat("sha256:a").unwrap_err().kind(), ErrorKind::NotFound);
    // A parent that is not committed: the normal Prepare's error.
    let err = s
        .prepare("extract-1 sha256:b", "plain", unpack_labels("sha256:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = s
        .prepare("extract-2 sha256:b", "missing", unpack_labels("sha256:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(provider.seen.lock().unwrap().is_empty());
}

/// A provider that mounts a tmpfs holding `<name>` on the target (as a lazy provider
/// mounts its FUSE layer), and records releases and restores.
#[derive(Default)]
struct MountingProvider {
    released: Mutex<Vec<(String, PathBuf)>>,
    restored: Mutex<Vec<(String, PathBuf)>>,
    restored_done: Mutex<u32>,
}

impl RemoteLayers for MountingProvider {
    fn name(&self) -> &str {
        "mounting"
    }

    fn provide(
        &self,
        layer: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        let tmpfs = Mount {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: String::new(),
            options: vec!["size=1m".into()],
        };
        mount_all(&[tmpfs], target.fs).map_err(|e| SnapshotError::internal(e.to_string()))?;
        std::fs::write(target.fs.join("layer"), &layer.chain_id).unwrap();
        Ok(Provision::Mounted {
            usage: Usage {
                size: 42,
                inodes: 2,
            },
        })
    }

    fn release(&self, name: &str, fs: &Path) -> Result<(), SnapshotError> {
        self.released
            .lock()
            .unwrap()
            .push((name.to_owned(), fs.to_path_buf()));
        unmount_all(fs, true).map_err(|e| SnapshotError::internal(e.to_string()))
    }

    fn restore(&self, name: &str, _labels: &Labels, fs: &Path) -> Result<(), SnapshotError> {
        self.restored
            .lock()
            .unwrap()
            .push((name.to_owned(), fs.to_path_buf()));
        Ok(())
    }

    fn restored(&self) {
        *self.restored_done.lock().unwrap() += 1;
    }
}

#[test]
#[ignore = "needs root (mounts): make test runs it"]
fn a_mounted_layer_is_not_walked_is_restored_at_open_and_released_before_removal() {
    strata_testdata::host::require_root("mounting needs root");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let provider = Arc::new(MountingProvider::default());
    let s = OverlaySnapshotter::with_remote(&root, OverlayOptions::default(), provider.clone())
        .unwrap();
    let err = s
        .prepare("extract-1 sha256:c1", "", unpack_labels("sha256:c1"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    // The usage is the provider's, not a walk of the mount.
    assert_eq!(
        s.usage("sha256:c1").unwrap(),
        Usage {
            size: 42,
            inodes: 2
        }
    );
    let (id, _, _) = s.store.read(|t| t.info("sha256:c1")).unwrap();
    let fs = s.upper(id);
    assert_eq!(
        std::fs::read_to_string(fs.join("layer")).unwrap(),
        "sha256:c1",
        "the mount moved with its directory"
    );
    drop(s);

    // Reopened: the provider is asked to bring the layer back, once per remote snapshot.
    let s = OverlaySnapshotter::with_remote(&root, OverlayOptions::default(), provider.clone())
        .unwrap();
    assert_eq!(
        *provider.restored.lock().unwrap(),
        [("sha256:c1".to_owned(), fs.clone())]
    );
    assert_eq!(*provider.restored_done.lock().unwrap(), 2);

    // Removal releases it (the mount is gone) before the directory is deleted.
    s.remove("sha256:c1").unwrap();
    let released = provider.released.lock().unwrap().clone();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].0, "sha256:c1");
    assert!(
        released[0].1.ends_with(format!("rm-{id}/fs")),
        "{released:?}"
    );
    assert!(!s.dirs.path(id).exists() && !released[0].1.exists());
    assert_eq!(snapshot_entries(dir.path()), Vec::<String>::new());
}

#[test]
#[ignore = "needs root (mounts): make test runs it"]
fn cleanup_detaches_a_mount_left_in_an_unreferenced_directory() {
    strata_testdata::host::require_root("mounting needs root");
    let (dir, s) = open(WritingProvider::new(Behaviour::Provide));
    // What a crash between a provider's mount and the commit leaves.
    let orphan = dir.path().join("root/snapshots/new-crashed/fs");
    std::fs::create_dir_all(&orphan).unwrap();
    let tmpfs = Mount {
        kind: "tmpfs".into(),
        source: "tmpfs".into(),
        target: String::new(),
        options: vec!["size=1m".into()],
    };
    mount_all(&[tmpfs], &orphan).unwrap();
    std::fs::write(orphan.join("file"), "x").unwrap();
    s.cleanup().unwrap();
    assert_eq!(snapshot_entries(dir.path()), Vec::<String>::new());
}
