//! `strata artifact push`: a directory pushed as a ModelPack or ORAS artifact, with its
//! chunk index as a referrer.
//!
//! Each file is read twice and never held in memory: once to hash it (its digest and its
//! chunk digests, in one pass), then — unless the registry has the blob already — to
//! stream it up. The small files' tar layers are written to a temporary directory first.
//! Blobs go up before the manifest, the manifest before its referrer.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use strata_formats::artifact::manifest::OCI_MANIFEST;
use strata_formats::artifact::{Descriptor, Manifest, modelpack, oras};
use strata_formats::chunk_index::{ChunkIndex, LayerChunker, LayerChunks};

use super::error::ArtifactError;
use super::index::{IndexPush, push_chunk_index};
use super::plan::{ArtifactFormat, LayerSource, plan, scan, write_tar};
use crate::registry::{Reference, RegistryClient};

/// How an artifact push behaves.
#[derive(Clone)]
pub struct ArtifactPushOptions {
    /// ModelPack or ORAS.
    pub format: ArtifactFormat,
    /// The chunk index's chunk size.
    pub chunk_size: u64,
    /// Blobs uploaded at once (0 means 3).
    pub max_concurrent_uploads: usize,
    /// Progress reports, called from several tasks.
    pub progress: Option<ArtifactEventSink>,
}

impl std::fmt::Debug for ArtifactPushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactPushOptions")
            .field("format", &self.format)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// Where progress events go.
pub type ArtifactEventSink = Arc<dyn Fn(&ArtifactEvent) + Send + Sync>;

/// What a push reports as it goes. `key` identifies one file's or blob's progress.
#[derive(Debug, Clone)]
pub enum ArtifactEvent {
    /// A file (or tar layer) is being hashed, or uploaded.
    Started {
        /// What: `hash <path>`, `upload <path>`.
        label: String,
        /// Its progress key.
        key: String,
        /// Its size.
        size: u64,
    },
    /// More bytes were read.
    Progress {
        /// The progress key.
        key: String,
        /// Bytes in this step.
        bytes: u64,
    },
    /// Done.
    Done {
        /// The progress key.
        key: String,
        /// The label.
        label: String,
        /// What happened.
        message: String,
    },
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct PushedArtifact {
    /// The artifact's manifest.
    pub manifest: Descriptor,
    /// Its chunk index referrer.
    pub index: IndexPush,
}

struct HashedLayer {
    descriptor: Descriptor,
    path: PathBuf,
    label: String,
    chunks: LayerChunks,
}

fn emit(opts: &ArtifactPushOptions, e: ArtifactEvent) {
    if let Some(p) = &opts.progress {
        p(&e);
    }
}

/// Pushes the files under `dir` to `target` as an artifact in `opts.format`, then its
/// chunk index as a referrer. `target` names the tag (or, without one, the manifest goes
/// by digest).
pub async fn push_dir(
    client: &RegistryClient,
    dir: &Path,
    target: &Reference,
    opts: &ArtifactPushOptions,
) -> Result<PushedArtifact, ArtifactError> {
    let dir_owned = dir.to_owned();
    let format = opts.format;
    let layers = blocking(move || scan(&dir_owned).map(|files| plan(&files, format))).await?;
    let scratch =
        tempfile::tempdir().map_err(|e| ArtifactError::io("create a temporary directory", e))?;

    let mut hashed = Vec::with_capacity(layers.len());
    for (i, layer) in layers.into_iter().enumerate() {
        let (path, label) = match &layer.source {
            LayerSource::File(f) => (f.path.clone(), f.rel.clone()),
            LayerSource::Tar(files) => {
                let path = scratch.path().join(format!("layer-{i}.tar"));
                let (list, p) = (files.clone(), path.clone());
                blocking(move || {
                    let out = std::fs::File::create(&p)
                        .map_err(|e| ArtifactError::io(format!("create {}", p.display()), e))?;
                    write_tar(&list, std::io::BufWriter::new(out))
                })
                .await?;
                let n = files.len();
                let plural = if n == 1 { "" } else { "s" };
                (path, format!("{} ({n} file{plural})", layer.media_type))
            }
        };
        let chunks = hash_file(&path, &label, opts).await?;
        hashed.push(HashedLayer {
            descriptor: Descriptor {
                media_type: layer.media_type,
                digest: chunks.digest.clone(),
                size: chunks.size,
                artifact_type: None,
                annotations: layer.annotations,
            },
            path,
            label,
            chunks,
        });
    }

    let reg = |e| ArtifactError::registry(target, e);
    let limit = opts.max_concurrent_uploads.max(1);
    let results: Vec<Result<(), ArtifactError>> = futures_util::stream::iter(hashed.iter())
        .map(|h| upload_file(client, target, &h.path, &h.label, &h.descriptor, opts))
        .buffer_unordered(limit)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let (config, artifact_type) = match opts.format {
        ArtifactFormat::ModelPack => (
            modelpack_config(dir, &hashed),
            modelpack::ARTIFACT_TYPE.to_owned(),
        ),
        ArtifactFormat::Oras => (
            Bytes::from_static(strata_formats::artifact::manifest::OCI_EMPTY_CONTENT),
            oras::DEFAULT_ARTIFACT_TYPE.to_owned(),
        ),
    };
    let config_desc = match opts.format {
        ArtifactFormat::ModelPack => Descriptor::of(modelpack::CONFIG, &config),
        ArtifactFormat::Oras => Descriptor::empty(),
    };
    push_bytes(client, target, &config_desc, config).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        artifact_type: Some(artifact_type),
        config: config_desc,
        layers: hashed.iter().map(|h| h.descriptor.clone()).collect(),
        subject: None,
        annotations: Default::default(),
    };
    let bytes = Bytes::from(manifest.to_json());
    let manifest_desc = Descriptor::of(OCI_MANIFEST, &bytes);
    let at = match target.tag() {
        Some(_) => target.clone(),
        None => target.with_digest(manifest_desc.digest.clone()),
    };
    client
        .push_manifest(&at, OCI_MANIFEST, bytes)
        .await
        .map_err(reg)?;

    let mut index =
        ChunkIndex::new(opts.chunk_size).map_err(|source| ArtifactError::ChunkIndex {
            what: "chunk size".to_owned(),
            source: Box::new(source),
        })?;
    for h in hashed {
        index.push(h.chunks);
    }
    let index = push_chunk_index(client, target, &manifest_desc, &index).await?;
    Ok(PushedArtifact {
        manifest: manifest_desc,
        index,
    })
}

/// The ModelPack config: the model's name (the directory's), and `modelfs` with each
/// layer's DiffID (raw and plain tar layers are uncompressed: their digests).
fn modelpack_config(dir: &Path, layers: &[HashedLayer]) -> Bytes {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let format = layers
        .iter()
        .find_map(|l| {
            let p = l.descriptor.annotation(modelpack::FILEPATH)?;
            let ext = p.rsplit_once('.')?.1;
            matches!(ext, "safetensors" | "gguf" | "onnx").then(|| ext.to_owned())
        })
        .unwrap_or_default();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| l.descriptor.digest.to_string())
        .collect();
    let mut config = serde_json::json!({});
    if !format.is_empty() {
        config["format"] = serde_json::Value::String(format);
    }
    let doc = serde_json::json!({
        "descriptor": { "name": name },
        "config": config,
        "modelfs": { "type": "layers", "diff_ids": diff_ids },
    });
    Bytes::from(serde_json::to_vec(&doc).expect("invariant: JSON serialises"))
}

/// One pass over `path`: its digest and chunk digests.
async fn hash_file(
    path: &Path,
    label: &str,
    opts: &ArtifactPushOptions,
) -> Result<LayerChunks, ArtifactError> {
    let key = format!("hash {}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|e| ArtifactError::io(format!("stat {}", path.display()), e))?
        .len();
    emit(
        opts,
        ArtifactEvent::Started {
            label: format!("hash {label}"),
            key: key.clone(),
            size,
        },
    );
    let (p, o, k, chunk_size) = (path.to_owned(), opts.clone(), key.clone(), opts.chunk_size);
    let chunks = blocking(move || {
        let mut file = std::fs::File::open(&p)
            .map_err(|e| ArtifactError::io(format!("open {}", p.display()), e))?;
        let mut chunker =
            LayerChunker::new(chunk_size).map_err(|source| ArtifactError::ChunkIndex {
                what: "chunk size".to_owned(),
                source: Box::new(source),
            })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| ArtifactError::io(format!("read {}", p.display()), e))?;
            if n == 0 {
                break;
            }
            chunker.update(&buf[..n]);
            emit(
                &o,
                ArtifactEvent::Progress {
                    key: k.clone(),
                    bytes: n as u64,
                },
            );
        }
        let digest = chunker.digest();
        chunker
            .finish(&digest)
            .map_err(|source| ArtifactError::ChunkIndex {
                what: p.display().to_string(),
                source: Box::new(source),
            })
    })
    .await?;
    emit(
        opts,
        ArtifactEvent::Done {
            key,
            label: format!("hash {label}"),
            message: chunks.digest.short(),
        },
    );
    Ok(chunks)
}

/// Streams `path` up as blob `desc`, unless the registry has it.
async fn upload_file(
    client: &RegistryClient,
    target: &Reference,
    path: &Path,
    label: &str,
    desc: &Descriptor,
    opts: &ArtifactPushOptions,
) -> Result<(), ArtifactError> {
    let reg = |e| ArtifactError::registry(target, e);
    let key = format!("upload {}", desc.digest);
    let label = format!("upload {label}");
    emit(
        opts,
        ArtifactEvent::Started {
            label: label.clone(),
            key: key.clone(),
            size: desc.size,
        },
    );
    if client
        .blob_size(target, &desc.digest)
        .await
        .map_err(reg)?
        .is_some()
    {
        emit(
            opts,
            ArtifactEvent::Done {
                key,
                label,
                message: "already in the registry".to_owned(),
            },
        );
        return Ok(());
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ArtifactError::io(format!("open {}", path.display()), e))?;
    let (o, k) = (opts.clone(), key.clone());
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |r| {
        if let Ok(b) = r {
            emit(
                &o,
                ArtifactEvent::Progress {
                    key: k.clone(),
                    bytes: b.len() as u64,
                },
            );
        }
    });
    client
        .push_blob(
            target,
            &desc.digest,
            desc.size,
            reqwest::Body::wrap_stream(stream),
        )
        .await
        .map_err(reg)?;
    emit(
        opts,
        ArtifactEvent::Done {
            key,
            label,
            message: "uploaded".to_owned(),
        },
    );
    Ok(())
}

/// Pushes a small blob held in memory, unless the registry has it.
pub(crate) async fn push_bytes(
    client: &RegistryClient,
    target: &Reference,
    desc: &Descriptor,
    bytes: Bytes,
) -> Result<(), ArtifactError> {
    let reg = |e| ArtifactError::registry(target, e);
    if client
        .blob_size(target, &desc.digest)
        .await
        .map_err(reg)?
        .is_none()
    {
        client
            .push_blob(target, &desc.digest, desc.size, bytes)
            .await
            .map_err(reg)?;
    }
    Ok(())
}

/// Runs blocking work (file reads) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ArtifactError::io(
            "background task",
            std::io::Error::other(format!("task failed: {e}")),
        )
    })?
}
