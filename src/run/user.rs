//! A container's user as docker and containerd resolve `--user` / the image's `User`:
//! `name`, `uid`, `name:group`, `uid:gid` (any mix), names looked up in the image's own
//! `/etc/passwd` and `/etc/group` — read inside the rootfs (`openat2(RESOLVE_IN_ROOT)`: an
//! image's symlinks cannot point the lookup at the host's files). A numeric uid the image
//! does not list runs with gid 0; a name it does not list is an error. Supplementary
//! groups are the groups that list the user by name.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::RunError;

/// Largest `/etc/passwd` or `/etc/group` read.
const MAX_DB: u64 = 4 << 20;

/// Numeric ids to run as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub additional_gids: Vec<u32>,
}

/// Reads `path` (absolute in the image) inside `rootfs`; empty when it does not exist.
fn read_in_root(rootfs: &Path, path: &str) -> Result<String, RunError> {
    let fail = |e: std::io::Error| RunError::Image(format!("read {path} in the image: {e}"));
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let fd = match rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(fail(e.into())),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB)
        .read_to_string(&mut text)
        .map_err(fail)?;
    Ok(text)
}

/// `name:x:uid:gid:…` lines.
fn passwd(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
        ))
    })
}

/// `name:x:gid:member,member` lines.
fn groups(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        Some((*f.first()?, f.get(2)?.parse().ok()?, members))
    })
}

/// Resolves `spec` (`user[:group]`) in the image mounted at `rootfs`.
///
/// # Errors
///
/// A name the image's files do not list, or an unreadable file.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, RunError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(RunError::User(format!("{spec:?}: not user[:group]")));
    }
    let passwd_text = read_in_root(rootfs, "/etc/passwd")?;
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd(&passwd_text).find(|e| e.1 == uid),
        Err(_) => Some(passwd(&passwd_text).find(|e| e.0 == user).ok_or_else(|| {
            RunError::User(format!("user {user:?}: not in the image's /etc/passwd"))
        })?),
    };
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.1,
        (Err(_), None) => unreachable!("a name not found returned above"),
    };
    let group_text = read_in_root(rootfs, "/etc/group")?;
    let gid = match group {
        None => entry.map_or(0, |e| e.2),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups(&group_text)
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| {
                    RunError::User(format!("group {g:?}: not in the image's /etc/group"))
                })?,
        },
    };
    let additional_gids = match entry {
        Some((name, _, _)) => groups(&group_text)
            .filter(|(_, id, members)| *id != gid && members.contains(&name))
            .map(|(_, id, _)| id)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve_in_the_image() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\n",
        )
        .unwrap();
        let r = |s: &str| resolve_user(root.path(), s);
        assert_eq!(
            r("app").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![50]
            }
        );
        assert_eq!(r("1000:50").unwrap().gid, 50);
        assert_eq!(
            r("app:staff").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        let err = r("nobody").unwrap_err().to_string();
        assert!(
            err.contains("\"nobody\"") && err.contains("/etc/passwd"),
            "{err}"
        );
        assert!(
            r("app:wheel")
                .unwrap_err()
                .to_string()
                .contains("/etc/group")
        );
        assert!(r(":1").is_err());

        // A symlinked passwd pointing at the host's resolves inside the image.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", etc.join("passwd")).unwrap();
        assert!(r("root").is_err(), "the host's /etc/passwd was read");
    }
}
