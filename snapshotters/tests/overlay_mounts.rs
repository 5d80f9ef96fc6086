//! Real overlay mounts from the overlay snapshotter: 128 layers, whose lowerdir list of
//! absolute paths is longer than the one page mount(2) accepts.

use std::path::{Path, PathBuf};

use strata_snapshotters::mount::{mount_all, unmount_all};
use strata_snapshotters::overlay::OverlaySnapshotter;
use strata_snapshotters::{Labels, Mount, Snapshotter};

/// A mount point that is unmounted when dropped, whatever the test did.
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[Mount], target: &Path) -> Mounted {
        std::fs::create_dir_all(target).unwrap();
        let guard = Mounted(target.to_path_buf());
        mount_all(mounts, target).expect("mount");
        guard
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(&self.0, true) {
            // Panicking while unwinding would abort and hide the first failure.
            eprintln!("unmount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn one_hundred_twenty_eight_layers_mount() {
    // A long root makes every lowerdir path long, as under /var/lib/containerd.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(
        "a-rather-long-directory-name-for-the-snapshotter-root/io.strata.snapshotter.v1.overlayfs",
    );
    let s = OverlaySnapshotter::open(&root).unwrap();
    let target = dir.path().join("mnt");
    let mut parent = String::new();
    for layer in 0..128 {
        let key = format!("prepare-{layer}");
        let mounts = s.prepare(&key, &parent, Labels::new()).unwrap();
        {
            let m = Mounted::new(&mounts, &target);
            std::fs::write(m.0.join(format!("layer-{layer}")), layer.to_string()).unwrap();
            std::fs::write(m.0.join("top"), layer.to_string()).unwrap();
        }
        let name = format!("layer-{layer}");
        s.commit(&name, &key, Labels::new()).unwrap();
        parent = name;
    }
    let mounts = s.prepare("container", &parent, Labels::new()).unwrap();
    let data: usize = mounts[0].options.iter().map(|o| o.len() + 1).sum();
    assert!(
        data > 4096,
        "the test must exceed one page of options, has {data} bytes"
    );
    let cwd = std::env::current_dir().unwrap();
    let m = Mounted::new(&mounts, &target);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "mounting must not move the process"
    );
    for layer in 0..128 {
        assert_eq!(
            std::fs::read_to_string(m.0.join(format!("layer-{layer}"))).unwrap(),
            layer.to_string()
        );
    }
    assert_eq!(std::fs::read_to_string(m.0.join("top")).unwrap(), "127");
    std::fs::write(m.0.join("container-file"), b"rw").unwrap();
    drop(m);
    let upper = s.usage("container").unwrap();
    assert_eq!(
        upper.inodes, 2,
        "the upper holds its root and the one new file"
    );

    let view = s.view("view", &parent, Labels::new()).unwrap();
    let m = Mounted::new(&view, &target);
    assert_eq!(std::fs::read_to_string(m.0.join("layer-0")).unwrap(), "0");
    assert!(!m.0.join("container-file").exists());
}
