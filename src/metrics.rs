//! Prometheus metrics for `strata serve`: per-RPC request counts by gRPC status code and
//! latency histograms, rendered in the Prometheus text exposition format 0.0.4 and served
//! over plain HTTP on a loopback address when `metrics_address` is configured.
//!
//! The registry is a few maps behind mutexes rather than a metrics crate: the daemon records
//! one observation per RPC, so contention is negligible, and three metric families do not
//! justify another dependency tree. The HTTP side answers `GET /metrics` and nothing else,
//! one request per connection; scrapers (Prometheus, curl) need no more.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bounds (seconds) of the latency histogram's buckets: 100 µs to 10 s, roughly
/// 1-2.5-5 per decade, so both a metadata-only Stat and a slow Remove of a large tree land in
/// a bucket that tells them apart.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const REQUESTS: &str = "strata_snapshotter_requests_total";
const DURATION: &str = "strata_snapshotter_request_duration_seconds";
const BUILD_INFO: &str = "strata_build_info";

/// Longest request head the endpoint reads before answering 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Something else that exposes metrics on the endpoint (e.g. the stargz provider's
/// per-layer fetch state), rendered after the RPC metrics.
pub trait MetricsSource: Send + Sync {
    /// Appends its families in the text exposition format.
    fn render_metrics(&self, out: &mut String);
}

/// The daemon's metrics registry. Cheap to share behind an [`Arc`]; every method takes `&self`.
#[derive(Default)]
pub struct Metrics {
    /// `(rpc, snapshotter, code)` → requests finished with that code.
    requests: Mutex<BTreeMap<(String, String, String), u64>>,
    /// `(rpc, snapshotter)` → latency histogram.
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Other sources, rendered in order.
    sources: Mutex<Vec<Arc<dyn MetricsSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("sources", &lock(&self.sources).len())
            .finish_non_exhaustive()
    }
}

/// One latency histogram: per-bucket (non-cumulative) counts, the sum and the count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        // Values above the last bound count only towards `+Inf` (that is, `count`).
        if let Some(i) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A registry is only ever updated by whole-value writes, so a panic elsewhere while the lock
/// was held cannot leave it half-updated: keep serving it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `source` to what [`Self::render`] exposes.
    pub fn add_source(&self, source: Arc<dyn MetricsSource>) {
        lock(&self.sources).push(source);
    }

    /// Records one finished RPC: `rpc` is the method name (`Prepare`), `snapshotter` the
    /// request's snapshotter name, `code` the gRPC status code name (`OK`, `NotFound`, ...).
    pub fn observe(&self, rpc: &str, snapshotter: &str, code: &str, elapsed: Duration) {
        *lock(&self.requests)
            .entry((rpc.to_owned(), snapshotter.to_owned(), code.to_owned()))
            .or_insert(0) += 1;
        lock(&self.durations)
            .entry((rpc.to_owned(), snapshotter.to_owned()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// The registry in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(
            out,
            "# HELP {BUILD_INFO} Strata's version; the value is always 1."
        );
        let _ = writeln!(out, "# TYPE {BUILD_INFO} gauge");
        let _ = writeln!(
            out,
            "{BUILD_INFO}{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );

        let _ = writeln!(
            out,
            "# HELP {REQUESTS} Snapshots RPCs finished, by method, snapshotter and gRPC status code."
        );
        let _ = writeln!(out, "# TYPE {REQUESTS} counter");
        for ((rpc, snapshotter, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "{REQUESTS}{{rpc=\"{}\",snapshotter=\"{}\",code=\"{}\"}} {n}",
                escape(rpc),
                escape(snapshotter),
                escape(code)
            );
        }

        let _ = writeln!(
            out,
            "# HELP {DURATION} Time from receiving a Snapshots RPC to its response, in seconds."
        );
        let _ = writeln!(out, "# TYPE {DURATION} histogram");
        let durations = lock(&self.durations).clone();
        for ((rpc, snapshotter), h) in &durations {
            let labels = format!(
                "rpc=\"{}\",snapshotter=\"{}\"",
                escape(rpc),
                escape(snapshotter)
            );
            let mut cumulative = 0;
            for (le, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{DURATION}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "{DURATION}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{DURATION}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{DURATION}_count{{{labels}}} {}", h.count);
        }
        let sources = lock(&self.sources).clone();
        for source in sources {
            source.render_metrics(&mut out);
        }
        out
    }
}

/// Escapes a label value as the text format requires: backslash, double quote and newline.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The configured address is not a loopback address. The endpoint is unauthenticated
    /// plain HTTP, so it only listens where local processes alone can reach it.
    #[error("metrics_address {0}: not a loopback address (use 127.0.0.1 or [::1])")]
    NotLoopback(SocketAddr),
    /// Binding the listening socket failed.
    #[error("metrics_address {addr}: cannot listen: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The error from `bind`.
        #[source]
        source: io::Error,
    },
}

/// A bound metrics endpoint, not yet serving. Binding first lets the daemon fail at start-up
/// on a bad address and learn the port when the configuration asked for port 0.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Listens on `addr`, which must be a loopback address.
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        if !addr.ip().is_loopback() {
            return Err(MetricsError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound (with the kernel's port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers scrapes until `shutdown` completes. Connections are served concurrently, one
    /// request each; a connection in progress at shutdown is allowed to finish on its own.
    pub async fn serve(self, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let metrics = Arc::clone(&metrics);
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, &metrics).await {
                                tracing::debug!(%peer, error = %e, "metrics request failed");
                            }
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning on the error.
                        tracing::warn!(addr = %self.addr, error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Binds `addr` (loopback only) and serves `metrics` there until `shutdown` completes.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    MetricsEndpoint::bind(addr)
        .await?
        .serve(metrics, shutdown)
        .await;
    Ok(())
}

/// Reads one request head and writes one response, then closes the connection.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head within 5s",
            ));
        }
    };
    let response = match head {
        None => respond(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
        ),
        Some(head) => route(&head, metrics),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head up to the blank line, or `None` when it exceeds [`MAX_REQUEST_HEAD`].
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The full HTTP response for a request head.
fn route(head: &str, metrics: &Metrics) -> String {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // Scrapers may add a query string (e.g. `?name[]=...`); the endpoint always returns everything.
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => respond("200 OK", CONTENT_TYPE, &metrics.render()),
        (_, "/metrics") => respond(
            "405 Method Not Allowed",
            "text/plain",
            "only GET is supported\n",
        ),
        _ => respond("404 Not Found", "text/plain", "metrics are at /metrics\n"),
    }
}

fn respond(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed sample line: metric name, labels in order, value.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// Parses a sample line of the text format strictly (quoted, escaped label values).
    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("value {v:?} in {line:?}: {e}")),
        };
        let Some((name, rest)) = series.split_once('{') else {
            return Sample {
                name: series.to_owned(),
                labels: vec![],
                value,
            };
        };
        let body = rest.strip_suffix('}').expect("label set closes");
        let mut labels = Vec::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(
                chars.next(),
                Some('"'),
                "label {key} value is quoted in {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars.next().expect("label value terminates") {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }

    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(parse_sample)
            .collect()
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && labels.len() == s.labels.len()
                && labels
                    .iter()
                    .zip(&s.labels)
                    .all(|((k, v), (sk, sv))| k == sk && v == sv)
        })
    }

    #[test]
    fn render_parses_back_with_counts_buckets_and_escapes() {
        let m = Metrics::new();
        m.observe("Prepare", "overlayfs", "OK", Duration::from_micros(50));
        m.observe("Prepare", "overlayfs", "OK", Duration::from_millis(3));
        m.observe(
            "Prepare",
            "overlayfs",
            "AlreadyExists",
            Duration::from_secs(20),
        );
        m.observe(
            "Stat",
            "we\"ird\\na\nme",
            "NotFound",
            Duration::from_micros(100),
        );
        let text = m.render();
        assert!(text.ends_with('\n'));

        // Every family is announced once with HELP and TYPE before its samples.
        for (name, kind) in [
            (BUILD_INFO, "gauge"),
            (REQUESTS, "counter"),
            (DURATION, "histogram"),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} {kind}\n")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
        let s = samples(&text);
        let build =
            find(&s, BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]).expect("build info");
        assert_eq!(build.value, 1.0);

        let req = |snap: &str, rpc: &str, code: &str| {
            find(
                &s,
                REQUESTS,
                &[("rpc", rpc), ("snapshotter", snap), ("code", code)],
            )
            .map(|s| s.value)
        };
        assert_eq!(req("overlayfs", "Prepare", "OK"), Some(2.0));
        assert_eq!(req("overlayfs", "Prepare", "AlreadyExists"), Some(1.0));
        assert_eq!(req("we\"ird\\na\nme", "Stat", "NotFound"), Some(1.0));
        assert_eq!(req("overlayfs", "Stat", "OK"), None);

        let bucket = |snap: &str, rpc: &str, le: &str| {
            find(
                &s,
                &format!("{DURATION}_bucket"),
                &[("rpc", rpc), ("snapshotter", snap), ("le", le)],
            )
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("bucket {rpc} {snap} {le}"))
        };
        // 50 µs falls in the first bucket, 3 ms in le=0.005; 20 s only in +Inf. Cumulative.
        assert_eq!(bucket("overlayfs", "Prepare", "0.0001"), 1.0);
        assert_eq!(bucket("overlayfs", "Prepare", "0.0025"), 1.0);
        assert_eq!(bucket("overlayfs", "Prepare", "0.005"), 2.0);
        assert_eq!(bucket("overlayfs", "Prepare", "10"), 2.0);
        assert_eq!(bucket("overlayfs", "Prepare", "+Inf"), 3.0);
        // A value equal to a bound belongs to that bucket (`le` is inclusive).
        assert_eq!(bucket("we\"ird\\na\nme", "Stat", "0.0001"), 1.0);
        let labels = [("rpc", "Prepare"), ("snapshotter", "overlayfs")];
        let count = find(&s, &format!("{DURATION}_count"), &labels)
            .expect("count")
            .value;
        let sum = find(&s, &format!("{DURATION}_sum"), &labels)
            .expect("sum")
            .value;
        assert_eq!(count, 3.0);
        assert!((sum - 20.00305).abs() < 1e-9, "sum {sum}");

        // Buckets are non-decreasing and run from 100 µs to 10 s then +Inf, per series.
        let les: Vec<&str> = s
            .iter()
            .filter(|x| x.name.ends_with("_bucket") && x.labels[1].1 == "overlayfs")
            .map(|x| x.labels[2].1.as_str())
            .collect();
        assert_eq!(les.first(), Some(&"0.0001"));
        assert_eq!(les[les.len() - 2..], ["10", "+Inf"]);
        assert_eq!(les.len(), DURATION_BUCKETS.len() + 1);
    }

    #[test]
    fn empty_registry_renders_only_build_info_samples() {
        let s = samples(&Metrics::new().render());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, BUILD_INFO);
    }

    async fn http(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the metrics endpoint");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        response
    }

    #[tokio::test]
    async fn endpoint_serves_observations_and_stops_on_shutdown() {
        let metrics = Arc::new(Metrics::new());
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = endpoint.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(endpoint.serve(Arc::clone(&metrics), async {
            let _ = stopped.await;
        }));

        metrics.observe("Commit", "native", "OK", Duration::from_millis(2));
        metrics.observe("Commit", "native", "OK", Duration::from_millis(2));
        metrics.observe(
            "Remove",
            "native",
            "FailedPrecondition",
            Duration::from_micros(300),
        );
        let response = http(addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let s = samples(body);
        let count = |rpc, code| {
            find(
                &s,
                REQUESTS,
                &[("rpc", rpc), ("snapshotter", "native"), ("code", code)],
            )
            .map(|x| x.value)
        };
        assert_eq!(count("Commit", "OK"), Some(2.0));
        assert_eq!(count("Remove", "FailedPrecondition"), Some(1.0));

        let not_found = http(addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
        let post = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        // One byte over the limit and no blank line: the endpoint has read all of it when it
        // answers, so closing the connection does not reset it under the reader.
        let oversized = format!(
            "GET /metrics HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_REQUEST_HEAD)
        );
        let refused = http(addr, &oversized[..MAX_REQUEST_HEAD + 1]).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");

        stop.send(()).expect("server is running");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops")
            .expect("server task");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
    }

    #[tokio::test]
    async fn non_loopback_addresses_are_refused() {
        for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9100"] {
            let addr: SocketAddr = addr.parse().expect("address");
            let err = MetricsEndpoint::bind(addr)
                .await
                .expect_err("non-loopback refused");
            assert!(
                matches!(err, MetricsError::NotLoopback(a) if a == addr),
                "{err}"
            );
            assert!(err.to_string().contains("not a loopback address"), "{err}");
        }
        let err = serve_metrics(
            "0.0.0.0:0".parse().expect("address"),
            Arc::new(Metrics::new()),
            async {},
        )
        .await
        .expect_err("serve_metrics refuses too");
        assert!(matches!(err, MetricsError::NotLoopback(_)));
    }
}
