//! [`TokenAuthGateway`]: the Docker/OCI Bearer token flow in front of a
//! registry that has no auth of its own, shaped like Docker Hub or a
//! distribution registry configured with `auth: token`.
//!
//! A request without a valid token gets `401` and
//! `WWW-Authenticate: Bearer realm="http://127.0.0.1:<port>/token",service="strata-test",scope="repository:<repo>:<actions>"`
//! (with `error="invalid_token"` or `error="insufficient_scope"` when a token
//! was sent but does not do). The token endpoint runs on its own listener,
//! as a real auth server does, so a client that assumes it on the registry
//! host fails. It serves `GET /token?service=…&scope=…` (scope repeatable)
//! and answers `{"token", "access_token", "expires_in", "issued_at"}`; POST
//! (the OAuth2 form flow) gets 405, which real clients treat as "fall back
//! to GET".
//!
//! Actions follow distribution's rules: GET/HEAD need `pull`,
//! POST/PUT/PATCH need `pull,push`, DELETE needs `delete`; `/v2/` and
//! `/v2/_catalog` need any valid token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore as _;

use super::http::{Head, percent_decode};
use super::proxy::{Handler, LocalResponse, Outcome, ProxyServer, Route, Shaping, lock};
use super::{Error, Result, url_of};

/// What the token endpoint grants a request without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnonymousAccess {
    /// Anonymous token requests get 401.
    Denied,
    /// Anonymous tokens carry only `pull` (Docker Hub's public images).
    #[default]
    Pull,
    /// Anonymous tokens carry every action requested.
    Full,
}

/// Configuration of a [`TokenAuthGateway`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Users the token endpoint accepts with Basic credentials; they get
    /// every action they ask for.
    pub users: BTreeMap<String, String>,
    /// What requests without credentials get.
    pub anonymous: AnonymousAccess,
    /// How long a token is valid.
    pub token_lifetime: Duration,
    /// The `service` of challenges and token requests.
    pub service: String,
}

impl Default for GatewayConfig {
    /// Anonymous pull, no users, five-minute tokens, service `strata-test`.
    fn default() -> Self {
        GatewayConfig {
            users: BTreeMap::new(),
            anonymous: AnonymousAccess::default(),
            token_lifetime: Duration::from_secs(300),
            service: "strata-test".to_owned(),
        }
    }
}

impl GatewayConfig {
    /// Adds a user.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.insert(name.to_owned(), password.to_owned());
        self
    }

    /// Sets what anonymous token requests get.
    pub fn anonymous(mut self, access: AnonymousAccess) -> Self {
        self.anonymous = access;
        self
    }

    /// Sets the token lifetime (e.g. 2 s to expire tokens mid-pull).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }
}

/// One request to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic-auth user, `None` when anonymous.
    pub user: Option<String>,
    /// The `scope` parameters as sent.
    pub scopes: Vec<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

/// A reverse proxy on 127.0.0.1 that demands Docker/OCI Bearer tokens.
///
/// Requests without a valid token get `401` with
/// `WWW-Authenticate: Bearer realm="<token_url>",service="strata-test",scope="repository:<repo>:<actions>"`
/// (plus `error="invalid_token"` for an unknown, expired or revoked token,
/// `error="insufficient_scope"` for one lacking the scope). GET/HEAD need
/// `pull`, POST/PUT/PATCH `pull,push`, DELETE `delete`; `/v2/` and
/// `/v2/_catalog` any valid token. The token endpoint
/// ([`token_url`](Self::token_url), its own listener) answers
/// `GET ?service=&scope=` (scope repeatable) with
/// `{"token","access_token","expires_in","issued_at"}`; POST gets 405.
/// Valid requests are forwarded with `Authorization` removed and nothing
/// else changed.
pub struct TokenAuthGateway {
    // Field order is drop order: stop taking requests before the token server.
    gateway: ProxyServer,
    token_server: ProxyServer,
    state: Arc<State>,
}

impl fmt::Debug for TokenAuthGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthGateway")
            .field("addr", &self.gateway.addr())
            .field("token_addr", &self.token_server.addr())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    config: Mutex<GatewayConfig>,
    realm: String,
    tokens: Mutex<HashMap<String, Grant>>,
    token_log: Mutex<Vec<TokenRequest>>,
    issued: AtomicU64,
    challenges: AtomicU64,
}

#[derive(Debug, Clone)]
struct Grant {
    /// Repository name → granted actions.
    access: BTreeMap<String, BTreeSet<String>>,
    expires: Instant,
}

impl TokenAuthGateway {
    /// Starts the gateway and its token endpoint in front of `upstream`
    /// (a registry without auth, e.g. [`RegistryServer::addr`](super::RegistryServer::addr)).
    pub fn start(upstream: SocketAddr, config: GatewayConfig) -> Result<Self> {
        // The realm must be known before the gateway answers its first request,
        // so the token server starts first and shares the state.
        let token_handler = Arc::new(TokenEndpoint {
            state: Mutex::new(None),
        });
        let token_server = ProxyServer::start("token", Arc::clone(&token_handler), None)
            .map_err(Error::io("starting the token endpoint"))?;
        let state = Arc::new(State {
            config: Mutex::new(config),
            realm: format!("{}/token", url_of(token_server.addr())),
            tokens: Mutex::new(HashMap::new()),
            token_log: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
            challenges: AtomicU64::new(0),
        });
        *lock(&token_handler.state) = Some(Arc::clone(&state));
        let gateway = ProxyServer::start(
            "gateway",
            Arc::new(Gate {
                state: Arc::clone(&state),
            }),
            Some(upstream),
        )
        .map_err(Error::io("starting the token-auth gateway"))?;
        Ok(TokenAuthGateway {
            gateway,
            token_server,
            state,
        })
    }

    /// The gateway's address (what a client pulls from).
    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr()
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn url(&self) -> String {
        url_of(self.addr())
    }

    /// `127.0.0.1:<port>` of the gateway, the registry host of a reference.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// The token endpoint's URL (the challenges' `realm`).
    pub fn token_url(&self) -> String {
        self.state.realm.clone()
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// 401 challenges the gateway sent so far (not counting the token
    /// endpoint's rejections, which [`token_requests`](Self::token_requests) lists).
    pub fn challenges_sent(&self) -> u64 {
        self.state.challenges.load(Ordering::SeqCst)
    }

    /// Every token request so far, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.token_log).clone()
    }

    /// Invalidates every issued token: the next request with one gets 401.
    pub fn revoke_all(&self) {
        lock(&self.state.tokens).clear();
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.state.config).token_lifetime = lifetime;
    }
}

/// The gateway's request policy.
#[derive(Debug)]
struct Gate {
    state: Arc<State>,
}

impl Handler for Gate {
    type Note = ();

    fn route(&self, method: &str, head: &mut Head) -> (Route, ()) {
        let token = head.remove("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        let target = head
            .request_line()
            .map(|(_, t, _)| t.to_owned())
            .unwrap_or_default();
        let needed = required_access(method, &target);
        let grant = token
            .as_ref()
            .and_then(|t| lock(&self.state.tokens).get(t).cloned());
        let error = match (&token, &grant) {
            (None, _) => None,
            (Some(_), None) => Some("invalid_token"),
            (Some(_), Some(grant)) if grant.expires <= Instant::now() => Some("invalid_token"),
            (Some(_), Some(grant)) => match &needed {
                Some((repo, actions)) => {
                    let have = grant.access.get(repo);
                    let ok = actions
                        .iter()
                        .all(|a| have.is_some_and(|h| h.contains(*a) || h.contains("*")));
                    if ok {
                        return (Route::Forward(Shaping::default()), ());
                    }
                    Some("insufficient_scope")
                }
                None => return (Route::Forward(Shaping::default()), ()),
            },
        };
        self.state.challenges.fetch_add(1, Ordering::SeqCst);
        let service = lock(&self.state.config).service.clone();
        let mut challenge = format!(
            "Bearer realm=\"{}\",service=\"{service}\"",
            self.state.realm
        );
        if let Some((repo, actions)) = &needed {
            challenge.push_str(&format!(
                ",scope=\"repository:{repo}:{}\"",
                actions.join(",")
            ));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        let response = LocalResponse::json(401, body)
            .header("WWW-Authenticate", challenge)
            .header("Docker-Distribution-API-Version", "registry/2.0");
        (Route::Local(response), ())
    }

    fn finished(&self, (): (), _: Outcome) {}
}

/// The repository and actions a request needs; `None` for `/v2/` and
/// `/v2/_catalog`, which only need a valid token.
fn required_access(method: &str, target: &str) -> Option<(String, Vec<&'static str>)> {
    let path = target.split('?').next().unwrap_or(target);
    let rest = path.strip_prefix("/v2/")?;
    let repo = ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker).map(|i| &rest[..i]))
        .max_by_key(|repo| repo.len())?;
    let actions = match method {
        "GET" | "HEAD" => vec!["pull"],
        "DELETE" => vec!["delete"],
        _ => vec!["pull", "push"],
    };
    Some((repo.to_owned(), actions))
}

/// The token endpoint's policy: answers everything locally.
#[derive(Debug)]
struct TokenEndpoint {
    state: Mutex<Option<Arc<State>>>,
}

impl Handler for TokenEndpoint {
    type Note = ();

    fn route(&self, method: &str, head: &mut Head) -> (Route, ()) {
        let Some(state) = lock(&self.state).clone() else {
            return (Route::Local(LocalResponse::json(503, "{}")), ());
        };
        (Route::Local(issue(&state, method, head)), ())
    }

    fn finished(&self, (): (), _: Outcome) {}
}

fn issue(state: &State, method: &str, head: &Head) -> LocalResponse {
    let target = head.request_line().map(|(_, t, _)| t).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return LocalResponse::json(404, r#"{"details":"not found"}"#);
    }
    if method != "GET" {
        return LocalResponse::json(405, r#"{"details":"use GET"}"#).header("Allow", "GET");
    }
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "scope")
        .map(|(_, value)| percent_decode(value))
        .collect();
    let config = lock(&state.config).clone();
    let user = head.header("authorization").and_then(parse_basic);
    let log = |user: Option<String>, granted| {
        lock(&state.token_log).push(TokenRequest {
            user,
            scopes: scopes.clone(),
            granted,
        });
    };
    let reject = |details: &str| {
        LocalResponse::json(401, format!("{{\"details\":\"{details}\"}}"))
            .header("WWW-Authenticate", "Basic realm=\"strata-test-token\"")
    };
    let full_access = match &user {
        Some((name, password)) => {
            if config.users.get(name) != Some(password) {
                log(Some(name.clone()), false);
                return reject("incorrect username or password");
            }
            true
        }
        None => match config.anonymous {
            AnonymousAccess::Denied => {
                log(None, false);
                return reject("authentication required");
            }
            AnonymousAccess::Pull => false,
            AnonymousAccess::Full => true,
        },
    };
    let mut access: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for scope in &scopes {
        // `repository:<name>:<actions>`; a name never contains ':'.
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let granted = access.entry(name.to_owned()).or_default();
        for action in actions.split(',') {
            if full_access || action == "pull" {
                granted.insert(action.to_owned());
            }
        }
    }
    let token = random_token();
    let issued_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let expires_in = config.token_lifetime.as_secs_f64().ceil().max(1.0) as u64;
    lock(&state.tokens).insert(
        token.clone(),
        Grant {
            access,
            expires: Instant::now() + config.token_lifetime,
        },
    );
    state.issued.fetch_add(1, Ordering::SeqCst);
    log(user.map(|(name, _)| name), true);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": issued_at,
    });
    LocalResponse::json(200, body.to_string())
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// An opaque 256-bit token, hex-encoded.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_access_follows_distribution() {
        assert_eq!(required_access("GET", "/v2/"), None);
        assert_eq!(required_access("GET", "/v2/_catalog?n=10"), None);
        assert_eq!(
            required_access("HEAD", "/v2/a/b/blobs/sha256:00"),
            Some(("a/b".into(), vec!["pull"]))
        );
        assert_eq!(
            required_access("POST", "/v2/lib/x/blobs/uploads/?mount=sha256:1&from=y"),
            Some(("lib/x".into(), vec!["pull", "push"]))
        );
        assert_eq!(
            required_access("DELETE", "/v2/x/manifests/sha256:1"),
            Some(("x".into(), vec!["delete"]))
        );
        // A repository may itself be called `…/blobs/…`; the last marker wins.
        assert_eq!(
            required_access("GET", "/v2/a/blobs/b/manifests/latest"),
            Some(("a/blobs/b".into(), vec!["pull"]))
        );
    }

    #[test]
    fn basic_credentials_parse() {
        let header = super::super::basic_auth("alice", "pa:ss");
        assert_eq!(parse_basic(&header), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer x"), None);
    }
}
