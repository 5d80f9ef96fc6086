//! [`FaultProxy`]: an HTTP/1.1 reverse proxy that breaks responses on
//! purpose, by rule, and logs every request — the tool for a registry
//! client's retry, resume and verification tests.
//!
//! Rules ([`FaultRule`]) match on the request target, method and whether it
//! is a blob read, and fire always, for the first N matching requests, or
//! with a seeded probability. Every rule that matches and fires contributes
//! its [`Fault`]; a [`Fault::Status`] answers at once without contacting
//! upstream, the others combine (e.g. `IgnoreRange` plus `FlipBytes`).
//! Body offsets are payload offsets (after de-chunking), counted from the
//! first byte of this response's body — for a range response, from the
//! first byte of the range.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use regex::Regex;

use super::http::Head;
use super::proxy::{Cut, Handler, LocalResponse, Outcome, ProxyServer, Route, Shaping, lock};
use super::{Error, Result, url_of};

/// One way to break a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (e.g. 500, 502, 503, 429) and a small JSON
    /// error body, without contacting upstream; the connection stays usable.
    Status(u16),
    /// Send the response head and the first `after_bytes` body bytes, then
    /// reset the connection (SO_LINGER 0, so the client sees ECONNRESET).
    ResetMidBody {
        /// Body bytes delivered before the reset.
        after_bytes: u64,
    },
    /// Send the head (with its full `Content-Length`) and the first
    /// `after_bytes` body bytes, then close cleanly: the client sees EOF
    /// early. A chunked response simply stops without its last chunk.
    TruncateBody {
        /// Body bytes delivered before the close.
        after_bytes: u64,
    },
    /// XOR `count` body bytes from `offset_in_body` with 0xff; lengths and
    /// headers stay as they are, so only a digest check can notice.
    FlipBytes {
        /// First corrupted payload byte.
        offset_in_body: u64,
        /// How many bytes to corrupt.
        count: u64,
    },
    /// Deliver the response body at this rate.
    Slow {
        /// Pace of the body.
        bytes_per_sec: u64,
    },
    /// Wait this long before forwarding the request.
    Delay {
        /// The delay in milliseconds.
        ms: u64,
    },
    /// Remove `Range` (and `If-Range`) from the request, so upstream
    /// answers 200 with the whole body.
    IgnoreRange,
}

/// When a matching rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// On every matching request.
    Always,
    /// On the first `n` matching requests, then never.
    First(u64),
    /// On each matching request with probability `p`, drawn from a
    /// generator seeded with `seed` (the same request order gives the same
    /// faults).
    Probability {
        /// Chance in `[0, 1]`.
        p: f64,
        /// Seed of the rule's generator.
        seed: u64,
    },
}

/// A fault plus which requests it applies to.
///
/// ```
/// use strata_testdata::registry::{Fault, FaultRule};
/// let rule = FaultRule::new(Fault::ResetMidBody { after_bytes: 4096 })
///     .blobs()
///     .method("GET")
///     .first(1);
/// ```
#[derive(Clone)]
pub struct FaultRule {
    fault: Fault,
    path: Option<Regex>,
    method: Option<String>,
    blobs_only: bool,
    trigger: Trigger,
}

impl fmt::Debug for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultRule")
            .field("fault", &self.fault)
            .field("path", &self.path.as_ref().map(Regex::as_str))
            .field("method", &self.method)
            .field("blobs_only", &self.blobs_only)
            .field("trigger", &self.trigger)
            .finish()
    }
}

impl FaultRule {
    /// `fault` on every request.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            path: None,
            method: None,
            blobs_only: false,
            trigger: Trigger::Always,
        }
    }

    /// Only requests whose target (path and query) contains `substring`,
    /// e.g. a blob digest.
    pub fn path(self, substring: &str) -> Self {
        let regex =
            Regex::new(&regex::escape(substring)).expect("an escaped literal is a valid regex");
        self.path_regex(regex)
    }

    /// Only requests whose target (path and query) matches `regex`.
    pub fn path_regex(mut self, regex: Regex) -> Self {
        self.path = Some(regex);
        self
    }

    /// Only requests with this method (e.g. `GET`).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only blob reads: GET or HEAD of `/v2/<repo>/blobs/<digest>` (not uploads).
    pub fn blobs(mut self) -> Self {
        self.blobs_only = true;
        self
    }

    /// Fire on the first `n` matching requests only.
    pub fn first(mut self, n: u64) -> Self {
        self.trigger = Trigger::First(n);
        self
    }

    /// Fire with probability `p`, reproducibly from `seed`.
    pub fn probability(mut self, p: f64, seed: u64) -> Self {
        self.trigger = Trigger::Probability { p, seed };
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|re| re.is_match(target))
            && (!self.blobs_only || is_blob_read(method, target))
    }
}

fn is_blob_read(method: &str, target: &str) -> bool {
    let path = target.split('?').next().unwrap_or(target);
    matches!(method, "GET" | "HEAD")
        && path
            .rsplit_once("/blobs/")
            .is_some_and(|(repo, digest)| repo.starts_with("/v2/") && digest.contains(':'))
}

/// One request that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Request method.
    pub method: String,
    /// Request target: path and query as sent.
    pub path: String,
    /// The request's `Range` header as the client sent it.
    pub range: Option<String>,
    /// Status sent to the client (0 if the exchange failed before one was).
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes_sent: u64,
    /// Whether the whole response reached the client.
    pub complete: bool,
    /// The faults applied, in rule order.
    pub faults: Vec<Fault>,
}

/// A fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1.
///
/// Forwards to one upstream (a [`RegistryServer`](super::RegistryServer), a
/// [`TokenAuthGateway`](super::TokenAuthGateway), anything HTTP/1.1) with
/// keep-alive on both sides, bodies streamed, never buffered. Rules set with
/// [`set_faults`](Self::set_faults) match on target, method and blob reads;
/// every rule that matches and fires adds its [`Fault`]: a
/// [`Fault::Status`] answers at once without contacting upstream, the others
/// combine. Body offsets are payload offsets (after de-chunking) from the
/// first byte of this response's body (of the range, for a 206). Every
/// request is logged ([`requests`](Self::requests)).
pub struct FaultProxy {
    server: ProxyServer,
    state: Arc<FaultState>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

/// How long [`FaultProxy::requests`] waits for exchanges still in flight.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct FaultState {
    rules: Mutex<Vec<ActiveRule>>,
    log: Mutex<Vec<RequestRecord>>,
    /// Requests routed but not yet logged, and a signal when one is logged.
    in_flight: Mutex<u64>,
    logged: Condvar,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    matched: u64,
    rng: SmallRng,
}

impl ActiveRule {
    fn fires(&mut self) -> bool {
        self.matched += 1;
        match self.rule.trigger {
            Trigger::Always => true,
            Trigger::First(n) => self.matched <= n,
            Trigger::Probability { p, .. } => self.rng.random_bool(p.clamp(0.0, 1.0)),
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` with no faults.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let state = Arc::new(FaultState::default());
        let handler = Arc::new(Faults {
            state: Arc::clone(&state),
        });
        let server = ProxyServer::start("fault", handler, Some(upstream))
            .map_err(Error::io("starting the fault proxy"))?;
        Ok(FaultProxy { server, state })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url_of(self.addr())
    }

    /// `127.0.0.1:<port>`, the registry host of a reference through the proxy.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// Replaces the rules; `first(n)` counts and seeded generators start over.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        *lock(&self.state.rules) = rules
            .into_iter()
            .map(|rule| {
                let seed = match rule.trigger {
                    Trigger::Probability { seed, .. } => seed,
                    _ => 0,
                };
                ActiveRule {
                    rule,
                    matched: 0,
                    rng: SmallRng::seed_from_u64(seed),
                }
            })
            .collect();
    }

    /// Removes every rule: requests pass through untouched.
    pub fn clear_faults(&self) {
        lock(&self.state.rules).clear();
    }

    /// Every finished request so far, in completion order.
    ///
    /// A client has its last byte a moment before the proxy logs the
    /// request, so this first waits (up to 1 s) until no request is in
    /// flight; a request still running after that is not listed yet.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let in_flight = lock(&self.state.in_flight);
        let settled = self
            .state
            .logged
            .wait_timeout_while(in_flight, SETTLE, |n| *n > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(settled);
        lock(&self.state.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.state.log).clear();
    }
}

/// The proxy's request policy.
#[derive(Debug)]
struct Faults {
    state: Arc<FaultState>,
}

/// What [`Faults::finished`] needs to log a request.
#[derive(Debug)]
struct Pending {
    method: String,
    path: String,
    range: Option<String>,
    faults: Vec<Fault>,
}

impl Handler for Faults {
    type Note = Pending;

    fn route(&self, method: &str, head: &mut Head) -> (Route, Pending) {
        let target = head
            .request_line()
            .map(|(_, t, _)| t.to_owned())
            .unwrap_or_default();
        let mut pending = Pending {
            method: method.to_owned(),
            path: target.clone(),
            range: head.header("range").map(str::to_owned),
            faults: Vec::new(),
        };
        *lock(&self.state.in_flight) += 1;
        let mut rules = lock(&self.state.rules);
        for active in rules.iter_mut() {
            if active.rule.matches(method, &target) && active.fires() {
                pending.faults.push(active.rule.fault);
            }
        }
        drop(rules);
        let mut shaping = Shaping::default();
        for fault in &pending.faults {
            match *fault {
                Fault::Status(status) => {
                    let body = format!(
                        "{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"injected fault: status {status}\"}}]}}"
                    );
                    return (Route::Local(LocalResponse::json(status, body)), pending);
                }
                Fault::ResetMidBody { after_bytes } => {
                    shaping.cut = Some(Cut::Reset { after: after_bytes });
                }
                Fault::TruncateBody { after_bytes } => {
                    shaping.cut = Some(Cut::Truncate { after: after_bytes });
                }
                Fault::FlipBytes {
                    offset_in_body,
                    count,
                } => {
                    shaping.flips.push((offset_in_body, count));
                }
                Fault::Slow { bytes_per_sec } => shaping.bytes_per_sec = Some(bytes_per_sec),
                Fault::Delay { ms } => shaping.delay = Some(Duration::from_millis(ms)),
                Fault::IgnoreRange => {
                    head.remove("range");
                    head.remove("if-range");
                }
            }
        }
        (Route::Forward(shaping), pending)
    }

    fn finished(&self, pending: Pending, outcome: Outcome) {
        lock(&self.state.log).push(RequestRecord {
            method: pending.method,
            path: pending.path,
            range: pending.range,
            status: outcome.status,
            bytes_sent: outcome.body_bytes,
            complete: outcome.complete,
            faults: pending.faults,
        });
        *lock(&self.state.in_flight) -= 1;
        self.state.logged.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_fire() {
        let blob = "/v2/lib/a/blobs/sha256:abcd";
        assert!(is_blob_read("GET", blob));
        assert!(!is_blob_read("PUT", blob));
        assert!(!is_blob_read("POST", "/v2/lib/a/blobs/uploads/"));
        assert!(!is_blob_read("GET", "/v2/lib/a/blobs/uploads/x?_state=y"));
        let rule = FaultRule::new(Fault::IgnoreRange)
            .blobs()
            .path("sha256:ab")
            .method("get");
        assert!(rule.matches("GET", blob));
        assert!(!rule.matches("HEAD", blob));
        assert!(!rule.matches("GET", "/v2/lib/a/manifests/sha256:abcd"));

        let mut first = ActiveRule {
            rule: rule.clone().first(2),
            matched: 0,
            rng: SmallRng::seed_from_u64(0),
        };
        assert_eq!(
            (0..4).map(|_| first.fires()).collect::<Vec<_>>(),
            [true, true, false, false]
        );

        let draws = |seed| {
            let mut active = ActiveRule {
                rule: rule.clone().probability(0.5, seed),
                matched: 0,
                rng: SmallRng::seed_from_u64(seed),
            };
            (0..64).map(|_| active.fires()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        let hits = draws(7).iter().filter(|&&b| b).count();
        assert!((16..48).contains(&hits), "{hits}");
    }
}
