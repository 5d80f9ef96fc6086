//! [`WindowFetcher`]: a range fetcher with *windows* — byte ranges of the blob fetched in
//! one request each (a layer's TOC, its prefetch range, a run of neighbouring chunks) —
//! in front of the registry fetcher. A read inside a window waits for that window's one
//! request instead of sending its own; everything else goes to the registry. A window
//! whose request failed is bypassed (its reads are fetched on their own, with the
//! registry fetcher's retries).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::runtime::Handle;

use crate::registry::range::{RangeError, RangeFetcher, RangeStats};

/// A window's bytes, shared by every read waiting for them; the error is a message.
type WindowBytes = Shared<BoxFuture<'static, Result<Bytes, Arc<str>>>>;

#[derive(Debug)]
struct Window {
    id: u64,
    range: Range<u64>,
    bytes: WindowBytes,
}

/// Windows over a blob, in front of `inner`.
#[derive(Debug)]
pub struct WindowFetcher {
    inner: Arc<dyn RangeFetcher>,
    runtime: Handle,
    windows: Mutex<Vec<Window>>,
    next_id: AtomicU64,
}

impl WindowFetcher {
    /// `inner` with no windows; window requests run on `runtime`.
    pub fn new(inner: Arc<dyn RangeFetcher>, runtime: Handle) -> Self {
        Self { inner, runtime, windows: Mutex::default(), next_id: AtomicU64::new(1) }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds bytes already at hand (e.g. a saved TOC) as a window; returns its id.
    pub fn add_ready(&self, range: Range<u64>, bytes: Bytes) -> u64 {
        debug_assert_eq!(range.end - range.start, bytes.len() as u64);
        let ready: BoxFuture<'static, Result<Bytes, Arc<str>>> = futures_util::future::ready(Ok(bytes)).boxed();
        self.insert(range, ready.shared())
    }

    /// Starts fetching `range` in one request now; reads inside it wait for it. Returns
    /// the window's id, for [`Self::close`].
    pub fn open(&self, range: Range<u64>) -> u64 {
        let inner = Arc::clone(&self.inner);
        let wanted = range.clone();
        let fetch: BoxFuture<'static, Result<Bytes, Arc<str>>> = async move {
            let mut got = inner.fetch(std::slice::from_ref(&wanted)).await.map_err(|e| Arc::<str>::from(e.to_string()))?;
            got.pop().ok_or_else(|| Arc::<str>::from("no bytes"))
        }
        .boxed();
        let shared = fetch.shared();
        // Poll it to completion whether or not a reader waits yet.
        self.runtime.spawn(shared.clone());
        self.insert(range, shared)
    }

    fn insert(&self, range: Range<u64>, bytes: WindowBytes) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.windows().push(Window { id, range, bytes });
        id
    }

    /// Drops window `id` (its bytes are freed once no read uses them).
    pub fn close(&self, id: u64) {
        self.windows().retain(|w| w.id != id);
    }

    /// Waits for window `id`'s request; `false` when it failed or is unknown.
    pub async fn wait(&self, id: u64) -> bool {
        let bytes = self.windows().iter().find(|w| w.id == id).map(|w| w.bytes.clone());
        match bytes {
            Some(b) => b.await.is_ok(),
            None => false,
        }
    }

    fn covering(&self, range: &Range<u64>) -> Option<(u64, WindowBytes)> {
        self.windows()
            .iter()
            .find(|w| w.range.start <= range.start && range.end <= w.range.end)
            .map(|w| (w.range.start, w.bytes.clone()))
    }
}

impl RangeFetcher for WindowFetcher {
    fn fetch<'a>(&'a self, ranges: &'a [Range<u64>]) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
        Box::pin(async move {
            let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
            for (i, range) in ranges.iter().enumerate() {
                if let Some((start, bytes)) = self.covering(range)
                    && let Ok(b) = bytes.await
                {
                    out[i] = Some(b.slice((range.start - start) as usize..(range.end - start) as usize));
                }
            }
            let missing: Vec<Range<u64>> = ranges.iter().zip(&out).filter(|(_, o)| o.is_none()).map(|(r, _)| r.clone()).collect();
            let mut fetched = if missing.is_empty() { Vec::new() } else { self.inner.fetch(&missing).await? }.into_iter();
            out.into_iter()
                .map(|o| match o {
                    Some(b) => Ok(b),
                    None => fetched.next().ok_or_else(|| RangeError::Contract {
                        what: self.inner.describe(),
                        reason: "fewer ranges answered than asked".into(),
                    }),
                })
                .collect()
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn stats(&self) -> RangeStats {
        self.inner.stats()
    }
}
