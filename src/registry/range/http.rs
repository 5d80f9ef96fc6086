//! [`HttpRangeFetcher`]: range requests for one blob through a [`RegistryClient`],
//! configured by [`RangeOptions`].
//!
//! **Multi-range.** The ranges of one call are merged into disjoint spans; two or more
//! spans go out in one request (`Range: bytes=a-b,c-d`, at most
//! [`RangeOptions::max_ranges_per_request`] per request). A `206 multipart/byteranges`
//! answer is parsed part by part, and every part must be one of the spans asked for. A
//! server that answers a multi-range request any other way (one part, or `200` with the
//! whole blob) cannot do multi-range: that is remembered for the fetcher and for the host
//! (in [`RangeHosts`]), a single part that did come is kept, and everything else goes out
//! as one request per span, concurrently.
//!
//! **Probing.** Until a fetcher has seen whether its server honours `Range`, its requests
//! go out one at a time (each waiting only for the previous one's status, not its body):
//! a burst of reads on a server that ignores `Range` then starts one whole-blob response,
//! not one per read. A `200` is remembered: with [`RangePolicy::Fail`] later reads fail
//! without asking again; with [`RangePolicy::FullFetch`] that very response becomes the
//! download into the content store.
//!
//! **Checks.** Every answer's `Content-Range` is checked against the request
//! ([`check_range`]), against the blob's size, and a body longer or shorter than promised
//! is an error. A body that breaks, stalls or ends short is re-requested for the bytes
//! still missing, up to [`RangeOptions::max_attempts`] times with backoff.
//!
//! **Limits.** Each request holds a permit of the fetcher
//! ([`RangeOptions::max_concurrency`]) and of its host
//! ([`RangeHosts::new`](super::RangeHosts::new)) until its body is read. The first request
//! to a host is preceded by [`RegistryClient::warm`], so a burst finds a cached token and
//! an open connection.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, try_join_all};
use reqwest::{Method, Response, StatusCode};
use strata_formats::Digest;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::full::FullCopy;
use super::multipart::{self, MAX_HEADER_BYTES, PART_OVERHEAD};
use super::options::{HostState, RangeOptions, RangePolicy, SUPPORTED, UNKNOWN, UNSUPPORTED};
use super::{Counters, RangeError, RangeFetcher, RangeStats, backoff, merge_ranges, slice_spans};
use crate::registry::client::authority;
use crate::registry::error::redact;
use crate::registry::fetch::api_url;
use crate::registry::response::status_error;
use crate::registry::{
    Capability, Reference, RegistryClient, RegistryError, Scope, check_range, parse_content_range,
};

/// A [`RangeFetcher`] for one blob of a registry, over HTTP range requests (see the
/// module documentation for how it asks, checks, retries and limits).
pub struct HttpRangeFetcher {
    pub(super) client: RegistryClient,
    pub(super) reference: Reference,
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) opts: RangeOptions,
    host: Arc<HostState>,
    permits: Semaphore,
    multi_range: AtomicU8,
    /// Whether the server honours `Range`: [`UNKNOWN`] until a request shows it.
    range_support: AtomicU8,
    /// Held by the one request probing while `range_support` is unknown.
    probe: tokio::sync::Mutex<()>,
    /// The URL that answered a range request with the whole blob.
    ignored_url: OnceLock<String>,
    warned_ignored: AtomicBool,
    pub(super) full: FullCopy,
    pub(super) stats: Counters,
}

impl fmt::Debug for HttpRangeFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRangeFetcher")
            .field("reference", &self.reference)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("policy", &self.opts.policy)
            .finish_non_exhaustive()
    }
}

/// How a multi-range request was answered.
enum MultiAnswer {
    /// `multipart/byteranges`: the parts that came (index into the ranges asked, bytes),
    /// and why the rest did not, if the body broke.
    Parts {
        parts: Vec<(usize, Bytes)>,
        broken: Option<RangeError>,
    },
    /// Not multi-range: a single part (if it matched a range asked for) or none (`200`).
    NotMulti { part: Option<(usize, Bytes)> },
}

/// Why a single-range request did not deliver all its bytes.
enum SingleFailure {
    /// The server ignores `Range` (seen now or before; a `200` just received is parked
    /// for the full fetch).
    RangeIgnored,
    /// The body broke or ended short: worth asking for the rest again.
    Body(RangeError),
    /// Anything else (the client has already retried what it could).
    Fatal(RangeError),
    /// The receiver of a streamed body is gone: nothing more is wanted.
    Gone,
}

/// Where a body goes: a buffer, or a channel (streamed) with the count sent so far.
enum BodyOut<'a> {
    Buffer(&'a mut BytesMut),
    Channel(&'a tokio::sync::mpsc::Sender<Bytes>, &'a mut u64),
}

impl BodyOut<'_> {
    /// Bytes taken so far.
    fn len(&self) -> u64 {
        match self {
            Self::Buffer(b) => b.len() as u64,
            Self::Channel(_, sent) => **sent,
        }
    }

    /// Takes `bytes`; `false` when the receiver is gone.
    async fn push(&mut self, bytes: Bytes) -> bool {
        match self {
            Self::Buffer(b) => {
                b.extend_from_slice(&bytes);
                true
            }
            Self::Channel(sink, sent) => {
                let n = bytes.len() as u64;
                if sink.send(bytes).await.is_err() {
                    return false;
                }
                **sent += n;
                true
            }
        }
    }
}

impl HttpRangeFetcher {
    /// A fetcher for blob `digest` (of `size` bytes) in `reference`'s repository.
    pub fn new(
        client: RegistryClient,
        reference: Reference,
        digest: Digest,
        size: u64,
        opts: RangeOptions,
    ) -> Self {
        let host = opts.hosts.state(reference.registry());
        Self {
            permits: Semaphore::new(opts.max_concurrency.max(1)),
            client,
            reference,
            digest,
            size,
            opts,
            host,
            multi_range: AtomicU8::new(UNKNOWN),
            range_support: AtomicU8::new(UNKNOWN),
            probe: tokio::sync::Mutex::new(()),
            ignored_url: OnceLock::new(),
            warned_ignored: AtomicBool::new(false),
            full: FullCopy::default(),
            stats: Counters::default(),
        }
    }

    /// [`new`](Self::new) with the size asked of the registry (`HEAD` of the blob); a
    /// blob the registry does not have is [`RegistryError::NotFound`].
    pub async fn open(
        client: RegistryClient,
        reference: Reference,
        digest: Digest,
        opts: RangeOptions,
    ) -> Result<Self, RegistryError> {
        let size = client
            .blob_size(&reference, &digest)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                host: reference.registry().to_owned(),
                repository: reference.repository().to_owned(),
                what: format!("blob {digest}"),
            })?;
        Ok(Self::new(client, reference, digest, size, opts))
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What this fetcher has done so far.
    pub fn stats(&self) -> RangeStats {
        self.stats.snapshot()
    }

    /// Whether multi-range requests are used: `None` until one was tried, `Some(false)`
    /// once this fetcher or another of the same host saw them fail.
    pub fn multi_range(&self) -> Option<bool> {
        match (
            self.multi_range.load(Ordering::Relaxed),
            self.host.multi_range.load(Ordering::Relaxed),
        ) {
            (UNSUPPORTED, _) | (_, UNSUPPORTED) => Some(false),
            (SUPPORTED, _) | (_, SUPPORTED) => Some(true),
            _ => None,
        }
    }

    /// Opens a connection and fetches a token for the blob's repository, once per host
    /// (see [`RegistryClient::warm`]); fetches do this themselves before their first
    /// request. A failure is left for the requests that follow to report.
    pub async fn warm(&self) {
        self.host
            .warmed
            .get_or_init(|| async {
                if let Err(e) = self.client.warm(&self.reference).await {
                    tracing::debug!(registry = self.reference.registry(), error = %e, "warming the registry connection failed");
                }
            })
            .await;
    }

    pub(super) fn what(&self) -> String {
        format!("blob {} of {}", self.digest, self.reference.name())
    }

    async fn fetch_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, RangeError> {
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            return Err(RangeError::OutOfBounds {
                what: self.what(),
                start: r.start,
                end: r.end,
                size: self.size,
            });
        }
        let spans = merge_ranges(ranges, self.opts.merge_gap);
        if spans.is_empty() {
            return Ok(vec![Bytes::new(); ranges.len()]);
        }
        let data = self.fetch_spans(&spans).await?;
        Ok(slice_spans(ranges, &spans, &data))
    }

    /// The bytes of disjoint, sorted, non-empty spans.
    async fn fetch_spans(&self, spans: &[Range<u64>]) -> Result<Vec<Bytes>, RangeError> {
        if let Some(local) = self.local_copy()? {
            return self.read_local(local, spans).await;
        }
        self.warm().await;
        if spans.len() > 1 && self.multi_range_allowed() {
            let groups = spans.chunks(self.opts.max_ranges_per_request.max(2));
            let parts = try_join_all(groups.map(|g| self.fetch_group(g))).await?;
            Ok(parts.into_iter().flatten().collect())
        } else {
            try_join_all(spans.iter().map(|s| self.fetch_single(s.clone()))).await
        }
    }

    fn multi_range_allowed(&self) -> bool {
        self.multi_range() != Some(false)
    }

    fn learn_multi_range(&self, supported: bool) {
        let v = if supported { SUPPORTED } else { UNSUPPORTED };
        self.host.multi_range.store(v, Ordering::Relaxed);
        if self.multi_range.swap(v, Ordering::Relaxed) != v && !supported {
            tracing::info!(
                blob = %self.digest,
                registry = self.reference.registry(),
                "the registry does not answer multi-range requests with multipart/byteranges: one request per range from now on"
            );
        }
    }

    /// While range support is unknown (and a server ignoring it means one full download):
    /// the probe lock, so that one request at a time finds out. `None` once it is known.
    async fn probe_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        // With the fail policy there is no full download to share: a server ignoring Range
        // fails the reads either way, and each concurrent first request costs only what is
        // in flight when its whole-blob answer is dropped. Not waiting for a first answer
        // saves lazy mounts a round trip (the TOC and the prefetch go out together).
        if self.range_support.load(Ordering::Acquire) != UNKNOWN
            || matches!(self.opts.policy, RangePolicy::Fail)
        {
            return None;
        }
        let gate = self.probe.lock().await;
        (self.range_support.load(Ordering::Acquire) == UNKNOWN).then_some(gate)
    }

    /// A permit of this fetcher, then one of the host (always in that order).
    pub(super) async fn permits(&self) -> (SemaphorePermit<'_>, SemaphorePermit<'_>) {
        let mine = self
            .permits
            .acquire()
            .await
            .expect("invariant: the fetcher's semaphore is never closed");
        let host = self
            .host
            .permits
            .acquire()
            .await
            .expect("invariant: a host's semaphore is never closed");
        (mine, host)
    }

    /// Spans through multi-range requests, falling back to single ranges as needed.
    async fn fetch_group(&self, group: &[Range<u64>]) -> Result<Vec<Bytes>, RangeError> {
        let mut got: Vec<Option<Bytes>> = vec![None; group.len()];
        let mut attempt = 0;
        loop {
            let missing: Vec<usize> = (0..group.len()).filter(|&i| got[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            if missing.len() == 1 || !self.multi_range_allowed() {
                let rest =
                    try_join_all(missing.iter().map(|&i| self.fetch_single(group[i].clone())))
                        .await?;
                for (i, b) in missing.into_iter().zip(rest) {
                    got[i] = Some(b);
                }
                break;
            }
            attempt += 1;
            let asked: Vec<Range<u64>> = missing.iter().map(|&i| group[i].clone()).collect();
            let broken = match self.request_multi(&asked).await? {
                MultiAnswer::Parts { parts, broken } => {
                    self.learn_multi_range(true);
                    for (j, b) in parts {
                        got[missing[j]] = Some(b);
                    }
                    broken
                }
                MultiAnswer::NotMulti { part } => {
                    self.learn_multi_range(false);
                    if let Some((j, b)) = part {
                        got[missing[j]] = Some(b);
                    }
                    None
                }
            };
            // A break after the last part matters only if something is still missing.
            if let Some(cause) = broken.filter(|_| got.iter().any(Option::is_none)) {
                if attempt >= self.opts.max_attempts.max(1) {
                    return Err(cause);
                }
                Counters::add(&self.stats.retries, 1);
                tracing::debug!(blob = %self.digest, attempt, error = %cause, "multi-range body broke; asking again for the missing parts");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        got.into_iter()
            .collect::<Option<Vec<Bytes>>>()
            .ok_or_else(|| RangeError::Contract {
                what: self.what(),
                reason: "a span of a multi-range group was left unfilled".into(),
            })
    }

    /// One request for several spans.
    async fn request_multi(&self, asked: &[Range<u64>]) -> Result<MultiAnswer, RangeError> {
        let probe = self.probe_gate().await;
        if self.range_support.load(Ordering::Acquire) == UNSUPPORTED {
            return Ok(MultiAnswer::NotMulti { part: None });
        }
        let _permits = self.permits().await;
        let specs: Vec<String> = asked
            .iter()
            .map(|r| format!("{}-{}", r.start, r.end - 1))
            .collect();
        let header = format!("bytes={}", specs.join(","));
        Counters::add(&self.stats.requests, 1);
        Counters::add(&self.stats.multi_range_requests, 1);
        let path = format!("{}/blobs/{}", self.reference.repository(), self.digest);
        let mut resp = self
            .client
            .send(
                &self.reference,
                Capability::Pull,
                Scope::pull(self.reference.repository()),
                |http, base| {
                    http.get(api_url(base, &path))
                        .header(http::header::RANGE, header.as_str())
                },
            )
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                self.range_support.store(SUPPORTED, Ordering::Release);
                drop(probe);
            }
            // The whole blob: this server does not do multi-range (maybe no ranges at all;
            // the single-range requests that follow find out). Dropping the response
            // closes the connection instead of downloading the blob.
            StatusCode::OK => return Ok(MultiAnswer::NotMulti { part: None }),
            _ => {
                return Err(status_error(
                    resp,
                    &Method::GET,
                    &self.reference,
                    &format!("blob {}", self.digest),
                )
                .await
                .into());
            }
        }
        let url = resp.url().clone();
        let invalid =
            |reason: String| RangeError::from(RegistryError::invalid_response(&url, reason));
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(boundary) = multipart::boundary(content_type) else {
            // One part: keep it if it is one of the spans asked for.
            let header = resp
                .headers()
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let part = parse_content_range(header)
                .filter(|cr| cr.total.is_none_or(|t| t == self.size))
                .and_then(|cr| {
                    asked
                        .iter()
                        .position(|r| r.start == cr.start && r.end == cr.end)
                });
            let Some(j) = part else {
                return Ok(MultiAnswer::NotMulti { part: None });
            };
            let mut buf = BytesMut::with_capacity((asked[j].end - asked[j].start) as usize);
            let part = match self
                .read_body(
                    &mut resp,
                    &mut BodyOut::Buffer(&mut buf),
                    asked[j].end - asked[j].start,
                )
                .await
            {
                Ok(()) => Some((j, buf.freeze())),
                Err(_) => None,
            };
            return Ok(MultiAnswer::NotMulti { part });
        };
        let data: u64 = asked.iter().map(|r| r.end - r.start).sum();
        let bound = data + asked.len() as u64 * PART_OVERHEAD + MAX_HEADER_BYTES as u64;
        if let Some(len) = resp.content_length().filter(|&l| l > bound) {
            return Err(invalid(format!(
                "a multi-range answer of {len} bytes for {data} bytes of data ({header})"
            )));
        }
        let mut buf = BytesMut::with_capacity(bound.min(data + 64 * 1024) as usize);
        let mut broken = None;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    Counters::add(&self.stats.bytes, c.len() as u64);
                    if (buf.len() + c.len()) as u64 > bound {
                        return Err(invalid(format!(
                            "a multi-range answer longer than {bound} bytes ({header})"
                        )));
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(RegistryError::transport(&Method::GET, &url, e).into());
                    break;
                }
            }
        }
        let body = buf.freeze();
        let parsed = multipart::parse(&body, &boundary).map_err(|reason| {
            invalid(format!("multipart/byteranges answer to {header}: {reason}"))
        })?;
        let mut seen = vec![false; asked.len()];
        let mut parts = Vec::with_capacity(parsed.parts.len());
        for part in parsed.parts {
            let j = asked.iter().position(|r| *r == part.range).filter(|&j| !seen[j]).ok_or_else(|| {
                invalid(format!("a part holds bytes {}..{}, which is not one of the ranges asked for ({header})", part.range.start, part.range.end))
            })?;
            if let Some(t) = part.total.filter(|&t| t != self.size) {
                return Err(invalid(format!(
                    "a part says the blob is {t} bytes, expected {}",
                    self.size
                )));
            }
            seen[j] = true;
            parts.push((j, part.data));
        }
        if parsed.complete && broken.is_none() && !seen.iter().all(|&s| s) {
            return Err(invalid(format!(
                "the multi-range answer lacks some of the ranges asked for ({header})"
            )));
        }
        if !parsed.complete && broken.is_none() {
            broken = Some(invalid(format!(
                "the multi-range answer ended before its closing boundary ({header})"
            )));
        }
        Ok(MultiAnswer::Parts { parts, broken })
    }

    /// One span by single-range requests, resuming a broken body where it stopped.
    async fn fetch_single(&self, range: Range<u64>) -> Result<Bytes, RangeError> {
        let mut buf = BytesMut::with_capacity((range.end - range.start) as usize);
        match self
            .single_into(&range, &mut BodyOut::Buffer(&mut buf))
            .await?
        {
            Some(whole) => Ok(whole),
            None => Ok(buf.freeze()),
        }
    }

    /// [`RangeFetcher::fetch_stream`]: one span by single-range requests whose body goes to
    /// `sink` as it arrives, resumed where it broke.
    async fn stream_single(
        &self,
        range: Range<u64>,
        sink: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<(), RangeError> {
        if range.start > range.end || range.end > self.size {
            return Err(RangeError::OutOfBounds {
                what: self.what(),
                start: range.start,
                end: range.end,
                size: self.size,
            });
        }
        if range.is_empty() {
            return Ok(());
        }
        if let Some(local) = self.local_copy()? {
            let mut data = self.read_local(local, std::slice::from_ref(&range)).await?;
            let _ = sink.send(data.pop().unwrap_or_default()).await;
            return Ok(());
        }
        self.warm().await;
        let mut sent = 0;
        if let Some(rest) = self
            .single_into(&range, &mut BodyOut::Channel(&sink, &mut sent))
            .await?
        {
            // The server ignored Range: what was not sent yet, from the full copy.
            let _ = sink
                .send(rest.slice(usize::try_from(sent).unwrap_or(usize::MAX).min(rest.len())..))
                .await;
        }
        Ok(())
    }

    /// Requests `range` into `out` until it is all there (broken bodies resumed with
    /// backoff); `Some(bytes)`: the server ignores Range and these are the range's bytes
    /// from the policy's fallback instead.
    async fn single_into(
        &self,
        range: &Range<u64>,
        out: &mut BodyOut<'_>,
    ) -> Result<Option<Bytes>, RangeError> {
        let mut attempt = 0;
        let start = out.len();
        loop {
            attempt += 1;
            let want = range.start + (out.len() - start)..range.end;
            match self.request_single(&want, out).await {
                Ok(()) | Err(SingleFailure::Gone) => return Ok(None),
                Err(SingleFailure::RangeIgnored) => {
                    return self.on_range_ignored(range).await.map(Some);
                }
                Err(SingleFailure::Body(cause)) if attempt < self.opts.max_attempts.max(1) => {
                    Counters::add(&self.stats.retries, 1);
                    tracing::debug!(
                        blob = %self.digest, start = want.start, end = want.end, received = out.len() - start,
                        attempt, error = %cause, "range body broke; asking again for the rest"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(SingleFailure::Body(e) | SingleFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// One request for `want`, appending its body to `out`.
    async fn request_single(
        &self,
        want: &Range<u64>,
        out: &mut BodyOut<'_>,
    ) -> Result<(), SingleFailure> {
        let probe = self.probe_gate().await;
        if self.range_support.load(Ordering::Acquire) == UNSUPPORTED {
            return Err(SingleFailure::RangeIgnored);
        }
        let _permits = self.permits().await;
        Counters::add(&self.stats.requests, 1);
        let mut resp = self
            .client
            .fetch_blob(&self.reference, &self.digest, Some(want.clone()))
            .await
            .map_err(|e| SingleFailure::Fatal(e.into()))?;
        if resp.status() == StatusCode::OK {
            self.range_ignored(resp);
            return Err(SingleFailure::RangeIgnored);
        }
        let cr = check_range(&resp, want).map_err(|e| SingleFailure::Fatal(e.into()))?;
        self.range_support.store(SUPPORTED, Ordering::Release);
        drop(probe);
        if cr.end != want.end || cr.total.is_some_and(|t| t != self.size) {
            let reason = format!(
                "asked for bytes {}..{} of a {}-byte blob, got bytes {}..{} of {}",
                want.start,
                want.end,
                self.size,
                cr.start,
                cr.end,
                cr.total.map_or("?".to_owned(), |t| t.to_string())
            );
            return Err(SingleFailure::Fatal(
                RegistryError::invalid_response(resp.url(), reason).into(),
            ));
        }
        self.read_body(&mut resp, out, want.end - want.start).await
    }

    /// Appends exactly `len` body bytes to `out`: more is fatal, fewer is a broken body.
    async fn read_body(
        &self,
        resp: &mut Response,
        out: &mut BodyOut<'_>,
        len: u64,
    ) -> Result<(), SingleFailure> {
        let url = resp.url().clone();
        let target = out.len() + len;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    Counters::add(&self.stats.bytes, c.len() as u64);
                    if out.len() + c.len() as u64 > target {
                        let reason = format!(
                            "the body is longer than the {len} bytes its Content-Range promised"
                        );
                        return Err(SingleFailure::Fatal(
                            RegistryError::invalid_response(&url, reason).into(),
                        ));
                    }
                    if !out.push(c).await {
                        return Err(SingleFailure::Gone);
                    }
                }
                Ok(None) if out.len() == target => return Ok(()),
                Ok(None) => {
                    let got = len - (target - out.len());
                    let reason = format!(
                        "the body ended after {got} of the {len} bytes its Content-Range promised"
                    );
                    return Err(SingleFailure::Body(
                        RegistryError::invalid_response(&url, reason).into(),
                    ));
                }
                Err(e) => {
                    return Err(SingleFailure::Body(
                        RegistryError::transport(&Method::GET, &url, e).into(),
                    ));
                }
            }
        }
    }

    /// Records that the server answered a range request with the whole blob (`resp`):
    /// warns once, and parks the response for a full fetch to stream from.
    fn range_ignored(&self, resp: Response) {
        let url = redact(resp.url());
        let full = matches!(self.opts.policy, RangePolicy::FullFetch(_));
        if !self.warned_ignored.swap(true, Ordering::Relaxed) {
            let host = authority(resp.url());
            let action = if full {
                "downloading the whole blob once into the content store"
            } else {
                "failing the reads (range policy: fail)"
            };
            tracing::warn!(blob = %self.digest, %host, %url, "the registry ignores HTTP Range requests: {action}");
        }
        let _ = self.ignored_url.set(url);
        self.range_support.store(UNSUPPORTED, Ordering::Release);
        if full {
            self.full.park(resp);
        }
    }

    /// A read of `range` from a server that ignores `Range`: apply the policy.
    async fn on_range_ignored(&self, range: &Range<u64>) -> Result<Bytes, RangeError> {
        let store = match &self.opts.policy {
            RangePolicy::FullFetch(store) => store,
            RangePolicy::Fail => {
                let url = self
                    .ignored_url
                    .get()
                    .cloned()
                    .unwrap_or_else(|| self.what());
                return Err(RegistryError::RangeNotSupported { url }.into());
            }
        };
        let local = self.full_copy(store).await?;
        let mut data = self.read_local(local, std::slice::from_ref(range)).await?;
        data.pop().ok_or_else(|| RangeError::Contract {
            what: self.what(),
            reason: "a local read returned nothing".into(),
        })
    }
}

impl RangeFetcher for HttpRangeFetcher {
    fn fetch<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
        Box::pin(self.fetch_ranges(ranges))
    }

    fn fetch_stream<'a>(
        &'a self,
        range: Range<u64>,
        sink: tokio::sync::mpsc::Sender<Bytes>,
    ) -> BoxFuture<'a, Result<(), RangeError>> {
        Box::pin(self.stream_single(range, sink))
    }

    fn describe(&self) -> String {
        self.what()
    }

    fn stats(&self) -> RangeStats {
        self.stats.snapshot()
    }
}
