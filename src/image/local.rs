//! Finding a local image record by the name a user types: as stored, or normalised as
//! every record name Strata creates is (`sample:1.0` → `docker.io/library/sample:1.0`).

use crate::metadata::{ImageRecord, MetadataError};
use crate::store::Store;
use strata_formats::ErrorKind;

/// The image record named `name`, else the one named by `name`'s normalised form.
///
/// # Errors
///
/// NotFound (naming `name` as given) when neither exists; the metadata store's errors.
pub fn find_image(store: &Store, name: &str) -> Result<ImageRecord, MetadataError> {
    match store.metadata().image(name) {
        Err(e) if e.kind() == ErrorKind::NotFound => match normalized_name(name) {
            Some(full) => store.metadata().image(&full).map_err(|e2| {
                if e2.kind() == ErrorKind::NotFound {
                    e
                } else {
                    e2
                }
            }),
            None => Err(e),
        },
        other => other,
    }
}

/// `name` normalised as containerd does, when it parses as a reference and differs.
pub fn normalized_name(name: &str) -> Option<String> {
    super::normalize_reference(name)
        .ok()
        .filter(|full| full != name)
}

/// The name a new record gets: `name` normalised when it parses as a reference (as
/// `docker save` names are), else `name` unchanged.
pub fn record_name(name: &str) -> String {
    normalized_name(name).unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_normalised_when_they_parse() {
        assert_eq!(record_name("sample:1.0"), "docker.io/library/sample:1.0");
        assert_eq!(record_name("reg.local/app:1"), "reg.local/app:1");
        assert_eq!(
            record_name("docker.io/library/app:1.0"),
            "docker.io/library/app:1.0"
        );
        // Not a reference (upper case): kept as the archive named it.
        assert_eq!(record_name("My Image:1"), "My Image:1");
    }
}
