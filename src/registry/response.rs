//! Reading registry responses: bounded bodies, and errors that carry the registry's own
//! explanation (`MANIFEST_UNKNOWN: manifest unknown`) and name what was asked for.

use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response};
use url::Url;

use super::client::authority;
use super::error::{RegistryError, redact};
use super::reference::Reference;

/// Bytes of an error body read for a message.
const ERROR_BODY_LIMIT: usize = 4096;

/// Reads a body of at most `max` bytes (more is [`RegistryError::TooLarge`]).
pub(crate) async fn read_limited(
    mut resp: Response,
    max: usize,
    url: &Url,
) -> Result<Bytes, RegistryError> {
    let too_large = |size: u64| RegistryError::TooLarge {
        what: format!("response of {}", redact(url)),
        size,
        max: max as u64,
    };
    if let Some(len) = resp.content_length().filter(|&l| l > max as u64) {
        return Err(too_large(len));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| RegistryError::transport(&Method::GET, url, e))?
    {
        if buf.len() + chunk.len() > max {
            return Err(too_large((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A short description of an error response: the registry's error codes and messages
/// (`MANIFEST_UNKNOWN: manifest unknown`), else the start of the body.
pub(crate) async fn error_detail(mut resp: Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body)
        && !e.errors.is_empty()
    {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        return parts.join("; ");
    }
    let text: String = String::from_utf8_lossy(&body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error for a response with an unexpected status: 403 is
/// [`Denied`](RegistryError::Denied), 404 [`NotFound`](RegistryError::NotFound) (of
/// `what` in `r`), anything else [`Status`](RegistryError::Status).
pub(crate) async fn status_error(
    resp: Response,
    method: &Method,
    r: &Reference,
    what: &str,
) -> RegistryError {
    let code = resp.status().as_u16();
    let url = resp.url().clone();
    match code {
        403 => RegistryError::Denied {
            host: authority(&url),
            repository: r.repository().to_owned(),
            detail: error_detail(resp).await,
        },
        404 => RegistryError::NotFound {
            host: r.registry().to_owned(),
            repository: r.repository().to_owned(),
            what: what.to_owned(),
        },
        _ => RegistryError::Status {
            method: method.to_string(),
            url: redact(&url),
            code,
            body: error_detail(resp).await,
        },
    }
}
