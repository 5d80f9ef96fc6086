//! [`RegistryClient`]: the HTTP core every registry operation goes through: host
//! selection (mirrors, then the server), TLS clients, authentication, retries and
//! redirects. The operations themselves live in [`fetch`](super::fetch) (resolve, fetch
//! manifest and blob) and [`upload`](super::upload) (mount, push).
//!
//! **Hosts.** An operation needs a [`Capability`]; the hosts having it are tried in order.
//! For pull and resolve, a host that cannot be reached or answers an error status (after
//! the retries below) is skipped for the next, as containerd's resolver does; the last
//! host's answer is the one returned, so a 404 from the server is a 404 even when a mirror
//! failed first. Push uses the first push host and moves on only when it cannot connect.
//!
//! **Connections.** One `reqwest::Client` per distinct TLS setting (skip-verify, extra CAs,
//! client certificate) is shared by all hosts with that setting; it keeps idle connections
//! for reuse and speaks HTTP/2 when the server offers it over TLS. Redirects are followed
//! here, not by reqwest, so headers such as `Range` survive a redirect to object storage
//! while `Authorization` is only ever sent to the registry host itself.
//!
//! **Retries.** Requests with a re-sendable body and an idempotent method (GET, HEAD, PUT,
//! DELETE) are retried on connection failures and on 408/429/5xx, up to
//! [`ClientOptions::max_attempts`] in total, with exponential backoff (100 ms doubling,
//! capped at 2 s, ±50 % jitter; a `Retry-After` of at most 10 s is honoured). Other
//! requests are retried only when the connection could not be made at all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, Request, RequestBuilder, Response, StatusCode};
use url::Url;

use super::auth::{Authorizer, Scope, SentAuth};
use super::credentials::DockerConfig;
use super::error::{RegistryError, redact};
use super::hosts::{Capability, ClientCert, HostsConfig, RegistryHost};
use super::reference::Reference;
use super::response::{error_detail, status_error};

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// How a [`RegistryClient`] is configured.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// containerd's `config_path`: the directory of per-registry `hosts.toml` directories
    /// (see [`hosts`](super::hosts)). `None`: every registry is its default server.
    pub hosts_dir: Option<PathBuf>,
    /// ctr's `--plain-http`: default servers (other than Docker Hub) use `http`.
    pub plain_http: bool,
    /// The docker `config.json` to take credentials from. `None`:
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. A missing file means no
    /// credentials.
    pub docker_config: Option<PathBuf>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// The longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The longest wait for any read: the response headers, or the next bytes of a body.
    /// A stalled transfer fails after this long; a slow but moving one never does.
    pub request_timeout: Duration,
    /// Attempts per request and host, retries included (at least 1).
    pub max_attempts: u32,
    /// Push blobs in chunks of this many bytes (PATCH, then PUT) instead of one PUT.
    pub push_chunk_size: Option<u64>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            hosts_dir: None,
            plain_http: false,
            docker_config: None,
            user_agent: concat!("strata/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_idle_per_host: 32,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_attempts: 4,
            push_chunk_size: None,
        }
    }
}

/// The TLS settings that distinguish one `reqwest::Client` from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    skip_verify: bool,
    ca: Vec<PathBuf>,
    client_cert: Option<ClientCert>,
}

/// An OCI distribution client. Cheap to clone (the state is shared): connections,
/// tokens and host configuration are reused by every clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: ClientOptions,
    hosts_config: HostsConfig,
    hosts: Mutex<HashMap<String, Arc<Vec<RegistryHost>>>>,
    http: Mutex<HashMap<TlsKey, reqwest::Client>>,
    auth: Authorizer,
}

/// Installs ring as the process's rustls provider unless one is installed: reqwest is
/// built without a bundled provider so the build needs neither cmake nor aws-lc.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl RegistryClient {
    /// A client with these options. Reads the docker config now (a malformed one is an
    /// error); `hosts.toml` files are read on first use of each registry.
    pub fn new(opts: ClientOptions) -> Result<Self, RegistryError> {
        ensure_crypto_provider();
        let docker = match &opts.docker_config {
            Some(p) => DockerConfig::load(p)?,
            None => DockerConfig::load_default()?,
        };
        Ok(Self::with_docker_config(opts, docker))
    }

    /// A client taking credentials from `docker` instead of a file named in the options.
    pub fn with_docker_config(opts: ClientOptions, docker: DockerConfig) -> Self {
        ensure_crypto_provider();
        let hosts_config = HostsConfig {
            config_path: opts.hosts_dir.clone(),
            plain_http: opts.plain_http,
        };
        Self {
            inner: Arc::new(Inner {
                opts,
                hosts_config,
                hosts: Mutex::default(),
                http: Mutex::default(),
                auth: Authorizer::new(docker),
            }),
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The hosts serving `registry`, in the order they are tried (read once per client).
    pub fn hosts(&self, registry: &str) -> Result<Arc<Vec<RegistryHost>>, RegistryError> {
        if let Some(h) = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return Ok(h.clone());
        }
        let hosts = Arc::new(self.inner.hosts_config.hosts(registry)?);
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_owned(), hosts.clone());
        Ok(hosts)
    }

    /// Makes one cheap authorised request (`GET /v2/` with a pull token for `r`'s
    /// repository) so that a burst of requests afterwards finds an open connection and a
    /// cached token instead of each opening its own and fetching its own.
    pub async fn warm(&self, r: &Reference) -> Result<(), RegistryError> {
        let resp = self
            .send(
                r,
                Capability::Pull,
                Scope::pull(r.repository()),
                |http, base| http.get(base.clone()),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(resp, &Method::GET, r, "API root /v2/").await)
        }
    }

    /// Sends a request to the first host serving `r`'s registry with `capability`,
    /// authenticated for `scope`, moving on to the next host as the module doc says.
    /// `build` makes the request from the host's client and API root (`…/v2/`); it is
    /// called once per host. Returns the response whatever its status, except that a 401
    /// that authentication could not resolve is [`RegistryError::Unauthorized`].
    pub async fn send(
        &self,
        r: &Reference,
        capability: Capability,
        scope: Scope,
        build: impl Fn(&reqwest::Client, &Url) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        self.send_with_host(r, capability, &scope, build)
            .await
            .map(|(resp, _)| resp)
    }

    /// [`send`](Self::send), also returning the host that answered.
    pub(crate) async fn send_with_host(
        &self,
        r: &Reference,
        capability: Capability,
        scope: &Scope,
        build: impl Fn(&reqwest::Client, &Url) -> RequestBuilder,
    ) -> Result<(Response, RegistryHost), RegistryError> {
        let hosts = self.hosts(r.registry())?;
        let candidates: Vec<&RegistryHost> = hosts
            .iter()
            .filter(|h| h.capabilities.has(capability))
            .collect();
        let Some(last) = candidates.len().checked_sub(1) else {
            return Err(RegistryError::NoHost {
                registry: r.registry().to_owned(),
                capability: capability.as_str(),
            });
        };
        for (i, host) in candidates.into_iter().enumerate() {
            let http = self.http_for(host)?;
            let base = host.base_url()?;
            let req = build(&http, &base)
                .build()
                .map_err(|e| RegistryError::InvalidArgument {
                    what: format!("request to {}", redact(&base)),
                    reason: e.to_string(),
                })?;
            let (method, url) = (req.method().clone(), redact(req.url()));
            let result = self.execute_on(r, host, req, scope).await;
            let is_last = i == last;
            let move_on = !is_last
                && match (&result, capability) {
                    (Ok(resp), Capability::Pull | Capability::Resolve) => {
                        resp.status().as_u16() >= 400
                    }
                    (Err(_), Capability::Pull | Capability::Resolve) => true,
                    (Err(RegistryError::Transport { source, .. }), Capability::Push) => {
                        source.is_connect()
                    }
                    _ => false,
                };
            if move_on {
                match &result {
                    Ok(resp) => {
                        tracing::debug!(host = %host.host, %method, %url, status = resp.status().as_u16(), "trying next host")
                    }
                    Err(e) => tracing::debug!(host = %host.host, error = %e, "trying next host"),
                }
                continue;
            }
            return result.map(|resp| (resp, host.clone()));
        }
        Err(RegistryError::NoHost {
            registry: r.registry().to_owned(),
            capability: capability.as_str(),
        })
    }

    /// Builds now the HTTP client of hosts without TLS settings of their own (most), which
    /// otherwise happens at the first request: loading the system's root certificates
    /// takes tens of milliseconds, which a daemon should spend at start, not in a pull.
    pub fn build_default_http(&self) -> Result<(), RegistryError> {
        self.http_with(
            TlsKey {
                skip_verify: false,
                ca: Vec::new(),
                client_cert: None,
            },
            "default hosts",
        )
        .map(drop)
    }

    /// The `reqwest::Client` for `host`'s TLS settings (built on first use).
    pub(crate) fn http_for(&self, host: &RegistryHost) -> Result<reqwest::Client, RegistryError> {
        let key = TlsKey {
            skip_verify: host.skip_verify,
            ca: host.ca.clone(),
            // rustls presents one client certificate; the first configured is used.
            client_cert: host.client_certs.first().cloned(),
        };
        self.http_with(key, &host.host)
    }

    fn http_with(&self, key: TlsKey, host: &str) -> Result<reqwest::Client, RegistryError> {
        if let Some(c) = self
            .inner
            .http
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let o = &self.inner.opts;
        let mut b = reqwest::Client::builder()
            .user_agent(o.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(o.max_idle_per_host)
            .connect_timeout(o.connect_timeout)
            .read_timeout(o.request_timeout)
            .tcp_nodelay(true)
            .tls_danger_accept_invalid_certs(key.skip_verify);
        for path in &key.ca {
            let pem = std::fs::read(path).map_err(|e| {
                RegistryError::config(path, format!("cannot read CA certificate: {e}"))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::config(path, format!("invalid PEM CA certificate: {e}"))
            })?;
            b = b.tls_certs_merge(certs);
        }
        if let Some(cc) = &key.client_cert {
            let mut pem = std::fs::read(&cc.cert).map_err(|e| {
                RegistryError::config(&cc.cert, format!("cannot read client certificate: {e}"))
            })?;
            if let Some(k) = &cc.key {
                pem.push(b'\n');
                pem.extend(std::fs::read(k).map_err(|e| {
                    RegistryError::config(k, format!("cannot read client key: {e}"))
                })?);
            }
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                RegistryError::config(&cc.cert, format!("invalid client certificate or key: {e}"))
            })?;
            b = b.identity(id);
        }
        let client = b.build().map_err(|e| RegistryError::InvalidArgument {
            what: format!("HTTP client for {host}"),
            reason: e.to_string(),
        })?;
        self.inner
            .http
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, client.clone());
        Ok(client)
    }

    /// Sends `req` (to `host`, or to a URL it handed out, such as an upload location)
    /// with authentication, redirects and retries.
    pub(crate) async fn execute_on(
        &self,
        r: &Reference,
        host: &RegistryHost,
        req: Request,
        scope: &Scope,
    ) -> Result<Response, RegistryError> {
        let http = self.http_for(host)?;
        let mut scope = scope.clone();
        let method = req.method().clone();
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        let mut pending = Some(req);
        let mut auth_retried = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(orig) = pending.take() else {
                return Err(RegistryError::InvalidArgument {
                    what: format!("{method} request to {}", host.host),
                    reason: "its body cannot be sent again".into(),
                });
            };
            // A streaming body can be sent once: then there are no retries.
            let (mut this, repeatable) = match orig.try_clone() {
                Some(copy) => {
                    pending = Some(orig);
                    (copy, true)
                }
                None => (orig, false),
            };
            for (name, value) in &host.headers {
                this.headers_mut().append(name, value.clone());
            }
            let to_registry = is_host_url(this.url(), host);
            let sent = if to_registry {
                self.inner
                    .auth
                    .authorization(&http, &host.host, &scope)
                    .await?
            } else {
                None
            };
            let plain_headers = this.headers().clone();
            if let Some(a) = &sent {
                this.headers_mut()
                    .insert(http::header::AUTHORIZATION, a.header.clone());
            }
            let url = this.url().clone();
            let may_retry = repeatable && attempt < self.inner.opts.max_attempts.max(1);
            let resp = match http.execute(this).await {
                Ok(resp) => {
                    follow_redirects(&http, resp, &method, &plain_headers, host, sent.as_ref())
                        .await
                }
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(resp) => resp,
                Err(e) => {
                    // A connection that was never made sent nothing: safe to repeat any method.
                    // TLS failures (bad certificate, a plain-HTTP server) do not heal.
                    if may_retry && (idempotent || e.is_connect()) && !is_tls_error(&e) {
                        tracing::debug!(%method, url = %redact(&url), error = %e, attempt, "retrying");
                        tokio::time::sleep(backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(RegistryError::transport(&method, &url, e));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && is_host_url(resp.url(), host) {
                let extra = self
                    .inner
                    .auth
                    .on_unauthorized(&host.host, resp.headers(), sent.as_ref())
                    .await;
                let can_retry = !auth_retried && pending.is_some();
                match extra {
                    Some(extra) if can_retry => {
                        auth_retried = true;
                        scope = scope.and(&extra);
                        attempt -= 1; // an auth round trip is not a failed attempt
                        continue;
                    }
                    _ => return Err(self.unauthorized(r, host, sent.as_ref(), resp).await),
                }
            }
            let transient = matches!(status.as_u16(), 408 | 429 | 500..=599);
            if transient && may_retry && idempotent {
                let wait = backoff(attempt, retry_after(&resp));
                tracing::debug!(%method, url = %redact(&url), status = status.as_u16(), attempt, "retrying");
                drop(resp);
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    async fn unauthorized(
        &self,
        r: &Reference,
        host: &RegistryHost,
        sent: Option<&SentAuth>,
        resp: Response,
    ) -> RegistryError {
        let credentials = matches!(self.inner.auth.credential(&host.host).await, Ok(Some(_)));
        let mut detail = error_detail(resp).await;
        if sent.is_none() && credentials {
            detail = format!(
                "no supported challenge{}{detail}",
                if detail.is_empty() { "" } else { ": " }
            );
        }
        RegistryError::Unauthorized {
            host: host.host.clone(),
            repository: r.repository().to_owned(),
            credentials,
            detail,
        }
    }
}

/// `host[:port]` of a URL, as [`RegistryHost::host`] spells it.
pub(crate) fn authority(url: &Url) -> String {
    // `host_str` keeps the brackets of an IPv6 address.
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    }
}

/// Whether `url` points at `host` (same host name and port; the scheme may differ, as
/// behind TLS-terminating proxies that hand out `http` upload locations).
pub(crate) fn is_host_url(url: &Url, host: &RegistryHost) -> bool {
    let Ok(base) = host.base_url() else {
        return false;
    };
    url.host() == base.host() && url.port_or_known_default() == base.port_or_known_default()
}

/// Follows GET/HEAD redirects: same method (GET after 303), same headers, and the
/// `Authorization` only while the target is still the registry host.
async fn follow_redirects(
    http: &reqwest::Client,
    mut resp: Response,
    method: &Method,
    headers: &http::HeaderMap,
    host: &RegistryHost,
    sent: Option<&SentAuth>,
) -> Result<Response, reqwest::Error> {
    let mut method = method.clone();
    for _ in 0..MAX_REDIRECTS {
        let status = resp.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308)
            || !matches!(method, Method::GET | Method::HEAD)
        {
            return Ok(resp);
        }
        let Some(next) = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| resp.url().join(l).ok())
        else {
            return Ok(resp);
        };
        if status == 303 {
            method = Method::GET;
        }
        let mut req = Request::new(method.clone(), next);
        *req.headers_mut() = headers.clone();
        if let Some(a) = sent.filter(|_| is_host_url(req.url(), host)) {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, a.header.clone());
        }
        tracing::debug!(from = %redact(resp.url()), to = %redact(req.url()), "following redirect");
        resp = http.execute(req).await?;
    }
    Ok(resp)
}

/// Whether a request failed in the TLS handshake (anywhere in its chain of causes).
fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps (hyper nests io::Errors): descend
        // into the wrapped error instead.
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The wait before attempt `attempt + 1`.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after.filter(|d| *d <= Duration::from_secs(10)) {
        return d;
    }
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    base.min(Duration::from_secs(2))
        .mul_f64(rand::random_range(0.5..1.5))
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// The operations' futures must be `Send`, or they cannot be spawned.
    #[allow(dead_code, clippy::manual_async_fn)]
    fn futures_are_send(
        c: RegistryClient,
        r: Reference,
        d: strata_formats::Digest,
        m: oci_spec::image::Descriptor,
    ) {
        fn send<T: Send>(_: T) {}
        send(c.warm(&r));
        send(c.resolve(&r));
        send(c.fetch_manifest(&r, &m));
        send(c.fetch_blob(&r, &d, None));
        send(c.blob_size(&r, &d));
        send(c.mount_blob(&r, &d, &r));
        send(c.push_blob(&r, &d, 0, Bytes::new()));
        send(c.push_manifest(&r, "x/y", Bytes::new()));
        send(c.send(&r, Capability::Pull, Scope::none(), |h, u| h.get(u.clone())));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        for attempt in 1..20 {
            let d = backoff(attempt, None);
            let base = Duration::from_millis(100) * 2u32.pow((attempt - 1).min(10));
            let base = base.min(Duration::from_secs(2));
            assert!(
                d >= base / 2 && d <= base * 3 / 2,
                "attempt {attempt}: {d:?}"
            );
        }
        assert_eq!(
            backoff(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert!(backoff(1, Some(Duration::from_secs(600))) < Duration::from_secs(1));
    }

    #[test]
    fn authorities() {
        let a = |s: &str| authority(&Url::parse(s).unwrap());
        assert_eq!(a("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(
            a("https://registry-1.docker.io/v2/"),
            "registry-1.docker.io"
        );
        assert_eq!(a("https://h:443/"), "h", "default ports are not spelled");
        assert_eq!(a("http://[::1]:5000/"), "[::1]:5000");
    }

    #[test]
    fn no_host_with_capability() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ro.example");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            "server = \"https://ro.example\"\ncapabilities = [\"pull\"]\n",
        )
        .unwrap();
        let client = RegistryClient::with_docker_config(
            ClientOptions {
                hosts_dir: Some(tmp.path().into()),
                ..ClientOptions::default()
            },
            DockerConfig::default(),
        );
        let r: Reference = "ro.example/app:1".parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(client.push_manifest(
                &r,
                "application/vnd.oci.image.manifest.v1+json",
                Bytes::from_static(b"{}"),
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ro.example: no configured host has the push capability"
        );
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_server_is_a_tls_error() {
        ensure_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let e = http
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert!(is_tls_error(&e), "{e:?}");
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = http
            .get(format!("http://{refused}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert!(e.is_connect() && !is_tls_error(&e), "{e:?}");
    }
}
