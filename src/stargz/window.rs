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
        Self {
            inner,
            runtime,
            windows: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds bytes already at hand (e.g. a saved TOC) as a window; returns its id.
    pub fn add_ready(&self, range: Range<u64>, bytes: Bytes) -> u64 {
        debug_assert_eq!(range.end - range.start, bytes.len() as u64);
        let ready: BoxFuture<'static, Result<Bytes, Arc<str>>> =
            futures_util::future::ready(Ok(bytes)).boxed();
        self.insert(range, ready.shared())
    }

    /// Starts fetching `range` in one request now; reads inside it wait for it. Returns
    /// the window's id, for [`Self::close`].
    pub fn open(&self, range: Range<u64>) -> u64 {
        let inner = Arc::clone(&self.inner);
        let wanted = range.clone();
        let fetch: BoxFuture<'static, Result<Bytes, Arc<str>>> = async move {
            let mut got = inner
                .fetch(std::slice::from_ref(&wanted))
                .await
                .map_err(|e| Arc::<str>::from(crate::error_chain::chain(&e)))?;
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
        let bytes = self
            .windows()
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.bytes.clone());
        match bytes {
            Some(b) => b.await.is_ok(),
            None => false,
        }
    }

    /// The windows that together cover `range`, in order (a read may straddle two
    /// neighbouring windows), or `None` when some byte of it is in none.
    fn covering(&self, range: &Range<u64>) -> Option<Vec<(u64, WindowBytes)>> {
        let windows = self.windows();
        let mut pieces = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let w = windows
                .iter()
                .filter(|w| w.range.start <= pos && pos < w.range.end)
                .max_by_key(|w| w.range.end)?;
            pieces.push((w.range.start, w.bytes.clone()));
            pos = w.range.end;
        }
        Some(pieces)
    }

    /// Bytes `range` from the windows covering it; `None` when one of their requests failed.
    async fn from_windows(range: &Range<u64>, pieces: Vec<(u64, WindowBytes)>) -> Option<Bytes> {
        if let [(start, bytes)] = pieces.as_slice() {
            let b = bytes.clone().await.ok()?;
            let from = usize::try_from(range.start - start).ok()?;
            let to = usize::try_from(range.end - start).ok()?;
            return b.get(from..to).map(|_| b.slice(from..to));
        }
        let mut out =
            bytes::BytesMut::with_capacity(usize::try_from(range.end - range.start).ok()?);
        let mut pos = range.start;
        for (start, bytes) in pieces {
            let b = bytes.await.ok()?;
            let from = usize::try_from(pos - start).ok()?;
            let to = usize::try_from(range.end.min(start + b.len() as u64) - start).ok()?;
            out.extend_from_slice(b.get(from..to)?);
            pos = start + to as u64;
        }
        (pos == range.end).then(|| out.freeze())
    }
}

impl RangeFetcher for WindowFetcher {
    fn fetch<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
        Box::pin(async move {
            let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
            for (i, range) in ranges.iter().enumerate() {
                if let Some(pieces) = self.covering(range) {
                    out[i] = Self::from_windows(range, pieces).await;
                }
            }
            let missing: Vec<Range<u64>> = ranges
                .iter()
                .zip(&out)
                .filter(|(_, o)| o.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            let mut fetched = if missing.is_empty() {
                Vec::new()
            } else {
                self.inner.fetch(&missing).await?
            }
            .into_iter();
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A blob of `0, 1, 2, …` (mod 256) that records the ranges asked of it.
    #[derive(Debug, Default)]
    struct Blob {
        asked: Mutex<Vec<Range<u64>>>,
    }

    impl RangeFetcher for Blob {
        fn fetch<'a>(
            &'a self,
            ranges: &'a [Range<u64>],
        ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
            self.asked.lock().unwrap().extend(ranges.iter().cloned());
            let out = ranges
                .iter()
                .map(|r| {
                    (r.start..r.end)
                        .map(|i| i as u8)
                        .collect::<Vec<u8>>()
                        .into()
                })
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[test]
    fn reads_inside_and_across_windows_wait_for_them_and_the_rest_goes_through() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let blob = Arc::new(Blob::default());
        let windows = WindowFetcher::new(
            Arc::clone(&blob) as Arc<dyn RangeFetcher>,
            runtime.handle().clone(),
        );
        let first = windows.open(0..40);
        windows.open(40..100);
        let expect =
            |r: Range<u64>| Bytes::from((r.start..r.end).map(|i| i as u8).collect::<Vec<u8>>());
        let got = runtime
            .block_on(windows.fetch(&[10..20, 30..70, 90..120]))
            .unwrap();
        assert_eq!(got, vec![expect(10..20), expect(30..70), expect(90..120)]);
        // The two windows' requests, then only what no window covers.
        assert_eq!(*blob.asked.lock().unwrap(), vec![0..40, 40..100, 90..120]);
        windows.close(first);
        let got = runtime
            .block_on(windows.fetch(std::slice::from_ref(&(30..70))))
            .unwrap();
        assert_eq!(got, vec![expect(30..70)]);
        assert_eq!(
            blob.asked.lock().unwrap().last(),
            Some(&(30..70)),
            "a closed window serves no more reads"
        );
    }
}
