//! A layer's footer and TOC, fetched once and kept: [`LayerTail`] is the end of an
//! eStargz blob from its TOC on (compressed TOC + footer), fetched in one request when the
//! TOC is small (two otherwise) and saved next to the snapshot, so a restarted daemon
//! re-opens the layer without the registry (the [`super::window::WindowFetcher`] serves
//! it from memory).

use std::io::{Read, Write};
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use strata_formats::estargz::footer::MAX_FOOTER_SIZE;
use strata_formats::estargz::{Footer, MAX_TOC_SIZE};

use strata_formats::Digest;

use std::sync::Arc;

use strata_formats::estargz::EstargzReader;

use super::window::WindowFetcher;
use crate::registry::range::{
    HttpRangeFetcher, RangeFetcher, RangeOptions, RangeReader, ReaderOptions,
};
use crate::registry::{Reference, RegistryClient};

/// Bytes fetched from the end of the blob first: the footer and, for layers of up to
/// two thousand files or so, the whole compressed TOC with it (larger TOCs take a second
/// request, a round trip more).
const FIRST_TAIL: u64 = 128 << 10;
/// The most bytes a tail holds beyond the TOC: the first request's size.
const MAX_TAIL_SLACK: u64 = FIRST_TAIL;
/// Slack before the footer's TOC offset (a zstd TOC's skippable-frame header).
const TOC_SLACK: u64 = 64;

/// The bytes `[offset, size)` of a blob: its compressed TOC and footer.
#[derive(Debug, Clone)]
pub struct LayerTail {
    /// Where the bytes start in the blob.
    pub offset: u64,
    /// The bytes, to the blob's end.
    pub bytes: Bytes,
}

impl LayerTail {
    /// Fetches the tail of a blob of `size` bytes through `fetcher`. `toc_offset`: where
    /// the image says the TOC starts (`strata convert`'s hint), so that one request of
    /// the tail's exact size suffices; without it (or when it is implausible) the last
    /// [`FIRST_TAIL`] bytes are asked for first. Either way the footer decides: a TOC
    /// starting before the bytes fetched costs a second request.
    ///
    /// # Errors
    ///
    /// The fetch failed, the footer is not eStargz, or the TOC is larger than
    /// [`MAX_TOC_SIZE`].
    pub async fn fetch(
        fetcher: &dyn RangeFetcher,
        size: u64,
        toc_offset: Option<u64>,
    ) -> Result<LayerTail, String> {
        let hinted = toc_offset
            .filter(|&off| off < size && size - off <= MAX_TOC_SIZE)
            .map(|off| {
                (size - off.saturating_sub(TOC_SLACK))
                    .max(MAX_FOOTER_SIZE as u64)
                    .min(size)
            });
        let first = hinted.unwrap_or(size.min(FIRST_TAIL));
        let start = size - first;
        let mut got = fetcher
            .fetch(std::slice::from_ref(&(start..size)))
            .await
            .map_err(|e| {
                format!(
                    "fetching the footer and TOC: {}",
                    crate::error_chain::chain(&e)
                )
            })?;
        let last = got.pop().ok_or("fetching the footer and TOC: no bytes")?;
        Self::complete(fetcher, size, start, last).await
    }

    /// Fetches the tail of blob `digest` of `reference` before its size is known: the last
    /// [`FIRST_TAIL`] bytes by a suffix range (whose answer says the size), then the rest
    /// of a larger TOC through a fetcher of `options`. Returns the tail and the blob's
    /// size (which the caller checks against the manifest's).
    ///
    /// # Errors
    ///
    /// As [`Self::fetch`]; also a registry that does not answer suffix ranges.
    pub async fn fetch_unsized(
        client: &RegistryClient,
        reference: &Reference,
        digest: &Digest,
        options: RangeOptions,
    ) -> Result<(LayerTail, u64), String> {
        let (last, start, size) = client
            .fetch_blob_tail(reference, digest, FIRST_TAIL)
            .await
            .map_err(|e| {
                format!(
                    "fetching the footer and TOC: {}",
                    crate::error_chain::chain(&e)
                )
            })?;
        let fetcher = HttpRangeFetcher::new(
            client.clone(),
            reference.clone(),
            digest.clone(),
            size,
            options,
        );
        Ok((Self::complete(&fetcher, size, start, last).await?, size))
    }

    /// The tail from `last`, the blob's bytes from `start` to its `size`: those, when they
    /// hold the whole TOC, else the TOC's start fetched through `fetcher` too.
    async fn complete(
        fetcher: &dyn RangeFetcher,
        size: u64,
        start: u64,
        last: Bytes,
    ) -> Result<LayerTail, String> {
        let footer_bytes = &last[last.len().saturating_sub(MAX_FOOTER_SIZE)..];
        let footer = Footer::parse(footer_bytes).map_err(|e| e.to_string())?;
        let toc_start = footer.toc_offset.saturating_sub(TOC_SLACK);
        if footer.toc_offset >= size || size - toc_start > MAX_TOC_SIZE + MAX_TAIL_SLACK {
            return Err(format!(
                "footer: TOC offset {} of a {size}-byte blob is out of bounds",
                footer.toc_offset
            ));
        }
        if toc_start >= start {
            return Ok(LayerTail {
                offset: start,
                bytes: last,
            });
        }
        let mut more = fetcher
            .fetch(std::slice::from_ref(&(toc_start..start)))
            .await
            .map_err(|e| format!("fetching the TOC: {}", crate::error_chain::chain(&e)))?;
        let head = more.pop().ok_or("fetching the TOC: no bytes")?;
        let mut bytes = Vec::with_capacity(head.len() + last.len());
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(&last);
        Ok(LayerTail {
            offset: toc_start,
            bytes: bytes.into(),
        })
    }

    /// Writes the tail to `path` (temp file + rename, synced, the directory too): offset,
    /// then bytes. Loaded again, it is checked before use ([`Self::open`], [`open_saved`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.offset.to_le_bytes())?;
        f.write_all(&self.bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        super::record::sync_dir(path)
    }

    /// Reads a tail saved by [`Self::save`] for a blob of `size` bytes.
    pub fn load(path: &Path, size: u64) -> std::io::Result<LayerTail> {
        let mut f = std::fs::File::open(path)?;
        let mut offset = [0u8; 8];
        f.read_exact(&mut offset)?;
        let offset = u64::from_le_bytes(offset);
        let len = size
            .checked_sub(offset)
            .filter(|l| *l <= MAX_TOC_SIZE + MAX_TAIL_SLACK)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: tail offset {offset} does not fit a {size}-byte blob",
                        path.display()
                    ),
                )
            })?;
        let mut bytes = Vec::with_capacity(len as usize);
        f.take(len + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {} tail bytes, expected {len}",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        Ok(LayerTail {
            offset,
            bytes: bytes.into(),
        })
    }

    /// Opens the blob of `size` bytes with its footer and TOC from these bytes: the TOC is
    /// hashed against `toc` (from the layer's annotation) before it is parsed. Ranges
    /// outside the tail are read through `fetcher` (on `handle`).
    ///
    /// # Errors
    ///
    /// The footer or TOC is damaged, or the TOC does not match `toc`.
    pub fn open(
        &self,
        size: u64,
        toc: &Digest,
        fetcher: Arc<dyn RangeFetcher>,
        handle: &tokio::runtime::Handle,
    ) -> Result<EstargzReader<RangeReader>, String> {
        let windows = Arc::new(WindowFetcher::new(fetcher, handle.clone()));
        windows.add_ready(self.range(), self.bytes.clone());
        let reader = RangeReader::new(
            windows as Arc<dyn RangeFetcher>,
            size,
            handle.clone(),
            ReaderOptions::default(),
        );
        EstargzReader::open(reader, Some(toc)).map_err(|e| e.to_string())
    }

    /// The blob range the bytes cover.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.bytes.len() as u64
    }
}

/// Opens a layer with `open` from its `saved` tail; when that is missing, torn or fails
/// its checks (the TOC digest), from a tail `fetch` gets again, returned to be saved. A
/// saved TOC is thus never used unchecked, and a damaged one costs a request, not the
/// layer.
///
/// # Errors
///
/// Both failed: both causes.
pub(super) fn open_saved<T>(
    saved: std::io::Result<LayerTail>,
    open: impl Fn(LayerTail) -> Result<T, String>,
    fetch: impl FnOnce() -> Result<LayerTail, String>,
) -> Result<(T, Option<LayerTail>), String> {
    let first = match saved {
        Ok(tail) => match open(tail) {
            Ok(opened) => return Ok((opened, None)),
            Err(e) => e,
        },
        Err(e) => e.to_string(),
    };
    let tail = fetch().map_err(|e| format!("saved TOC: {first}; fetched again: {e}"))?;
    let opened =
        open(tail.clone()).map_err(|e| format!("saved TOC: {first}; fetched again: {e}"))?;
    Ok((opened, Some(tail)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::future::BoxFuture;
    use strata_formats::estargz::{WriteOptions, convert};

    use super::*;
    use crate::registry::range::RangeError;

    /// An eStargz blob that records the ranges asked of it.
    struct Blob {
        bytes: Vec<u8>,
        asked: Mutex<Vec<Range<u64>>>,
    }

    impl std::fmt::Debug for Blob {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Blob")
                .field("len", &self.bytes.len())
                .finish()
        }
    }

    impl RangeFetcher for Blob {
        fn fetch<'a>(
            &'a self,
            ranges: &'a [Range<u64>],
        ) -> BoxFuture<'a, Result<Vec<Bytes>, RangeError>> {
            self.asked.lock().unwrap().extend(ranges.iter().cloned());
            let out = ranges
                .iter()
                .map(|r| Bytes::copy_from_slice(&self.bytes[r.start as usize..r.end as usize]))
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    /// A blob of a few hundred small files (a TOC of tens of KiB) after 300 KiB of data,
    /// and its TOC offset.
    fn blob() -> (Arc<Blob>, u64) {
        let (blob, toc_offset, _) = blob_and_toc();
        (blob, toc_offset)
    }

    /// [`blob`], and its TOC digest.
    fn blob_and_toc() -> (Arc<Blob>, u64, Digest) {
        let mut layer = strata_testdata::LayerSpec::new().file(
            "data.bin",
            0o644,
            strata_testdata::random_bytes(300 << 10, 7),
        );
        for i in 0..400 {
            layer = layer.file(format!("etc/conf-{i:03}"), 0o644, format!("setting {i}\n"));
        }
        let mut bytes = Vec::new();
        let report = convert(
            layer.tar().unwrap().as_slice(),
            &mut bytes,
            &WriteOptions::default(),
        )
        .unwrap();
        (
            Arc::new(Blob {
                bytes,
                asked: Mutex::default(),
            }),
            report.toc_offset,
            report.toc_digest,
        )
    }

    fn fetch(blob: &Blob, hint: Option<u64>) -> LayerTail {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(LayerTail::fetch(blob, blob.bytes.len() as u64, hint))
            .unwrap()
    }

    #[test]
    fn the_toc_offset_hint_makes_one_request_of_the_tails_size() {
        let (blob, toc_offset) = blob();
        let size = blob.bytes.len() as u64;
        assert!(
            size - toc_offset < FIRST_TAIL && size > FIRST_TAIL,
            "a TOC smaller than the first guess: {}",
            size - toc_offset
        );
        let tail = fetch(&blob, Some(toc_offset));
        let start = toc_offset - TOC_SLACK;
        assert_eq!(
            *blob.asked.lock().unwrap(),
            vec![start..size],
            "one request, no more than the TOC and footer"
        );
        assert_eq!(
            (tail.offset, &tail.bytes[..]),
            (start, &blob.bytes[start as usize..])
        );
    }

    #[test]
    fn without_a_hint_the_first_guess_is_fetched() {
        let (blob, _) = blob();
        let size = blob.bytes.len() as u64;
        let tail = fetch(&blob, None);
        assert_eq!(*blob.asked.lock().unwrap(), vec![size - FIRST_TAIL..size]);
        assert_eq!(tail.range(), size - FIRST_TAIL..size);
    }

    #[test]
    fn a_wrong_hint_costs_a_second_request_never_a_wrong_tail() {
        let (blob, toc_offset) = blob();
        let size = blob.bytes.len() as u64;
        // Too late: the footer says the TOC starts earlier; the rest is fetched.
        let tail = fetch(&blob, Some(toc_offset + 1000));
        let start = toc_offset - TOC_SLACK;
        assert_eq!(
            *blob.asked.lock().unwrap(),
            [
                toc_offset + 1000 - TOC_SLACK..size,
                start..toc_offset + 1000 - TOC_SLACK
            ]
        );
        assert_eq!(
            (tail.offset, &tail.bytes[..]),
            (start, &blob.bytes[start as usize..])
        );
        // Out of the blob: ignored.
        blob.asked.lock().unwrap().clear();
        fetch(&blob, Some(size + 5));
        assert_eq!(*blob.asked.lock().unwrap(), vec![size - FIRST_TAIL..size]);
    }
    /// A registry that does not answer: the error says why (the connect was refused), not
    /// only reqwest's "error sending request".
    #[test]
    fn a_tail_from_a_closed_port_names_the_root_cause() {
        use crate::registry::ClientOptions;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RegistryClient::new(ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reference: Reference = format!("127.0.0.1:{port}/tails/app:1").parse().unwrap();
        let err = runtime
            .block_on(LayerTail::fetch_unsized(
                &client,
                &reference,
                &Digest::of(b"x"),
                RangeOptions::default(),
            ))
            .map(|_| ())
            .expect_err("nothing listens there");
        assert!(err.starts_with("fetching the footer and TOC: "), "{err}");
        assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    }

    /// Before the size is known: a suffix range from a real registry (distribution), then
    /// the rest of a TOC larger than the first guess by its offset.
    #[test]
    fn the_tail_of_a_blob_of_unknown_size_comes_by_a_suffix_range() {
        use crate::registry::ClientOptions;
        let registry = strata_testdata::RegistryServer::start().unwrap();
        let client = RegistryClient::new(ClientOptions {
            plain_http: true,
            ..ClientOptions::default()
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A small TOC (one request) and a TOC of ~20,000 files (larger than the guess).
        let mut big = strata_testdata::LayerSpec::new();
        for i in 0..20_000 {
            big = big.file(
                format!("d{}/file-with-a-long-name-{i:05}", i % 50),
                0o644,
                format!("{i}"),
            );
        }
        for (name, layer) in [
            ("small", blob().0.bytes.clone()),
            ("big", {
                let mut bytes = Vec::new();
                convert(
                    big.tar().unwrap().as_slice(),
                    &mut bytes,
                    &WriteOptions::default(),
                )
                .unwrap();
                bytes
            }),
        ] {
            let pushed = registry.push_blob("tails/app", &layer).unwrap();
            let reference: Reference = format!("{}/tails/app:1", registry.host()).parse().unwrap();
            let digest: Digest = pushed.digest.parse().unwrap();
            let (tail, size) = runtime
                .block_on(LayerTail::fetch_unsized(
                    &client,
                    &reference,
                    &digest,
                    RangeOptions::default(),
                ))
                .unwrap();
            assert_eq!(size, layer.len() as u64, "{name}");
            assert_eq!(&tail.bytes[..], &layer[tail.offset as usize..], "{name}");
            let footer = Footer::parse(&layer[layer.len() - 51..]).unwrap();
            assert!(
                tail.offset <= footer.toc_offset,
                "{name}: the tail holds the TOC"
            );
            assert_eq!(
                name == "big",
                size - tail.offset > FIRST_TAIL,
                "{name}: {} tail bytes",
                size - tail.offset
            );
        }
    }

    /// A tail saved, then one byte of it flipped on disk (same size), as a power cut or a
    /// bad disk can.
    fn saved_and_flipped(dir: &Path, tail: &LayerTail, at: usize) -> std::io::Result<LayerTail> {
        let path = dir.join("layer.tail");
        tail.save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 + at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        LayerTail::load(&path, tail.offset + tail.bytes.len() as u64)
    }

    #[test]
    fn a_saved_toc_is_checked_against_the_toc_digest_and_fetched_again_when_damaged() {
        let (blob, toc_offset, toc) = blob_and_toc();
        let size = blob.bytes.len() as u64;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tail = fetch(&blob, Some(toc_offset));
        let open = |t: LayerTail| {
            t.open(
                size,
                &toc,
                Arc::clone(&blob) as Arc<dyn RangeFetcher>,
                runtime.handle(),
            )
            .map(|r| r.toc_digest().clone())
        };
        let fetch_again = || Ok(fetch(&blob, None));

        // Intact: opened from the saved bytes, no request.
        let path = dir.path().join("intact.tail");
        tail.save(&path).unwrap();
        blob.asked.lock().unwrap().clear();
        let (got, fetched) =
            open_saved(LayerTail::load(&path, size), open, || unreachable!()).unwrap();
        assert_eq!(got, toc);
        assert!(fetched.is_none() && blob.asked.lock().unwrap().is_empty());

        // One byte flipped in the compressed TOC, in the footer, or the file torn: the
        // saved bytes fail their check and the tail is fetched again.
        let toc_len = (size - TOC_SLACK - toc_offset) as usize;
        for at in [TOC_SLACK as usize + toc_len / 2, tail.bytes.len() - 20] {
            let damaged = saved_and_flipped(dir.path(), &tail, at).unwrap();
            assert!(
                open(damaged.clone()).is_err(),
                "a flip at {at} of {} must fail the check",
                tail.bytes.len()
            );
            blob.asked.lock().unwrap().clear();
            let (got, fetched) = open_saved(Ok(damaged), open, fetch_again).unwrap();
            assert_eq!(got, toc);
            assert_eq!(
                &fetched.unwrap().bytes[..],
                &blob.bytes[(size - FIRST_TAIL) as usize..]
            );
            assert!(!blob.asked.lock().unwrap().is_empty(), "fetched again");
        }
        let torn = dir.path().join("torn.tail");
        std::fs::write(&torn, &std::fs::read(&path).unwrap()[..100]).unwrap();
        let (got, fetched) = open_saved(LayerTail::load(&torn, size), open, fetch_again).unwrap();
        assert_eq!(got, toc);
        assert!(fetched.is_some());

        // Damaged, and the registry unreachable: an error naming both, never the bytes.
        let damaged =
            saved_and_flipped(dir.path(), &tail, TOC_SLACK as usize + toc_len / 3).unwrap();
        let err = open_saved(Ok(damaged), open, || Err("registry unreachable".into()))
            .err()
            .unwrap();
        assert!(
            err.starts_with("saved TOC: ") && err.ends_with("fetched again: registry unreachable"),
            "{err}"
        );
    }
}
