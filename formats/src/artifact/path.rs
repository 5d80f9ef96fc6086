//! Cleaning the untrusted paths artifacts name their files by (annotations): relative,
//! `/`-separated, no `.` or empty components, `..` resolved without leaving the root,
//! bounded in length, no NUL.

/// The longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// The longest path component accepted, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Why a path is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// A `..` climbs above the root.
    #[error("escapes the root through \"..\"")]
    Escapes,
    /// Nothing left after cleaning.
    #[error("empty path")]
    Empty,
    /// Contains a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// Longer than [`MAX_PATH_LEN`], or a component longer than [`MAX_NAME_LEN`].
    #[error("too long (a path has at most {MAX_PATH_LEN} bytes, a name {MAX_NAME_LEN})")]
    TooLong,
}

/// `raw` cleaned: components joined by single `/`, `.` and empty ones dropped, `..`
/// removing the component before it. Absolute paths, escapes, NUL and empty results are
/// refused.
pub fn clean_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if raw.contains('\0') {
        return Err(PathError::Nul);
    }
    if raw.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes);
                }
            }
            c if c.len() > MAX_NAME_LEN => return Err(PathError::TooLong),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cleans_and_refuses() {
        assert_eq!(clean_path("a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean_path("a/../b").unwrap(), "b");
        assert_eq!(clean_path("../etc/passwd"), Err(PathError::Escapes));
        assert_eq!(clean_path("a/../../b"), Err(PathError::Escapes));
        assert_eq!(clean_path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(clean_path("./."), Err(PathError::Empty));
        assert_eq!(clean_path(""), Err(PathError::Empty));
        assert_eq!(clean_path("a\0b"), Err(PathError::Nul));
        assert_eq!(clean_path(&"x".repeat(256)), Err(PathError::TooLong));
    }

    proptest! {
        #[test]
        fn a_clean_path_stays_inside_and_is_a_fixed_point(raw in "[a./\\\\]{0,24}") {
            if let Ok(p) = clean_path(&raw) {
                prop_assert!(!p.starts_with('/'));
                prop_assert!(p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
                prop_assert_eq!(clean_path(&p).unwrap(), p);
            }
        }
    }
}
