//! Random access to a registry blob by HTTP range requests: the layer lazy loading stands
//! on (`registry ──HTTP range──▶ RangeFetcher ──▶ ChunkCache ──▶ BlobReader`).
//!
//! - [`RangeFetcher`]: the seam: "the bytes of these ranges of one blob", async and
//!   object-safe so the chunk cache and readers hold an `Arc<dyn RangeFetcher>`.
//! - [`HttpRangeFetcher`]: the implementation over a [`RegistryClient`]. Several ranges go
//!   out in one request (`Range: bytes=a-b,c-d`, answered as `multipart/byteranges`) until
//!   the server shows it cannot do that, then one request per range, concurrently. Every
//!   answer is checked against what was asked; bodies that break mid-way are resumed.
//!   Concurrency is bounded per fetcher and per host. A server that ignores `Range`
//!   altogether is handled by [`RangePolicy`]: fail, or download the blob once into the
//!   content store and serve every read from there.
//! - [`RangeReader`]: a synchronous [`ReadAt`] over any fetcher, for FUSE threads, which
//!   coalesces concurrent reads of the same bytes into one request.
//!
//! **What is verified.** A range of a blob cannot be checked against the blob's digest:
//! only the whole blob can. Bytes returned by range requests are therefore only checked
//! for shape (status, `Content-Range`, length); their content is verified one layer up,
//! where eStargz chunk digests (`chunkDigest` in the TOC) are checked before a chunk is
//! used. The full-fetch fallback *is* verified: the blob is ingested with its expected
//! digest and size, and nothing is served from it unless the content store accepted it.
//!
//! **Retries.** [`RegistryClient`] already retries a request that fails before its
//! response headers arrive (connection failures, 408/429/5xx). This module retries what
//! happens after: a body that breaks, stalls past the client's read timeout, or ends
//! short is re-requested for the missing bytes only, with exponential backoff and jitter.
//!
//! [`RegistryClient`]: super::RegistryClient
//! [`ReadAt`]: strata_formats::ReadAt

mod full;
mod http;
mod multipart;
mod options;
mod reader;

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use strata_formats::{Digest, ErrorKind};

use super::RegistryError;
use crate::content::ContentError;

pub use http::HttpRangeFetcher;
pub use options::{RangeHosts, RangeOptions, RangePolicy};
pub use reader::{RangeReader, ReaderOptions};

/// The bytes of byte ranges of one blob: the seam between lazy readers and the network.
///
/// Implementations are shared (`Arc<dyn RangeFetcher>`) and called concurrently.
pub trait RangeFetcher: Send + Sync + std::fmt::Debug {
    /// Returns the bytes of each of `ranges` (end exclusive), in the order asked, each
    /// exactly as long as its range. An empty range gives empty bytes. A range past the
    /// blob's end is [`RangeError::OutOfBounds`].
    fn fetch<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>>;

    /// Sends the bytes of `range` to `sink` in order, as they arrive: `range.end -
    /// range.start` bytes in all when it returns `Ok`, with no seam where a broken body was
    /// resumed. Stops early (with `Ok`) once the receiver is gone. For readers that use the
    /// first bytes of a long range before the last have come (a chunk decoded while the
    /// rest of its request is on the wire). The default fetches the range whole and sends
    /// it at once.
    fn fetch_stream<'a>(
        &'a self,
        range: Range<u64>,
        sink: tokio::sync::mpsc::Sender<Bytes>,
    ) -> BoxFuture<'a, Result<(), RangeError>> {
        Box::pin(async move {
            let mut got = self.fetch(std::slice::from_ref(&range)).await?;
            if let Some(bytes) = got.pop() {
                let _ = sink.send(bytes).await;
            }
            Ok(())
        })
    }

    /// What is fetched, for messages: `blob sha256:… of registry/repository`.
    fn describe(&self) -> String {
        "blob".to_owned()
    }

    /// What the fetcher has done so far.
    fn stats(&self) -> RangeStats {
        RangeStats::default()
    }
}

/// Counters of a fetcher (and, from [`RangeReader::stats`], of its reader).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// HTTP requests for blob bytes sent by this module (the client's own retries of a
    /// request that failed before its headers are not counted separately).
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Requests repeated because a body broke, stalled or ended short.
    pub retries: u64,
    /// Requests that asked for several ranges at once.
    pub multi_range_requests: u64,
    /// Reads served by joining another read already in flight instead of a request.
    pub coalesced_reads: u64,
    /// Whole-blob downloads into the content store (server ignoring `Range`).
    pub full_fetches: u64,
}

/// Live counters behind [`RangeStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    multi_range_requests: AtomicU64,
    coalesced_reads: AtomicU64,
    full_fetches: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        // Counters are statistics: no ordering with other memory is needed.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RangeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RangeStats {
            requests: get(&self.requests),
            bytes: get(&self.bytes),
            retries: get(&self.retries),
            multi_range_requests: get(&self.multi_range_requests),
            coalesced_reads: get(&self.coalesced_reads),
            full_fetches: get(&self.full_fetches),
        }
    }
}

/// Why a range fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// The registry request failed, or its answer did not match the request. Includes
    /// [`RegistryError::RangeNotSupported`] (server ignores `Range`, policy `Fail`) and
    /// [`RegistryError::DigestMismatch`] (a full download did not hash to the blob's digest).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Storing the whole blob in the content store failed (full-fetch fallback).
    #[error("blob {digest}: storing the full download in the content store: {source}")]
    Store {
        /// The blob.
        digest: Digest,
        /// The content store's error.
        #[source]
        source: ContentError,
    },
    /// A full download of the blob failed recently; it is not tried again until the
    /// cooldown ([`RangeOptions::full_fetch_cooldown`]) has passed, so that a corrupt or
    /// failing server does not cost one whole-blob download per read.
    #[error(
        "blob {digest}: the full download failed {ago:.1?} ago ({cause}); next try in {retry_in:.1?}"
    )]
    FullFetchFailed {
        /// The blob.
        digest: Digest,
        /// The earlier failure's message.
        cause: String,
        /// The earlier failure's category.
        cause_kind: ErrorKind,
        /// How long ago it failed.
        ago: Duration,
        /// How long until a new download may be tried.
        retry_in: Duration,
    },
    /// A requested range lies (partly) past the blob's end, or ends before it starts.
    #[error("{what}: byte range {start}..{end} is not within the blob's {size} bytes")]
    OutOfBounds {
        /// The blob (`blob sha256:… of registry/repository`).
        what: String,
        /// The range's start.
        start: u64,
        /// The range's end (exclusive).
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// A fetcher returned a different number of ranges, or bytes, than asked for.
    #[error("{what}: the fetcher broke its contract: {reason}")]
    Contract {
        /// The blob.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// The read could not finish: the tokio runtime it ran on shut down.
    #[error("{what}: the read was cancelled (the tokio runtime shut down)")]
    Cancelled {
        /// The blob.
        what: String,
    },
}

impl RangeError {
    /// The error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry(e) => e.kind(),
            Self::Store { source, .. } => source.kind(),
            Self::FullFetchFailed { cause_kind, .. } => *cause_kind,
            Self::OutOfBounds { .. } => ErrorKind::InvalidArgument,
            Self::Contract { .. } => ErrorKind::Internal,
            Self::Cancelled { .. } => ErrorKind::Unavailable,
        }
    }

    /// Whether trying again later could help (the server or network was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable)
    }

    /// The `RangeError` inside an `io::Error` returned by [`RangeReader`], if it is one.
    pub fn from_io(e: &io::Error) -> Option<&RangeError> {
        e.get_ref()?.downcast_ref::<Arc<RangeError>>().map(|a| &**a)
    }

    /// The `io::Error` a [`ReadAt`](strata_formats::ReadAt) returns for this error; the
    /// original stays reachable through [`RangeError::from_io`].
    pub fn into_io(self: Arc<Self>) -> io::Error {
        let kind = match self.kind() {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            ErrorKind::DataCorrupt => io::ErrorKind::InvalidData,
            ErrorKind::NotImplemented => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Sorts `ranges`, drops empty ones and merges those that overlap, touch, or lie at most
/// `gap` bytes apart: the disjoint spans that cover them. Disjoint spans matter beyond
/// saving bytes: Go's `http.ServeContent` (and so distribution) answers a multi-range
/// request whose ranges add up to more than the blob with the whole blob.
pub(crate) fn merge_ranges(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The bytes of each of `ranges` cut from `spans` (sorted, disjoint, covering every
/// non-empty range) and their bytes `data`.
pub(crate) fn slice_spans(
    ranges: &[Range<u64>],
    spans: &[Range<u64>],
    data: &[Bytes],
) -> Vec<Bytes> {
    ranges
        .iter()
        .map(|r| {
            if r.start >= r.end {
                return Bytes::new();
            }
            // The last span starting at or before r.start is the one containing r.
            let i = spans.partition_point(|s| s.start <= r.start) - 1;
            let s = &spans[i];
            data[i].slice((r.start - s.start) as usize..(r.end - s.start) as usize)
        })
        .collect()
}

/// Parses a `multipart/byteranges` answer (for the fuzz targets): the parts' ranges and
/// sizes, and whether it was complete; `None` when the Content-Type is not multipart.
pub(crate) fn parse_byteranges(
    content_type: &str,
    body: &[u8],
) -> Option<Result<(crate::fuzzing::PartSpans, bool), String>> {
    let boundary = multipart::boundary(content_type)?;
    let body = Bytes::copy_from_slice(body);
    Some(multipart::parse(&body, &boundary).map(|p| {
        let parts = p
            .parts
            .into_iter()
            .map(|part| (part.range, part.data.len()))
            .collect();
        (parts, p.complete)
    }))
}

/// The wait before attempt `attempt + 1`: 100 ms doubling, capped at 2 s, ±50 % jitter so
/// that readers failing together do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    base.min(Duration::from_secs(2))
        .mul_f64(rand::random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_into_disjoint_spans() {
        let r = |v: &[(u64, u64)]| v.iter().map(|&(a, b)| a..b).collect::<Vec<_>>();
        assert_eq!(
            merge_ranges(&r(&[(10, 20), (0, 5), (15, 30), (30, 31), (5, 5)]), 0),
            r(&[(0, 5), (10, 31)])
        );
        assert_eq!(merge_ranges(&r(&[(0, 5), (8, 9)]), 3), r(&[(0, 9)]));
        assert_eq!(
            merge_ranges(&r(&[(0, 5), (9, 10)]), 3),
            r(&[(0, 5), (9, 10)])
        );
        assert!(merge_ranges(&r(&[(3, 3)]), 0).is_empty());

        let asked = r(&[(12, 14), (0, 2), (3, 3), (10, 20), (1, 5)]);
        let spans = merge_ranges(&asked, 0);
        let blob: Vec<u8> = (0..32).collect();
        let data: Vec<Bytes> = spans
            .iter()
            .map(|s| Bytes::copy_from_slice(&blob[s.start as usize..s.end as usize]))
            .collect();
        let got = slice_spans(&asked, &spans, &data);
        for (r, b) in asked.iter().zip(&got) {
            let want: &[u8] = if r.start < r.end {
                &blob[r.start as usize..r.end as usize]
            } else {
                &[]
            };
            assert_eq!(&b[..], want, "{r:?}");
        }
    }

    #[test]
    fn errors_keep_their_kind_through_io() {
        let e = Arc::new(RangeError::OutOfBounds {
            what: "blob x".into(),
            start: 5,
            end: 9,
            size: 6,
        });
        let io = e.into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            io.to_string(),
            "blob x: byte range 5..9 is not within the blob's 6 bytes"
        );
        assert!(matches!(
            RangeError::from_io(&io),
            Some(RangeError::OutOfBounds { size: 6, .. })
        ));
        for attempt in 1..8 {
            assert!(backoff(attempt) <= Duration::from_secs(3));
        }
    }
}
