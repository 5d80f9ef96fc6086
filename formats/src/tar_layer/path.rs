//! Entry paths cleaned as containerd cleans them, and whiteout names recognised.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::{EntryKind, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

/// `name` joined to `/` and cleaned (`.` and empty components dropped, `..` removes the
/// previous component and cannot climb above the root), with the leading `/` removed: the
/// path relative to the layer root that containerd's applier writes. The root is empty.
pub fn clean_path(name: &[u8]) -> PathBuf {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    PathBuf::from(OsString::from_vec(parts.join(&b'/')))
}

/// The base name (last component) of a cleaned path, and its directory.
pub(super) fn split_base(cleaned: &[u8]) -> (&[u8], &[u8]) {
    match cleaned.iter().rposition(|&b| b == b'/') {
        Some(i) => (&cleaned[..i], &cleaned[i + 1..]),
        None => (&[][..], cleaned),
    }
}

/// The whiteout an entry at `cleaned` stands for, if its base name is one; an error for
/// whiteout names that would delete the directory itself or its parent (`.wh.`,
/// `.wh..`, `.wh...`), which containerd refuses too.
pub(super) fn whiteout_kind(cleaned: &[u8]) -> Result<Option<EntryKind>, String> {
    let (dir, base) = split_base(cleaned);
    if base == OPAQUE_WHITEOUT.as_bytes() {
        return Ok(Some(EntryKind::OpaqueWhiteout {
            dir: PathBuf::from(OsString::from_vec(dir.to_vec())),
        }));
    }
    let Some(victim) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(None);
    };
    if victim.is_empty() || victim == b"." || victim == b".." {
        return Err(format!(
            "invalid whiteout name {:?}",
            String::from_utf8_lossy(base)
        ));
    }
    let mut target = dir.to_vec();
    if !target.is_empty() {
        target.push(b'/');
    }
    target.extend_from_slice(victim);
    Ok(Some(EntryKind::Whiteout {
        target: PathBuf::from(OsString::from_vec(target)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_never_climbs_above_the_root() {
        let c = |s: &str| clean_path(s.as_bytes()).to_string_lossy().into_owned();
        assert_eq!(c("../../x"), "x");
        assert_eq!(c("/etc/passwd"), "etc/passwd");
        assert_eq!(c("./a//b/./c/"), "a/b/c");
        assert_eq!(c("a/../../b/../c"), "c");
        assert_eq!(c("a/b/.."), "a");
        assert_eq!(c("./"), "");
        assert_eq!(c("/"), "");
        assert_eq!(c(".."), "");
    }

    #[test]
    fn whiteouts_are_recognised_and_bad_ones_refused() {
        let w = |s: &str| whiteout_kind(s.as_bytes());
        assert_eq!(
            w("a/.wh.b").unwrap(),
            Some(EntryKind::Whiteout {
                target: "a/b".into()
            })
        );
        assert_eq!(
            w(".wh.b").unwrap(),
            Some(EntryKind::Whiteout { target: "b".into() })
        );
        assert_eq!(
            w("a/.wh..wh..opq").unwrap(),
            Some(EntryKind::OpaqueWhiteout { dir: "a".into() })
        );
        assert_eq!(
            w(".wh..wh..opq").unwrap(),
            Some(EntryKind::OpaqueWhiteout { dir: "".into() })
        );
        assert_eq!(w("a/b.wh.c").unwrap(), None);
        assert!(w("a/.wh.").is_err());
        assert!(w("a/.wh..").is_err());
        assert!(w("a/.wh...").is_err());
    }
}
