//! The erofs snapshotter's side of the remote-snapshot protocol: a layer a provider writes
//! as an image, or as a tree the snapshotter converts, is committed under its chainID
//! as one `layer.erofs` and stacks under containers like any other layer; a mounted
//! layer or a failure falls back to a normal Prepare.

use std::sync::Mutex;

use super::*;
use crate::erofs::{LAYER_MARKER, LayerImageBuilder, StrataErofsWriter};
use crate::mount::{mount_all, unmount_all};
use crate::remote::{
    LABEL_CRI_LAYER_DIGEST, LABEL_REMOTE, LABEL_TARGET_REF, LayerRequest, LayerTarget, Provision,
};
use crate::{ErrorKind, Kind, Labels, Snapshotter};

/// How the test provider answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Answer {
    /// Writes `<chain>.txt` into `fs` (the snapshotter converts it).
    Tree,
    /// Writes an image holding `<chain>.txt` at the target's image path.
    Image,
    /// Claims to have mounted the layer.
    Mounted,
    /// Writes a file that is no EROFS image at the image path.
    Garbage,
}

struct TestProvider {
    answer: Mutex<Answer>,
    images_offered: Mutex<Vec<bool>>,
}

impl RemoteLayers for TestProvider {
    fn name(&self) -> &str {
        "test"
    }

    fn provide(
        &self,
        layer: &LayerRequest,
        target: &LayerTarget<'_>,
    ) -> Result<Provision, SnapshotError> {
        self.images_offered
            .lock()
            .unwrap()
            .push(target.image.is_some());
        let file = format!("{}.txt", layer.chain_id.replace(':', "-"));
        match *self.answer.lock().unwrap() {
            Answer::Tree => std::fs::write(target.fs.join(&file), &layer.chain_id).unwrap(),
            Answer::Image => {
                let tree = tempfile::tempdir().unwrap();
                std::fs::write(tree.path().join(&file), &layer.chain_id).unwrap();
                StrataErofsWriter
                    .build_from_dir(tree.path(), target.image.unwrap())
                    .unwrap();
            }
            Answer::Mounted => {
                return Ok(Provision::Mounted {
                    usage: Usage::default(),
                });
            }
            Answer::Garbage => std::fs::write(target.image.unwrap(), b"not erofs").unwrap(),
        }
        Ok(Provision::Provided)
    }
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

#[test]
#[ignore = "needs root (mounts EROFS images): make test runs it"]
fn provided_layers_become_images_committed_under_their_chain_ids() {
    strata_testdata::host::require_root("mounting EROFS images needs root");
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(TestProvider {
        answer: Mutex::new(Answer::Image),
        images_offered: Mutex::new(Vec::new()),
    });
    let root = dir.path().join("root");
    let s =
        ErofsSnapshotter::with_remote(&root, ErofsOptions::default(), provider.clone()).unwrap();

    // The base layer: the provider writes the image itself.
    let err = s
        .prepare("extract-1 sha256:a", "", unpack_labels("sha256:a"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    // The second: the provider fills `fs`, the snapshotter converts it.
    *provider.answer.lock().unwrap() = Answer::Tree;
    let err = s
        .prepare("extract-2 sha256:b", "sha256:a", unpack_labels("sha256:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(*provider.images_offered.lock().unwrap(), [true, true]);

    for (name, parent) in [("sha256:a", None), ("sha256:b", Some("sha256:a"))] {
        let info = s.stat(name).unwrap();
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent.as_deref(), parent);
        assert!(info.labels.contains_key(LABEL_REMOTE), "{name}: {info:?}");
        let usage = s.usage(name).unwrap();
        assert_eq!(usage.inodes, 2, "{name}: the root and one file");
        assert!(usage.size > 0);
    }
    // On disk: each committed layer is one image over an empty `fs`, no active marks.
    let mut images = 0;
    for entry in std::fs::read_dir(root.join("snapshots")).unwrap() {
        let dir = entry.unwrap().path();
        assert!(dir.join(LAYER_IMAGE).is_file(), "{}", dir.display());
        assert!(!dir.join(LAYER_MARKER).exists(), "{}", dir.display());
        assert_eq!(std::fs::read_dir(dir.join("fs")).unwrap().count(), 0);
        images += 1;
    }
    assert_eq!(images, 2);

    // A container over the chain sees both layers through the kernel's EROFS.
    let mounts = s.prepare("container", "sha256:b", Labels::new()).unwrap();
    let target = dir.path().join("container");
    std::fs::create_dir_all(&target).unwrap();
    mount_all(&mounts, &target).unwrap();
    let seen = (
        std::fs::read_to_string(target.join("sha256-a.txt")),
        std::fs::read_to_string(target.join("sha256-b.txt")),
    );
    unmount_all(&target, false).unwrap();
    assert_eq!(seen.0.unwrap(), "sha256:a");
    assert_eq!(seen.1.unwrap(), "sha256:b");

    // Asked again for a committed target: AlreadyExists without asking the provider.
    let err = s
        .prepare("extract-1 again", "", unpack_labels("sha256:a"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(provider.images_offered.lock().unwrap().len(), 2);

    s.remove("container").unwrap();
    s.remove("sha256:b").unwrap();
    s.remove("sha256:a").unwrap();
    s.close().unwrap();
}

#[test]
fn mounted_or_broken_layers_fall_back_to_a_normal_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(TestProvider {
        answer: Mutex::new(Answer::Mounted),
        images_offered: Mutex::new(Vec::new()),
    });
    let root = dir.path().join("root");
    let s = match ErofsSnapshotter::with_remote(&root, ErofsOptions::default(), provider.clone()) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotImplemented => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for (answer, key) in [(Answer::Mounted, "k1"), (Answer::Garbage, "k2")] {
        *provider.answer.lock().unwrap() = answer;
        let mounts = s
            .prepare(key, "", unpack_labels(&format!("sha256:{key}")))
            .unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert_eq!(
            mounts[0].kind, "bind",
            "{answer:?}: a normal active snapshot"
        );
        assert_eq!(s.stat(key).unwrap().kind, Kind::Active);
        assert!(s.stat(&format!("sha256:{key}")).is_err());
    }
    // Nothing of the refused layers is left.
    let entries = std::fs::read_dir(root.join("snapshots")).unwrap().count();
    assert_eq!(entries, 2, "the two active snapshots only");
    s.close().unwrap();
}
