//! [`ReferrersGateway`]: the OCI referrers API (distribution spec 1.1,
//! `GET /v2/<name>/referrers/<digest>[?artifactType=…]`) in front of a
//! [`RegistryServer`], whose distribution 2.8 lacks it — so that a client's
//! API path runs against the manifests the real registry stored.
//!
//! The listing is built from the registry's storage at each request: every
//! manifest revision of the repository whose `subject` is the digest, as an
//! OCI index of descriptors (media type, digest, size, `artifactType` — the
//! manifest's, else its config's media type — and annotations), filtered by
//! `artifactType` when asked (with `OCI-Filters-Applied`), as the spec says.
//! Everything else is forwarded untouched, manifest pushes included: the
//! registry does not answer them with `OCI-Subject`, so a pushing client
//! updates the fallback tag as well. With
//! [`ReferrersGateway::hide_fallback_tags`], the fallback tags
//! (`sha256-<hex>`) are not found through the gateway: a client then finds
//! referrers through the API or not at all.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::http::Head;
use super::proxy::{Handler, LocalResponse, Outcome, ProxyServer, Route, Shaping};
use super::server::RegistryServer;
use super::{Error, Result, url_of};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The referrers API in front of a registry that has none.
#[derive(Debug)]
pub struct ReferrersGateway {
    server: ProxyServer,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    storage: PathBuf,
    hide_fallback_tags: AtomicBool,
    /// Referrers requests answered.
    answered: AtomicU64,
}

struct Api {
    state: Arc<State>,
}

impl ReferrersGateway {
    /// Starts the gateway in front of `registry`.
    pub fn start(registry: &RegistryServer) -> Result<Self> {
        let state = Arc::new(State {
            storage: registry.storage_dir(),
            hide_fallback_tags: AtomicBool::new(false),
            answered: AtomicU64::new(0),
        });
        let handler = Arc::new(Api {
            state: Arc::clone(&state),
        });
        let server = ProxyServer::start("referrers", handler, Some(registry.addr()))
            .map_err(Error::io("starting the referrers gateway"))?;
        Ok(ReferrersGateway { server, state })
    }

    /// `127.0.0.1:<port>`, the registry host of a reference through the gateway.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url_of(self.server.addr())
    }

    /// Whether the fallback tags (`sha256-<hex>`) are hidden (404) from reads.
    pub fn hide_fallback_tags(&self, hide: bool) {
        self.state.hide_fallback_tags.store(hide, Ordering::SeqCst);
    }

    /// Referrers API requests answered so far.
    pub fn answered(&self) -> u64 {
        self.state.answered.load(Ordering::SeqCst)
    }
}

impl Handler for Api {
    type Note = ();

    fn route(&self, method: &str, head: &mut Head) -> (Route, ()) {
        let target = head
            .request_line()
            .map(|(_, t, _)| t.to_owned())
            .unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let read = method == "GET" || method == "HEAD";
        if read && let Some((name, digest)) = split_api_path(path, "/referrers/") {
            self.state.answered.fetch_add(1, Ordering::SeqCst);
            let artifact_type = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("artifactType="))
                .map(super::http::percent_decode);
            return (
                Route::Local(self.state.list(name, digest, artifact_type)),
                (),
            );
        }
        if read
            && self.state.hide_fallback_tags.load(Ordering::SeqCst)
            && let Some((_, reference)) = split_api_path(path, "/manifests/")
            && reference.starts_with("sha256-")
        {
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
            return (Route::Local(LocalResponse::json(404, body)), ());
        }
        (Route::Forward(Shaping::default()), ())
    }

    fn finished(&self, (): (), _: Outcome) {}
}

/// `/v2/<name><marker><rest>` → (`name`, `rest`).
fn split_api_path<'a>(path: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix("/v2/")?;
    let at = rest.rfind(marker)?;
    let (name, tail) = (&rest[..at], &rest[at + marker.len()..]);
    (!name.is_empty() && !tail.is_empty() && !tail.contains('/')).then_some((name, tail))
}

impl State {
    fn list(&self, name: &str, subject: &str, artifact_type: Option<String>) -> LocalResponse {
        let mut manifests = Vec::new();
        for (digest, bytes) in self.revisions(name) {
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            if m["subject"]["digest"].as_str() != Some(subject) {
                continue;
            }
            let kind = m["artifactType"]
                .as_str()
                .or_else(|| m["config"]["mediaType"].as_str())
                .unwrap_or_default()
                .to_owned();
            if artifact_type.as_ref().is_some_and(|t| *t != kind) {
                continue;
            }
            let mut d = serde_json::json!({
                "mediaType": m["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
                "digest": digest,
                "size": bytes.len(),
                "artifactType": kind,
            });
            if m["annotations"].is_object() {
                d["annotations"] = m["annotations"].clone();
            }
            manifests.push(d);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let mut response = LocalResponse::json(200, index.to_string());
        response.headers = vec![("Content-Type".into(), OCI_INDEX.into())];
        if artifact_type.is_some() {
            response = response.header("OCI-Filters-Applied", "artifactType");
        }
        response
    }

    /// Every manifest revision of repository `name` in the registry's storage:
    /// (`sha256:<hex>`, bytes).
    fn revisions(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let v2 = self.storage.join("docker/registry/v2");
        let dir = v2
            .join("repositories")
            .join(name)
            .join("_manifests/revisions/sha256");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let hex = entry.file_name().to_string_lossy().into_owned();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let data = v2
                .join("blobs/sha256")
                .join(&hex[..2])
                .join(&hex)
                .join("data");
            if let Ok(bytes) = std::fs::read(data) {
                found.push((format!("sha256:{hex}"), bytes));
            }
        }
        found.sort();
        found
    }
}
