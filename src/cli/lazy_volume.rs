//! `strata volume mount` of a model artifact with a chunk index: lazily, through a serving
//! process of its own (`strata volume serve-artifact`, hidden), see
//! [`strata::volume::lazy_artifact`].

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata::fdstore::FdStore;
use strata::registry::{Reference, RegistryClient};
use strata::volume::lazy_artifact::{
    LazyArtifact, LazyDirs, ServedArtifact, read_spec, write_spec,
};
use strata::volume::{VolumeRecord, VolumeStore};
use strata_formats::Digest;
use strata_formats::artifact::Entry;
use strata_snapshotters::mount;

use super::transfer::RegistryArgs;
use super::volume::VolumeMountArgs;

/// `strata volume serve-artifact`: what `volume mount` starts; not for people.
#[derive(Debug, Args)]
pub(crate) struct ServeArtifactArgs {
    /// The volume's spec (`<root>/volumes/<id>.lazy/spec.json`).
    spec: PathBuf,
    /// Take over the volume's live connections from its fd holder (its serving process
    /// died) instead of mounting.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// An artifact to mount lazily: the serving process's spec, the tar layers to download
/// first, and the client and pinned reference to do it with.
pub(crate) struct Planned {
    spec: LazyArtifact,
    tars: Vec<Entry>,
    client: RegistryClient,
    reference: Reference,
    runtime: tokio::runtime::Runtime,
}

/// The lazy plan of `args.reference` when it names an artifact in a registry with a
/// chunk index covering its raw layers; `None` (said why on stderr when it is an artifact)
/// otherwise: it is then pulled whole.
pub(crate) fn plan(args: &VolumeMountArgs) -> anyhow::Result<Option<Planned>> {
    let Ok(reference) = args.reference.parse::<Reference>() else {
        return Ok(None);
    };
    let client = args.registry.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (desc, bytes) = runtime
        .block_on(client.get_manifest(&reference))
        .with_context(|| format!("fetch the manifest of {reference}"))?;
    if strata::image::media::is_index(desc.media_type().as_ref()) {
        return Ok(None);
    }
    let Some(layout) = super::volume::layout_of_manifest(&bytes, args.skip_unknown)? else {
        return Ok(None);
    };
    let pinned = reference.with_digest(Digest::of(&bytes));
    let Some((index_digest, index)) =
        runtime.block_on(strata::artifact::fetch_chunk_index(&client, &pinned))?
    else {
        eprintln!(
            "{reference}: no chunk index (`strata index` pushes one): downloading every blob first"
        );
        return Ok(None);
    };
    match LazyArtifact::plan(&pinned, &layout, &index) {
        Ok((mut spec, tars)) => {
            super::volume::report_skipped(&layout);
            spec.cache_size = args.cache_size.saturating_mul(1 << 20);
            spec.passthrough = args.passthrough;
            spec.registry_args = args
                .registry
                .to_args()
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            eprintln!(
                "{reference}: chunk index {}: {} files served lazily",
                index_digest.short(),
                spec.files.len()
            );
            Ok(Some(Planned {
                spec,
                tars,
                client,
                reference: pinned,
                runtime,
            }))
        }
        Err(why) => {
            eprintln!("{reference}: not lazily: {why}; downloading every blob first");
            Ok(None)
        }
    }
}

/// Mounts `planned` read-only on `target` and records it. On failure nothing is left.
pub(crate) fn mount(
    root: &Path,
    args: &VolumeMountArgs,
    target: &Path,
    volumes: &VolumeStore,
    planned: Planned,
) -> anyhow::Result<()> {
    let dirs = volumes.lazy_dirs(target);
    if dirs.root.exists() {
        // Left by a crash before the volume was recorded.
        dirs.detach_staging();
        std::fs::remove_dir_all(&dirs.root)
            .with_context(|| format!("remove the stale {}", dirs.root.display()))?;
    }
    let mut server: Option<std::process::Child> = None;
    let result = (|| -> anyhow::Result<u32> {
        std::fs::create_dir_all(dirs.tree())
            .with_context(|| format!("create {}", dirs.tree().display()))?;
        let tree = strata::volume::artifact::open_tree(&dirs.tree())?;
        for entry in &planned.tars {
            let Entry::Tar {
                path_prefix,
                descriptor,
                ..
            } = entry
            else {
                continue;
            };
            let blob = dirs
                .root
                .join(format!("{}.blob", descriptor.digest.encoded()));
            planned.runtime.block_on(strata::artifact::download_blob(
                &planned.client,
                &planned.reference,
                descriptor,
                &blob,
            ))?;
            let file = std::fs::File::open(&blob)?;
            strata::volume::artifact::apply_tar(&tree, path_prefix, &descriptor.digest, file)?;
            std::fs::remove_file(&blob)?;
        }
        write_spec(&dirs.spec(), &planned.spec)
            .with_context(|| format!("write {}", dirs.spec().display()))?;
        let child = server.insert(start_server(root, &planned.spec, &dirs, false)?);
        let dir =
            strata::volume::open_subpath(&dirs.merged(), args.subpath.as_deref().unwrap_or("."))?;
        strata::volume::bind_read_only(&dir, target)
            .with_context(|| format!("bind the artifact read-only on {}", target.display()))?;
        Ok(child.id())
    })();
    // The target's bind holds the filesystems now (or nothing does).
    dirs.detach_staging();
    let pid = match result {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(mut child) = server {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&dirs.root);
            return Err(e);
        }
    };
    let record = VolumeRecord {
        target: target.to_path_buf(),
        reference: args.reference.clone(),
        manifest: planned
            .reference
            .digest()
            .map(ToString::to_string)
            .unwrap_or_default(),
        snapshotter: "-".to_owned(),
        subpath: args.subpath.clone(),
        mode: strata::volume::MODE_LAZY.to_owned(),
        mounted_at: super::volume::now(),
        server_pid: Some(pid),
    };
    if let Err(e) = volumes.put(&record) {
        let _ = umount(volumes, &record);
        return Err(e).context("record the volume");
    }
    eprintln!(
        "mounted {} on {} lazily ({} files; served by process {pid}, log {})",
        args.reference,
        target.display(),
        planned.spec.files.len(),
        dirs.log().display()
    );
    Ok(())
}

/// Starts the serving process of `dirs` (resuming its connections from its fd holder, or
/// mounting) and waits until it serves.
fn start_server(
    root: &Path,
    spec: &LazyArtifact,
    dirs: &LazyDirs,
    resume: bool,
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dirs.log())
        .with_context(|| format!("open {}", dirs.log().display()))?;
    let mut command = Command::new(std::env::current_exe().context("find the strata binary")?);
    command
        .arg("--root")
        .arg(root)
        .args(["volume", "serve-artifact"])
        .arg(dirs.spec())
        .args(&spec.registry_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if resume {
        command.arg("--resume");
    }
    // SAFETY: setsid is async-signal-safe; its own session keeps the process out of the
    // terminal's signals (a Ctrl-C meant for this command).
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .context("start the volume's serving process")?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("invariant: stdout is piped");
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dirs.log()).unwrap_or_default();
    let last: Vec<&str> = log.lines().rev().take(5).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    bail!("the volume's serving process failed: {}", last.join(" / "))
}

/// Starts a new serving process for every lazy artifact volume that is still mounted but
/// whose process died: it resumes the connections the volume's fd holder kept (readers
/// waited meanwhile). Said on stderr; a failure is a warning.
pub(crate) fn revive(root: &Path, volumes: &VolumeStore) {
    let (records, _) = volumes.list();
    for mut record in records {
        let Some(pid) = record.server_pid else {
            continue;
        };
        if serving(pid) || !mount::is_mounted(&record.target) {
            continue;
        }
        let dirs = volumes.lazy_dirs(&record.target);
        let started = read_spec(&dirs.spec())
            .map_err(anyhow::Error::from)
            .and_then(|spec| start_server(root, &spec, &dirs, true));
        match started {
            Ok(child) => {
                record.server_pid = Some(child.id());
                let _ = volumes.put(&record);
                eprintln!(
                    "volume {}: its serving process {pid} had died; process {} serves it again",
                    record.target.display(),
                    child.id()
                );
            }
            Err(e) => eprintln!(
                "strata: warning: volume {}: its serving process {pid} died and could not be \
                 restarted: {}",
                record.target.display(),
                super::error_line(&e)
            ),
        }
    }
}

/// `volume serve-artifact`: mounts the spec's filesystems, says `ready` on stdout, and
/// serves them until the volume is unmounted.
pub(crate) fn serve(root: &Path, args: &ServeArtifactArgs) -> anyhow::Result<()> {
    strata::alloc::tune_for_chunk_buffers();
    let spec = read_spec(&args.spec).with_context(|| format!("read {}", args.spec.display()))?;
    let dirs = LazyDirs {
        root: args
            .spec
            .parent()
            .context("the spec has no directory")?
            .to_path_buf(),
    };
    let client = args.registry.client()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cache_dir = VolumeStore::new(root).cache_dir();
    let cache = Arc::new(
        strata::cache::ChunkCache::open(&cache_dir, spec.cache_size)
            .with_context(|| format!("open the chunk cache {}", cache_dir.display()))?,
    );
    let socket = dirs.holder_socket();
    let (served, holder) = if args.resume {
        let holder = FdStore::connect(&socket).with_context(|| {
            format!(
                "the volume's fd holder {} is gone (its connections died with the serving process)",
                socket.display()
            )
        })?;
        let mut held = holder.take_all().context("take the connections back")?;
        held.sort_by_key(|h| {
            h.key
                .strip_prefix("layer/")
                .and_then(|i| i.parse::<usize>().ok())
        });
        let held = held
            .into_iter()
            .map(|h| {
                let state = serde_json::from_slice(&h.meta)
                    .with_context(|| format!("the INIT state of connection {}", h.key))?;
                Ok((h.fd, state))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let served = ServedArtifact::resume(&spec, &client, runtime.handle(), &cache, held)
            .with_context(|| format!("resume {}", spec.reference))?;
        (served, Some(holder))
    } else {
        // The holder starts while the filesystems are mounted.
        let exe = std::env::current_exe().context("find the strata binary")?;
        let holder = std::thread::spawn({
            let socket = socket.clone();
            move || FdStore::connect_or_spawn(&socket, &exe)
        });
        let served = ServedArtifact::mount(&spec, &client, runtime.handle(), &dirs, &cache)
            .with_context(|| format!("serve {}", spec.reference))?;
        let holder = holder
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("starting the fd holder panicked")));
        let holder = holder.and_then(|holder| {
            for (i, (dev, state)) in served.connections().into_iter().enumerate() {
                let meta = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
                holder.put(&format!("layer/{i}"), dev, &meta)?;
            }
            Ok(holder)
        });
        match holder {
            Ok(holder) => (served, Some(holder)),
            Err(e) => {
                tracing::warn!(error = %e, "no fd holder: the volume will not survive this process");
                (served, None)
            }
        }
    };
    println!("ready");
    // Nothing reads stdout any more: later writes must not fail.
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd as _;
        // SAFETY: dup2 onto our own stdout descriptor.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    tracing::info!(artifact = %spec.reference, files = spec.files.len(), "serving");
    served.wait();
    drop(holder);
    tracing::info!(artifact = %spec.reference, "unmounted: done");
    Ok(())
}

/// Unmounts the lazy artifact volume of `record`: the target, then its serving process
/// (which ends by itself once the last mount is gone), then its directories.
pub(crate) fn umount(volumes: &VolumeStore, record: &VolumeRecord) -> anyhow::Result<()> {
    let target = &record.target;
    if mount::is_mounted(target) {
        mount::unmount_all(target, false)
            .with_context(|| format!("volume umount {}", target.display()))?;
    }
    if let Some(pid) = record.server_pid {
        let deadline = Instant::now() + Duration::from_secs(5);
        while serving(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if serving(pid) {
            // A copy of the mount elsewhere (another mount namespace) keeps it alive.
            // SAFETY: kill(2) with a pid we started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    let dirs = volumes.lazy_dirs(target);
    dirs.detach_staging();
    match std::fs::remove_dir_all(&dirs.root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", dirs.root.display()));
        }
        _ => {}
    }
    volumes.remove(target)?;
    Ok(())
}

/// Whether process `pid` is a volume's serving process.
pub(crate) fn serving(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"serve-artifact"))
}
