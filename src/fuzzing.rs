//! Entry points for the fuzz targets in `fuzz/`: the hub's parsers of untrusted input,
//! most of them private to their modules, as pure functions of bytes. Not an API: nothing
//! outside the fuzz targets calls these, and they may change with the parsers.
//!
//! The fd holder's wire format is fuzzed through its own public API
//! ([`crate::fdstore::protocol::Message::decode`]), not from here.

use std::path::Path;

/// The parts of a `multipart/byteranges` body: each one's range and how many bytes it held.
pub type PartSpans = Vec<(std::ops::Range<u64>, usize)>;

/// A `multipart/byteranges` answer: the boundary from `content_type`, then the body.
/// Returns the parts' (range, length) and whether the body was complete.
pub fn multipart_byteranges(
    content_type: &str,
    body: &[u8],
) -> Option<Result<(PartSpans, bool), String>> {
    crate::registry::range::parse_byteranges(content_type, body)
}

/// A registry's `hosts.toml` (containerd's format): for each host, whether its base URL
/// is usable.
pub fn hosts_toml(text: &str) -> Result<Vec<bool>, crate::registry::RegistryError> {
    crate::registry::hosts::parse_hosts_text(text)
}

/// The daemon's configuration file (`strata serve --config`).
pub fn daemon_config(text: &str) -> Result<crate::serve::config::Config, String> {
    crate::serve::config::Config::parse(text, Path::new("config.toml")).map_err(|e| e.to_string())
}

/// A token endpoint's answer (JSON with `token`/`access_token`, `expires_in`,
/// `issued_at`), read at a fixed wall-clock time.
pub fn token_response(body: &[u8]) -> Result<(String, std::time::Duration), String> {
    crate::registry::auth::parse_token_answer(body, time::OffsetDateTime::UNIX_EPOCH)
}

/// A manifest body as the registry client reads it: its media type sniffed from the body,
/// then parsed as an image index and as an image manifest.
pub fn manifest_json(body: &[u8]) -> Option<String> {
    let _ = crate::image::walk::parse_index(body, "fuzz index");
    let _ = crate::image::walk::parse_manifest(body, "fuzz manifest");
    crate::registry::sniff_media_type(body)
}
