//! Reading from a registry: [`RegistryClient::resolve`], [`RegistryClient::fetch_manifest`],
//! [`RegistryClient::fetch_blob`] and [`RegistryClient::blob_size`], and the helpers for
//! byte-range answers ([`is_partial`], [`parse_content_range`], [`check_range`]).

use std::ops::Range;

use bytes::Bytes;
use oci_spec::image::{Descriptor, MediaType};
use reqwest::{Method, Response};
use strata_formats::Digest;
use url::Url;

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::{RegistryError, redact};
use super::hosts::Capability;
use super::reference::Reference;
use super::response::{read_limited, status_error};
use crate::image::media;

/// The largest manifest or index fetched (containerd's limit too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The `Accept` header for manifests: every image index and manifest type Strata reads,
/// then anything (as containerd asks, so artifacts resolve too).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, */*";

/// The header registries put the content digest in.
const DIGEST_HEADER: &str = "docker-content-digest";

/// `base` (an API root ending in `/`) with `rel` appended to its path.
pub(crate) fn api_url(base: &Url, rel: &str) -> Url {
    let mut u = base.clone();
    u.set_path(&format!("{}{rel}", base.path()));
    u
}

impl RegistryClient {
    /// Resolves `r` to the descriptor of its manifest or index: `HEAD
    /// /v2/<repository>/manifests/<digest or tag>`, falling back to `GET` when the HEAD
    /// answer lacks the digest, size or a specific media type (or HEAD is refused). The
    /// media type comes from `Content-Type`, the digest from `Docker-Content-Digest` (or,
    /// after a GET, from the bytes), the size from `Content-Length`. When `r` has a digest
    /// the result has that digest or this fails with [`RegistryError::DigestMismatch`].
    /// A tag is resolved by hosts with the `resolve` capability, a digest by hosts with
    /// `pull`.
    pub async fn resolve(&self, r: &Reference) -> Result<Descriptor, RegistryError> {
        let object = r.object();
        let path = format!("{}/manifests/{object}", r.repository());
        let what = format!("manifest {object}");
        let scope = Scope::pull(r.repository());
        // Content pinned by digest is safe from any pull mirror; a tag needs a host
        // trusted to resolve (containerd's rule).
        let cap = if r.digest().is_some() {
            Capability::Pull
        } else {
            Capability::Resolve
        };
        let build = |m: Method| {
            let path = path.clone();
            move |http: &reqwest::Client, base: &Url| {
                http.request(m.clone(), api_url(base, &path))
                    .header(http::header::ACCEPT, MANIFEST_ACCEPT)
            }
        };
        let head = self
            .send(r, cap, scope.clone(), build(Method::HEAD))
            .await?;
        match head.status().as_u16() {
            200..=299 => {
                if let Some(desc) = descriptor_from_head(&head, r)? {
                    return Ok(desc);
                }
            }
            403 | 404 => return Err(status_error(head, &Method::HEAD, r, &what).await),
            // 405 and friends: some registries only answer GET.
            _ => {}
        }
        self.get_manifest_with(r, cap, scope, build(Method::GET))
            .await
            .map(|(desc, _)| desc)
    }

    /// Fetches the manifest or index `r` names with one `GET` (no `HEAD` first), verified
    /// against `Docker-Content-Digest` and `r`'s digest when given: its descriptor and
    /// bytes. One round trip fewer than [`Self::resolve`] + [`Self::fetch_manifest`],
    /// for callers that need the bytes anyway.
    ///
    /// # Errors
    ///
    /// As [`Self::resolve`].
    pub async fn get_manifest(&self, r: &Reference) -> Result<(Descriptor, Bytes), RegistryError> {
        let object = r.object();
        let path = format!("{}/manifests/{object}", r.repository());
        let scope = Scope::pull(r.repository());
        let cap = if r.digest().is_some() {
            Capability::Pull
        } else {
            Capability::Resolve
        };
        let build = move |http: &reqwest::Client, base: &Url| {
            http.request(Method::GET, api_url(base, &path))
                .header(http::header::ACCEPT, MANIFEST_ACCEPT)
        };
        self.get_manifest_with(r, cap, scope, build).await
    }

    async fn get_manifest_with(
        &self,
        r: &Reference,
        cap: Capability,
        scope: Scope,
        build: impl Fn(&reqwest::Client, &Url) -> reqwest::RequestBuilder,
    ) -> Result<(Descriptor, Bytes), RegistryError> {
        let what = format!("manifest {}", r.object());
        let get = self.send(r, cap, scope, build).await?;
        if !get.status().is_success() {
            return Err(status_error(get, &Method::GET, r, &what).await);
        }
        let url = get.url().clone();
        let header_digest = digest_header(&get)?;
        let content_type = content_type(&get);
        let body = read_limited(get, MAX_MANIFEST_SIZE as usize, &url).await?;
        let actual = Digest::of(&body);
        for expected in [header_digest.as_ref(), r.digest()].into_iter().flatten() {
            if *expected != actual {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} of {}", r.name()),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let media_type = match content_type.filter(|t| is_specific(t)) {
            Some(t) => t,
            None => sniff_media_type(&body).ok_or_else(|| {
                RegistryError::invalid_response(&url, "cannot tell the manifest's media type")
            })?,
        };
        Ok((descriptor(&media_type, body.len() as u64, &actual)?, body))
    }

    /// Fetches the manifest or index `desc` describes (by digest), at most
    /// [`MAX_MANIFEST_SIZE`] bytes, verified against the digest.
    pub async fn fetch_manifest(
        &self,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<Bytes, RegistryError> {
        let digest = descriptor_digest(desc)?;
        let what = format!("manifest {digest} of {}", r.name());
        if desc.size() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge {
                what,
                size: desc.size(),
                max: MAX_MANIFEST_SIZE,
            });
        }
        let path = format!("{}/manifests/{digest}", r.repository());
        let accept = format!("{}, {MANIFEST_ACCEPT}", desc.media_type());
        let resp = self
            .send(
                r,
                Capability::Pull,
                Scope::pull(r.repository()),
                |http, base| {
                    http.get(api_url(base, &path))
                        .header(http::header::ACCEPT, accept.as_str())
                },
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &Method::GET, r, &format!("manifest {digest}")).await);
        }
        let url = resp.url().clone();
        let body = read_limited(resp, MAX_MANIFEST_SIZE as usize, &url).await?;
        let actual = Digest::of(&body);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest,
                actual,
            });
        }
        Ok(body)
    }

    /// Starts a download of blob `digest`: `GET /v2/<repository>/blobs/<digest>`, with
    /// `Range: bytes=<start>-<end - 1>` when `range` is given, following redirects (to
    /// object storage) with the Range header kept. Returns the response to stream: 206
    /// for an honoured range, 200 for the whole blob (a server may ignore Range: see
    /// [`check_range`]). The bytes are not verified here; the caller hashes what it
    /// reads. 404 is [`RegistryError::NotFound`].
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Response, RegistryError> {
        if let Some(rg) = &range
            && rg.start >= rg.end
        {
            return Err(RegistryError::InvalidArgument {
                what: format!("byte range {}..{} of blob {digest}", rg.start, rg.end),
                reason: "the range is empty".into(),
            });
        }
        let resp = self
            .get_blob(
                r,
                digest,
                range.map(|rg| format!("bytes={}-{}", rg.start, rg.end - 1)),
            )
            .await?;
        if matches!(resp.status().as_u16(), 200 | 206) {
            Ok(resp)
        } else {
            Err(status_error(resp, &Method::GET, r, &format!("blob {digest}")).await)
        }
    }

    /// `GET` of blob `digest`, with `range` as its `Range` header when given.
    async fn get_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        range: Option<String>,
    ) -> Result<Response, RegistryError> {
        let path = format!("{}/blobs/{digest}", r.repository());
        self.send(
            r,
            Capability::Pull,
            Scope::pull(r.repository()),
            |http, base| {
                let req = http.get(api_url(base, &path));
                match &range {
                    Some(range) => req.header(http::header::RANGE, range.as_str()),
                    None => req,
                }
            },
        )
        .await
    }

    /// The last `len` bytes of blob `digest` (`Range: bytes=-len`, a suffix range: no need
    /// to know the blob's size), with where they start and the blob's size, from the
    /// answer's `Content-Range`. A lazy reader asks for an eStargz blob's footer and TOC
    /// this way before it has the image's manifest.
    ///
    /// # Errors
    ///
    /// [`RegistryError::RangeNotSupported`] when the server answers with the whole blob; an
    /// invalid response when the `Content-Range` is missing, does not end at the blob's end
    /// or holds more than `len` bytes, or the body does not match it.
    pub async fn fetch_blob_tail(
        &self,
        r: &Reference,
        digest: &Digest,
        len: u64,
    ) -> Result<(Bytes, u64, u64), RegistryError> {
        if len == 0 {
            return Err(RegistryError::InvalidArgument {
                what: format!("the tail of blob {digest}"),
                reason: "the length is 0".into(),
            });
        }
        let resp = self
            .get_blob(r, digest, Some(format!("bytes=-{len}")))
            .await?;
        match resp.status().as_u16() {
            206 => {}
            200 => {
                return Err(RegistryError::RangeNotSupported {
                    url: redact(resp.url()),
                });
            }
            _ => return Err(status_error(resp, &Method::GET, r, &format!("blob {digest}")).await),
        }
        let url = resp.url().clone();
        let header = resp
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cr = parse_content_range(&header)
            .filter(|cr| cr.total == Some(cr.end) && cr.end - cr.start <= len)
            .ok_or_else(|| {
                RegistryError::invalid_response(
                    &url,
                    format!("a suffix range of {len} bytes answered with Content-Range {header:?}"),
                )
            })?;
        let want = cr.end - cr.start;
        let bytes = read_limited(resp, usize::try_from(want).unwrap_or(usize::MAX), &url).await?;
        if bytes.len() as u64 != want {
            return Err(RegistryError::invalid_response(
                &url,
                format!("{} body bytes for Content-Range {header:?}", bytes.len()),
            ));
        }
        Ok((bytes, cr.start, cr.end))
    }

    /// The size of blob `digest` (`HEAD /v2/<repository>/blobs/<digest>`), or `None` when
    /// the registry does not have it.
    pub async fn blob_size(
        &self,
        r: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let path = format!("{}/blobs/{digest}", r.repository());
        let resp = self
            .send(
                r,
                Capability::Pull,
                Scope::pull(r.repository()),
                |http, base| http.head(api_url(base, &path)),
            )
            .await?;
        match resp.status().as_u16() {
            200..=299 => match header_length(&resp) {
                Some(n) => Ok(Some(n)),
                None => Err(RegistryError::invalid_response(
                    resp.url(),
                    "HEAD answer has no Content-Length",
                )),
            },
            404 => Ok(None),
            _ => Err(status_error(resp, &Method::HEAD, r, &format!("blob {digest}")).await),
        }
    }
}

/// The descriptor a HEAD answer gives, or `None` when it lacks something (then GET).
fn descriptor_from_head(
    resp: &Response,
    r: &Reference,
) -> Result<Option<Descriptor>, RegistryError> {
    let header = digest_header(resp)?;
    if let (Some(h), Some(want)) = (&header, r.digest())
        && h != want
    {
        return Err(RegistryError::DigestMismatch {
            what: format!("manifest {} of {}", r.object(), r.name()),
            expected: want.clone(),
            actual: h.clone(),
        });
    }
    let (Some(digest), Some(size), Some(media_type)) = (
        header.or_else(|| r.digest().cloned()),
        header_length(resp),
        content_type(resp).filter(|t| is_specific(t)),
    ) else {
        return Ok(None);
    };
    if size > MAX_MANIFEST_SIZE {
        return Err(RegistryError::TooLarge {
            what: format!("manifest {digest} of {}", r.name()),
            size,
            max: MAX_MANIFEST_SIZE,
        });
    }
    descriptor(&media_type, size, &digest).map(Some)
}

/// `Content-Length` as sent. (reqwest's `content_length()` is the body's size, which is
/// 0 for a HEAD answer.)
fn header_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn digest_header(resp: &Response) -> Result<Option<Digest>, RegistryError> {
    let Some(v) = resp.headers().get(DIGEST_HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        RegistryError::invalid_response(resp.url(), "Docker-Content-Digest is not text")
    })?;
    s.trim().parse().map(Some).map_err(|e| {
        RegistryError::invalid_response(resp.url(), format!("Docker-Content-Digest: {e}"))
    })
}

/// The media type without parameters (`; charset=utf-8`).
fn content_type(resp: &Response) -> Option<String> {
    let v = resp
        .headers()
        .get(http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let t = v.split(';').next().unwrap_or_default().trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Whether a Content-Type names a document type rather than generic JSON or text.
fn is_specific(t: &str) -> bool {
    !matches!(
        t,
        "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// A manifest's media type from its body: its `mediaType` field, else by shape.
pub(crate) fn sniff_media_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(default)]
        fs_layers: Option<serde_json::Value>,
    }
    let s: Shape = serde_json::from_slice(body).ok()?;
    if let Some(t) = s.media_type.filter(|t| !t.is_empty()) {
        return Some(t);
    }
    let t = if s.manifests.is_some() {
        media::OCI_INDEX
    } else if s.config.is_some() {
        media::OCI_MANIFEST
    } else if s.schema_version == Some(1) || s.fs_layers.is_some() {
        media::DOCKER_MANIFEST_SCHEMA1_UNSIGNED
    } else {
        return None;
    };
    Some(t.to_owned())
}

fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Result<Descriptor, RegistryError> {
    let oci: oci_spec::image::Digest =
        digest
            .to_string()
            .parse()
            .map_err(|e| RegistryError::InvalidArgument {
                what: format!("digest {digest}"),
                reason: format!("rejected by oci-spec: {e}"),
            })?;
    Ok(Descriptor::new(MediaType::from(media_type), size, oci))
}

/// A descriptor's digest as a Strata [`Digest`] (sha256 only).
pub(crate) fn descriptor_digest(desc: &Descriptor) -> Result<Digest, RegistryError> {
    desc.digest()
        .to_string()
        .parse()
        .map_err(
            |e: strata_formats::DigestError| RegistryError::InvalidArgument {
                what: format!("descriptor of {}", desc.media_type()),
                reason: e.to_string(),
            },
        )
}

/// A parsed `Content-Range: bytes <start>-<last>/<total or *>`, with `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The whole blob's size, when the server says.
    pub total: Option<u64>,
}

/// Parses a `Content-Range` value (`bytes 0-99/1000`, `bytes 0-99/*`); `None` when it is
/// not a satisfied byte range.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.trim().split_once('-')?;
    let start: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if last < start || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange {
        start,
        end: last + 1,
        total,
    })
}

/// Whether the answer is a partial one (206).
pub fn is_partial(resp: &Response) -> bool {
    resp.status() == reqwest::StatusCode::PARTIAL_CONTENT
}

/// Checks that `resp` answers the Range request for `range`: a 206 whose `Content-Range`
/// starts at `range.start` (and, ending early only at the blob's end, covers no more than
/// asked). A 200 is [`RegistryError::RangeNotSupported`].
pub fn check_range(resp: &Response, range: &Range<u64>) -> Result<ContentRange, RegistryError> {
    if resp.status() == reqwest::StatusCode::OK {
        return Err(RegistryError::RangeNotSupported {
            url: redact(resp.url()),
        });
    }
    let bad = |why: String| RegistryError::invalid_response(resp.url(), why);
    if !is_partial(resp) {
        return Err(bad(format!(
            "status {} for a Range request",
            resp.status().as_u16()
        )));
    }
    let header = resp
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let cr = parse_content_range(header)
        .ok_or_else(|| bad(format!("206 with invalid Content-Range {header:?}")))?;
    let short_at_end = cr.total.is_some_and(|t| cr.end == t);
    if cr.start != range.start || cr.end > range.end || (cr.end < range.end && !short_at_end) {
        return Err(bad(format!(
            "asked for bytes {}..{}, got {header:?}",
            range.start, range.end
        )));
    }
    Ok(cr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(ContentRange {
                start: 0,
                end: 100,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 5-5/*"),
            Some(ContentRange {
                start: 5,
                end: 6,
                total: None
            })
        );
        assert_eq!(
            parse_content_range(" bytes  10-19/20 "),
            Some(ContentRange {
                start: 10,
                end: 20,
                total: Some(20)
            })
        );
        for bad in [
            "",
            "bytes */1000",
            "bytes 9-3/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-x/5",
            "bytes 0-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn media_type_sniffing() {
        assert_eq!(
            sniff_media_type(br#"{"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(media::OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(media::OCI_MANIFEST)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#).as_deref(),
            Some(media::DOCKER_MANIFEST_SCHEMA1_UNSIGNED)
        );
        assert_eq!(sniff_media_type(br#"{"schemaVersion":2}"#), None);
        assert_eq!(sniff_media_type(b"not json"), None);
        assert!(is_specific(media::OCI_INDEX) && !is_specific("application/json"));
    }

    #[test]
    fn urls_append_to_the_api_root() {
        let base = Url::parse("https://h:5000/prefix/v2/").unwrap();
        assert_eq!(
            api_url(&base, "a/b/blobs/sha256:00").as_str(),
            "https://h:5000/prefix/v2/a/b/blobs/sha256:00"
        );
        let d = Digest::of(b"x");
        let desc = descriptor(media::OCI_MANIFEST, 7, &d).unwrap();
        assert_eq!(descriptor_digest(&desc).unwrap(), d);
        assert_eq!(desc.size(), 7);
    }
}
