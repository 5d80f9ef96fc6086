//! [`RegistryError`]: why a registry operation failed. Every variant names the host,
//! repository, URL, digest or file involved, and the cause.
//!
//! URLs in messages have their query string removed: upload URLs carry session state and
//! redirect targets carry signatures, neither of which belongs in a log.

use std::path::PathBuf;

use strata_formats::{Digest, ErrorKind};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry does not know the manifest or blob (HTTP 404 from every host tried).
    #[error("{what} not found in {host}/{repository}")]
    NotFound {
        /// The registry host that answered last.
        host: String,
        /// The repository.
        repository: String,
        /// What was asked for: `manifest latest`, `blob sha256:…`.
        what: String,
    },
    /// The registry kept answering 401 after the authentication flow ran (or there were
    /// no credentials to offer).
    #[error(
        "{host}/{repository}: unauthorized ({}){}",
        if *.credentials { "credentials were sent and rejected" } else { "no credentials found for this host" },
        detail_suffix(.detail)
    )]
    Unauthorized {
        /// The registry host.
        host: String,
        /// The repository.
        repository: String,
        /// Whether credentials for the host were found (docker config or helper).
        credentials: bool,
        /// The registry's error message, if any.
        detail: String,
    },
    /// The registry refused the operation for these credentials (HTTP 403).
    #[error("{host}/{repository}: access denied{}", detail_suffix(.detail))]
    Denied {
        /// The registry host.
        host: String,
        /// The repository.
        repository: String,
        /// The registry's error message, if any.
        detail: String,
    },
    /// An unexpected HTTP status.
    #[error("{method} {url}: unexpected status {code}{}", detail_suffix(.body))]
    Status {
        /// The request method.
        method: String,
        /// The URL (without query).
        url: String,
        /// The status code.
        code: u16,
        /// The start of the response body, or the registry's error codes and messages.
        body: String,
    },
    /// The request could not be sent or its response not read (connect, TLS, reset,
    /// timeout).
    #[error("{method} {url}: {source}")]
    Transport {
        /// The request method.
        method: String,
        /// The URL (without query).
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// Received bytes do not hash to the digest they were asked for by.
    #[error("{what}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        /// What was fetched or pushed: `manifest docker.io/library/alpine:3.20`.
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received (or the digest the registry reported).
        actual: Digest,
    },
    /// A document is larger than Strata is willing to buffer.
    #[error("{what}: {size} bytes is more than the {max} bytes allowed")]
    TooLarge {
        /// The document.
        what: String,
        /// Its size (for a stream: at least this).
        size: u64,
        /// The bound.
        max: u64,
    },
    /// A string is not a valid image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The string as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration file (`hosts.toml`, docker `config.json`, a CA or client
    /// certificate) could not be read or parsed.
    #[error("{}: {reason}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A docker credential helper failed.
    #[error("credential helper docker-credential-{helper} for {host}: {reason}")]
    CredentialHelper {
        /// The helper's name (`docker-credential-<helper>`).
        helper: String,
        /// The server address it was asked about.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered a Range request with the whole blob (HTTP 200).
    #[error("GET {url}: the server ignored the Range header (answered 200, not 206)")]
    RangeNotSupported {
        /// The URL (without query).
        url: String,
    },
    /// The response is malformed: missing or bad headers, unparsable bodies.
    #[error("{url}: invalid response: {reason}")]
    InvalidResponse {
        /// The URL (without query).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No configured host for the registry has the capability the operation needs.
    #[error("{registry}: no configured host has the {capability} capability")]
    NoHost {
        /// The registry.
        registry: String,
        /// `pull`, `resolve` or `push`.
        capability: &'static str,
    },
    /// An argument is out of range (an empty byte range, a mount across registries…).
    #[error("{what}: {reason}")]
    InvalidArgument {
        /// The argument.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl RegistryError {
    /// The error's category.
    ///
    /// `ErrorKind` has no authentication categories, so [`Unauthorized`](Self::Unauthorized)
    /// and [`Denied`](Self::Denied) are `FailedPrecondition`: the operation cannot
    /// succeed until credentials or permissions change.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Unauthorized { .. }
            | Self::Denied { .. }
            | Self::TooLarge { .. }
            | Self::NoHost { .. } => ErrorKind::FailedPrecondition,
            Self::Status { code, .. } => match code {
                404 => ErrorKind::NotFound,
                408 | 429 | 500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Self::Transport { .. } => ErrorKind::Unavailable,
            Self::DigestMismatch { .. } => ErrorKind::DataCorrupt,
            Self::InvalidReference { .. } | Self::Config { .. } | Self::InvalidArgument { .. } => {
                ErrorKind::InvalidArgument
            }
            Self::CredentialHelper { .. } | Self::InvalidResponse { .. } => ErrorKind::Internal,
            Self::RangeNotSupported { .. } => ErrorKind::NotImplemented,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Config {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid_response(url: &url::Url, reason: impl std::fmt::Display) -> Self {
        Self::InvalidResponse {
            url: redact(url),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn transport(
        method: &reqwest::Method,
        url: &url::Url,
        source: reqwest::Error,
    ) -> Self {
        // reqwest's Display repeats the URL (with its query); drop it, we name it ourselves.
        Self::Transport {
            method: method.to_string(),
            url: redact(url),
            source: source.without_url(),
        }
    }

    /// Whether retrying the same request could help: connection failures, timeouts and
    /// the server-side statuses that mean "try again".
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable)
    }
}

/// A URL for messages: scheme, host, port and path, without query or fragment.
pub(crate) fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    // Userinfo never comes from us, but a Location header could carry it.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_thing_and_the_cause() {
        let e = RegistryError::Unauthorized {
            host: "127.0.0.1:5000".into(),
            repository: "team/app".into(),
            credentials: false,
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5000/team/app: unauthorized (no credentials found for this host)"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let url = url::Url::parse("https://u:p@s3.example/blob?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact(&url), "https://s3.example/blob");
        let e = RegistryError::Status {
            method: "GET".into(),
            url: redact(&url),
            code: 503,
            body: "busy".into(),
        };
        assert_eq!(
            e.to_string(),
            "GET https://s3.example/blob: unexpected status 503: busy"
        );
        assert!(e.is_retryable());
    }
}
