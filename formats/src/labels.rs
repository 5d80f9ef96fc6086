//! containerd's label rules (`pkg/labels`): a label's key and value together
//! may take at most [`MAX_LABEL_SIZE`] bytes. containerd checks this wherever
//! labels are written (content, snapshots, images, containers), and rejects
//! the request as an invalid argument.

use crate::errdefs::ErrorKind;

/// The most bytes a label's key and value may take together (containerd's
/// `maxSize`).
pub const MAX_LABEL_SIZE: usize = 4096;

/// How much of the key an error message quotes (containerd's `keyMaxLen`),
/// so that an oversized key does not flood logs.
const KEY_MAX_LEN: usize = 64;

/// Why a label was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// Key and value together exceed [`MAX_LABEL_SIZE`]. Displays as
    /// containerd's message (without the `: invalid argument` suffix its
    /// errdefs wrapping adds; see [`LabelError::kind`]).
    #[error("label key and value length ({total} bytes) greater than maximum size ({max} bytes), key: {key}", max = MAX_LABEL_SIZE)]
    TooLarge {
        /// The key, cut to its first 64 bytes (at a character boundary).
        key: String,
        /// Key length plus value length, in bytes.
        total: usize,
    },
}

impl LabelError {
    /// The errdefs category: always [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Checks one label as containerd's `labels.Validate` does: `key` and
/// `value` together must fit in [`MAX_LABEL_SIZE`] bytes. Nothing else is
/// checked; in particular an empty key is allowed, as in containerd.
///
/// # Errors
///
/// [`LabelError::TooLarge`] when the label is too big.
pub fn validate_label(key: &str, value: &str) -> Result<(), LabelError> {
    let total = key.len() + value.len();
    if total <= MAX_LABEL_SIZE {
        return Ok(());
    }
    // containerd cuts at byte 64; cut at the character boundary below it so
    // the message stays UTF-8.
    let mut cut = key.len().min(KEY_MAX_LEN);
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(LabelError::TooLarge {
        key: key[..cut].to_owned(),
        total,
    })
}

/// Checks every label with [`validate_label`], stopping at the first bad
/// one. Takes any map or list of pairs, e.g. `&BTreeMap<String, String>` or
/// `[("k", "v")]`.
///
/// # Errors
///
/// The first label's error, in iteration order.
pub fn validate_labels<I, K, V>(labels: I) -> Result<(), LabelError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    labels
        .into_iter()
        .try_for_each(|(key, value)| validate_label(key.as_ref(), value.as_ref()))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    // containerd's TestValidLabels / TestInvalidLabels.
    #[test]
    fn valid_and_invalid() {
        assert_eq!(validate_label("some", "value"), Ok(()));
        assert_eq!(validate_label("s", &"s".repeat(MAX_LABEL_SIZE - 1)), Ok(()));
        assert_eq!(validate_label("", ""), Ok(()));
        assert_eq!(validate_label("", &"v".repeat(MAX_LABEL_SIZE)), Ok(()));
        let err = validate_label(&"s".repeat(MAX_LABEL_SIZE), "s").expect_err("too big");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            format!(
                "label key and value length (4097 bytes) greater than maximum size (4096 bytes), key: {}",
                "s".repeat(64)
            )
        );
    }

    // containerd's TestLongKey.
    #[test]
    fn long_keys() {
        let key = "s".repeat(KEY_MAX_LEN + 1);
        assert_eq!(
            validate_label(&key, &"v".repeat(MAX_LABEL_SIZE - key.len())),
            Ok(())
        );

        let key = "s".repeat(KEY_MAX_LEN + 12);
        let err = validate_label(&key, &"v".repeat(MAX_LABEL_SIZE - key.len() + 1))
            .expect_err("one over");
        assert_eq!(
            err,
            LabelError::TooLarge {
                key: "s".repeat(KEY_MAX_LEN),
                total: MAX_LABEL_SIZE + 1
            }
        );

        let key = "s".repeat(KEY_MAX_LEN - 1);
        assert_eq!(
            validate_label(&key, &"v".repeat(MAX_LABEL_SIZE - key.len())),
            Ok(())
        );
        assert_eq!(
            validate_label(&key, &"v".repeat(MAX_LABEL_SIZE - key.len() - 1)),
            Ok(())
        );
    }

    #[test]
    fn short_key_is_quoted_whole_and_cut_on_a_character_boundary() {
        let err = validate_label("k", &"v".repeat(MAX_LABEL_SIZE)).expect_err("too big");
        assert!(err.to_string().ends_with("key: k"), "{err}");

        // 63 ASCII bytes then a 2-byte character straddling byte 64.
        let key = format!("{}é", "k".repeat(63));
        let Err(LabelError::TooLarge { key: quoted, total }) =
            validate_label(&key, &"v".repeat(MAX_LABEL_SIZE))
        else {
            panic!("should be too large");
        };
        assert_eq!(quoted, "k".repeat(63));
        assert_eq!(total, 65 + MAX_LABEL_SIZE);
    }

    #[test]
    fn many_labels() {
        let mut map = BTreeMap::new();
        map.insert("a".to_owned(), "1".to_owned());
        map.insert("b".to_owned(), "2".to_owned());
        assert_eq!(validate_labels(&map), Ok(()));
        map.insert("c".to_owned(), "x".repeat(MAX_LABEL_SIZE));
        let err = validate_labels(&map).expect_err("c is too big");
        assert!(matches!(err, LabelError::TooLarge { ref key, .. } if key == "c"));

        let hash: HashMap<&str, &str> = [("k", "v")].into_iter().collect();
        assert_eq!(validate_labels(&hash), Ok(()));
        assert_eq!(validate_labels([("k", "v")]), Ok(()));
        assert_eq!(validate_labels(Vec::<(String, String)>::new()), Ok(()));
    }

    proptest! {
        #[test]
        fn accepts_exactly_up_to_the_limit(key in "\\PC{0,80}", extra in 0usize..8, over in any::<bool>()) {
            let room = MAX_LABEL_SIZE.saturating_sub(key.len());
            let len = if over { room + 1 + extra } else { room.saturating_sub(extra) };
            let value = "v".repeat(len);
            let result = validate_label(&key, &value);
            prop_assert_eq!(result.is_ok(), key.len() + value.len() <= MAX_LABEL_SIZE);
            if let Err(LabelError::TooLarge { key: quoted, total }) = result {
                prop_assert!(key.starts_with(&quoted));
                prop_assert!(quoted.len() <= KEY_MAX_LEN);
                prop_assert_eq!(total, key.len() + value.len());
            }
        }
    }
}
