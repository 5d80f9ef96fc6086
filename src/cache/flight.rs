//! [`ChunkFlights`]: one piece of work per chunk at a time. Whoever asks for a chunk that
//! another thread is already fetching or decompressing waits for that thread's outcome
//! instead of doing the work (and holding the chunk's memory) a second time.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use strata_formats::Digest;

/// The outcome of one flight, shared by every thread that waited for it.
type Outcome<T> = Result<T, (io::ErrorKind, String)>;

struct Flight<T> {
    outcome: Mutex<Option<Outcome<T>>>,
    done: Condvar,
}

/// Chunks being worked on, by digest; the work's result is a `T` (the chunk's bytes, or
/// `()` for work that stores the chunk).
pub struct ChunkFlights<T = Arc<[u8]>> {
    flights: Mutex<HashMap<Digest, Arc<Flight<T>>>>,
}

impl<T> Default for ChunkFlights<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::default(),
        }
    }
}

impl<T> std::fmt::Debug for ChunkFlights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("ChunkFlights")
            .field("in_flight", &n)
            .finish()
    }
}

impl<T: Clone> ChunkFlights<T> {
    /// Runs `work` for chunk `digest`, unless another thread is running work for it: then
    /// waits for that outcome and returns it (an error keeps its kind and message).
    pub fn run(&self, digest: &Digest, work: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let (flight, leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(digest) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight {
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    flights.insert(digest.clone(), Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if leader {
            // Removed however `work` ends (a panic included), so no one waits forever.
            struct Land<'a, T>(
                &'a ChunkFlights<T>,
                &'a Digest,
                &'a Flight<T>,
                Option<Outcome<T>>,
            );
            impl<T> Drop for Land<'_, T> {
                fn drop(&mut self) {
                    let outcome = self.3.take().unwrap_or_else(|| {
                        Err((io::ErrorKind::Other, "the chunk's work panicked".into()))
                    });
                    *self
                        .2
                        .outcome
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                    self.2.done.notify_all();
                    self.0
                        .flights
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(self.1);
                }
            }
            let mut land = Land(self, digest, &flight, None);
            let result = work();
            land.3 = Some(match &result {
                Ok(value) => Ok(value.clone()),
                Err(e) => Err((e.kind(), e.to_string())),
            });
            return result;
        }
        let mut slot = flight
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = &*slot {
                return outcome
                    .clone()
                    .map_err(|(kind, msg)| io::Error::new(kind, msg));
            }
            slot = flight
                .done
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn concurrent_runs_share_one_outcome() {
        let flights: ChunkFlights = ChunkFlights::default();
        let digest = Digest::of(b"x");
        let runs = AtomicUsize::new(0);
        let results: Vec<Arc<[u8]>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        flights
                            .run(&digest, || {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(100));
                                Ok(Arc::from(&b"x"[..]))
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(
            results.iter().all(|r| Arc::ptr_eq(r, &results[0])),
            "one buffer, shared"
        );
        // Landed: the next run works again.
        flights.run(&digest, || Ok(Arc::from(&b"x"[..]))).unwrap();
        assert_eq!(format!("{flights:?}"), "ChunkFlights { in_flight: 0 }");
    }

    #[test]
    fn an_error_reaches_every_waiter_and_is_not_kept() {
        let flights: ChunkFlights = ChunkFlights::default();
        let digest = Digest::of(b"y");
        let errors: Vec<io::Error> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        flights
                            .run(&digest, || {
                                std::thread::sleep(Duration::from_millis(100));
                                Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "digest mismatch",
                                ))
                            })
                            .unwrap_err()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            errors
                .iter()
                .all(|e| e.kind() == io::ErrorKind::InvalidData
                    && e.to_string() == "digest mismatch")
        );
        assert_eq!(
            &*flights.run(&digest, || Ok(Arc::from(&b"y"[..]))).unwrap(),
            b"y"
        );
    }
}
