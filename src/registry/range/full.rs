//! The fallback for servers that ignore `Range` ([`RangePolicy::FullFetch`]): the blob is
//! downloaded once into the content store, verified against its digest and size on
//! commit, and every read is served from the local file from then on.
//!
//! The `200` response that revealed the server ignores `Range` is parked here and becomes
//! the download; concurrent reads wait for the one task holding the download lock. A
//! failed download is
//! remembered for [`RangeOptions::full_fetch_cooldown`](super::RangeOptions) so that a
//! server sending corrupt bytes costs one download per cooldown, not one per read.
//!
//! [`RangePolicy::FullFetch`]: super::RangePolicy::FullFetch

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode};
use strata_formats::{ErrorKind, FileReadAt, ReadAt as _};
use tokio::task::JoinError;

use super::http::HttpRangeFetcher;
use super::{Counters, RangeError, backoff};
use crate::content::{ContentError, IngestWriter, LocalContentStore};
use crate::registry::RegistryError;

/// How long a download waits for another writer of the same ingest ref (a pull of the
/// same layer, say) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// The local copy of a blob, once there is one.
#[derive(Debug, Default)]
pub(super) struct FullCopy {
    ready: OnceLock<Arc<FileReadAt>>,
    /// A `200` with the whole blob, waiting for the download to stream it.
    parked: Mutex<Option<Response>>,
    failed: Mutex<Option<Failure>>,
    /// Held by the one task downloading.
    download: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Failure {
    at: Instant,
    cause: String,
    kind: ErrorKind,
}

/// Why one download attempt failed: the network (try again) or anything else (stop).
enum Attempt {
    Net(RangeError),
    Fatal(RangeError),
}

/// A `spawn_blocking` task that did not finish: a panic is passed on, a cancellation (the
/// runtime shutting down) is an error.
fn joined<T>(r: Result<T, JoinError>, what: impl FnOnce() -> String) -> Result<T, RangeError> {
    r.map_err(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => RangeError::Cancelled { what: what() },
    })
}

impl FullCopy {
    /// Keeps `resp` (a `200` with the whole blob) for the download, unless one is kept
    /// already or the copy is done (then it is dropped, closing its connection).
    pub(super) fn park(&self, resp: Response) {
        if self.ready.get().is_none() {
            self.parked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(resp);
        }
    }
}

impl HttpRangeFetcher {
    /// The local copy if there is one; the earlier failure if a download failed within the
    /// cooldown; else `None` (ask the server).
    pub(super) fn local_copy(&self) -> Result<Option<Arc<FileReadAt>>, RangeError> {
        if let Some(r) = self.full.ready.get() {
            return Ok(Some(r.clone()));
        }
        self.recent_failure()?;
        Ok(None)
    }

    fn recent_failure(&self) -> Result<(), RangeError> {
        let failed = self
            .full
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*failed {
            Some(f) if f.at.elapsed() < self.opts.full_fetch_cooldown => {
                Err(RangeError::FullFetchFailed {
                    digest: self.digest.clone(),
                    cause: f.cause.clone(),
                    cause_kind: f.kind,
                    ago: f.at.elapsed(),
                    retry_in: self.opts.full_fetch_cooldown.saturating_sub(f.at.elapsed()),
                })
            }
            _ => Ok(()),
        }
    }

    /// The verified local copy: downloaded now (from the parked response, if there is
    /// one) unless another task has it or is getting it.
    pub(super) async fn full_copy(
        &self,
        store: &LocalContentStore,
    ) -> Result<Arc<FileReadAt>, RangeError> {
        let _guard = self.full.download.lock().await;
        if let Some(r) = self.full.ready.get() {
            return Ok(r.clone());
        }
        self.recent_failure()?;
        let resp = self
            .full
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Counters::add(&self.stats.full_fetches, 1);
        match self.download(store, resp).await {
            Ok(r) => {
                let r = Arc::new(r);
                let _ = self.full.ready.set(r.clone());
                Ok(r)
            }
            Err(e) => {
                tracing::warn!(blob = %self.digest, error = %e, "full download of the blob failed");
                *self
                    .full
                    .failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Failure {
                    at: Instant::now(),
                    cause: e.to_string(),
                    kind: e.kind(),
                });
                Err(e)
            }
        }
    }

    /// Downloads the blob into `store`, retrying broken transfers from the start (the
    /// server cannot resume: it ignores `Range`).
    async fn download(
        &self,
        store: &LocalContentStore,
        mut resp: Option<Response>,
    ) -> Result<FileReadAt, RangeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let _permits = self.permits().await;
                let resp = match resp.take() {
                    Some(r) => r,
                    None => {
                        Counters::add(&self.stats.requests, 1);
                        self.client
                            .fetch_blob(&self.reference, &self.digest, None)
                            .await
                            .map_err(|e| Attempt::Fatal(e.into()))?
                    }
                };
                self.ingest(store, resp).await
            }
            .await;
            match result {
                Ok(r) => return Ok(r),
                Err(Attempt::Net(e)) if attempt < self.opts.max_attempts.max(1) => {
                    Counters::add(&self.stats.retries, 1);
                    tracing::debug!(blob = %self.digest, attempt, error = %e, "full download broke; starting over");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(Attempt::Net(e) | Attempt::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Streams `resp` (the whole blob) into an ingest and commits it with the expected
    /// digest and size, so only verified bytes land in the store.
    async fn ingest(
        &self,
        store: &LocalContentStore,
        mut resp: Response,
    ) -> Result<FileReadAt, Attempt> {
        let url = resp.url().clone();
        let fatal = |e: RangeError| Attempt::Fatal(e);
        let invalid =
            |reason: String| Attempt::Fatal(RegistryError::invalid_response(&url, reason).into());
        if resp.status() != StatusCode::OK {
            return Err(invalid(format!(
                "status {} for a whole-blob GET",
                resp.status().as_u16()
            )));
        }
        if let Some(len) = resp.content_length().filter(|&l| l != self.size) {
            return Err(invalid(format!(
                "Content-Length {len}, but blob {} is {} bytes",
                self.digest, self.size
            )));
        }
        let store_err = |source: ContentError| RangeError::Store {
            digest: self.digest.clone(),
            source,
        };
        let reference = format!("layer-{}", self.digest);
        let (s, r, d, size) = (
            store.clone(),
            reference.clone(),
            self.digest.clone(),
            self.size,
        );
        let opened = tokio::task::spawn_blocking(move || -> Result<IngestWriter, ContentError> {
            let mut w = s.writer_wait(&r, Some(size), Some(&d), LOCK_WAIT)?;
            // Left over from an earlier attempt: this server cannot resume, start over.
            if w.status().offset > 0 {
                w.truncate(0)?;
            }
            Ok(w)
        })
        .await;
        let mut writer = match joined(opened, || self.what()).map_err(fatal)? {
            Ok(w) => w,
            // Committed meanwhile (by a pull, or another fetcher of the same blob).
            Err(ContentError::AlreadyExists(_)) => return self.open_local(store).map_err(fatal),
            Err(e) => return Err(fatal(store_err(e))),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let sink = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = writer.write_chunk(&chunk) {
                    return (writer, Some(e));
                }
            }
            (writer, None)
        });
        let mut net = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    Counters::add(&self.stats.bytes, chunk.len() as u64);
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    net = Some(RangeError::from(RegistryError::transport(
                        &Method::GET,
                        &url,
                        e,
                    )));
                    break;
                }
            }
        }
        drop(tx);
        let (writer, write_error) = joined(sink.await, || self.what()).map_err(fatal)?;
        if let Some(e) = write_error {
            self.abort_ingest(store, &reference).await;
            return Err(fatal(store_err(e)));
        }
        if let Some(e) = net {
            // The ingest stays for the next attempt, which truncates it.
            return Err(Attempt::Net(e));
        }
        let d = self.digest.clone();
        let committed = joined(
            tokio::task::spawn_blocking(move || {
                writer.commit(Some(size), Some(&d), BTreeMap::new())
            })
            .await,
            || self.what(),
        )
        .map_err(fatal)?;
        match committed {
            Ok(_) | Err(ContentError::AlreadyExists(_)) => self.open_local(store).map_err(fatal),
            Err(ContentError::DigestMismatch {
                expected, actual, ..
            }) => {
                // Nothing unverified stays behind, not even in the ingest directory.
                self.abort_ingest(store, &reference).await;
                let what = format!(
                    "{} downloaded whole from {}",
                    self.what(),
                    crate::registry::error::redact(&url)
                );
                Err(fatal(
                    RegistryError::DigestMismatch {
                        what,
                        expected,
                        actual,
                    }
                    .into(),
                ))
            }
            Err(ContentError::SizeMismatch {
                expected, actual, ..
            }) => {
                // A body that ended early without the transport noticing (no length sent).
                self.abort_ingest(store, &reference).await;
                Err(Attempt::Net(
                    RegistryError::invalid_response(
                        &url,
                        format!("the body ended after {actual} of {expected} bytes"),
                    )
                    .into(),
                ))
            }
            Err(e) => {
                self.abort_ingest(store, &reference).await;
                Err(fatal(store_err(e)))
            }
        }
    }

    async fn abort_ingest(&self, store: &LocalContentStore, reference: &str) {
        let (s, r) = (store.clone(), reference.to_owned());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.abort(&r)).await
            && !matches!(e, ContentError::IngestNotFound(_))
        {
            tracing::warn!(blob = %self.digest, error = %e, "could not remove the failed ingest");
        }
    }

    fn open_local(&self, store: &LocalContentStore) -> Result<FileReadAt, RangeError> {
        let r = store
            .reader_at(&self.digest)
            .map_err(|source| RangeError::Store {
                digest: self.digest.clone(),
                source,
            })?;
        if r.size() != self.size {
            let reason = format!(
                "the stored copy is {} bytes, expected {}",
                r.size(),
                self.size
            );
            return Err(RangeError::Store {
                digest: self.digest.clone(),
                source: ContentError::InvalidArgument(format!("content {}: {reason}", self.digest)),
            });
        }
        Ok(r)
    }

    /// The bytes of `spans` from the local copy (on a blocking thread: file reads).
    pub(super) async fn read_local(
        &self,
        local: Arc<FileReadAt>,
        spans: &[Range<u64>],
    ) -> Result<Vec<Bytes>, RangeError> {
        let spans = spans.to_vec();
        let digest = self.digest.clone();
        let read = tokio::task::spawn_blocking(move || {
            spans
                .iter()
                .map(|s| {
                    local
                        .read_range(s.start, s.end - s.start)
                        .map(Bytes::from)
                        .map_err(|e| RangeError::Store {
                            digest: digest.clone(),
                            source: ContentError::io(
                                format!(
                                    "read bytes {}..{} of the local copy of blob {digest}",
                                    s.start, s.end
                                ),
                                e,
                            ),
                        })
                })
                .collect::<Result<Vec<Bytes>, RangeError>>()
        })
        .await;
        joined(read, || self.what())?
    }
}
