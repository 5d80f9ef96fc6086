//! Writing to a registry: [`RegistryClient::mount_blob`], [`RegistryClient::push_blob`]
//! and [`RegistryClient::push_manifest`], the primitives a push is built from.
//!
//! All of them use the first host with the push capability (see
//! [`client`](super::client)) and a `repository:<name>:pull,push` token. An upload
//! session's `Location` may be relative or absolute, and may point at another host; the
//! registry's credentials only ever go to the registry host.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::{Body, Method, Request, Response};
use strata_formats::Digest;
use url::Url;

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::fetch::{MAX_MANIFEST_SIZE, api_url};
use super::hosts::{Capability, RegistryHost};
use super::reference::Reference;
use super::response::status_error;

const OCTET_STREAM: &str = "application/octet-stream";

impl RegistryClient {
    /// Asks the registry to mount blob `digest` from repository `from` into `r`'s
    /// repository (`POST /v2/<repository>/blobs/uploads/?mount=<digest>&from=<from>`).
    /// `true`: mounted (201). `false`: not mounted (202: the registry opened an upload
    /// session instead, which is cancelled), or `from` is on another registry (no request
    /// is made: mounts work within one registry only); the caller then pushes the blob.
    pub async fn mount_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        from: &Reference,
    ) -> Result<bool, RegistryError> {
        if from.registry() != r.registry() {
            return Ok(false);
        }
        let path = format!("{}/blobs/uploads/", r.repository());
        let scope = Scope::push(r.repository()).and(&Scope::pull(from.repository()));
        let (resp, host) = self
            .send_with_host(r, Capability::Push, &scope, |http, base| {
                let mut url = api_url(base, &path);
                url.query_pairs_mut()
                    .append_pair("mount", &digest.to_string())
                    .append_pair("from", from.repository());
                http.post(url).header(http::header::CONTENT_LENGTH, 0)
            })
            .await?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                // Best effort: an abandoned session is garbage-collected by the registry.
                if let Ok(location) = location(&resp) {
                    let cancel = Request::new(Method::DELETE, location);
                    let _ = self.execute_on(r, &host, cancel, &scope).await;
                }
                Ok(false)
            }
            _ => {
                Err(status_error(resp, &Method::POST, r, &format!("upload of blob {digest}")).await)
            }
        }
    }

    /// Uploads blob `digest` of `size` bytes: `POST /v2/<repository>/blobs/uploads/` to
    /// open a session, then one `PUT <location>?digest=<digest>` with the body, or, with
    /// [`ClientOptions::push_chunk_size`](super::ClientOptions::push_chunk_size), `PATCH`es
    /// of that size and a closing `PUT`. The registry verifies the digest; a body of
    /// another length than `size` fails.
    pub async fn push_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        body: impl Into<Body>,
    ) -> Result<(), RegistryError> {
        let scope = Scope::push(r.repository());
        let what = format!("upload of blob {digest}");
        let path = format!("{}/blobs/uploads/", r.repository());
        let (resp, host) = self
            .send_with_host(r, Capability::Push, &scope, |http, base| {
                http.post(api_url(base, &path))
                    .header(http::header::CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status().as_u16() != 202 {
            return Err(status_error(resp, &Method::POST, r, &what).await);
        }
        let mut location = location(&resp)?;
        let body = body.into();
        let final_body = match self.options().push_chunk_size.filter(|&c| c > 0) {
            None => {
                let mut req = Request::new(Method::PUT, with_digest(location, digest));
                let h = req.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(OCTET_STREAM),
                );
                h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(size));
                *req.body_mut() = Some(body);
                req
            }
            Some(chunk) => {
                location = self
                    .upload_chunks(r, &host, &scope, location, body, size, chunk, digest)
                    .await?;
                let mut req = Request::new(Method::PUT, with_digest(location, digest));
                req.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(0u64));
                req
            }
        };
        let resp = self.execute_on(r, &host, final_body, &scope).await?;
        if resp.status().as_u16() != 201 {
            return Err(status_error(resp, &Method::PUT, r, &what).await);
        }
        check_digest_header(
            &resp,
            digest,
            &format!("blob {digest} pushed to {}", r.name()),
        )
    }

    /// Sends `body` as PATCH chunks of `chunk` bytes; returns the location to close the
    /// session at.
    #[allow(clippy::too_many_arguments)]
    async fn upload_chunks(
        &self,
        r: &Reference,
        host: &RegistryHost,
        scope: &Scope,
        mut location: Url,
        body: Body,
        size: u64,
        chunk: u64,
        digest: &Digest,
    ) -> Result<Url, RegistryError> {
        let what = format!("upload of blob {digest}");
        let mut stream = http_body_util::BodyDataStream::new(body);
        let mut buf = BytesMut::new();
        let mut sent = 0u64;
        let mut done = false;
        while !done {
            match stream.next().await {
                Some(Ok(data)) => buf.extend_from_slice(&data),
                Some(Err(e)) => {
                    return Err(RegistryError::InvalidArgument {
                        what: format!("body of blob {digest}"),
                        reason: e.to_string(),
                    });
                }
                None => done = true,
            }
            while buf.len() as u64 >= chunk || (done && !buf.is_empty()) {
                let n = (buf.len() as u64).min(chunk) as usize;
                let part: Bytes = buf.split_to(n).freeze();
                let mut req = Request::new(Method::PATCH, location.clone());
                let h = req.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(OCTET_STREAM),
                );
                h.insert(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from(n as u64),
                );
                let range = format!("{sent}-{}", sent + n as u64 - 1);
                let range = http::HeaderValue::try_from(range).map_err(|e| {
                    RegistryError::InvalidArgument {
                        what: format!("chunk of blob {digest}"),
                        reason: e.to_string(),
                    }
                })?;
                h.insert(http::header::CONTENT_RANGE, range);
                *req.body_mut() = Some(Body::from(part));
                let resp = self.execute_on(r, host, req, scope).await?;
                if resp.status().as_u16() != 202 {
                    return Err(status_error(resp, &Method::PATCH, r, &what).await);
                }
                location = self::location(&resp)?;
                sent += n as u64;
            }
        }
        if sent != size {
            return Err(RegistryError::InvalidArgument {
                what: format!("body of blob {digest}"),
                reason: format!("{sent} bytes, expected {size}"),
            });
        }
        Ok(location)
    }

    /// Uploads a manifest or index: `PUT /v2/<repository>/manifests/<tag or digest>` with
    /// `Content-Type: media_type`. With a tag the tag is (re)pointed at it. Returns the
    /// manifest's digest; when `r` has a digest, `bytes` must hash to it.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        self.put_manifest(r, media_type, bytes)
            .await
            .map(|(digest, _)| digest)
    }

    /// [`push_manifest`](Self::push_manifest), also returning the `OCI-Subject` header
    /// of the answer: a registry that processes a manifest's `subject` (OCI 1.1) names it
    /// there.
    pub(crate) async fn put_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(Digest, Option<String>), RegistryError> {
        let digest = Digest::of(&bytes);
        let what = format!("manifest {digest} pushed to {}", r.name());
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge {
                what,
                size: bytes.len() as u64,
                max: MAX_MANIFEST_SIZE,
            });
        }
        if let Some(want) = r.digest()
            && *want != digest
        {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: want.clone(),
                actual: digest,
            });
        }
        let object = r.tag().map_or_else(|| digest.to_string(), str::to_owned);
        let path = format!("{}/manifests/{object}", r.repository());
        let resp = self
            .send(
                r,
                Capability::Push,
                Scope::push(r.repository()),
                |http, base| {
                    http.put(api_url(base, &path))
                        .header(http::header::CONTENT_TYPE, media_type)
                        .body(bytes.clone())
                },
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &Method::PUT, r, &format!("manifest {object}")).await);
        }
        check_digest_header(&resp, &digest, &what)?;
        let subject = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((digest, subject))
    }
}

/// The `Location` of an upload answer, resolved against the request URL (registries
/// answer with relative paths or absolute URLs).
fn location(resp: &Response) -> Result<Url, RegistryError> {
    let raw = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            RegistryError::invalid_response(resp.url(), "upload answer has no Location")
        })?;
    resp.url().join(raw).map_err(|e| {
        RegistryError::invalid_response(resp.url(), format!("invalid Location {raw:?}: {e}"))
    })
}

/// The upload location with `digest=<digest>` added to its query (keeping the session's
/// own parameters).
fn with_digest(mut location: Url, digest: &Digest) -> Url {
    location
        .query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    location
}

/// Fails when the registry reports a different digest than the one pushed.
fn check_digest_header(
    resp: &Response,
    expected: &Digest,
    what: &str,
) -> Result<(), RegistryError> {
    let Some(v) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    match v.trim().parse::<Digest>() {
        Ok(actual) if actual == *expected => Ok(()),
        Ok(actual) => Err(RegistryError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.clone(),
            actual,
        }),
        Err(e) => Err(RegistryError::invalid_response(
            resp.url(),
            format!("Docker-Content-Digest: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_added_to_the_session_query() {
        let d = Digest::of(b"x");
        let u = with_digest(
            Url::parse("http://h/v2/a/blobs/uploads/uuid?_state=abc").unwrap(),
            &d,
        );
        assert_eq!(
            u.as_str(),
            format!(
                "http://h/v2/a/blobs/uploads/uuid?_state=abc&digest=sha256%3A{}",
                d.encoded()
            )
        );
    }
}
