//! [`RangeReader`]: a synchronous [`ReadAt`] over a [`RangeFetcher`], for callers on plain
//! threads (FUSE request threads), with concurrent reads of the same bytes coalesced.
//!
//! **Coalescing.** Each read that goes to the network is a *flight*: its span, and a slot
//! its result is published in. A read whose bytes lie within a flight still in progress
//! waits for that flight and copies its bytes out, instead of asking again: eight threads
//! reading the same 64 KiB at once cost one request. The key is containment rather than
//! equality, so a read of part of a span being fetched joins it too. A flight is
//! forgotten once it completes: this is not a cache (that is the chunk cache's job, one
//! layer up, where the bytes are also verified).
//!
//! **Alignment.** [`ReaderOptions::block_size`] widens each read to whole blocks, so reads
//! of neighbouring bytes share a flight more often, at the price of fetching up to almost
//! two blocks more than asked. It is off by default: the readers above ask for exact
//! eStargz chunk spans from the TOC, which are already the unit concurrent readers share.
//!
//! **Threads.** The fetch runs as a task on the runtime handed in; the calling thread
//! blocks until its flight completes. The task publishes even if it is dropped unrun
//! (runtime shutting down), so a waiting thread never hangs.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use strata_formats::ReadAt;
use tokio::runtime::Handle;

use super::{RangeError, RangeFetcher, RangeStats};

/// How a [`RangeReader`] shapes its requests.
#[derive(Debug, Clone, Default)]
pub struct ReaderOptions {
    /// Widen reads to multiples of this many bytes (aligned), e.g. 64 KiB; `None` (or 0):
    /// fetch exactly what is read (see the module documentation for the trade-off).
    pub block_size: Option<u64>,
}

/// The result of a flight, shared by every reader waiting for it.
type Outcome = Result<Bytes, Arc<RangeError>>;

/// One fetch in progress.
#[derive(Debug)]
struct Flight {
    span: Range<u64>,
    result: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Flight {
    fn wait(&self) -> Outcome {
        let mut slot = lock(&self.result);
        loop {
            if let Some(r) = &*slot {
                return r.clone();
            }
            slot = self.done.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step; a panic elsewhere must
    // not turn every later read into a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Flights = Arc<Mutex<Vec<Arc<Flight>>>>;

/// Unregisters a flight and publishes its result when dropped: after the fetch, or
/// unrun if the runtime drops the task.
struct Publisher {
    flight: Arc<Flight>,
    flights: Flights,
    what: String,
    result: Option<Outcome>,
}

impl Publisher {
    fn finish(mut self, result: Outcome) {
        self.result = Some(result);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        lock(&self.flights).retain(|f| !Arc::ptr_eq(f, &self.flight));
        let result = self.result.take().unwrap_or_else(|| {
            Err(Arc::new(RangeError::Cancelled {
                what: self.what.clone(),
            }))
        });
        *lock(&self.flight.result) = Some(result);
        self.flight.done.notify_all();
    }
}

/// Random access to a blob through a [`RangeFetcher`], as a synchronous [`ReadAt`].
///
/// [`read_at`](ReadAt::read_at) blocks the calling thread until the bytes are there. It
/// is meant for threads outside the runtime (FUSE threads, `spawn_blocking`). It must not
/// be called from async code running on the runtime: it would block a worker thread, and
/// on a current-thread runtime it can never finish.
#[derive(Debug)]
pub struct RangeReader {
    fetcher: Arc<dyn RangeFetcher>,
    size: u64,
    runtime: Handle,
    block_size: Option<u64>,
    what: String,
    flights: Flights,
    coalesced: AtomicU64,
}

impl RangeReader {
    /// A reader of the blob `fetcher` fetches, `size` bytes long, running fetches on
    /// `runtime`.
    pub fn new(
        fetcher: Arc<dyn RangeFetcher>,
        size: u64,
        runtime: Handle,
        opts: ReaderOptions,
    ) -> Self {
        Self {
            what: fetcher.describe(),
            fetcher,
            size,
            runtime,
            block_size: opts.block_size.filter(|&b| b > 0),
            flights: Flights::default(),
            coalesced: AtomicU64::new(0),
        }
    }

    /// The fetcher's counters, plus the reads this reader coalesced.
    pub fn stats(&self) -> RangeStats {
        RangeStats {
            coalesced_reads: self.coalesced.load(Ordering::Relaxed),
            ..self.fetcher.stats()
        }
    }

    /// The bytes of several ranges at once, through the fetcher's batch path (one
    /// multi-range request where the server allows). Ranges are clipped to the blob, as
    /// reads are: a range past the end gives fewer bytes, or none. Blocks like
    /// [`read_at`](ReadAt::read_at); does not join or start flights (it is meant for
    /// prefetching, not for reads racing each other).
    pub fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Bytes>> {
        let clipped: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| {
                let start = r.start.min(self.size);
                start..r.end.clamp(start, self.size)
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fetcher = self.fetcher.clone();
        let asked = clipped.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(fetcher.fetch(&asked).await);
        });
        let cancelled = || {
            Arc::new(RangeError::Cancelled {
                what: self.what.clone(),
            })
            .into_io()
        };
        let data = rx
            .recv()
            .map_err(|_| cancelled())?
            .map_err(|e| Arc::new(e).into_io())?;
        let fits = data.len() == clipped.len()
            && data
                .iter()
                .zip(&clipped)
                .all(|(b, r)| b.len() as u64 == r.end - r.start);
        if !fits {
            return Err(self.contract("the bytes returned do not match the ranges asked for"));
        }
        Ok(data)
    }

    fn contract(&self, reason: &str) -> io::Error {
        Arc::new(RangeError::Contract {
            what: self.what.clone(),
            reason: reason.to_owned(),
        })
        .into_io()
    }

    /// What to fetch for a read of `want`: itself, or the aligned blocks around it.
    fn span(&self, want: &Range<u64>) -> Range<u64> {
        match self.block_size {
            Some(b) => want.start / b * b..want.end.div_ceil(b).saturating_mul(b).min(self.size),
            None => want.clone(),
        }
    }

    /// The flight that will deliver `want`: one in progress that covers it, or a new one.
    fn flight_for(&self, want: &Range<u64>) -> Arc<Flight> {
        let mut flights = lock(&self.flights);
        if let Some(f) = flights
            .iter()
            .find(|f| f.span.start <= want.start && want.end <= f.span.end)
        {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return f.clone();
        }
        let flight = Arc::new(Flight {
            span: self.span(want),
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        flights.push(flight.clone());
        drop(flights);
        let publisher = Publisher {
            flight: flight.clone(),
            flights: self.flights.clone(),
            what: self.what.clone(),
            result: None,
        };
        let fetcher = self.fetcher.clone();
        self.runtime.spawn(async move {
            let span = publisher.flight.span.clone();
            let len = span.end - span.start;
            let result = match fetcher.fetch(std::slice::from_ref(&span)).await {
                Ok(mut v) if v.len() == 1 && v[0].len() as u64 == len => Ok(v.remove(0)),
                Ok(_) => Err(Arc::new(RangeError::Contract {
                    what: publisher.what.clone(),
                    reason: format!(
                        "asked for bytes {}..{}, got a different length",
                        span.start, span.end
                    ),
                })),
                Err(e) => Err(Arc::new(e)),
            };
            publisher.finish(result);
        });
        flight
    }
}

impl ReadAt for RangeReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.is_empty() || offset >= self.size {
            return Ok(0);
        }
        let want = offset..offset.saturating_add(buf.len() as u64).min(self.size);
        let flight = self.flight_for(&want);
        let bytes = flight.wait().map_err(RangeError::into_io)?;
        let from = (want.start - flight.span.start) as usize;
        let n = (want.end - want.start) as usize;
        let Some(src) = bytes.get(from..from + n) else {
            return Err(self.contract("a flight delivered fewer bytes than its span"));
        };
        buf[..n].copy_from_slice(src);
        Ok(n)
    }
}
