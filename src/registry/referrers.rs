//! OCI referrers (distribution spec 1.1): the manifests whose `subject` is a given
//! manifest, listed with [`RegistryClient::referrers`] and added with
//! [`RegistryClient::push_referrer`].
//!
//! A registry with the referrers API answers `GET /v2/<name>/referrers/<digest>` with an
//! OCI index and keeps it up to date itself when a manifest with a `subject` is pushed
//! (it says so with an `OCI-Subject` header). One without it answers 404; then the
//! referrers live in the *tag schema* fallback: an OCI index tagged `<alg>-<hex>` of the
//! subject's digest, which the pusher fetches, extends and pushes back. That update is a
//! read-modify-write without locking: two concurrent pushers can lose one entry (as with
//! every client of the fallback); the referrer manifest itself is never lost.

use bytes::Bytes;
use reqwest::Method;
use strata_formats::Digest;
use strata_formats::artifact::Descriptor;
use strata_formats::artifact::manifest::{OCI_INDEX, OCI_MANIFEST};

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::fetch::{MAX_MANIFEST_SIZE, api_url};
use super::hosts::Capability;
use super::reference::Reference;
use super::response::{read_limited, status_error};

/// Where a list of referrers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    /// The registry's referrers API.
    Api,
    /// The tag-schema fallback (`sha256-<hex>`), the registry lacking the API.
    FallbackTag,
}

/// What [`RegistryClient::push_referrer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerPush {
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// Whether the registry processed the `subject` itself (`OCI-Subject`); if not, the
    /// fallback tag's index was updated.
    pub subject_processed: bool,
}

/// The tag-schema fallback tag of `subject`: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.encoded())
}

#[derive(serde::Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl RegistryClient {
    /// The referrers of manifest `subject` in `r`'s repository, those of `artifact_type`
    /// only when given (filtered here too: a registry may ignore the filter). Through the
    /// referrers API, else (404 or 405) the fallback tag; no referrers is an empty list.
    pub async fn referrers(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<(Vec<Descriptor>, ReferrersSource), RegistryError> {
        let path = format!("{}/referrers/{subject}", r.repository());
        let what = format!("referrers of {subject}");
        let api = async {
            let resp = self
                .send(
                    r,
                    Capability::Pull,
                    Scope::pull(r.repository()),
                    |http, base| {
                        let mut url = api_url(base, &path);
                        if let Some(t) = artifact_type {
                            url.query_pairs_mut().append_pair("artifactType", t);
                        }
                        http.get(url).header(http::header::ACCEPT, OCI_INDEX)
                    },
                )
                .await?;
            match resp.status().as_u16() {
                200 => {
                    let url = resp.url().clone();
                    let body = read_limited(resp, MAX_MANIFEST_SIZE as usize, &url).await?;
                    let index: Index = serde_json::from_slice(&body).map_err(|e| {
                        RegistryError::invalid_response(&url, format!("referrers index: {e}"))
                    })?;
                    Ok(Some(index.manifests))
                }
                // 404 is the spec's "no referrers API"; some registries say 405.
                404 | 405 => Ok(None),
                _ => Err(status_error(resp, &Method::GET, r, &what).await),
            }
        };
        // Asked at once: a registry without the API (distribution 2.x) costs one round
        // trip, not two; one with it, a small request whose answer is dropped.
        let (api, fallback) = tokio::join!(api, self.fallback_index(r, subject));
        let (manifests, source) = match api? {
            Some(manifests) => (manifests, ReferrersSource::Api),
            None => (
                fallback?.map(|(_, m)| m).unwrap_or_default(),
                ReferrersSource::FallbackTag,
            ),
        };
        let manifests = manifests
            .into_iter()
            .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
            .collect();
        Ok((manifests, source))
    }

    /// The fallback tag's index of `subject`: its raw JSON and parsed entries, `None`
    /// when the tag does not exist.
    async fn fallback_index(
        &self,
        r: &Reference,
        subject: &Digest,
    ) -> Result<Option<(serde_json::Value, Vec<Descriptor>)>, RegistryError> {
        let tagged = r.with_tag(&fallback_tag(subject))?;
        let (desc, body) = match self.get_manifest(&tagged).await {
            Ok(found) => found,
            Err(e) if e.kind() == strata_formats::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |reason: String| RegistryError::InvalidArgument {
            what: format!("referrers tag {tagged}"),
            reason,
        };
        if desc.media_type().as_ref() != OCI_INDEX {
            return Err(bad(format!(
                "is a {}, not an OCI index",
                desc.media_type().as_ref()
            )));
        }
        let raw: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let index: Index = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        Ok(Some((raw, index.manifests)))
    }

    /// Pushes referrer `manifest` (an OCI manifest whose `subject` is `subject`, its
    /// blobs already pushed) by digest to `r`'s repository. When the registry does not
    /// process the subject, adds the referrer (with `artifact_type` and `annotations`)
    /// to the fallback tag's index, unless it is there already.
    pub async fn push_referrer(
        &self,
        r: &Reference,
        manifest: Bytes,
        subject: &Digest,
        artifact_type: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<ReferrerPush, RegistryError> {
        let digest = Digest::of(&manifest);
        let size = manifest.len() as u64;
        // By digest only: a reference's tag would take the push (and move the tag).
        let at =
            Reference::new(r.registry(), r.repository(), None, None)?.with_digest(digest.clone());
        let (pushed, subject_header) = self.put_manifest(&at, OCI_MANIFEST, manifest).await?;
        if subject_header.is_some() {
            return Ok(ReferrerPush {
                digest: pushed,
                subject_processed: true,
            });
        }
        let (mut raw, existing) = match self.fallback_index(r, subject).await? {
            Some(found) => found,
            None => (
                serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [],
                }),
                Vec::new(),
            ),
        };
        if !existing.iter().any(|d| d.digest == digest) {
            let entry = Descriptor {
                media_type: OCI_MANIFEST.to_owned(),
                digest: digest.clone(),
                size,
                artifact_type: Some(artifact_type.to_owned()),
                annotations: annotations.clone(),
            };
            let entry = serde_json::to_value(&entry).expect("invariant: a descriptor serialises");
            match raw.get_mut("manifests").and_then(|m| m.as_array_mut()) {
                Some(list) => list.push(entry),
                None => {
                    raw["manifests"] = serde_json::Value::Array(vec![entry]);
                }
            }
            let bytes = serde_json::to_vec(&raw).expect("invariant: JSON serialises");
            let tagged = r.with_tag(&fallback_tag(subject))?;
            self.push_manifest(&tagged, OCI_INDEX, Bytes::from(bytes))
                .await?;
        }
        Ok(ReferrerPush {
            digest: pushed,
            subject_processed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_tag_is_algorithm_dash_hex() {
        let d = Digest::of(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.encoded()));
    }
}
