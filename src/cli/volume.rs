//! `strata volume …`: images mounted read-only on a directory, as Kubernetes image
//! volumes present them to a pod (KEP-4639), with an optional sub path.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use strata::image::platform::Platform;
use strata::image::unpack::{Unpacker, image_manifest, manifest_layers};
use strata::volume::{VolumeRecord, VolumeSpec, VolumeStore, mount_volume, unmount_volume};
use strata_snapshotters::mount;

use super::snapshot::SnapshotterArg;
use super::transfer::RegistryArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// Mount an image, or a directory inside it, read-only on a directory.
    Mount(VolumeMountArgs),
    /// List the volumes: target, image, sub path, snapshotter, how bytes are served, and
    /// whether the target is still mounted (after a reboot it is not).
    #[command(after_help = "Example:\n  strata volume ls")]
    Ls,
    /// Unmount a volume and remove its snapshot.
    #[command(after_help = "Example:\n  strata volume umount /mnt/models")]
    Umount(VolumeUmountArgs),
    /// Serve a lazy artifact volume's filesystems (started by `volume mount`).
    #[command(hide = true)]
    ServeArtifact(super::lazy_volume::ServeArtifactArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "The image is pulled if it is not in the store, and unpacked into the snapshotter; \
    a View snapshot over its layers (key `strata-volume:DIR`) is mounted read-only on DIR, without \
    setuid or device files. With --subpath only that directory of the image is mounted: it is \
    resolved inside the image (`..` and symlinks cannot leave it) and must be a directory, as \
    Kubernetes image volumes (KEP-4639) require. The mount is the kernel's: it stays when strata \
    exits, until `strata volume umount DIR`.\n\n\
    With --snapshotter stargz, an eStargz image is mounted lazily by `strata serve` (its stargz \
    snapshotter, reached on --socket): only the manifest and config are fetched here; the daemon \
    fetches file data on first read, verified chunk by chunk, and keeps serving it across its \
    restarts.\n\nExamples:\n  \
    strata volume mount --plain-http 127.0.0.1:5000/models:1 /mnt/models\n  \
    strata volume mount --snapshotter stargz --plain-http 127.0.0.1:5000/models:1-esgz /mnt/models\n  \
    strata volume mount --subpath /usr/share/doc debian:12 /mnt/doc\n  \
    strata volume mount --snapshotter erofs app:1 /mnt/app\n  strata volume ls"
)]
pub(crate) struct VolumeMountArgs {
    /// The image: a local one (`strata image ls`) or a registry reference to pull.
    pub(crate) reference: String,
    /// The directory to mount it on (must exist).
    pub(crate) dir: PathBuf,
    /// Mount only this directory of the image (resolved inside it).
    #[arg(long, value_name = "PATH")]
    pub(crate) subpath: Option<String>,
    /// The platform of a multi-platform image (default: this host's).
    #[arg(long, value_parser = super::parse_platform)]
    pub(crate) platform: Option<Platform>,
    /// An artifact's layers of unknown media types are listed and left out (default: an
    /// error naming them).
    #[arg(long)]
    pub(crate) skip_unknown: bool,
    /// Download and verify every blob of an artifact before mounting it, even when it has
    /// a chunk index (default: such an artifact is mounted lazily).
    #[arg(long)]
    pub(crate) whole: bool,
    /// The bound of the chunk cache lazy artifact volumes share (`<root>/volumes/cache`),
    /// MiB.
    #[arg(long, value_name = "MIB", default_value_t = 20480)]
    pub(crate) cache_size: u64,
    /// Serve files of a lazy artifact volume whose chunks are all cached with FUSE
    /// passthrough (the kernel reads the cached copy directly).
    #[arg(long)]
    pub(crate) passthrough: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    #[command(flatten)]
    pub(crate) snapshotter: SnapshotterArg,
}

#[derive(Debug, Args)]
pub(crate) struct VolumeUmountArgs {
    /// The directory given to `strata volume mount`.
    dir: PathBuf,
    #[command(flatten)]
    snapshotter: SnapshotterArg,
}

pub(crate) fn run(root: &Path, command: &VolumeCommand) -> anyhow::Result<()> {
    if !matches!(command, VolumeCommand::ServeArtifact(_)) {
        super::lazy_volume::revive(root, &VolumeStore::new(root));
    }
    match command {
        VolumeCommand::Mount(args) => mount(root, args),
        VolumeCommand::Ls => list(root),
        VolumeCommand::Umount(args) => umount(root, args),
        VolumeCommand::ServeArtifact(args) => super::lazy_volume::serve(root, args),
    }
}

fn mount(root: &Path, args: &VolumeMountArgs) -> anyhow::Result<()> {
    mount_with(root, args, None)
}

/// `strata volume mount`, in `open` when the caller holds the snapshotter already
/// (`strata run --volume`: only one process can open a snapshotter's metadata).
pub(crate) fn mount_with(
    root: &Path,
    args: &VolumeMountArgs,
    open: Option<&dyn strata_snapshotters::Snapshotter>,
) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("volume mount: target {}", args.dir.display()))?;
    if !target.is_dir() {
        bail!("volume mount: target {}: not a directory", target.display());
    }
    let volumes = VolumeStore::new(root);
    if volumes.get(&target)?.is_some() {
        return Err(strata::volume::VolumeError::Busy(target)).context("volume mount");
    }
    if mount::is_mounted(&target) {
        bail!(
            "volume mount: target {}: something is mounted there already",
            target.display()
        );
    }
    let context = || format!("volume mount {} on {}", args.reference, target.display());
    if args.snapshotter.implementation()? == "stargz" {
        return mount_lazily(args, &target, &volumes).with_context(context);
    }
    let mut store = super::open_store(root)?;
    let image = match strata::image::find_image(&store, &args.reference) {
        Ok(image) => image,
        Err(e) if e.kind() == strata_formats::ErrorKind::NotFound => {
            if !args.whole
                && let Some(planned) = super::lazy_volume::plan(args).with_context(context)?
            {
                drop(store);
                return super::lazy_volume::mount(root, args, &target, &volumes, planned)
                    .with_context(context);
            }
            eprintln!("{}: not in the store; pulling it", args.reference);
            drop(store);
            super::transfer::pull_reference(root, &args.reference, &args.registry)
                .with_context(context)?;
            store = super::open_store(root)?;
            strata::image::find_image(&store, &args.reference).with_context(context)?
        }
        Err(e) => return Err(e).with_context(context),
    };
    if let Some(layout) = artifact_layout(&store, &image, args).with_context(context)? {
        return mount_artifact(args, &target, &store, &volumes, &layout).with_context(context);
    }
    mount_image(root, args, &target, &store, volumes, open)
}

/// The artifact layout of `image`, or `None` when it is a container image.
fn artifact_layout(
    store: &strata::store::Store,
    image: &strata::metadata::ImageRecord,
    args: &VolumeMountArgs,
) -> anyhow::Result<Option<strata_formats::artifact::ArtifactLayout>> {
    if strata::image::media::is_index(image.target.media_type().as_ref()) {
        return Ok(None);
    }
    let digest = strata::image::walk::descriptor_digest(&image.target)?;
    let bytes = store
        .content()
        .read_all(&digest, strata::image::MAX_MANIFEST_SIZE)?;
    let layout = layout_of_manifest(&bytes, args.skip_unknown)?;
    if let Some(layout) = &layout {
        report_skipped(layout);
    }
    Ok(layout)
}

/// The artifact layout of the manifest `bytes`, or `None` for a container image.
pub(crate) fn layout_of_manifest(
    bytes: &[u8],
    skip_unknown: bool,
) -> anyhow::Result<Option<strata_formats::artifact::ArtifactLayout>> {
    use strata_formats::artifact::{
        ArtifactLayout, LayoutOptions, Manifest, ManifestKind, classify,
    };
    let manifest = Manifest::parse(bytes)?;
    if classify(&manifest) == ManifestKind::Image {
        return Ok(None);
    }
    Ok(Some(ArtifactLayout::from_manifest(
        &manifest,
        LayoutOptions { skip_unknown },
    )?))
}

/// Says which layers `--skip-unknown` left out.
pub(crate) fn report_skipped(layout: &strata_formats::artifact::ArtifactLayout) {
    for d in &layout.skipped {
        eprintln!(
            "layer {}: media type {} is not a file or tar this artifact convention defines: skipped",
            d.digest, d.media_type
        );
    }
}

/// A model artifact: its blobs (in the store, verified) placed as a tree, bound read-only.
fn mount_artifact(
    args: &VolumeMountArgs,
    target: &Path,
    store: &strata::store::Store,
    volumes: &VolumeStore,
    layout: &strata_formats::artifact::ArtifactLayout,
) -> anyhow::Result<()> {
    let tree = volumes.tree(target);
    if tree.exists() {
        // Left by a crash between building it and recording the volume.
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("remove the stale tree {}", tree.display()))?;
    }
    let placed = (|| -> anyhow::Result<strata::volume::artifact::TreeReport> {
        let report = strata::volume::artifact::build_tree(store, layout, &tree)?;
        let dir = strata::volume::open_subpath(&tree, args.subpath.as_deref().unwrap_or("."))?;
        strata::volume::bind_read_only(&dir, target)
            .with_context(|| format!("bind the artifact read-only on {}", target.display()))?;
        Ok(report)
    })();
    let report = match placed {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tree);
            return Err(e);
        }
    };
    let record = VolumeRecord {
        target: target.to_path_buf(),
        reference: args.reference.clone(),
        manifest: String::new(),
        snapshotter: "-".to_owned(),
        subpath: args.subpath.clone(),
        mode: strata::volume::MODE_WHOLE_BLOBS.to_owned(),
        mounted_at: now(),
        server_pid: None,
    };
    if let Err(e) = volumes.put(&record) {
        let _ = mount::unmount_all(target, false);
        let _ = std::fs::remove_dir_all(&tree);
        return Err(e).context("record the volume");
    }
    eprintln!(
        "mounted {} ({}: {} files, {} tar layers, {}) read-only on {}",
        args.reference,
        layout.kind,
        report.files,
        report.tars,
        super::format::size(report.bytes),
        target.display()
    );
    Ok(())
}

/// An eStargz image's layers mounted lazily by `strata serve` (the `stargz` snapshotter),
/// then its View bound read-only like any volume.
fn mount_lazily(
    args: &VolumeMountArgs,
    target: &Path,
    volumes: &VolumeStore,
) -> anyhow::Result<()> {
    let reference: strata::registry::Reference = args.reference.parse()?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let client = args.registry.client()?;
    let image = super::transfer::runtime()?.block_on(strata::volume::lazy::resolve(
        &client, &reference, &platform,
    ))?;
    let sn = strata::serve::client::DaemonSnapshotter::connect(
        &args.snapshotter.socket,
        &args.snapshotter.snapshotter,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "lazy volumes are served by `strata serve` (its `stargz` snapshotter): {e}; if it \
             listens on another socket, name it with --socket or STRATA_SOCKET"
        )
    })?;
    let started = std::time::Instant::now();
    strata::volume::lazy::prepare_lazily(&sn, &reference.to_string(), &image)?;
    let chain_id = image
        .layers
        .last()
        .map(|l| l.chain_id.to_string())
        .unwrap_or_default();
    let spec = VolumeSpec {
        chain_id: &chain_id,
        subpath: args.subpath.as_deref(),
    };
    mount_volume(&sn, &spec, &volumes.staging(target), target)?;
    let record = VolumeRecord {
        target: target.to_path_buf(),
        reference: args.reference.clone(),
        manifest: image.manifest.to_string(),
        snapshotter: args.snapshotter.snapshotter.clone(),
        subpath: args.subpath.clone(),
        mode: "lazy".to_owned(),
        mounted_at: now(),
        server_pid: None,
    };
    if let Err(e) = volumes.put(&record) {
        let _ = unmount_volume(&sn, target);
        return Err(e).context("record the volume");
    }
    eprintln!(
        "mounted {}{} read-only on {} lazily ({} layers served by strata serve) in {:.2}s",
        args.reference,
        args.subpath
            .as_deref()
            .map(|p| format!(" (sub path {p})"))
            .unwrap_or_default(),
        target.display(),
        image.layers.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mount_image(
    root: &Path,
    args: &VolumeMountArgs,
    target: &Path,
    store: &strata::store::Store,
    volumes: VolumeStore,
    open: Option<&dyn strata_snapshotters::Snapshotter>,
) -> anyhow::Result<()> {
    let context = || format!("volume mount {} on {}", args.reference, target.display());
    let image = strata::image::find_image(store, &args.reference).with_context(context)?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let (manifest_desc, manifest) =
        image_manifest(store, &image, &platform).with_context(context)?;
    let layers = manifest_layers(store, &manifest).with_context(context)?;
    let opened;
    let sn: &dyn strata_snapshotters::Snapshotter = match open {
        Some(sn) => sn,
        None => {
            opened = args.snapshotter.open(root)?;
            &*opened
        }
    };
    // Closed (when opened here) whatever happens: the erofs snapshotter unmounts the layer
    // images it mounted for the View (the volume's overlay keeps its own references).
    let result = unpack_and_mount(args, target, store, &layers, &manifest_desc, sn, &volumes);
    let closed = if open.is_none() { sn.close() } else { Ok(()) };
    result.with_context(context)?;
    closed?;
    eprintln!(
        "mounted {}{} read-only on {} ({} layers, snapshotter {})",
        args.reference,
        args.subpath
            .as_deref()
            .map(|p| format!(" (sub path {p})"))
            .unwrap_or_default(),
        target.display(),
        layers.len(),
        args.snapshotter.snapshotter
    );
    Ok(())
}

fn unpack_and_mount(
    args: &VolumeMountArgs,
    target: &Path,
    store: &strata::store::Store,
    layers: &[strata::image::unpack::LayerPlan],
    manifest: &strata_formats::Digest,
    sn: &dyn strata_snapshotters::Snapshotter,
    volumes: &VolumeStore,
) -> anyhow::Result<()> {
    let root_scratch = strata::snapshots::scratch_dir(store.root(), &args.snapshotter.snapshotter);
    for done in Unpacker::new(store, sn, &root_scratch).unpack_all(layers)? {
        if !done.existed {
            eprintln!(
                "layer {}: unpacked into snapshot {}",
                done.layer.short(),
                done.chain_id.short()
            );
        }
    }
    let chain_id = layers
        .last()
        .map(|l| l.chain_id.to_string())
        .unwrap_or_default();
    let spec = VolumeSpec {
        chain_id: &chain_id,
        subpath: args.subpath.as_deref(),
    };
    mount_volume(sn, &spec, &volumes.staging(target), target)?;
    let record = VolumeRecord {
        target: target.to_path_buf(),
        reference: args.reference.clone(),
        manifest: manifest.to_string(),
        snapshotter: args.snapshotter.snapshotter.clone(),
        subpath: args.subpath.clone(),
        mode: "snapshot".to_owned(),
        mounted_at: now(),
        server_pid: None,
    };
    if let Err(e) = volumes.put(&record) {
        let _ = unmount_volume(sn, target);
        return Err(e).context("record the volume");
    }
    Ok(())
}

fn list(root: &Path) -> anyhow::Result<()> {
    let (records, errors) = VolumeStore::new(root).list();
    let mut rows = vec![[
        "TARGET".to_owned(),
        "IMAGE".to_owned(),
        "SUBPATH".to_owned(),
        "SNAPSHOTTER".to_owned(),
        "MODE".to_owned(),
        "STATE".to_owned(),
    ]];
    for r in &records {
        rows.push([
            r.target.display().to_string(),
            r.reference.clone(),
            r.subpath.clone().unwrap_or_else(|| "/".to_owned()),
            r.snapshotter.clone(),
            r.mode.clone(),
            if mount::is_mounted(&r.target) {
                match r.server_pid {
                    Some(pid) if !super::lazy_volume::serving(pid) => {
                        "mounted, server gone (umount it)".to_owned()
                    }
                    _ => "mounted".to_owned(),
                }
            } else {
                // After a reboot: the record stays until `volume umount`.
                "not mounted".to_owned()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    for e in &errors {
        eprintln!("strata: warning: unreadable volume record {e}");
    }
    Ok(())
}

fn umount(root: &Path, args: &VolumeUmountArgs) -> anyhow::Result<()> {
    // The directory may be gone; its record still names it.
    let target = std::fs::canonicalize(&args.dir)
        .unwrap_or_else(|_| std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone()));
    let volumes = VolumeStore::new(root);
    let Some(record) = volumes.get(&target)? else {
        return Err(strata::volume::VolumeError::NotAVolume(target)).context("volume umount");
    };
    if record.server_pid.is_some() {
        super::lazy_volume::umount(&volumes, &record)?;
        eprintln!("unmounted {} ({})", target.display(), record.reference);
        return Ok(());
    }
    if record.mode == strata::volume::MODE_WHOLE_BLOBS {
        if mount::is_mounted(&target) {
            mount::unmount_all(&target, false)
                .with_context(|| format!("volume umount {}", target.display()))?;
        }
        let tree = volumes.tree(&target);
        std::fs::remove_dir_all(&tree)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("volume umount: remove {}", tree.display()))?;
        volumes.remove(&target)?;
        eprintln!("unmounted {} ({})", target.display(), record.reference);
        return Ok(());
    }
    let snapshotter = SnapshotterArg {
        snapshotter: record.snapshotter.clone(),
        ..args.snapshotter.clone()
    };
    let sn = snapshotter.open(root)?;
    unmount_volume(&*sn, &target).with_context(|| format!("volume umount {}", target.display()))?;
    sn.close()?;
    volumes.remove(&target)?;
    eprintln!("unmounted {} ({})", target.display(), record.reference);
    Ok(())
}
