//! Model artifacts as volumes, lazily: an artifact whose raw layers its chunk index covers
//! (`docs/chunk-index.md`) is mounted without downloading them. Each raw layer is served
//! by a FUSE layer filesystem of one file ([`RawBlobFile`]) whose chunks are fetched from
//! the registry by range on first read ([`RangeChunkSource`]), hashed against the index,
//! stored in the volumes' chunk cache, and fetched ahead for sequential readers
//! ([`super::readahead`]). The artifact's tar layers (config files, tokenizers: small) are
//! downloaded, verified and applied into a tree first. An overlay stacks the FUSE mounts
//! over the tree; `strata volume mount` binds it (or its sub path) read-only on the target.
//!
//! The filesystems are served by a process of their own (`strata volume serve-artifact`,
//! started by `volume mount`, detached from the terminal), so the volume does not depend
//! on `strata serve` or on the command that mounted it; it ends when the last mount of
//! its filesystems is gone (`volume umount`). Like the daemon's lazy layers, each
//! connection's `/dev/fuse` descriptor is also handed to an fd holder (one per volume):
//! if the serving process dies, readers wait in the kernel instead of failing, and the
//! next `strata volume` command starts a new one that resumes the same connections
//! ([`ServedArtifact::resume`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_formats::Digest;
use strata_formats::artifact::{ArtifactLayout, Entry};
use strata_formats::chunk_index::ChunkIndex;
use strata_formats::layer_index::raw::RawBlobFile;
use strata_fuse::{ChunkSource, FuseServer, InitState, LayerFs, LayerTree, ServeOptions};
use strata_snapshotters::{Mount, mount};
use tokio::runtime::Handle;

use super::VolumeError;
use super::range_source::RangeChunkSource;
use super::readahead::{ReadaheadOptions, ReadaheadPool};
use crate::cache::{CachedChunkSource, ChunkCache, ChunkWriter, HotChunks};
use crate::registry::range::{HttpRangeFetcher, RangeFetcher, RangeOptions, RangeStats};
use crate::registry::{Reference, RegistryClient};

/// One raw layer served lazily as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyFile {
    /// Where it appears in the volume (cleaned, relative).
    pub path: String,
    /// The layer.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its chunks' digests, from the chunk index.
    pub chunks: Vec<Digest>,
}

/// What the serving process needs: written by `volume mount` before it starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyArtifact {
    /// The artifact, pinned by its manifest digest.
    pub reference: String,
    /// The index's chunk size.
    pub chunk_size: u64,
    /// The raw layers.
    pub files: Vec<LazyFile>,
    /// The bound of the volumes' chunk cache, bytes.
    pub cache_size: u64,
    /// Serve cached files with FUSE passthrough.
    pub passthrough: bool,
    /// The registry flags the serving process is started with (`--plain-http`, …), so
    /// that a later command can start it again.
    #[serde(default)]
    pub registry_args: Vec<String>,
}

impl LazyArtifact {
    /// The raw layers of `layout`, each with its chunks from `index`. `Err` names why the
    /// artifact cannot be served lazily (a raw layer the index does not cover, or none at
    /// all): it is then pulled whole instead.
    pub fn plan(
        reference: &Reference,
        layout: &ArtifactLayout,
        index: &ChunkIndex,
    ) -> Result<(LazyArtifact, Vec<Entry>), String> {
        let mut files = Vec::new();
        let mut tars = Vec::new();
        for entry in &layout.entries {
            match entry {
                Entry::RawFile { path, descriptor } => {
                    let Some(chunks) = index.layer(&descriptor.digest) else {
                        return Err(format!(
                            "layer {} ({path}) is not in the chunk index",
                            descriptor.digest
                        ));
                    };
                    if chunks.size != descriptor.size {
                        return Err(format!(
                            "layer {}: the chunk index says {} bytes, the manifest {}",
                            descriptor.digest, chunks.size, descriptor.size
                        ));
                    }
                    files.push(LazyFile {
                        path: path.clone(),
                        digest: descriptor.digest.clone(),
                        size: descriptor.size,
                        chunks: chunks.chunks.clone(),
                    });
                }
                Entry::Tar { .. } => tars.push(entry.clone()),
            }
        }
        if files.is_empty() {
            return Err("it has no raw layers to read lazily".into());
        }
        Ok((
            LazyArtifact {
                reference: reference.to_string(),
                chunk_size: index.chunk_size,
                files,
                cache_size: 0,
                passthrough: false,
                registry_args: Vec::new(),
            },
            tars,
        ))
    }
}

/// The directories of one lazy volume, under `<root>/volumes/<id>.lazy/`.
#[derive(Debug, Clone)]
pub struct LazyDirs {
    /// The volume's directory.
    pub root: PathBuf,
}

impl LazyDirs {
    /// The serving process's input ([`LazyArtifact`], JSON).
    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.json")
    }
    /// The tar layers, applied.
    pub fn tree(&self) -> PathBuf {
        self.root.join("tree")
    }
    /// Where raw layer `i`'s filesystem is mounted until the volume is bound.
    pub fn layer(&self, i: usize) -> PathBuf {
        self.root.join("layers").join(i.to_string())
    }
    /// Where the overlay is mounted until the volume is bound.
    pub fn merged(&self) -> PathBuf {
        self.root.join("merged")
    }
    /// The serving process's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }
    /// The socket of the volume's fd holder.
    pub fn holder_socket(&self) -> PathBuf {
        self.root.join("fd-holder.sock")
    }
    /// Detaches the staging mounts (the target's bind keeps the filesystems alive).
    pub fn detach_staging(&self) {
        let _ = mount::unmount_all(&self.merged(), true);
        if let Ok(layers) = std::fs::read_dir(self.root.join("layers")) {
            for layer in layers.flatten() {
                let _ = mount::unmount_all(&layer.path(), true);
            }
        }
    }
}

/// The served filesystems of a lazy artifact volume.
#[derive(Debug)]
pub struct ServedArtifact {
    servers: Vec<FuseServer>,
    fetchers: Vec<Arc<HttpRangeFetcher>>,
    writer: Arc<ChunkWriter>,
}

/// One raw layer's filesystem, ready to mount or resume.
struct LayerFilesystem {
    name: String,
    fs: Arc<LayerFs>,
    fetcher: Arc<HttpRangeFetcher>,
}

/// The filesystems of `spec`'s raw layers: built the same way for a mount and for a
/// resume, so inode numbers the kernel holds mean the same files.
fn filesystems(
    spec: &LazyArtifact,
    client: &RegistryClient,
    runtime: &Handle,
    cache: &Arc<ChunkCache>,
    writer: &Arc<ChunkWriter>,
) -> Result<Vec<LayerFilesystem>, VolumeError> {
    let reference: Reference = spec
        .reference
        .parse()
        .map_err(|e| VolumeError::Remote(format!("reference {}: {e}", spec.reference)))?;
    let pool = ReadaheadPool::new(READAHEAD);
    // Room for what the read-ahead has in flight and the chunk its reader is in.
    let hot = Arc::new(HotChunks::new(
        usize::try_from(spec.chunk_size)
            .unwrap_or(usize::MAX)
            .saturating_mul(READAHEAD.threads + 1),
    ));
    let mut layers = Vec::new();
    for file in &spec.files {
        let name = file.digest.to_string();
        let index = RawBlobFile {
            path: file.path.clone(),
            size: file.size,
            chunk_size: spec.chunk_size,
            digests: file.chunks.clone(),
            mode: 0o444,
            mtime: 0,
        }
        .layer_index()
        .map_err(|e| VolumeError::Remote(format!("layer {name}: {e}")))?;
        let fetcher = Arc::new(HttpRangeFetcher::new(
            client.clone(),
            reference.clone(),
            file.digest.clone(),
            file.size,
            RangeOptions::default(),
        ));
        let direct: Arc<dyn ChunkSource> = Arc::new(RangeChunkSource::new(
            fetcher.clone() as Arc<dyn RangeFetcher>,
            runtime.clone(),
        ));
        let cached: Arc<dyn ChunkSource> = Arc::new(
            CachedChunkSource::new(direct, Arc::clone(cache))
                .with_memory(Arc::clone(&hot), Arc::clone(writer)),
        );
        let source = pool.source(&name, cached, Arc::clone(cache));
        let fs = LayerFs::new(LayerTree::build(name.clone(), index), Arc::new(source));
        layers.push(LayerFilesystem {
            name,
            fs: Arc::new(fs),
            fetcher,
        });
    }
    Ok(layers)
}

/// Read-ahead of a volume: 3 threads. On 2 cores a fourth added only memory (a chunk in
/// flight, about 6 MiB of RSS with its buffers), not throughput.
const READAHEAD: ReadaheadOptions = ReadaheadOptions {
    threads: 3,
    max_window: 4,
};

/// Threads per raw layer's FUSE connection: a reply is a memory copy or a wait for a fetch
/// (that the read-ahead threads mostly already started), so two suffice, and each more
/// holds a 1 MiB reply buffer.
const FUSE_THREADS: usize = 2;

fn serve_options(spec: &LazyArtifact) -> ServeOptions {
    ServeOptions {
        passthrough: spec.passthrough,
        threads: FUSE_THREADS,
        ..ServeOptions::default()
    }
}

impl ServedArtifact {
    /// Mounts a FUSE filesystem per raw layer of `spec` and the overlay of them over the
    /// tree on `dirs.merged()`. Blocks on `runtime` only when files are read (not from
    /// inside it).
    ///
    /// # Errors
    ///
    /// A chunk list that does not cut its layer, a mount that fails.
    pub fn mount(
        spec: &LazyArtifact,
        client: &RegistryClient,
        runtime: &Handle,
        dirs: &LazyDirs,
        cache: &Arc<ChunkCache>,
    ) -> Result<ServedArtifact, VolumeError> {
        let mut served = ServedArtifact {
            servers: Vec::new(),
            fetchers: Vec::new(),
            writer: ChunkWriter::start(),
        };
        let options = serve_options(spec);
        for (i, layer) in filesystems(spec, client, runtime, cache, &served.writer)?
            .into_iter()
            .enumerate()
        {
            let at = dirs.layer(i);
            std::fs::create_dir_all(&at)
                .map_err(VolumeError::io(format!("create {}", at.display())))?;
            let server = FuseServer::mount(layer.fs, &at, &options)
                .map_err(|e| VolumeError::Remote(format!("mount layer {}: {e}", layer.name)))?;
            served.servers.push(server);
            served.fetchers.push(layer.fetcher);
        }
        let mut lower: Vec<String> = (0..spec.files.len())
            .map(|i| dirs.layer(i).display().to_string())
            .collect();
        lower.push(dirs.tree().display().to_string());
        let overlay = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![format!("lowerdir={}", lower.join(":"))],
        };
        let merged = dirs.merged();
        std::fs::create_dir_all(&merged)
            .map_err(VolumeError::io(format!("create {}", merged.display())))?;
        overlay.mount(&merged).map_err(VolumeError::io(format!(
            "mount the overlay on {}",
            merged.display()
        )))?;
        served.warm(runtime);
        Ok(served)
    }

    /// Serves `spec`'s filesystems again on the live connections `held` (one per raw
    /// layer, in order, each with what its INIT negotiated), after the process that
    /// served them died: readers waited in the kernel meanwhile.
    ///
    /// # Errors
    ///
    /// Not one connection per layer, or a connection that cannot be resumed.
    pub fn resume(
        spec: &LazyArtifact,
        client: &RegistryClient,
        runtime: &Handle,
        cache: &Arc<ChunkCache>,
        held: Vec<(std::os::fd::OwnedFd, InitState)>,
    ) -> Result<ServedArtifact, VolumeError> {
        if held.len() != spec.files.len() {
            return Err(VolumeError::Remote(format!(
                "{} held connections for {} raw layers",
                held.len(),
                spec.files.len()
            )));
        }
        let mut served = ServedArtifact {
            servers: Vec::new(),
            fetchers: Vec::new(),
            writer: ChunkWriter::start(),
        };
        let options = serve_options(spec);
        for (layer, (dev, state)) in filesystems(spec, client, runtime, cache, &served.writer)?
            .into_iter()
            .zip(held)
        {
            let server = FuseServer::resume(layer.fs, dev, state, None, &options)
                .map_err(|e| VolumeError::Remote(format!("resume layer {}: {e}", layer.name)))?;
            served.servers.push(server);
            served.fetchers.push(layer.fetcher);
        }
        served.warm(runtime);
        Ok(served)
    }

    /// Each connection's device and negotiated state, in layer order: what a later
    /// process needs to resume them.
    pub fn connections(&self) -> Vec<(std::os::fd::BorrowedFd<'_>, InitState)> {
        self.servers
            .iter()
            .map(|s| (s.device(), s.init_state()))
            .collect()
    }

    /// Opens the registry connection (and authenticates) in the background, so that the
    /// first read does not wait for it. No blob byte is asked for.
    fn warm(&self, runtime: &Handle) {
        if let Some(fetcher) = self.fetchers.first() {
            let fetcher = Arc::clone(fetcher);
            runtime.spawn(async move { fetcher.warm().await });
        }
    }

    /// Range requests and bytes fetched so far, all layers together.
    pub fn fetched(&self) -> RangeStats {
        let mut total = RangeStats::default();
        for f in &self.fetchers {
            let s = f.stats();
            total.requests += s.requests;
            total.bytes += s.bytes;
        }
        total
    }

    /// Serves until the kernel ends every connection (the volume was unmounted), then
    /// returns. A connection that is still up is never aborted here.
    pub fn wait(self) {
        let mut logged = std::time::Instant::now();
        while !self.servers.iter().all(FuseServer::finished) {
            std::thread::sleep(Duration::from_millis(200));
            if logged.elapsed() >= Duration::from_secs(60) {
                logged = std::time::Instant::now();
                let f = self.fetched();
                tracing::info!(requests = f.requests, bytes = f.bytes, "fetched so far");
            }
        }
        let f = self.fetched();
        tracing::info!(requests = f.requests, bytes = f.bytes, "fetched in all");
        self.writer.flush();
        for server in self.servers {
            // The connection is gone: nothing to unmount or abort (its id may be another
            // connection's by now).
            let _ = server.stop();
        }
    }
}

/// Writes `spec` to `path` (temp file, fsync, rename).
///
/// # Errors
///
/// The file cannot be written.
pub fn write_spec(path: &Path, spec: &LazyArtifact) -> std::io::Result<()> {
    use std::io::Write as _;
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec(spec).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Reads the spec at `path` (bounded: 64 MiB, some 800,000 chunks).
///
/// # Errors
///
/// It cannot be read or parsed.
pub fn read_spec(path: &Path) -> std::io::Result<LazyArtifact> {
    use std::io::Read as _;
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(64 << 20)
        .read_to_end(&mut text)?;
    serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
