//! The provider's knowledge of the images being pulled ([`Images`], behind one lock), and
//! opening their layers ahead of their Prepares: at the first Prepare, every eStargz
//! layer's footer and TOC are fetched in parallel and its prioritized files requested at
//! once (from `strata convert`'s prefetch-end hint, before the TOC is in) — for the first
//! layer even before the manifest, from the hints its Prepare's labels carry.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError, Weak};

use strata_formats::Digest;
use strata_formats::estargz::{
    BLOB_SIZE_ANNOTATION, PREFETCH_END_ANNOTATION, TOC_DIGEST_ANNOTATION, TOC_OFFSET_ANNOTATION,
};
use strata_snapshotters::Labels;

use super::fetch::{EarlyStream, LayerFetch};
use super::{ImageLayer, LayerTail, OpenedLayer, StargzLayers};
use crate::registry::Reference;
use crate::registry::range::RangeFetcher;

/// Most bytes of the prioritized range requested before the TOC is in (the rest is
/// planned once it is): a hint must not make us buffer a huge range.
const MAX_EARLY: u64 = 16 << 20;

/// What the provider knows of the images it serves layers of.
#[derive(Default)]
pub(super) struct Images {
    /// Image reference → its layers, from the manifest (bottom first).
    pub(super) layers: HashMap<String, Arc<Vec<ImageLayer>>>,
    /// Layer → opened ahead of its Prepare.
    pub(super) ahead: HashMap<Digest, Ahead>,
    /// Layer → fetching started from a Prepare's labels, before the manifest.
    pub(super) started: HashMap<Digest, Started>,
    /// Layer → the layer being served (for hints: the layers under a layer of an image).
    pub(super) served: HashMap<Digest, Weak<LayerFetch>>,
}

impl Images {
    /// The served layers under `digest` in image `image_ref`, top first.
    pub(super) fn lower(&self, image_ref: &str, digest: &Digest) -> Vec<Weak<LayerFetch>> {
        self.lower_digests(image_ref, digest)
            .iter()
            .filter_map(|d| self.served.get(d).cloned())
            .collect()
    }

    /// The digests of the served layers under `digest` in image `image_ref`, top first.
    fn lower_digests(&self, image_ref: &str, digest: &Digest) -> Vec<Digest> {
        let Some(layers) = self.layers.get(image_ref) else {
            return Vec::new();
        };
        let Some(at) = layers.iter().position(|l| l.digest == *digest) else {
            return Vec::new();
        };
        layers[..at]
            .iter()
            .rev()
            .filter(|l| self.served.contains_key(&l.digest))
            .map(|l| l.digest.clone())
            .collect()
    }
}

/// A layer whose fetching has started: its footer and TOC, and the prioritized files'
/// stream, on their way.
pub(super) struct Started {
    /// The blob's size the labels said; `None` when its tail was asked for by a suffix
    /// range (the size comes with the answer, and from the manifest).
    size: Option<u64>,
    /// The layer's fetcher, once its size is known.
    fetcher: Option<Arc<dyn RangeFetcher>>,
    early: Option<EarlyStream>,
    /// The tail, and the blob's size as the registry said.
    tail: tokio::task::JoinHandle<Result<(LayerTail, u64), String>>,
}

/// Layers of an image whose tails are asked for at its first Prepare, at most.
const MAX_EARLY_LAYERS: usize = 64;

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
    pub(super) fn images(&self) -> MutexGuard<'_, Images> {
        self.images.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens, ahead of their Prepares, every eStargz layer of an image not opened yet:
    /// footers and TOCs fetched in parallel (each checked against the manifest's TOC
    /// digest before it is parsed), and each layer's prioritized files prefetched at
    /// once, so the layers' Prepares and the container's first reads find them in.
    pub(super) fn open_ahead(&self, reference: &Reference, layers: &[ImageLayer]) {
        let todo: Vec<(&ImageLayer, Option<Started>)> = {
            let mut images = self.images();
            let todo: Vec<&ImageLayer> = layers
                .iter()
                .filter(|l| l.toc_digest.is_some() && !images.ahead.contains_key(&l.digest))
                .collect();
            todo.into_iter()
                .map(|l| {
                    images.ahead.insert(l.digest.clone(), Ahead::Opening);
                    (l, images.started.remove(&l.digest))
                })
                .collect()
        };
        {
            // Tails asked for (by suffix ranges, at the first Prepare) of layers the
            // manifest says are not eStargz: nobody wants them.
            let mut images = self.images();
            for l in layers.iter().filter(|l| l.toc_digest.is_none()) {
                if let Some(s) = images.started.remove(&l.digest) {
                    s.tail.abort();
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        let started: Vec<(&ImageLayer, Started, bool)> = todo
            .into_iter()
            .map(|(l, early)| {
                let early = early.filter(|s| {
                    let right = s.size.is_none_or(|size| size == l.size);
                    if !right {
                        tracing::debug!(layer = %l.digest, labels = ?s.size, manifest = l.size, "stargz: the Prepare's size hint was wrong; fetching afresh");
                        s.tail.abort();
                    }
                    right
                });
                match early {
                    Some(mut s) => {
                        let by_suffix = s.fetcher.is_none();
                        if by_suffix {
                            // The manifest has the size now: the fetcher, and the
                            // prioritized files when the image says where they end.
                            let fetcher = self.fetcher(reference, &l.digest, l.size);
                            s.early = self.early_stream(&fetcher, l.prefetch_end);
                            s.fetcher = Some(fetcher);
                        }
                        (l, s, by_suffix)
                    }
                    None => (l, self.start_fetching(reference, &l.digest, l.size, l.prefetch_end, l.toc_offset), false),
                }
            })
            .collect();
        // Each layer is opened (and its prefetch started) as soon as its own tail is in,
        // not when the slowest one is.
        std::thread::scope(|scope| {
            for (layer, s, by_suffix) in started {
                scope.spawn(move || self.open_started(reference, layer, s, by_suffix));
            }
        });
    }

    /// Waits for the tail of `layer` that `s` started and opens the layer.
    fn open_started(&self, reference: &Reference, layer: &ImageLayer, s: Started, by_suffix: bool) {
        let toc = layer
            .toc_digest
            .clone()
            .expect("only eStargz layers are opened");
        let fetcher = s
            .fetcher
            .unwrap_or_else(|| self.fetcher(reference, &layer.digest, layer.size));
        let tail = self
            .runtime
            .block_on(s.tail)
            .map_err(|e| format!("fetching the footer and TOC: {e}"))
            .and_then(|t| t)
            .and_then(|(tail, size)| {
                if size == layer.size {
                    Ok(tail)
                } else {
                    Err(format!(
                        "the registry says the blob is {size} bytes, the manifest {}",
                        layer.size
                    ))
                }
            });
        let tail = match tail {
            // A registry that does not answer suffix ranges: the usual way, now that the
            // size is known.
            Err(e) if by_suffix => {
                tracing::debug!(layer = %layer.digest, error = e, "stargz: the tail by suffix range failed; fetching it by its offset");
                self.runtime.block_on(LayerTail::fetch(
                    fetcher.as_ref(),
                    layer.size,
                    layer.toc_offset,
                ))
            }
            other => other,
        };
        let opened = tail.and_then(|tail| {
            let opened = self.open_layer(
                &layer.digest.to_string(),
                layer.size,
                &toc,
                tail.clone(),
                fetcher,
                s.early,
            )?;
            if let Some(fetch) = &opened.fetch
                && self.options.prefetch
            {
                fetch.start_prefetch();
            }
            Ok((opened, tail))
        });
        self.images()
            .ahead
            .insert(layer.digest.clone(), Ahead::Ready(opened));
    }

    /// Starts fetching a layer: its footer and TOC (one request when `toc_offset` is
    /// right) and, with a `prefetch_end` hint, its prioritized files in one streamed
    /// request (decoded once the TOC is in) — both at once, on the provider's runtime.
    pub(super) fn start_fetching(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        prefetch_end: Option<u64>,
        toc_offset: Option<u64>,
    ) -> Started {
        let fetcher = self.fetcher(reference, digest, size);
        // With the image's prefetch-end hint, the prioritized files are requested now,
        // alongside the TOC, instead of one round trip after it.
        let early = self.early_stream(&fetcher, prefetch_end);
        let tail = {
            let fetcher = Arc::clone(&fetcher);
            self.runtime.spawn(async move {
                LayerTail::fetch(fetcher.as_ref(), size, toc_offset)
                    .await
                    .map(|t| (t, size))
            })
        };
        Started {
            size: Some(size),
            fetcher: Some(fetcher),
            early,
            tail,
        }
    }

    /// The prioritized files' stream (up to [`MAX_EARLY`] bytes) when the image says where
    /// they end.
    fn early_stream(
        &self,
        fetcher: &Arc<dyn RangeFetcher>,
        prefetch_end: Option<u64>,
    ) -> Option<EarlyStream> {
        match prefetch_end {
            Some(end) if self.options.prefetch && self.cache.is_some() => Some(EarlyStream::start(
                fetcher,
                0..end.min(MAX_EARLY),
                self.runtime.handle(),
            )),
            _ => None,
        }
    }

    /// Starts fetching a layer's tail before its size is known: by a suffix range.
    fn start_unsized(&self, reference: &Reference, digest: &Digest) -> Started {
        let (client, reference, digest, options) = (
            self.client.clone(),
            reference.clone(),
            digest.clone(),
            self.range_options.clone(),
        );
        let tail = self.runtime.spawn(async move {
            LayerTail::fetch_unsized(&client, &reference, &digest, options).await
        });
        Started {
            size: None,
            fetcher: None,
            early: None,
            tail,
        }
    }

    /// At an image's first Prepare, starts fetching that Prepare's layer from its labels
    /// alone while the image's manifest is fetched: containerd passes a layer's
    /// `containerd.io/snapshot/` annotations on as labels, among them `strata convert`'s
    /// size, TOC-offset and prefetch-end hints, so the bottom layer's prioritized files
    /// are on their way a round trip sooner. Nothing is trusted: the manifest must agree
    /// on the size, the TOC is checked against the manifest's TOC digest, every chunk
    /// against the TOC.
    pub(super) fn start_from_labels(
        &self,
        reference: &Reference,
        image_ref: &str,
        digest: &Digest,
        labels: &Labels,
        image_layers: &[String],
    ) {
        if !labels.contains_key(TOC_DIGEST_ANNOTATION)
            || self.images().layers.contains_key(image_ref)
        {
            return;
        }
        // These requests go out alongside the manifest's, which authenticates for the
        // repository as they do (tokens are fetched once per scope): no warm-up first.
        self.range_options.hosts.mark_warm(reference.registry());
        let hint = |key: &str| labels.get(key).and_then(|v| v.parse::<u64>().ok());
        let mut todo: Vec<(Digest, Started)> = Vec::new();
        if let Some(size) = hint(BLOB_SIZE_ANNOTATION).filter(|&size| size > 0) {
            let prefetch_end = hint(PREFETCH_END_ANNOTATION).filter(|&end| end > 0 && end <= size);
            let toc_offset = hint(TOC_OFFSET_ANNOTATION).filter(|&off| off < size);
            tracing::debug!(layer = %digest, size, ?prefetch_end, ?toc_offset, "stargz: fetching started from the Prepare's labels");
            todo.push((
                digest.clone(),
                self.start_fetching(reference, digest, size, prefetch_end, toc_offset),
            ));
        }
        // The image's other layers the labels name (and this one, without hints): their
        // tails by suffix ranges, alongside the manifest request instead of after it.
        let others = image_layers
            .iter()
            .filter_map(|d| d.parse::<Digest>().ok())
            .take(MAX_EARLY_LAYERS);
        for d in std::iter::once(digest.clone()).chain(others) {
            if todo.iter().any(|(t, _)| *t == d) {
                continue;
            }
            {
                let images = self.images();
                if images.ahead.contains_key(&d) || images.started.contains_key(&d) {
                    continue;
                }
            }
            tracing::debug!(layer = %d, "stargz: fetching the tail by a suffix range, before the manifest");
            todo.push((d.clone(), self.start_unsized(reference, &d)));
        }
        let mut images = self.images();
        for (d, started) in todo {
            if images.ahead.contains_key(&d) || images.started.contains_key(&d) {
                started.tail.abort();
                continue;
            }
            images.started.insert(d, started);
        }
    }

    /// Drops what [`Self::start_from_labels`] started for a layer and nobody took.
    pub(super) fn drop_started(&self, digest: &Digest) {
        if let Some(s) = self.images().started.remove(digest) {
            s.tail.abort();
        }
    }

    /// The layer opened ahead for a Prepare (taken: the next Prepare of it opens anew).
    pub(super) fn take_ahead(
        &self,
        layer: &ImageLayer,
    ) -> Option<Result<(OpenedLayer, LayerTail), String>> {
        match self
            .images()
            .ahead
            .insert(layer.digest.clone(), Ahead::Taken)
        {
            Some(Ahead::Ready(opened)) => Some(opened),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> ImageLayer {
        ImageLayer {
            digest: Digest::of(&[n]),
            size: 1,
            toc_digest: None,
            prefetch_end: None,
            toc_offset: None,
        }
    }

    #[test]
    fn a_layers_lower_layers_are_those_under_it_in_its_image_top_first() {
        let mut images = Images::default();
        images.layers.insert(
            "app".into(),
            Arc::new(vec![layer(1), layer(2), layer(3), layer(4)]),
        );
        // Layer 3 is not served (not eStargz, say).
        for n in [1, 2, 4] {
            images.served.insert(Digest::of(&[n]), Weak::new());
        }
        assert_eq!(
            images.lower_digests("app", &Digest::of(&[4])),
            [Digest::of(&[2]), Digest::of(&[1])]
        );
        assert_eq!(images.lower("app", &Digest::of(&[4])).len(), 2);
        assert!(
            images.lower_digests("app", &Digest::of(&[1])).is_empty(),
            "nothing under the bottom layer"
        );
        assert!(
            images.lower_digests("other", &Digest::of(&[4])).is_empty(),
            "an image not known"
        );
        assert!(
            images.lower_digests("app", &Digest::of(&[9])).is_empty(),
            "a layer not in the image"
        );
    }
}
