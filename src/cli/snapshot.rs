//! `strata snapshot …`: the snapshots of one snapshotter (as `ctr snapshots`), and
//! `strata mount` / `strata umount`: an image's rootfs, read-write, for inspection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use strata::image::platform::Platform;
use strata::image::unpack::{Unpacker, image_manifest, manifest_layers};
use strata_snapshotters::{Info, Kind, Snapshotter, mount};

use super::format;

/// Which snapshotter a command works on.
#[derive(Debug, Clone, Args)]
pub(crate) struct SnapshotterArg {
    /// The snapshotter: overlayfs, native, stargz, erofs, or a name the daemon's configuration
    /// maps to one of them (`[snapshotters]`, e.g. `strata`), as containerd names it.
    #[arg(long, global = true, default_value = strata::snapshots::DEFAULT_SNAPSHOTTER)]
    pub(crate) snapshotter: String,
    /// The daemon's configuration file, for its `[snapshotters]` names. Default:
    /// /etc/strata/config.toml, if it exists.
    #[arg(
        long = "config",
        global = true,
        value_name = "FILE",
        env = "STRATA_CONFIG"
    )]
    pub(crate) config: Option<PathBuf>,
    /// The socket of `strata serve`, used when the daemon holds the snapshotter's
    /// metadata (only one process at a time can open it).
    #[arg(long, global = true, env = "STRATA_SOCKET", default_value = strata::serve::config::DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}

impl SnapshotterArg {
    /// The snapshotter's metadata directly, or, while `strata serve` holds it, the daemon
    /// over its socket.
    pub(crate) fn open(&self, root: &Path) -> anyhow::Result<Arc<dyn Snapshotter>> {
        let implementation = self.implementation()?;
        match strata::snapshots::open_snapshotter(root, &implementation, &Default::default()) {
            Ok(sn) => Ok(sn),
            Err(e) if e.kind() == strata_snapshotters::ErrorKind::Unavailable => {
                match strata::serve::client::DaemonSnapshotter::connect(
                    &self.socket,
                    &self.snapshotter,
                ) {
                    Ok(daemon) => Ok(Arc::new(daemon)),
                    Err(daemon) => Err(anyhow::anyhow!(
                        "snapshotter {}: {e}; and through the daemon: {daemon}; \
                         if `strata serve` listens on another socket, name it with \
                         --socket or STRATA_SOCKET",
                        self.snapshotter
                    )),
                }
            }
            Err(e) => Err(e).with_context(|| format!("snapshotter {}", self.snapshotter)),
        }
    }
}

impl SnapshotterArg {
    /// The implementation answering the snapshotter's name: itself for overlayfs, native,
    /// stargz and erofs; otherwise what the daemon's configuration maps the name to.
    pub(crate) fn implementation(&self) -> anyhow::Result<String> {
        if strata::snapshots::SNAPSHOTTERS.contains(&self.snapshotter.as_str()) {
            return Ok(self.snapshotter.clone());
        }
        let config = strata::serve::config::Config::load(self.config.as_deref())?;
        let names = config
            .resolved_snapshotters()
            .map_err(|message| anyhow::anyhow!("{message}"))?;
        names.get(&self.snapshotter).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "unknown snapshotter {:?}: not overlayfs, native, stargz or erofs, and the daemon's \
                 configuration ({}) names only {}",
                self.snapshotter,
                self.config.as_deref().map_or_else(
                    || strata::serve::config::DEFAULT_CONFIG_PATH.to_string(),
                    |p| p.display().to_string()
                ),
                names.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// A snapshot key as one shell word: quoted (Rust/JSON string syntax) when it holds
/// whitespace or quotes, as is.
fn quote_key(key: &str) -> String {
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("{key:?}")
    } else {
        key.to_owned()
    }
}

/// The lazy-loading state `strata serve` keeps for a stargz snapshot (bytes fetched,
/// percent, errors), from the daemon's state file.
fn lazy_state(root: &Path, key: &str) -> Option<serde_json::Value> {
    let path = strata::snapshots::snapshotter_root(root, "stargz")
        .join("layers")
        .join(strata::stargz::STATE_FILE);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    state.get("layers")?.get(key).cloned()
}

#[derive(Debug, Args)]
#[command(
    after_help = "While `strata serve` runs it holds the snapshotters' metadata; these commands then \
    go through its socket (--socket).\n\nFor a stargz snapshot, `info` adds \"Lazy\": what the daemon has fetched \
    of the layer (bytes, requests, percent, errors).\n\nExamples:\n  strata snapshot ls\n  strata snapshot --snapshotter native ls --filter 'kind==committed'\n  \
    strata snapshot info sha256:…\n  strata snapshot mounts /mnt/c1 my-container\n  strata snapshot usage\n  \
    strata snapshot prepare my-container sha256:…\n  strata snapshot rm my-container"
)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    snapshotter: SnapshotterArg,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// List snapshots: key, parent, kind.
    #[command(
        after_help = "Examples:\n  strata snapshot ls\n  strata snapshot --snapshotter native ls --filter 'kind==committed'\n  strata snapshot ls --filter 'labels.\"containerd.io/snapshot.ref\"'"
    )]
    Ls {
        /// containerd filters (`kind==committed`, `parent==…`, `labels."k"==v`); any matches.
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Show one snapshot as JSON (kind, name, parent, labels, times).
    #[command(
        after_help = "Examples:\n  strata snapshot info sha256:…\n  strata snapshot --snapshotter stargz info sha256:…   # adds what was fetched lazily"
    )]
    Info {
        /// The snapshot key.
        key: String,
    },
    /// Remove snapshots (those with children cannot be removed).
    #[command(
        after_help = "Examples:\n  strata snapshot rm my-container\n  strata snapshot --snapshotter native rm view-1 view-2"
    )]
    Rm {
        /// Snapshot keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mount commands of an active snapshot or view, for TARGET.
    #[command(after_help = "Example:\n  strata snapshot mounts /mnt/c1 my-container | sh")]
    Mounts {
        /// The directory the mounts are meant for.
        target: PathBuf,
        /// The snapshot key.
        key: String,
    },
    /// Disk usage (bytes, inodes) of snapshots, not counting their parents.
    #[command(
        after_help = "Examples:\n  strata snapshot usage\n  strata snapshot usage my-container"
    )]
    Usage {
        /// Only these keys (default: all).
        keys: Vec<String>,
    },
    /// Create an active snapshot over a committed parent; prints its mounts.
    #[command(
        after_help = "Examples:\n  strata snapshot prepare scratch\n  strata snapshot prepare my-container sha256:…   # over an image's top layer"
    )]
    Prepare {
        /// The new key.
        key: String,
        /// The committed parent (default: none).
        parent: Option<String>,
    },
    /// Create a read-only view of a committed snapshot; prints its mounts.
    #[command(after_help = "Example:\n  strata snapshot view inspect-1 sha256:…")]
    View {
        /// The new key.
        key: String,
        /// The committed parent (default: none).
        parent: Option<String>,
    },
    /// Remove the active snapshots interrupted unpacks left (a `strata pull` stopped by
    /// Ctrl-C or a crash); the next pull and `strata serve`'s start do it too.
    #[command(after_help = "Example:\n  strata snapshot prune")]
    Prune,
    /// Commit an active snapshot under a name.
    #[command(after_help = "Example:\n  strata snapshot commit my-layer my-container")]
    Commit {
        /// The committed snapshot's name.
        name: String,
        /// The active snapshot's key.
        key: String,
    },
}

pub(crate) fn run(root: &Path, args: &SnapshotArgs) -> anyhow::Result<()> {
    let sn = args.snapshotter.open(root)?;
    match &args.command {
        SnapshotCommand::Ls { filter } => {
            let mut rows = Vec::new();
            sn.walk(filter, &mut |info: &Info| {
                rows.push((
                    info.name.clone(),
                    info.parent.clone().unwrap_or_default(),
                    info.kind,
                ));
                Ok(())
            })?;
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            // Columns as wide as their longest entry (containerd's keys such as
            // `default/12/sha256:…` are longer than a digest); a key with whitespace
            // (an unpack's `extract-… sha256:…`) is quoted so that it reads as one.
            let rows: Vec<(String, String, Kind)> = rows
                .into_iter()
                .map(|(name, parent, kind)| (quote_key(&name), quote_key(&parent), kind))
                .collect();
            let key_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
            let parent_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
            println!("{:<key_width$} {:<parent_width$} KIND", "KEY", "PARENT");
            for (name, parent, kind) in rows {
                println!("{name:<key_width$} {parent:<parent_width$} {kind}");
            }
        }
        SnapshotCommand::Info { key } => {
            let info = sn.stat(key).with_context(|| format!("snapshot {key}"))?;
            let mut json = info_json(&info);
            if args.snapshotter.snapshotter == "stargz" {
                // A layer mounted a moment ago may not be in the daemon's state file yet
                // (it is rewritten every 250 ms): wait a little for a remote snapshot's.
                let remote = info.labels.contains_key("containerd.io/snapshot/remote");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let lazy = loop {
                    match lazy_state(root, key) {
                        Some(lazy) => break Some(lazy),
                        None if remote && std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        None => break None,
                    }
                };
                if let Some(lazy) = lazy {
                    json["Lazy"] = lazy;
                }
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        SnapshotCommand::Prune => {
            for key in strata::image::unpack::remove_interrupted_unpacks(&*sn)? {
                println!("{key}");
            }
        }
        SnapshotCommand::Rm { keys } => {
            for key in keys {
                // A `strata mount` keys its snapshot by its directory: removing it under
                // the live mount would empty the mounted tree (containerd refuses too).
                if Path::new(key).is_absolute() && mount::is_mounted(Path::new(key)) {
                    bail!(
                        "remove snapshot {key}: it is mounted on {key} (failed precondition); \
                         `strata umount {key}` unmounts and removes it"
                    );
                }
                sn.remove(key)
                    .with_context(|| format!("remove snapshot {key}"))?;
                println!("{key}");
            }
        }
        SnapshotCommand::Mounts { target, key } => {
            let mounts = sn.mounts(key).with_context(|| format!("snapshot {key}"))?;
            for m in mounts {
                let at = if m.target.is_empty() {
                    target.clone()
                } else {
                    target.join(m.target.trim_start_matches('/'))
                };
                println!(
                    "mount -t {} {} {} -o {}",
                    m.kind,
                    m.source,
                    at.display(),
                    m.options.join(",")
                );
            }
        }
        SnapshotCommand::Usage { keys } => {
            let keys = if keys.is_empty() {
                let mut all = Vec::new();
                sn.walk(&[], &mut |info: &Info| {
                    all.push(info.name.clone());
                    Ok(())
                })?;
                all.sort();
                all
            } else {
                keys.clone()
            };
            // Every usage first: an unknown key fails with nothing printed before it.
            let rows = keys
                .into_iter()
                .map(|key| {
                    let u = sn
                        .usage(&key)
                        .with_context(|| format!("usage of snapshot {key}"))?;
                    Ok((key, u))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            println!("{:<72} {:>12} INODES", "KEY", "SIZE");
            for (key, u) in rows {
                println!(
                    "{key:<72} {:>12} {}",
                    format::size(u.size.max(0) as u64),
                    u.inodes
                );
            }
        }
        SnapshotCommand::Prepare { key, parent } | SnapshotCommand::View { key, parent } => {
            let parent = parent.as_deref().unwrap_or("");
            let mounts = if matches!(args.command, SnapshotCommand::View { .. }) {
                sn.view(key, parent, BTreeMap::new())
            } else {
                sn.prepare(key, parent, BTreeMap::new())
            }
            .with_context(|| format!("snapshot {key}"))?;
            for m in mounts {
                println!(
                    "mount -t {} {} -o {}",
                    m.kind,
                    m.source,
                    m.options.join(",")
                );
            }
        }
        SnapshotCommand::Commit { name, key } => {
            sn.commit(name, key, BTreeMap::new())
                .with_context(|| format!("commit snapshot {key} as {name}"))?;
        }
    }
    sn.close()?;
    Ok(())
}

fn info_json(info: &Info) -> serde_json::Value {
    let time = |t: std::time::SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    serde_json::json!({
        "Kind": match info.kind { Kind::View => "View", Kind::Active => "Active", Kind::Committed => "Committed" },
        "Name": info.name,
        "Parent": info.parent.clone().unwrap_or_default(),
        "Labels": info.labels,
        "Created": time(info.created),
        "Updated": time(info.updated),
    })
}

#[derive(Debug, Args)]
#[command(
    after_help = "The image's layers are unpacked first if needed (its content must be in the store: \
    `strata pull`). The mount is read-write; changes go to a new active snapshot keyed by DIR and are \
    discarded by `strata umount DIR`.\n\n\
    With --lazy, IMAGE is a registry reference to an eStargz image (`strata convert`): nothing is \
    downloaded up front; each layer's TOC is fetched with range requests, files are fetched chunk by \
    chunk on first read (every chunk verified), and the command stays in the foreground serving them \
    until Ctrl-C or SIGTERM, then unmounts and prints the bytes fetched.\n\nExamples:\n  \
    strata mount docker.io/library/alpine:3.20 /mnt/alpine\n  \
    strata mount --snapshotter native app:1 /tmp/app-root\n  \
    strata mount --lazy --plain-http 127.0.0.1:5000/app:1-esgz /mnt/app"
)]
pub(crate) struct MountArgs {
    /// The local image (`strata image ls`), or with --lazy a registry reference.
    image: String,
    /// The directory to mount its rootfs on (must exist).
    dir: PathBuf,
    /// The platform of a multi-platform image (default: this host's).
    #[arg(long, value_parser = super::parse_platform)]
    platform: Option<Platform>,
    /// Mount an eStargz image from its registry lazily, over FUSE (foreground).
    #[arg(long)]
    lazy: bool,
    /// With --lazy: most bytes of decompressed chunks kept in `<root>/cache/chunks`
    /// (shared by all lazy mounts; least recently used evicted); 0 disables the cache.
    #[arg(long, default_value_t = 4 << 30)]
    cache_max_size: u64,
    /// With --lazy: files whose chunks are all cached are read by the kernel directly
    /// from a backing file in the cache (FUSE passthrough; the first open of a large file
    /// assembles it from its chunks).
    #[arg(long)]
    passthrough: bool,
    #[command(flatten)]
    registry: super::transfer::RegistryArgs,
    #[command(flatten)]
    snapshotter: SnapshotterArg,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata umount /mnt/alpine")]
pub(crate) struct UmountArgs {
    /// The directory given to `strata mount`.
    dir: PathBuf,
    #[command(flatten)]
    snapshotter: SnapshotterArg,
}

/// The snapshot key of a mount: its directory, absolute (as `ctr image mount` uses).
fn mount_key(dir: &Path) -> anyhow::Result<String> {
    let abs =
        std::fs::canonicalize(dir).with_context(|| format!("mount point {}", dir.display()))?;
    abs.to_str()
        .map(str::to_owned)
        .with_context(|| format!("mount point {}: not UTF-8", abs.display()))
}

pub(crate) fn mount_image(root: &Path, args: &MountArgs) -> anyhow::Result<()> {
    if args.lazy {
        return mount_lazy(root, args);
    }
    let store = super::open_store(root)?;
    let image = strata::image::find_image(&store, &args.image)
        .with_context(|| format!("mount: image {:?}", args.image))?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let (_, manifest) = image_manifest(&store, &image, &platform)?;
    let layers = manifest_layers(&store, &manifest)?;
    let sn = args.snapshotter.open(root)?;
    let scratch = strata::snapshots::scratch_dir(root, &args.snapshotter.snapshotter);
    for done in Unpacker::new(&store, &*sn, &scratch).unpack_all(&layers)? {
        if !done.existed {
            eprintln!(
                "layer {}: unpacked into snapshot {}",
                done.layer.short(),
                done.chain_id.short()
            );
        }
    }
    let key = mount_key(&args.dir)?;
    let parent = layers
        .last()
        .map(|l| l.chain_id.to_string())
        .unwrap_or_default();
    let mounts = sn
        .prepare(&key, &parent, BTreeMap::new())
        .with_context(|| format!("mount {}: snapshot {key}", args.image))?;
    if let Err(e) = mount::mount_all(&mounts, Path::new(&key)) {
        let _ = mount::unmount_all(Path::new(&key), true);
        let _ = sn.remove(&key);
        bail!("mount {} on {key}: {e}", args.image);
    }
    sn.close()?;
    eprintln!("mounted {} on {key}", args.image);
    Ok(())
}

pub(crate) fn umount(root: &Path, args: &UmountArgs) -> anyhow::Result<()> {
    let key = mount_key(&args.dir)?;
    // The mount's snapshot is in the snapshotter `strata mount` used: the one named, else
    // whichever of them holds a snapshot under this key.
    let mut tried = Vec::new();
    let mut found = None;
    let mut names = vec![args.snapshotter.snapshotter.clone()];
    names.extend(
        strata::snapshots::SNAPSHOTTERS
            .iter()
            .map(|s| s.to_string())
            .filter(|s| *s != args.snapshotter.snapshotter),
    );
    for name in names {
        let arg = SnapshotterArg {
            snapshotter: name.clone(),
            ..args.snapshotter.clone()
        };
        let sn = arg.open(root)?;
        match sn.stat(&key) {
            Ok(_) => {
                found = Some((name, sn));
                break;
            }
            Err(e) if e.kind() == strata_snapshotters::ErrorKind::NotFound => {
                sn.close()?;
                tried.push(name);
            }
            Err(e) => return Err(e).with_context(|| format!("umount {key}: snapshotter {name}")),
        }
    }
    let Some((name, sn)) = found else {
        bail!(
            "umount {key}: no snapshot of a `strata mount` there (looked in {}); \
             a `strata mount --lazy` is unmounted by stopping it (Ctrl-C)",
            tried.join(", ")
        );
    };
    mount::unmount_all(Path::new(&key), false).with_context(|| format!("umount {key}"))?;
    sn.remove(&key)
        .with_context(|| format!("umount {key}: remove its {name} snapshot"))?;
    sn.close()?;
    eprintln!("unmounted {key}");
    Ok(())
}

/// `strata mount --lazy`: serves the mount in the foreground until SIGINT or SIGTERM.
fn mount_lazy(root: &Path, args: &MountArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let reference: strata::registry::Reference = args
        .image
        .parse()
        .with_context(|| format!("mount --lazy {:?}", args.image))?;
    let target = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("mount point {}", args.dir.display()))?;
    let client = args.registry.client()?;
    let runtime = super::transfer::runtime()?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let work = root
        .join("tmpmounts")
        .join(format!("lazy-{}", std::process::id()));
    let start = std::time::Instant::now();
    let cache = if args.cache_max_size == 0 {
        None
    } else {
        let dir = root.join("cache").join("chunks");
        Some(std::sync::Arc::new(
            strata::cache::ChunkCache::open(&dir, args.cache_max_size)
                .with_context(|| format!("open the chunk cache {}", dir.display()))?,
        ))
    };
    let mounted = strata::lazy_mount::LazyMount::mount(
        runtime.handle(),
        &client,
        &reference,
        &platform,
        &target,
        &work,
        strata::lazy_mount::LazyMountOptions {
            cache: cache.clone(),
            passthrough: args.passthrough,
        },
    );
    let mounted = match mounted {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e.into());
        }
    };
    let report = |label: &str| {
        let (mut bytes, mut size, mut requests) = (0, 0, 0);
        for l in mounted.fetched() {
            bytes += l.stats.bytes;
            size += l.size;
            requests += l.stats.requests;
        }
        eprintln!(
            "{label}: fetched {} of {} ({:.1} %) in {requests} range requests",
            format::size(bytes),
            format::size(size),
            if size == 0 {
                0.0
            } else {
                100.0 * bytes as f64 / size as f64
            }
        );
    };
    eprintln!(
        "mounted {reference} lazily on {} in {:.2}s ({} layers); Ctrl-C or SIGTERM unmounts",
        target.display(),
        start.elapsed().as_secs_f64(),
        mounted.fetched().len()
    );
    report("at mount");
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    report("at unmount");
    if let Some(cache) = &cache {
        let s = cache.stats();
        eprintln!(
            "chunk cache: {} hits, {} misses, {} stored, {} evicted, {} held, {} found corrupt and dropped",
            s.hits,
            s.misses,
            s.stored,
            s.evictions,
            format::size(s.bytes),
            s.corrupt
        );
    }
    let unmounted = mounted.unmount();
    let _ = std::fs::remove_dir_all(&work);
    unmounted.with_context(|| format!("unmount {}", target.display()))?;
    eprintln!("unmounted {}", target.display());
    Ok(())
}
