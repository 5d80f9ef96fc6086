//! Converting an image in the store to eStargz or EROFS (`strata convert`), and checking
//! one. EROFS layers are made by [`super::convert_erofs`]; the rest of this module (the
//! walk over index, manifests and config, and the eStargz layers) serves both.
//!
//! Each layer is decompressed, rewritten by [`strata_formats::estargz::convert`] straight
//! into a content-store ingest (so the output is hashed and verified on commit), and gets
//! the annotations stargz-snapshotter reads (`containerd.io/snapshot/stargz/toc.digest`,
//! `io.containers.estargz.uncompressed-size`). Layers convert in parallel, one per worker
//! thread; a layer that is already eStargz (it has the TOC-digest annotation) passes
//! through unchanged. eStargz changes each layer's diffID, so the config's
//! `rootfs.diff_ids` is rewritten, and the manifest and index are re-issued with OCI media
//! types (Docker media types would lose the annotations).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::image::{Descriptor, MediaType};
use serde_json::Value;
use strata_formats::estargz::{self, Compression, EstargzReader, WriteOptions};
use strata_formats::{Digest, ReadAtCursor};

use super::error::ImageError;
use super::media;
use super::walk::{
    MAX_MANIFEST_SIZE, child_gc_labels, descriptor_digest, oci_digest, parse_index, parse_manifest,
};
use crate::content::{LABEL_UNCOMPRESSED, StreamSource};
use crate::metadata::ImageRecord;
use crate::store::Store;

/// What a conversion reports as it goes (from several worker threads at once).
#[derive(Debug, Clone)]
pub enum ConvertEvent {
    /// A layer's conversion started; `size` is its compressed source size.
    LayerStarted {
        /// The source layer.
        layer: Digest,
        /// Its compressed size.
        size: u64,
    },
    /// `read` more compressed source bytes of `layer` were consumed.
    LayerProgress {
        /// The source layer.
        layer: Digest,
        /// Bytes consumed since the last event.
        read: u64,
    },
    /// A layer is done (converted or passed through).
    LayerDone(LayerOutcome),
}

/// Where conversion events go.
pub type ConvertEventSink = Arc<dyn Fn(&ConvertEvent) + Send + Sync>;

/// What layers become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerFormat {
    /// eStargz (gzip or zstd:chunked, as [`ConvertOptions::write`] says).
    #[default]
    Estargz,
    /// Native EROFS images (`application/vnd.erofs.layer.v1`, as containerd 2.x's erofs
    /// snapshotter and differ read them): see [`super::convert_erofs`].
    Erofs,
}

/// How to convert.
#[derive(Clone, Default)]
pub struct ConvertOptions {
    /// What layers become.
    pub format: LayerFormat,
    /// The eStargz writer's settings (chunk size, gzip or zstd, level, prioritized files).
    pub write: WriteOptions,
    /// Layers converted at once (0: one per CPU).
    pub parallelism: usize,
    /// When `write.prioritized_files` is empty: derive each manifest's prioritized files
    /// from its config and layers ([`super::rootfs::derive_prioritized_files`]).
    pub prioritize_auto: bool,
    /// Per-layer progress events.
    pub progress: Option<ConvertEventSink>,
}

impl std::fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("format", &self.format)
            .field("write", &self.write)
            .field("parallelism", &self.parallelism)
            .field("prioritize_auto", &self.prioritize_auto)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// A reader that reports the bytes it reads as [`ConvertEvent::LayerProgress`], in
/// steps of at least [`ProgressRead::STEP`] so events stay cheap.
pub(super) struct ProgressRead<'a, R> {
    inner: R,
    layer: &'a Digest,
    sink: Option<&'a ConvertEventSink>,
    pending: u64,
}

impl<R> ProgressRead<'_, R> {
    const STEP: u64 = 1 << 20;
}

impl<R: Read> Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(sink) = self.sink else {
            return Ok(n);
        };
        self.pending += n as u64;
        if self.pending >= Self::STEP || (n == 0 && self.pending > 0) {
            sink(&ConvertEvent::LayerProgress {
                layer: self.layer.clone(),
                read: self.pending,
            });
            self.pending = 0;
        }
        Ok(n)
    }
}

/// What happened to one layer.
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    /// The source layer.
    pub source: Digest,
    /// The eStargz layer.
    pub converted: Digest,
    /// Its size.
    pub size: u64,
    /// Its TOC digest.
    pub toc_digest: String,
    /// Whether it was eStargz already and passed through.
    pub passed_through: bool,
    /// The prioritized paths this layer does not contain (none when passed through: its
    /// files are not read).
    pub missed_prioritized: Vec<String>,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The new image record.
    pub image: ImageRecord,
    /// Per layer, in manifest order (all manifests).
    pub layers: Vec<LayerOutcome>,
    /// With [`ConvertOptions::prioritize_auto`]: per source manifest, the files derived.
    pub prioritized: Vec<(Digest, Vec<String>)>,
}

fn read_doc(store: &Store, d: &Descriptor) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest = descriptor_digest(d)?;
    let bytes = store.content().read_all(&digest, MAX_MANIFEST_SIZE)?;
    Ok((digest, bytes))
}

fn put_json(
    store: &Store,
    kind: &str,
    value: &Value,
    labels: BTreeMap<String, String>,
) -> Result<(Digest, u64), ImageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ImageError::invalid(kind, e))?;
    let digest = Digest::of(&bytes);
    store.content().ingest(
        &format!("convert-{kind}-{digest}"),
        &mut StreamSource(&bytes[..]),
        Some(bytes.len() as u64),
        Some(&digest),
        labels,
        Duration::from_secs(300),
    )?;
    Ok((digest, bytes.len() as u64))
}

pub(super) fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
) -> Result<Descriptor, ImageError> {
    Ok(Descriptor::new(
        MediaType::from(media_type),
        size,
        oci_digest(digest)?,
    ))
}

/// Converts the image `src` to eStargz and records the result as `dst`.
pub fn convert(
    store: &Store,
    src: &ImageRecord,
    dst: &str,
    opts: &ConvertOptions,
) -> Result<Converted, ImageError> {
    let _gc = store.hold_gc()?;
    let mut outcomes = Vec::new();
    let mut prioritized = Vec::new();
    let root = &src.target;
    let target = if media::is_index(root.media_type().as_ref()) {
        let (digest, bytes) = read_doc(store, root)?;
        let index = parse_index(&bytes, &format!("index {digest}"))?;
        let mut index_json: Value =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::invalid("index", e))?;
        let mut children = Vec::new();
        let mut entries = Vec::new();
        for (i, m) in index.manifests().iter().enumerate() {
            // A pull fetches one platform of an index: convert the manifests present,
            // as containerd's converter does for the platforms it has.
            if !store.content().exists(&descriptor_digest(m)?) {
                tracing::info!(manifest = %m.digest(), "not in the store (another platform?): left out of the converted index");
                continue;
            }
            let new = convert_manifest(store, m, opts, &mut outcomes, &mut prioritized)?;
            let mut entry = index_json["manifests"][i].clone();
            entry["mediaType"] = Value::from(media::OCI_MANIFEST);
            entry["digest"] = Value::from(new.digest().to_string());
            entry["size"] = Value::from(new.size());
            if opts.format == LayerFormat::Erofs && entry["platform"].is_object() {
                // As JSON: oci-spec's Platform would write `os_features`, not `os.features`.
                super::convert_erofs::add_erofs_os_feature(&mut entry["platform"]);
            }
            entries.push(entry);
            children.push(new);
        }
        if entries.is_empty() {
            return Err(ImageError::NotFound(format!(
                "index {digest}: none of its manifests is in the store"
            )));
        }
        index_json["manifests"] = Value::Array(entries);
        index_json["mediaType"] = Value::from(media::OCI_INDEX);
        let (d, size) = put_json(store, "index", &index_json, child_gc_labels(&children))?;
        descriptor(media::OCI_INDEX, &d, size)?
    } else {
        convert_manifest(store, root, opts, &mut outcomes, &mut prioritized)?
    };
    // A prioritized path that no layer has is a mistake (a typo, another image's path):
    // say so rather than record an image without the prefetch that was asked for.
    let absent: Vec<String> = opts
        .write
        .prioritized_files
        .iter()
        .filter(|p| {
            !outcomes.is_empty()
                && outcomes
                    .iter()
                    .all(|o| o.missed_prioritized.iter().any(|m| m == *p))
        })
        .map(|p| format!("{p:?}"))
        .collect();
    match absent.as_slice() {
        [] => {}
        [one] => {
            return Err(ImageError::NotFound(format!(
                "prioritized path {one} is in none of the image's layers"
            )));
        }
        many => {
            return Err(ImageError::NotFound(format!(
                "prioritized paths {} are in none of the image's layers",
                many.join(", ")
            )));
        }
    }
    let now = std::time::SystemTime::now();
    let record = ImageRecord {
        name: dst.to_owned(),
        target,
        labels: BTreeMap::new(),
        created: now,
        updated: now,
    };
    let image = store.metadata().put_image(&record, true)?;
    Ok(Converted {
        image,
        layers: outcomes,
        prioritized,
    })
}

fn convert_manifest(
    store: &Store,
    m: &Descriptor,
    opts: &ConvertOptions,
    outcomes: &mut Vec<LayerOutcome>,
    prioritized: &mut Vec<(Digest, Vec<String>)>,
) -> Result<Descriptor, ImageError> {
    let (digest, bytes) = read_doc(store, m)?;
    let manifest = parse_manifest(&bytes, &format!("manifest {digest}"))?;
    let layers: Vec<Descriptor> = manifest.layers().clone();
    let derived;
    let opts = if opts.prioritize_auto && opts.write.prioritized_files.is_empty() {
        let files = super::rootfs::derive_prioritized_files(
            store,
            &manifest,
            &format!("manifest {digest}"),
        )?;
        tracing::info!(manifest = %digest, ?files, "prioritized files derived from the image config");
        prioritized.push((digest.clone(), files.clone()));
        let mut o = opts.clone();
        o.write.prioritized_files = files;
        derived = o;
        &derived
    } else {
        opts
    };
    // Config: its diffIDs are checked by the EROFS conversion and replaced by both.
    let (config_digest, config_bytes) = read_doc(store, manifest.config())?;
    let mut config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::invalid(format!("config {config_digest}"), e))?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array_mut().ok_or_else(|| {
        ImageError::invalid(format!("config {config_digest}"), "no rootfs.diff_ids")
    })?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::invalid(
            format!("config {config_digest}"),
            format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
        ));
    }
    let source_diff_ids = diff_ids
        .iter()
        .map(|d| {
            d.as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| {
                    ImageError::invalid(format!("config {config_digest}"), format!("diff_id {d}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let converted = convert_layers(store, &layers, &source_diff_ids, opts)?;
    for (slot, (_, diff_id, _)) in diff_ids.iter_mut().zip(&converted) {
        if let Some(d) = diff_id {
            *slot = Value::from(d.to_string());
        }
    }
    if opts.format == LayerFormat::Erofs {
        super::convert_erofs::add_erofs_os_feature(&mut config);
    }
    let (new_config, config_size) = put_json(store, "config", &config, BTreeMap::new())?;
    let config_desc = descriptor(media::OCI_CONFIG, &new_config, config_size)?;

    let mut manifest_json: Value =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::invalid("manifest", e))?;
    manifest_json["mediaType"] = Value::from(media::OCI_MANIFEST);
    manifest_json["config"] =
        serde_json::to_value(&config_desc).map_err(|e| ImageError::invalid("config", e))?;
    let mut new_layers = Vec::new();
    let mut children = vec![config_desc];
    for (desc, _, outcome) in converted {
        new_layers.push(serde_json::to_value(&desc).map_err(|e| ImageError::invalid("layer", e))?);
        children.push(desc);
        outcomes.push(outcome);
    }
    manifest_json["layers"] = Value::Array(new_layers);
    let (d, size) = put_json(
        store,
        "manifest",
        &manifest_json,
        child_gc_labels(&children),
    )?;
    let mut out = descriptor(media::OCI_MANIFEST, &d, size)?;
    out.set_platform(m.platform().clone());
    Ok(out)
}

/// A converted layer's descriptor, its new diffID (None: unchanged) and its outcome.
pub(super) type LayerResult = (Descriptor, Option<Digest>, LayerOutcome);

/// Converts layers on worker threads; results in input order.
fn convert_layers(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    opts: &ConvertOptions,
) -> Result<Vec<LayerResult>, ImageError> {
    let workers = match opts.parallelism {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
    .min(layers.len().max(1));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<LayerResult, ImageError>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("invariant: not poisoned");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= layers.len() {
                        break;
                    }
                    let r = match opts.format {
                        LayerFormat::Estargz => convert_layer(store, &layers[i], opts),
                        LayerFormat::Erofs => super::convert_erofs::convert_layer(
                            store,
                            &layers[i],
                            &diff_ids[i],
                            opts,
                        ),
                    };
                    if let (Some(sink), Ok((_, _, outcome))) = (&opts.progress, &r) {
                        sink(&ConvertEvent::LayerDone(outcome.clone()));
                    }
                    results.lock().expect("invariant: not poisoned")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("invariant: not poisoned")
        .into_iter()
        .map(|r| r.expect("invariant: every layer was converted"))
        .collect()
}

/// The blob of `layer` as stored (compressed), reporting what is read as progress.
pub(super) fn source_blob<'a>(
    store: &Store,
    layer: &Descriptor,
    source: &'a Digest,
    opts: &'a ConvertOptions,
) -> Result<ProgressRead<'a, ReadAtCursor<strata_formats::FileReadAt>>, ImageError> {
    let reader = ReadAtCursor::new(store.content().reader_at(source)?);
    if let Some(sink) = &opts.progress {
        sink(&ConvertEvent::LayerStarted {
            layer: source.clone(),
            size: layer.size(),
        });
    }
    Ok(ProgressRead {
        inner: reader,
        layer: source,
        sink: opts.progress.as_ref(),
        pending: 0,
    })
}

fn convert_layer(
    store: &Store,
    layer: &Descriptor,
    opts: &ConvertOptions,
) -> Result<LayerResult, ImageError> {
    let write = &opts.write;
    let source = descriptor_digest(layer)?;
    let annotations = layer.annotations().clone().unwrap_or_default();
    if let Some(toc) = annotations.get(estargz::TOC_DIGEST_ANNOTATION) {
        let outcome = LayerOutcome {
            source: source.clone(),
            converted: source,
            size: layer.size(),
            toc_digest: toc.clone(),
            passed_through: true,
            missed_prioritized: Vec::new(),
        };
        return Ok((layer.clone(), None, outcome));
    }
    let tar = estargz::decompress_layer(source_blob(store, layer, &source, opts)?)
        .map_err(|e| ImageError::invalid(format!("layer {source}"), e))?;
    let reference = format!(
        "convert-layer-{source}-{}",
        crate::metadata::unique_suffix()
    );
    let mut writer = store.content().writer(&reference, None, None)?;
    let report = match estargz::convert(tar, &mut writer, write) {
        Ok(r) => r,
        Err(e) => {
            drop(writer);
            let _ = store.content().abort(&reference);
            return Err(ImageError::invalid(format!("layer {source}"), e));
        }
    };
    let labels = BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), report.diff_id.to_string())]);
    match writer.commit(Some(report.blob_size), Some(&report.blob_digest), labels) {
        Ok(_) | Err(crate::content::ContentError::AlreadyExists(_)) => {}
        Err(e) => {
            let _ = store.content().abort(&reference);
            return Err(e.into());
        }
    }
    let media_type = match write.compression {
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    };
    let mut desc = descriptor(media_type, &report.blob_digest, report.blob_size)?;
    let mut ann: std::collections::HashMap<String, String> = report
        .annotations()
        .into_iter()
        .chain(report.zstd_chunked_annotations())
        .chain(report.strata_annotations())
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    // Keep the source layer's own annotations (except stale eStargz ones).
    for (k, v) in annotations {
        ann.entry(k).or_insert(v);
    }
    desc.set_annotations(Some(ann));
    let outcome = LayerOutcome {
        source,
        converted: report.blob_digest.clone(),
        size: report.blob_size,
        toc_digest: report.toc_digest.to_string(),
        passed_through: false,
        missed_prioritized: report.missed_prioritized.clone(),
    };
    Ok((desc, Some(report.diff_id), outcome))
}

/// One layer's verification result.
#[derive(Debug, Clone)]
pub struct LayerCheck {
    /// The layer.
    pub digest: Digest,
    /// What it was checked as: eStargz, or (by its media type) EROFS.
    pub format: LayerFormat,
    /// Entries in its TOC, or inodes of its EROFS image (0 if invalid).
    pub entries: usize,
    /// `Ok(())`, or why the layer is not a valid eStargz layer.
    pub result: Result<(), String>,
}

/// Verifies every layer of every locally present manifest of `image`: the TOC against the
/// annotation, every chunk against its digest; an EROFS layer's blob against its digest
/// and its image with [`strata_formats::erofs::validate`].
pub fn check(store: &Store, image: &ImageRecord) -> Result<Vec<LayerCheck>, ImageError> {
    let mut manifests = Vec::new();
    if media::is_index(image.target.media_type().as_ref()) {
        let (digest, bytes) = read_doc(store, &image.target)?;
        for m in parse_index(&bytes, &format!("index {digest}"))?.manifests() {
            if store.content().exists(&descriptor_digest(m)?) {
                manifests.push(m.clone());
            }
        }
    } else {
        manifests.push(image.target.clone());
    }
    let mut out = Vec::new();
    for m in &manifests {
        let (digest, bytes) = read_doc(store, m)?;
        for layer in parse_manifest(&bytes, &format!("manifest {digest}"))?.layers() {
            let d = descriptor_digest(layer)?;
            if media::is_erofs_layer(layer.media_type().as_ref()) {
                let result = super::convert_erofs::check_layer(store, &d);
                out.push(LayerCheck {
                    digest: d,
                    format: LayerFormat::Erofs,
                    entries: *result.as_ref().unwrap_or(&0),
                    result: result.map(|_| ()),
                });
                continue;
            }
            let toc = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(estargz::TOC_DIGEST_ANNOTATION).cloned());
            let result = (|| -> Result<usize, String> {
                let toc = toc.ok_or(
                    "no containerd.io/snapshot/stargz/toc.digest annotation: not an eStargz layer",
                )?;
                let toc: Digest = toc
                    .parse()
                    .map_err(|e| format!("bad TOC digest annotation: {e}"))?;
                let blob = store.content().reader_at(&d).map_err(|e| e.to_string())?;
                let reader = EstargzReader::open(blob, Some(&toc)).map_err(|e| e.to_string())?;
                reader.verify_all().map_err(|e| e.to_string())?;
                Ok(reader.toc().entries.len())
            })();
            out.push(LayerCheck {
                digest: d,
                format: LayerFormat::Estargz,
                entries: *result.as_ref().unwrap_or(&0),
                result: result.map(|_| ()),
            });
        }
    }
    Ok(out)
}
