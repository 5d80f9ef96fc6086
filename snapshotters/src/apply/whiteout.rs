//! OCI whiteouts written as overlayfs expects them (an upper directory) or carried out
//! by deleting (a directory holding the whole tree).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use strata_formats::tar_layer::Entry;

use super::entry::owner;
use super::root::{dir_names, remove_all_at, split, type_at};
use super::{Applier, ApplyError, WhiteoutMode};

impl Applier<'_> {
    /// `.wh.<name>`: in Overlay mode a 0/0 character device named `<name>` (replacing what
    /// this layer may have put there), owned as the entry says; in Delete mode `<name>`
    /// is removed with everything below it.
    pub(super) fn whiteout(&mut self, entry: &Entry, target: &Path) -> Result<(), ApplyError> {
        let (parent, name) = split(target);
        self.root
            .ensure_dir(parent)
            .map_err(self.fail(entry, "creating the parent directory"))?;
        let dir = self.root.dir(parent);
        remove_all_at(dir, name)
            .map_err(self.fail(entry, format!("removing {}", target.display())))?;
        if let WhiteoutMode::Overlay { .. } = self.options.whiteouts {
            rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| self.fail(entry, "creating the overlay whiteout")(e.into()))?;
            let (uid, gid) =
                owner(entry).map_err(self.fail(entry, "changing the whiteout's owner"))?;
            rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(entry, "changing the whiteout's owner")(e.into()))?;
        }
        self.root.forget_dirs();
        Ok(())
    }

    /// `.wh..wh..opq`: in Overlay mode the directory gets the opaque xattr; in Delete mode
    /// everything in it that this layer did not write is removed.
    pub(super) fn opaque(&mut self, entry: &Entry, dir_path: &Path) -> Result<(), ApplyError> {
        self.root
            .ensure_dir(dir_path)
            .map_err(self.fail(entry, "creating the opaque directory"))?;
        let dir = self.root.dir(dir_path);
        match self.options.whiteouts {
            WhiteoutMode::Overlay { userxattr } => {
                let key = if userxattr {
                    "user.overlay.opaque"
                } else {
                    "trusted.overlay.opaque"
                };
                rustix::fs::fsetxattr(dir, key, b"y", XattrFlags::empty())
                    .map_err(|e| self.fail(entry, format!("setting {key}"))(e.into()))?;
            }
            WhiteoutMode::Delete => {
                let dir = dir
                    .try_clone_to_owned()
                    .map_err(self.fail(entry, "opening the opaque directory"))?;
                self.remove_not_unpacked(&dir, dir_path)
                    .map_err(self.fail(entry, "emptying the opaque directory"))?;
                self.root.forget_dirs();
            }
        }
        Ok(())
    }

    /// Removes what is below `dir` (at `path`) and was not written by this layer,
    /// descending into the directories that were.
    fn remove_not_unpacked(&self, dir: &OwnedFd, path: &Path) -> io::Result<()> {
        for name in dir_names(dir)? {
            let child = path.join(&name);
            if !self.unpacked.contains(&child) {
                remove_all_at(dir.as_fd(), &name)?;
            } else if type_at(dir.as_fd(), &name)? == Some(FileType::Directory) {
                let sub = open_subdir(dir.as_fd(), &name)?;
                self.remove_not_unpacked(&sub, &child)?;
            }
        }
        Ok(())
    }
}

fn open_subdir(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}
