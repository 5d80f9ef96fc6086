//! How [`HttpRangeFetcher`]s behave ([`RangeOptions`],
//! [`RangePolicy`]) and what they share per host ([`RangeHosts`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};

use crate::content::LocalContentStore;
#[cfg(doc)]
use crate::registry::{HttpRangeFetcher, RegistryError};

/// What to do when the server ignores `Range` and answers `200` with the whole blob.
#[derive(Debug, Clone, Default)]
pub enum RangePolicy {
    /// Fail the read with [`RegistryError::RangeNotSupported`], naming the blob's URL.
    #[default]
    Fail,
    /// Download the whole blob once into this content store (verified against its
    /// digest and size) and serve this and every later read from the local copy. A
    /// failed download is not retried for [`RangeOptions::full_fetch_cooldown`].
    FullFetch(LocalContentStore),
}

/// How an [`HttpRangeFetcher`] behaves.
#[derive(Debug, Clone)]
pub struct RangeOptions {
    /// Requests of this fetcher in flight at once (at least 1).
    pub max_concurrency: usize,
    /// Ranges asked for in one multi-range request (at least 2). Long `Range` headers
    /// are refused by some servers and proxies; 32 ranges stay under 1 KiB.
    pub max_ranges_per_request: usize,
    /// Ranges at most this many bytes apart are fetched as one span: downloading a small
    /// gap is cheaper than another part or request.
    pub merge_gap: u64,
    /// Attempts for the bytes of one request whose body breaks (at least 1).
    pub max_attempts: u32,
    /// What to do with a server that ignores `Range`.
    pub policy: RangePolicy,
    /// What is shared with other fetchers about each host: clone one `RangeHosts` into
    /// every fetcher's options so they share the per-host limit and knowledge.
    pub hosts: RangeHosts,
    /// How long a failed full download is remembered before another is tried.
    pub full_fetch_cooldown: Duration,
}

impl Default for RangeOptions {
    fn default() -> Self {
        Self {
            max_concurrency: 8,
            max_ranges_per_request: 32,
            merge_gap: 0,
            max_attempts: 4,
            policy: RangePolicy::Fail,
            hosts: RangeHosts::default(),
            full_fetch_cooldown: Duration::from_secs(30),
        }
    }
}

/// Multi-range support as learned: not yet known, seen working, seen failing.
pub(super) const UNKNOWN: u8 = 0;
pub(super) const SUPPORTED: u8 = 1;
pub(super) const UNSUPPORTED: u8 = 2;

/// Per-host state shared by the fetchers that share a [`RangeHosts`]: a request limit,
/// whether the host does multi-range requests, and whether its connection was warmed.
/// Hosts are keyed by registry name (the reference's registry), as requests are limited
/// before the client picks a mirror.
#[derive(Debug, Clone)]
pub struct RangeHosts {
    inner: Arc<HostsInner>,
}

#[derive(Debug)]
struct HostsInner {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
}

#[derive(Debug)]
pub(super) struct HostState {
    pub(super) permits: Semaphore,
    pub(super) multi_range: AtomicU8,
    pub(super) warmed: OnceCell<()>,
}

impl RangeHosts {
    /// Requests in flight per host by default: the client's idle-connection pool per host
    /// (32), so a burst reuses connections instead of opening and dropping extra ones.
    pub const DEFAULT_PER_HOST: usize = 32;

    /// A table allowing `max_requests_per_host` requests in flight per host (at least 1).
    pub fn new(max_requests_per_host: usize) -> Self {
        Self {
            inner: Arc::new(HostsInner {
                per_host: max_requests_per_host.max(1),
                hosts: Mutex::default(),
            }),
        }
    }

    /// Whether `registry` answers multi-range requests: `None` until a fetcher has tried.
    pub fn multi_range(&self, registry: &str) -> Option<bool> {
        let hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match hosts.get(registry)?.multi_range.load(Ordering::Relaxed) {
            SUPPORTED => Some(true),
            UNSUPPORTED => Some(false),
            _ => None,
        }
    }

    /// Records that a request to `registry` has just succeeded (e.g. its manifest was
    /// fetched), so fetchers skip warming the connection and go straight to their ranges.
    pub fn mark_warm(&self, registry: &str) {
        let _ = self.state(registry).warmed.set(());
    }

    pub(super) fn state(&self, registry: &str) -> Arc<HostState> {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        hosts
            .entry(registry.to_owned())
            .or_insert_with(|| {
                Arc::new(HostState {
                    permits: Semaphore::new(self.inner.per_host),
                    multi_range: AtomicU8::new(UNKNOWN),
                    warmed: OnceCell::new(),
                })
            })
            .clone()
    }
}

impl Default for RangeHosts {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PER_HOST)
    }
}
