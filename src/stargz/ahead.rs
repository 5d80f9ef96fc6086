//! Opening an image's layers ahead of their Prepares: at the first Prepare, every eStargz
//! layer's footer and TOC are fetched in parallel and its prioritized files requested at
//! once (from `strata convert`'s prefetch-end hint, before the TOC is in) — for the first
//! layer even before the manifest, from the hints its Prepare's labels carry.

use std::sync::{Arc, PoisonError};

use strata_formats::Digest;
use strata_formats::estargz::{BLOB_SIZE_ANNOTATION, PREFETCH_END_ANNOTATION, TOC_DIGEST_ANNOTATION, TOC_OFFSET_ANNOTATION};
use strata_snapshotters::Labels;

use super::{ImageLayer, LayerTail, OpenedLayer, StargzLayers, WindowFetcher, chunks};
use crate::registry::Reference;
use crate::registry::range::HttpRangeFetcher;

/// A layer whose fetching has started: its footer and TOC, and the prioritized files'
/// windows, on their way.
pub(super) struct Started {
    size: u64,
    fetcher: Arc<HttpRangeFetcher>,
    windows: Arc<WindowFetcher>,
    early: Option<chunks::EarlyWindows>,
    tail: tokio::task::JoinHandle<Result<LayerTail, String>>,
}

/// A layer of an image being pulled, opened ahead of its Prepare.
pub(super) enum Ahead {
    /// Being opened by another Prepare of the image.
    Opening,
    /// Opened (or failed to), waiting for its Prepare.
    Ready(Result<(OpenedLayer, LayerTail), String>),
    /// Taken by its Prepare.
    Taken,
}

impl StargzLayers {
    /// Opens, ahead of their Prepares, every eStargz layer of an image not opened yet:
    /// footers and TOCs fetched in parallel (each checked against the manifest's TOC
    /// digest before it is parsed), and each layer's prioritized files prefetched at
    /// once, so the layers' Prepares and the container's first reads find them in.
    pub(super) fn open_ahead(&self, reference: &Reference, layers: &[ImageLayer]) {
        let todo: Vec<&ImageLayer> = {
            let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
            let todo: Vec<&ImageLayer> = layers.iter().filter(|l| l.toc_digest.is_some() && !ahead.contains_key(&l.digest)).collect();
            for l in &todo {
                ahead.insert(l.digest.clone(), Ahead::Opening);
            }
            todo
        };
        if todo.is_empty() {
            return;
        }
        let mut started: Vec<(&ImageLayer, Started)> = todo
            .into_iter()
            .map(|l| {
                let early = self.started.lock().unwrap_or_else(PoisonError::into_inner).remove(&l.digest);
                let early = early.filter(|s| {
                    if s.size != l.size {
                        tracing::debug!(layer = %l.digest, labels = s.size, manifest = l.size, "stargz: the Prepare's size hint was wrong; fetching afresh");
                        s.tail.abort();
                    }
                    s.size == l.size
                });
                (l, early.unwrap_or_else(|| self.start_fetching(reference, &l.digest, l.size, l.prefetch_end, l.toc_offset)))
            })
            .collect();
        let tails = self.runtime.block_on(futures_util::future::join_all(started.iter_mut().map(|(_, s)| &mut s.tail)));
        let fetched = started.into_iter().zip(tails).map(|((l, s), tail)| {
            let tail = tail.map_err(|e| format!("fetching the footer and TOC: {e}")).and_then(|t| t);
            (l, s.fetcher, s.windows, s.early, tail)
        });
        for (layer, fetcher, windows, early, tail) in fetched {
            let toc = layer.toc_digest.clone().expect("filtered above");
            let opened = tail.and_then(|tail| {
                let opened = self.open_layer(&layer.digest.to_string(), layer.size, &toc, tail.clone(), fetcher, windows, early)?;
                if let Some(chunks) = &opened.chunks
                    && self.options.prefetch
                {
                    chunks.start_prefetch();
                }
                Ok((opened, tail))
            });
            self.ahead.lock().unwrap_or_else(PoisonError::into_inner).insert(layer.digest.clone(), Ahead::Ready(opened));
        }
    }

    /// Starts fetching a layer: its footer and TOC (one request when `toc_offset` is
    /// right) and, with a `prefetch_end` hint, its prioritized files, in requests of
    /// [`FetchOptions::prefetch_request`] bytes — all at once, on the provider's runtime.
    pub(super) fn start_fetching(&self, reference: &Reference, digest: &Digest, size: u64, prefetch_end: Option<u64>, toc_offset: Option<u64>) -> Started {
        let fetcher = self.fetcher(reference, digest, size);
        let windows = self.windows_over(&fetcher);
        // With the image's prefetch-end hint, the prioritized files are requested now,
        // alongside the TOC, instead of one round trip after it.
        let early = match prefetch_end {
            Some(end) if self.options.prefetch && self.cache.is_some() => {
                let step = self.options.fetch.prefetch_request.max(64 << 10);
                // The first windows only (the rest is prefetched after the TOC, a bounded
                // number at a time): the hint must not make us buffer a huge range.
                let end = end.min(step.saturating_mul(chunks::MAX_PREFETCH_WINDOWS as u64));
                let ids = (0..end)
                    .step_by(usize::try_from(step).unwrap_or(usize::MAX))
                    .map(|start| {
                        let window = start..end.min(start + step);
                        (window.end, windows.open(window))
                    })
                    .collect();
                Some((end, ids))
            }
            _ => None,
        };
        let tail = {
            let fetcher = Arc::clone(&fetcher);
            self.runtime.spawn(async move { LayerTail::fetch(fetcher.as_ref(), size, toc_offset).await })
        };
        Started { size, fetcher, windows, early, tail }
    }

    /// At an image's first Prepare, starts fetching that Prepare's layer from its labels
    /// alone while the image's manifest is fetched: containerd passes a layer's
    /// `containerd.io/snapshot/` annotations on as labels, among them `strata convert`'s
    /// size, TOC-offset and prefetch-end hints, so the bottom layer's prioritized files
    /// are on their way a round trip sooner. Nothing is trusted: the manifest must agree
    /// on the size, the TOC is checked against the manifest's TOC digest, every chunk
    /// against the TOC.
    pub(super) fn start_from_labels(&self, reference: &Reference, image_ref: &str, digest: &Digest, labels: &Labels) {
        if self.images.lock().unwrap_or_else(PoisonError::into_inner).contains_key(image_ref)
            || !labels.contains_key(TOC_DIGEST_ANNOTATION)
            || self.ahead.lock().unwrap_or_else(PoisonError::into_inner).contains_key(digest)
        {
            return;
        }
        let hint = |key: &str| labels.get(key).and_then(|v| v.parse::<u64>().ok());
        let Some(size) = hint(BLOB_SIZE_ANNOTATION).filter(|&size| size > 0) else {
            return;
        };
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if started.contains_key(digest) {
            return;
        }
        // These requests go out alongside the manifest's, which authenticates for the
        // repository as they do (tokens are fetched once per scope): no warm-up first.
        self.range_options.hosts.mark_warm(reference.registry());
        let prefetch_end = hint(PREFETCH_END_ANNOTATION).filter(|&end| end > 0 && end <= size);
        let toc_offset = hint(TOC_OFFSET_ANNOTATION).filter(|&off| off < size);
        tracing::debug!(layer = %digest, size, ?prefetch_end, ?toc_offset, "stargz: fetching started from the Prepare's labels");
        started.insert(digest.clone(), self.start_fetching(reference, digest, size, prefetch_end, toc_offset));
    }

    /// Drops what [`Self::start_from_labels`] started for a layer and nobody took.
    pub(super) fn drop_started(&self, digest: &Digest) {
        if let Some(s) = self.started.lock().unwrap_or_else(PoisonError::into_inner).remove(digest) {
            s.tail.abort();
        }
    }

    /// The layer opened ahead for a Prepare (taken: the next Prepare of it opens anew).
    pub(super) fn take_ahead(&self, layer: &ImageLayer) -> Option<Result<(OpenedLayer, LayerTail), String>> {
        let mut ahead = self.ahead.lock().unwrap_or_else(PoisonError::into_inner);
        match ahead.insert(layer.digest.clone(), Ahead::Taken) {
            Some(Ahead::Ready(opened)) => Some(opened),
            _ => None,
        }
    }
}
