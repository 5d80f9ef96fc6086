//! Registry authentication: `WWW-Authenticate` challenges, the docker token flow
//! (Bearer), Basic, and the per-client cache of tokens and challenges.
//!
//! The flow, as containerd's docker authorizer runs it:
//! 1. A request to a host whose challenge is not known yet goes out without credentials.
//! 2. A 401 carries `WWW-Authenticate` challenges; the host's preferred one (Bearer over
//!    Basic) is remembered, so later requests to the host authenticate up front.
//! 3. Bearer: a token for the request's scope set (plus the challenge's own `scope`) is
//!    fetched from the realm: `GET realm?service=…&scope=…` with Basic credentials when the
//!    host has a username and password, anonymously without; with an identity token,
//!    `POST realm` with the OAuth2 form `grant_type=refresh_token` (falling back to the GET
//!    when the realm answers 400/401/404/405, as some registries do). The answer's `token`
//!    or `access_token` is cached per (host, scope set) until `expires_in` (default 60 s,
//!    counted from `issued_at` when that is plausible) minus a safety margin.
//! 4. Basic: the credentials go on the request itself.
//! 5. The request is retried once. A 401 on a request that carried a cached token drops
//!    that token first, so a token that expired or was revoked mid-pull is replaced
//!    without failing the pull; a second 401 is [`RegistryError::Unauthorized`].
//!
//! Concurrent requests needing the same token wait for one fetch (the cache entry is
//! locked while it is filled), so a burst after a cold start fetches one token.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderValue;
use serde::Deserialize;
use url::Url;

pub use super::challenge::{Challenge, parse_challenges};
use super::credentials::{Credential, DockerConfig};
use super::error::{RegistryError, redact};

/// The lifetime of a token whose answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The largest token answer read.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// The OAuth2 `client_id` sent with refresh-token grants.
const CLIENT_ID: &str = "strata";

/// A set of token scopes: `repository:<name>:pull`, `repository:<name>:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// No scope (e.g. for `GET /v2/`).
    pub fn none() -> Self {
        Self::default()
    }

    /// `repository:<repository>:pull`.
    pub fn pull(repository: &str) -> Self {
        Self(BTreeSet::from([format!("repository:{repository}:pull")]))
    }

    /// `repository:<repository>:pull,push`.
    pub fn push(repository: &str) -> Self {
        Self(BTreeSet::from([format!(
            "repository:{repository}:pull,push"
        )]))
    }

    /// This set plus `other`'s scopes.
    pub fn and(mut self, other: &Scope) -> Self {
        self.0.extend(other.0.iter().cloned());
        self
    }

    /// This set plus one scope string as a token server writes it (space-separated
    /// scopes are split).
    pub fn with_raw(mut self, scope: &str) -> Self {
        self.0.extend(
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        self
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    /// Space-separated, as the OAuth2 form's `scope` field wants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.iter().collect();
        f.write_str(&v.join(" "))
    }
}

/// What was put on a request, so a 401 can drop exactly the token it rejected.
#[derive(Debug, Clone)]
pub(crate) struct SentAuth {
    pub(crate) header: HeaderValue,
    token_key: Option<TokenKey>,
}

type TokenKey = (String, Scope);

/// A cached token and when to stop using it.
#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// Tokens by (host, scope set). Each entry has its own async lock, held while the token
/// is fetched, so concurrent requests wait for one fetch.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().clone()
    }

    /// The time to stop using a token received at `now` that lives `lifetime`: a margin
    /// before it expires, so it is not sent in its last seconds.
    fn refresh_at(now: Instant, lifetime: Duration) -> Instant {
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        now + lifetime.saturating_sub(margin)
    }

    /// Drops `token` for `key` if it is still the cached one (a concurrent request may
    /// have replaced it already).
    async fn invalidate(&self, key: &TokenKey, token: &str) {
        let slot = self.slot(key);
        let mut g = slot.lock().await;
        if g.as_ref().is_some_and(|t| t.token == token) {
            *g = None;
        }
    }
}

/// A token endpoint's answer.
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    issued_at: Option<String>,
}

impl TokenAnswer {
    /// The token and how long it stays valid from `now_wall`.
    fn into_token(self, now_wall: time::OffsetDateTime) -> Option<(String, Duration)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = match self.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_TOKEN_LIFETIME,
        };
        // Subtract the token's age when `issued_at` is believable: in the past and younger
        // than its lifetime. Anything else is clock skew, and the full lifetime is used.
        let age = self
            .issued_at
            .as_deref()
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|issued| now_wall - issued)
            .filter(|age| age.is_positive() && *age < lifetime)
            .and_then(|age| Duration::try_from(age).ok())
            .unwrap_or_default();
        Some((token, lifetime - age))
    }
}

/// Per-host authentication state.
#[derive(Debug, Default)]
struct HostAuth {
    challenge: Mutex<Option<Challenge>>,
    credential: tokio::sync::OnceCell<Option<Credential>>,
}

/// The client's authentication state: credentials, known challenges and tokens.
#[derive(Debug)]
pub(crate) struct Authorizer {
    docker: DockerConfig,
    hosts: Mutex<HashMap<String, Arc<HostAuth>>>,
    tokens: TokenCache,
}

impl Authorizer {
    pub(crate) fn new(docker: DockerConfig) -> Self {
        Self {
            docker,
            hosts: Mutex::default(),
            tokens: TokenCache::default(),
        }
    }

    fn host(&self, host: &str) -> Arc<HostAuth> {
        let mut map = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host.to_owned()).or_default().clone()
    }

    /// The host's credential (looked up once per client; helpers run off the runtime).
    pub(crate) async fn credential(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let state = self.host(host);
        let docker = self.docker.clone();
        let owned = host.to_owned();
        state
            .credential
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || docker.credentials(&owned))
                    .await
                    .map_err(|e| RegistryError::CredentialHelper {
                        helper: "lookup".into(),
                        host: host.to_owned(),
                        reason: e.to_string(),
                    })?
            })
            .await
            .cloned()
    }

    /// The `Authorization` for a request to `host` needing `scope`, when the host's
    /// challenge is known (fetching a token if none is cached).
    pub(crate) async fn authorization(
        &self,
        http: &reqwest::Client,
        host: &str,
        scope: &Scope,
    ) -> Result<Option<SentAuth>, RegistryError> {
        let challenge = self
            .host(host)
            .challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        match challenge.scheme.as_str() {
            "basic" => Ok(match self.credential(host).await? {
                Some(Credential::Basic { username, password }) => Some(SentAuth {
                    header: basic_header(&username, &password)?,
                    token_key: None,
                }),
                _ => None,
            }),
            "bearer" => {
                let key = (host.to_owned(), scope.clone());
                let slot = self.tokens.slot(&key);
                let mut cached = slot.lock().await;
                let now = Instant::now();
                let token = match cached.as_ref().filter(|t| t.refresh_at > now) {
                    Some(t) => t.token.clone(),
                    None => {
                        let cred = self.credential(host).await?;
                        let (token, lifetime) =
                            fetch_token(http, host, &challenge, scope, cred.as_ref()).await?;
                        *cached = Some(CachedToken {
                            token: token.clone(),
                            refresh_at: TokenCache::refresh_at(now, lifetime),
                        });
                        token
                    }
                };
                let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    RegistryError::InvalidResponse {
                        url: challenge.param("realm").unwrap_or_default().to_owned(),
                        reason: "token is not a valid header value".into(),
                    }
                })?;
                Ok(Some(SentAuth {
                    header,
                    token_key: Some(key),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Handles a 401 from `host`: drops the token it rejected, remembers the host's
    /// challenge and returns the scope the challenge asks for (to add to the request's),
    /// or `None` when no supported challenge was offered.
    pub(crate) async fn on_unauthorized(
        &self,
        host: &str,
        headers: &http::HeaderMap,
        sent: Option<&SentAuth>,
    ) -> Option<Scope> {
        if let Some(SentAuth {
            header,
            token_key: Some(key),
        }) = sent
        {
            let token = header
                .to_str()
                .unwrap_or_default()
                .trim_start_matches("Bearer ");
            self.tokens.invalidate(key, token).await;
        }
        let challenges: Vec<Challenge> = headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))?
            .clone();
        let scope = chosen
            .param("scope")
            .map(|s| Scope::none().with_raw(s))
            .unwrap_or_default();
        let basic = chosen.scheme == "basic";
        *self
            .host(host)
            .challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(chosen);
        // Basic without a username and password: retrying would send the same request.
        if basic
            && !matches!(
                self.credential(host).await,
                Ok(Some(Credential::Basic { .. }))
            )
        {
            return None;
        }
        Some(scope)
    }
}

fn basic_header(username: &str, password: &str) -> Result<HeaderValue, RegistryError> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| {
        RegistryError::InvalidArgument {
            what: format!("credentials of {username:?}"),
            reason: e.to_string(),
        }
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Fetches a token from the challenge's realm. Returns it with its lifetime.
async fn fetch_token(
    http: &reqwest::Client,
    host: &str,
    challenge: &Challenge,
    scope: &Scope,
    cred: Option<&Credential>,
) -> Result<(String, Duration), RegistryError> {
    let realm = challenge.param("realm").unwrap_or_default();
    let realm = Url::parse(realm).map_err(|e| RegistryError::InvalidResponse {
        url: host.to_owned(),
        reason: format!("bearer realm {realm:?} is not a URL: {e}"),
    })?;
    if !matches!(realm.scheme(), "http" | "https") {
        return Err(RegistryError::invalid_response(
            &realm,
            "bearer realm must be http or https",
        ));
    }
    let service = challenge.param("service");
    let unauthorized = |detail: String| RegistryError::Unauthorized {
        host: host.to_owned(),
        repository: scope_repositories(scope),
        credentials: cred.is_some(),
        detail,
    };

    if let Some(Credential::IdentityToken(refresh)) = cred {
        let form = oauth_form(refresh, service, scope);
        let resp = http
            .post(realm.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| RegistryError::transport(&reqwest::Method::POST, &realm, e))?;
        match resp.status().as_u16() {
            200..=299 => return token_from(resp, &realm).await,
            // Registries without the OAuth2 POST endpoint; try the GET flow.
            400 | 401 | 404 | 405 => {}
            code => return Err(status_of("POST", &realm, code, resp).await),
        }
    }

    let mut url = realm.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scope.iter() {
            q.append_pair("scope", s);
        }
    }
    let mut req = http.get(url.clone());
    if let Some(Credential::Basic { username, password }) = cred {
        req = req.header(
            http::header::AUTHORIZATION,
            basic_header(username, password)?,
        );
    }
    let resp = req
        .send()
        .await
        .map_err(|e| RegistryError::transport(&reqwest::Method::GET, &url, e))?;
    match resp.status().as_u16() {
        200..=299 => token_from(resp, &realm).await,
        code @ (401 | 403) => Err(unauthorized(format!(
            "token endpoint {} answered {code}{}",
            redact(&realm),
            body_hint(resp).await
        ))),
        code => Err(status_of("GET", &url, code, resp).await),
    }
}

/// The OAuth2 refresh-token grant form. (A function of its own because the serializer is
/// not `Send` and must not live across an `.await`.)
fn oauth_form(refresh: &str, service: Option<&str>, scope: &Scope) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh)
        .append_pair("client_id", CLIENT_ID);
    if let Some(s) = service {
        form.append_pair("service", s);
    }
    if !scope.is_empty() {
        form.append_pair("scope", &scope.to_string());
    }
    form.finish()
}

/// The repositories a scope set names, for messages.
fn scope_repositories(scope: &Scope) -> String {
    let repos: Vec<&str> = scope
        .iter()
        .filter_map(|s| {
            s.strip_prefix("repository:")?
                .rsplit_once(':')
                .map(|(r, _)| r)
        })
        .collect();
    repos.join(",")
}

async fn token_from(
    resp: reqwest::Response,
    realm: &Url,
) -> Result<(String, Duration), RegistryError> {
    let body = super::response::read_limited(resp, MAX_TOKEN_RESPONSE, realm).await?;
    parse_token_answer(&body, time::OffsetDateTime::now_utc())
        .map_err(|reason| RegistryError::invalid_response(realm, reason))
}

/// A token endpoint's body: the token and how long it stays valid from `now_wall`.
pub(crate) fn parse_token_answer(
    body: &[u8],
    now_wall: time::OffsetDateTime,
) -> Result<(String, Duration), String> {
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    answer
        .into_token(now_wall)
        .ok_or_else(|| "token answer has neither token nor access_token".to_string())
}

async fn body_hint(resp: reqwest::Response) -> String {
    let s = super::response::error_detail(resp).await;
    if s.is_empty() { s } else { format!(": {s}") }
}

async fn status_of(method: &str, url: &Url, code: u16, resp: reqwest::Response) -> RegistryError {
    RegistryError::Status {
        method: method.into(),
        url: redact(url),
        code,
        body: super::response::error_detail(resp).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn oauth_refresh_form() {
        let form = oauth_form(
            "r&t",
            Some("svc"),
            &Scope::pull("a/b").and(&Scope::push("c")),
        );
        assert_eq!(
            form,
            "grant_type=refresh_token&refresh_token=r%26t&client_id=strata&service=svc\
             &scope=repository%3Aa%2Fb%3Apull+repository%3Ac%3Apull%2Cpush"
        );
    }

    #[test]
    fn scopes() {
        let s = Scope::pull("a/b").and(&Scope::push("c"));
        assert_eq!(s.to_string(), "repository:a/b:pull repository:c:pull,push");
        assert_eq!(scope_repositories(&s), "a/b,c");
        let s = Scope::none().with_raw("repository:x:pull  repository:y:push");
        assert_eq!(s.iter().count(), 2);
        assert!(Scope::none().is_empty());
    }

    #[test]
    fn token_lifetimes() {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let answer = |json: String| {
            serde_json::from_str::<TokenAnswer>(&json)
                .unwrap()
                .into_token(now)
        };
        assert_eq!(
            answer(r#"{"token":"t"}"#.into()),
            Some(("t".into(), Duration::from_secs(60)))
        );
        assert_eq!(
            answer(r#"{"access_token":"a","expires_in":300}"#.into()),
            Some(("a".into(), Duration::from_secs(300)))
        );
        assert_eq!(
            answer(r#"{"token":"","access_token":"a"}"#.into())
                .unwrap()
                .0,
            "a"
        );
        assert_eq!(answer(r#"{"expires_in":300}"#.into()), None);
        // Issued 100 s ago: 200 s left.
        let issued = fmt(now - time::Duration::seconds(100));
        let a = answer(format!(
            r#"{{"token":"t","expires_in":300,"issued_at":"{issued}"}}"#
        ))
        .unwrap();
        assert_eq!(a.1, Duration::from_secs(200));
        // Issued in the future or longer ago than its lifetime: clock skew, full lifetime.
        for skewed in [
            now + time::Duration::seconds(50),
            now - time::Duration::seconds(1000),
        ] {
            let a = answer(format!(
                r#"{{"token":"t","expires_in":300,"issued_at":"{}"}}"#,
                fmt(skewed)
            ))
            .unwrap();
            assert_eq!(a.1, Duration::from_secs(300));
        }
    }

    #[tokio::test]
    async fn token_cache_expiry_and_invalidation() {
        let t0 = Instant::now();
        // A 60 s token is used for 54 s; a 300 s token for 290 s; a 5 s one for 4.5 s.
        assert_eq!(
            TokenCache::refresh_at(t0, Duration::from_secs(60)),
            t0 + Duration::from_secs(54)
        );
        assert_eq!(
            TokenCache::refresh_at(t0, Duration::from_secs(300)),
            t0 + Duration::from_secs(290)
        );
        assert_eq!(
            TokenCache::refresh_at(t0, Duration::from_secs(5)),
            t0 + Duration::from_millis(4500)
        );

        let cache = TokenCache::default();
        let key = ("h".to_owned(), Scope::pull("r"));
        *cache.slot(&key).lock().await = Some(CachedToken {
            token: "new".into(),
            refresh_at: t0,
        });
        // Dropping a token that was already replaced leaves the replacement alone.
        cache.invalidate(&key, "old").await;
        assert!(cache.slot(&key).lock().await.is_some());
        cache.invalidate(&key, "new").await;
        assert!(cache.slot(&key).lock().await.is_none());
    }

    #[tokio::test]
    async fn challenge_is_remembered_and_rejected_token_dropped() {
        let auth = Authorizer::new(DockerConfig::default());
        super::super::client::ensure_crypto_provider();
        let http = reqwest::Client::new();
        assert!(
            auth.authorization(&http, "h", &Scope::pull("r"))
                .await
                .unwrap()
                .is_none(),
            "unknown host: anonymous"
        );
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"x\""),
        );
        // Basic challenge, but no credentials: nothing to retry with, nothing to send.
        assert_eq!(auth.on_unauthorized("h", &headers, None).await, None);
        assert!(
            auth.authorization(&http, "h", &Scope::pull("r"))
                .await
                .unwrap()
                .is_none()
        );

        let key = ("b".to_owned(), Scope::pull("r"));
        *auth.tokens.slot(&key).lock().await = Some(CachedToken {
            token: "tok".into(),
            refresh_at: Instant::now() + Duration::from_secs(60),
        });
        *auth.host("b").challenge.lock().unwrap() = Some(Challenge {
            scheme: "bearer".into(),
            params: BTreeMap::from([("realm".to_owned(), "http://127.0.0.1:9/token".to_owned())]),
        });
        let sent = auth
            .authorization(&http, "b", &Scope::pull("r"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.header, "Bearer tok");
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"http://127.0.0.1:9/token\",scope=\"repository:r:pull\"",
            ),
        );
        assert_eq!(
            auth.on_unauthorized("b", &headers, Some(&sent)).await,
            Some(Scope::pull("r"))
        );
        assert!(
            auth.tokens.slot(&key).lock().await.is_none(),
            "the rejected token is gone"
        );
        headers.clear();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Negotiate"),
        );
        assert_eq!(auth.on_unauthorized("b", &headers, None).await, None);
    }
}
