//! `strata run`, `strata ps`, `strata rm`: containers started with runc over a Strata
//! snapshot, without containerd (the machinery is `strata::run`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, bail};
use clap::Args;
use strata::image::platform::Platform;
use strata::image::unpack::{Unpacker, image_manifest, manifest_layers};
use strata::run::record::{ContainerRecord, ContainerStore};
use strata::run::runc::Runc;
use strata::run::spec::{BindMount, ImageProcess, ProcessOverrides, build_spec};
use strata::run::{cleanup, orphans, snapshot_key};
use strata_snapshotters::{Snapshotter, mount};

use super::snapshot::SnapshotterArg;
use super::transfer::RegistryArgs;

#[derive(Debug, Args)]
#[command(
    after_help = "The image is pulled if needed (on --snapshotter stargz its layers are mounted \
    lazily by `strata serve` instead), an active snapshot is prepared over its layers and mounted \
    as the container's rootfs, and runc runs the image's entrypoint and command (or CMD…, given \
    after the image) in the foreground with this terminal's stdin, stdout and stderr. The container \
    shares the host's network; /proc, /dev, /sys, /dev/shm, /etc/resolv.conf and /etc/hosts are \
    mounted as containerd mounts them, with containerd's default capabilities and no new \
    privileges. Ctrl-C and SIGTERM are passed to the container. strata exits with the container's \
    status (128 + N when a signal killed it). Without --rm the stopped container's snapshot stays \
    (`strata ps`, `strata rm`).\n\nExamples:\n  \
    strata run --rm --plain-http 127.0.0.1:5000/app:1 echo hello\n  \
    strata run --rm -e GREETING=hi -w /tmp --user nobody alpine:3.20 sh -c 'echo $GREETING'\n  \
    strata run --rm --snapshotter erofs -v 127.0.0.1:5000/models:1:/models python:3 python3 load.py\n  \
    strata run --rm -v /srv/data:/data:ro debian:12 ls /data\n  \
    strata run -d --name web --plain-http 127.0.0.1:5000/app:1 && strata logs web && strata stop web"
)]
pub(crate) struct RunArgs {
    /// The image: a local one (`strata image ls`) or a registry reference to pull.
    image: String,
    /// The command and its arguments (default: the image's Cmd, after its Entrypoint).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// Remove the container's snapshot and bundle when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background: print the container's id once it runs and return; its
    /// output goes to `strata logs ID`, `strata stop ID` stops it.
    #[arg(short = 'd', long)]
    detach: bool,
    /// The container's id (default: `strata-` and 12 random hex digits).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (K=V), or pass the host's value of K.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// The working directory inside the container (default: the image's, else /).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// The user: name, uid, name:group or uid:gid, resolved in the image's /etc/passwd and
    /// /etc/group (default: the image's User, else root).
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,
    /// Mount into the container: HOSTDIR:/path[:ro] (a bind mount), or IMAGE:/path (an
    /// image volume, read-only, as `strata volume mount`).
    #[arg(short = 'v', long = "volume", value_name = "SRC:/path[:ro]")]
    volumes: Vec<String>,
    /// The platform of a multi-platform image (default: this host's).
    #[arg(long, value_parser = super::parse_platform)]
    platform: Option<Platform>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    snapshotter: SnapshotterArg,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  strata ps")]
pub(crate) struct PsArgs {}

#[derive(Debug, Args)]
#[command(
    after_help = "Sends SIGTERM to each container's process; one still running after --time \
    seconds gets SIGKILL. The `strata run` that owns it then records the exit status and cleans \
    up (everything, with --rm).\n\nExamples:\n  strata stop web\n  strata stop --time 0 web db"
)]
pub(crate) struct StopArgs {
    /// The containers (`strata ps`).
    #[arg(required = true)]
    ids: Vec<String>,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, short, default_value_t = 10)]
    time: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  strata logs web")]
pub(crate) struct LogsArgs {
    /// The container (`strata ps`), started with `strata run -d`.
    id: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata rm strata-0123456789ab\n  strata rm --force web")]
pub(crate) struct RmArgs {
    /// The containers (`strata ps`).
    #[arg(required = true)]
    ids: Vec<String>,
    /// Kill a running container first.
    #[arg(long, short)]
    force: bool,
    #[command(flatten)]
    snapshotter: SnapshotterArg,
}

/// The runc child, for the signal handlers (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Passes SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the runc child (which
/// passes them to the container) instead of dying of them.
fn forward_signals() {
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installs a handler that only calls an async-signal-safe function.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn snapshotter_named(arg: &SnapshotterArg, name: &str) -> SnapshotterArg {
    SnapshotterArg {
        snapshotter: name.to_owned(),
        ..arg.clone()
    }
}

/// Cleans up after `strata run`s that were killed: their containers that stopped.
fn reap(root: &Path, runc: &Runc, arg: &SnapshotterArg) {
    let store = ContainerStore::new(root);
    for mut record in orphans(&store, runc) {
        let result = snapshotter_named(arg, &record.snapshotter)
            .open(root)
            .and_then(|sn| {
                let r = cleanup(&store, runc, &*sn, &record, record.remove);
                let _ = sn.close();
                r.map_err(anyhow::Error::from)
            });
        match result {
            Ok(()) if record.remove => {
                eprintln!(
                    "removed container {} (its strata run was killed)",
                    record.id
                )
            }
            Ok(()) => {
                record.exit_code = Some(-1);
                let _ = store.put(&record);
            }
            Err(e) => eprintln!(
                "strata: warning: cleaning up container {}: {}",
                record.id,
                super::error_line(&e)
            ),
        }
    }
}

/// The environment variable that makes `strata run -d`'s background copy of itself run
/// in the foreground as the container `id` it names.
const DETACHED_ID: &str = "STRATA_RUN_DETACHED_ID";

/// `strata run -d`: the same command in the background, in its own session, with its
/// output in the container's log; returns once the container runs (or fails to start).
fn detach(containers: &ContainerStore, runc: &Runc, id: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let bundle = containers.bundle(id);
    std::fs::create_dir_all(&bundle)?;
    let log_path = bundle.join("log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("run -d: create {}", log_path.display()))?;
    let mut argv = std::env::args_os();
    argv.next();
    let mut command = std::process::Command::new(
        std::env::current_exe().context("run -d: find the strata binary")?,
    );
    command
        .args(argv)
        .env(DETACHED_ID, id)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; its own session keeps the container out of
    // this terminal's signals.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("run -d: start strata run")?;
    loop {
        if runc.status(id).as_deref() == Some("running") {
            println!("{id}");
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if status.success() {
                // It ran and exited before we saw it running.
                println!("{id}");
                return Ok(());
            }
            bail!(
                "run -d: container {id} did not start ({status}): {}",
                tail.join(" / ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `strata run`: never returns on success (exits with the container's status).
pub(crate) fn run(root: &Path, args: &RunArgs) -> anyhow::Result<()> {
    let runc = Runc::find(&root.join("runc"))?;
    reap(root, &runc, &args.snapshotter);
    // The detached child runs this same command line with the id chosen here.
    let child_id = std::env::var(DETACHED_ID).ok();
    let id = match child_id.as_ref().or(args.name.as_ref()) {
        Some(n) => {
            let valid = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !n.starts_with('.');
            if !valid {
                bail!("run: container name {n:?}: use 1–64 letters, digits, '-', '_' or '.'");
            }
            n.clone()
        }
        None => {
            let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
            format!(
                "strata-{}",
                &strata_formats::Digest::of(seed.as_bytes()).encoded()[..12]
            )
        }
    };
    let containers = ContainerStore::new(root);
    if containers.get(&id).is_ok() {
        bail!("run: container {id} exists (`strata rm {id}`)");
    }
    if args.detach && child_id.is_none() {
        return detach(&containers, &runc, &id);
    }
    let context = || format!("run {}", args.image);
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let lazy = args.snapshotter.implementation()? == "stargz";
    let (sn, config, chain_id): (std::sync::Arc<dyn Snapshotter>, Vec<u8>, String) = if lazy {
        let reference: strata::registry::Reference = args.image.parse().with_context(context)?;
        let client = args.registry.client()?;
        let image = super::transfer::runtime()?
            .block_on(strata::volume::lazy::resolve(
                &client, &reference, &platform,
            ))
            .with_context(context)?;
        let sn = strata::serve::client::DaemonSnapshotter::connect(
            &args.snapshotter.socket,
            &args.snapshotter.snapshotter,
        )
        .map_err(|e| anyhow::anyhow!("lazy runs go through `strata serve`: {e}"))?;
        strata::volume::lazy::prepare_lazily(&sn, &reference.to_string(), &image)
            .with_context(context)?;
        let chain = image
            .layers
            .last()
            .map(|l| l.chain_id.to_string())
            .unwrap_or_default();
        (std::sync::Arc::new(sn), image.config, chain)
    } else {
        let mut store = super::open_store(root)?;
        if let Err(e) = strata::image::find_image(&store, &args.image) {
            if e.kind() != strata_formats::ErrorKind::NotFound {
                return Err(e).with_context(context);
            }
            drop(store);
            super::transfer::pull_reference(root, &args.image, &args.registry)
                .with_context(context)?;
            store = super::open_store(root)?;
        }
        let image = strata::image::find_image(&store, &args.image).with_context(context)?;
        let (_, manifest) = image_manifest(&store, &image, &platform).with_context(context)?;
        let layers = manifest_layers(&store, &manifest).with_context(context)?;
        let config_digest: strata_formats::Digest = manifest
            .config()
            .digest()
            .to_string()
            .parse()
            .with_context(context)?;
        let config = store
            .content()
            .read_all(&config_digest, strata::image::MAX_CONFIG_SIZE)
            .with_context(context)?;
        let sn = args.snapshotter.open(root)?;
        let scratch = strata::snapshots::scratch_dir(root, &args.snapshotter.snapshotter);
        Unpacker::new(&store, &*sn, &scratch)
            .unpack_all(&layers)
            .with_context(context)?;
        let chain = layers
            .last()
            .map(|l| l.chain_id.to_string())
            .unwrap_or_default();
        (sn, config, chain)
    };
    let image_process = ImageProcess::from_config(&config).with_context(context)?;
    let overrides = ProcessOverrides {
        args: args.command.clone(),
        env: args.env.clone(),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
    };
    let command = strata::run::spec::command(&image_process, &overrides).with_context(context)?;
    let key = snapshot_key(&id);
    let mut record = ContainerRecord {
        id: id.clone(),
        image: args.image.clone(),
        command,
        snapshotter: args.snapshotter.snapshotter.clone(),
        snapshot_key: key.clone(),
        remove: args.rm,
        owner_pid: std::process::id(),
        created: now(),
        exit_code: None,
        volumes: Vec::new(),
    };
    // Recorded before anything is made, so that a kill at any point leaves a record
    // the next `strata run` cleans up from.
    containers.put(&record)?;
    let bundle = containers.bundle(&id);
    let started = (|| -> anyhow::Result<std::process::ExitStatus> {
        let mounts = sn
            .prepare(&key, &chain_id, Default::default())
            .with_context(|| format!("snapshot {key}"))?;
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        mount::mount_all(&mounts, &rootfs)
            .with_context(|| format!("mount the rootfs on {}", rootfs.display()))?;
        let binds = volumes(root, args, &*sn, &bundle, &mut record, &containers)?;
        let spec = build_spec(
            &rootfs,
            &image_process,
            &overrides,
            &binds,
            &format!("/strata/{id}"),
        )?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| anyhow::anyhow!("write {}: {e}", bundle.join("config.json").display()))?;
        forward_signals();
        let mut child = runc.run(&bundle, &id).spawn().context("start runc")?;
        CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
        let status = child.wait().context("wait for runc")?;
        CHILD.store(0, Ordering::SeqCst);
        Ok(status)
    })();
    let code = match &started {
        Ok(status) => Some(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0)
        })),
        Err(_) => None,
    };
    record.exit_code = Some(code.unwrap_or(-1));
    let remove = args.rm || code.is_none();
    if !remove {
        containers.put(&record)?;
    }
    let cleaned = cleanup(&containers, &runc, &*sn, &record, remove);
    let _ = sn.close();
    let status = started.with_context(context)?;
    cleaned.with_context(|| format!("clean up container {id}"))?;
    let _ = status;
    std::process::exit(code.unwrap_or(1));
}

/// The `--volume`s: host binds, or image volumes mounted under the bundle.
fn volumes(
    root: &Path,
    args: &RunArgs,
    sn: &dyn Snapshotter,
    bundle: &Path,
    record: &mut ContainerRecord,
    containers: &ContainerStore,
) -> anyhow::Result<Vec<BindMount>> {
    let mut binds = Vec::new();
    for (i, spec) in args.volumes.iter().enumerate() {
        let (source, rest) = if spec.starts_with('/') {
            spec.split_once(':')
                .with_context(|| format!("--volume {spec:?}: not SRC:/path[:ro]"))?
        } else {
            // An image reference has colons of its own: the destination is the last
            // absolute path.
            let at = spec
                .rfind(":/")
                .with_context(|| format!("--volume {spec:?}: not IMAGE:/path"))?;
            (&spec[..at], &spec[at + 1..])
        };
        let (destination, read_only) = match rest.strip_suffix(":ro") {
            Some(d) => (d, true),
            None => (rest.strip_suffix(":rw").unwrap_or(rest), false),
        };
        if !destination.starts_with('/') {
            bail!("--volume {spec:?}: the destination must be absolute");
        }
        if source.starts_with('/') {
            let source = PathBuf::from(source);
            if !source.exists() {
                bail!("--volume {spec:?}: {} does not exist", source.display());
            }
            binds.push(BindMount {
                source,
                destination: destination.to_owned(),
                read_only,
            });
            continue;
        }
        let target = bundle.join("volumes").join(i.to_string());
        std::fs::create_dir_all(&target)?;
        let volume_args = super::volume::VolumeMountArgs {
            reference: source.to_owned(),
            dir: target.clone(),
            subpath: None,
            platform: args.platform.clone(),
            skip_unknown: false,
            whole: false,
            cache_size: 20480,
            passthrough: false,
            registry: args.registry.clone(),
            snapshotter: args.snapshotter.clone(),
        };
        let held = (args.snapshotter.implementation()? != "stargz").then_some(sn);
        super::volume::mount_with(root, &volume_args, held)
            .with_context(|| format!("--volume {spec:?}"))?;
        record.volumes.push(std::fs::canonicalize(&target)?);
        containers.put(record)?;
        binds.push(BindMount {
            source: target,
            destination: destination.to_owned(),
            read_only: true,
        });
    }
    Ok(binds)
}

pub(crate) fn ps(root: &Path, _args: &PsArgs) -> anyhow::Result<()> {
    let store = ContainerStore::new(root);
    let runc = Runc::find(&root.join("runc")).ok();
    println!("{:<22} {:<40} {:<14} COMMAND", "ID", "IMAGE", "STATUS");
    for r in store.list() {
        let status = match r.exit_code {
            Some(-1) => "exited (?)".to_owned(),
            Some(code) => format!("exited ({code})"),
            None if strata::run::record::alive(r.owner_pid) => runc
                .as_ref()
                .and_then(|runc| runc.status(&r.id))
                .unwrap_or_else(|| "starting".to_owned()),
            None => "gone".to_owned(),
        };
        println!(
            "{:<22} {:<40} {:<14} {}",
            r.id,
            r.image,
            status,
            r.command.join(" ")
        );
    }
    Ok(())
}

pub(crate) fn rm(root: &Path, args: &RmArgs) -> anyhow::Result<()> {
    let store = ContainerStore::new(root);
    let runc = Runc::find(&root.join("runc"))?;
    for id in &args.ids {
        let record = store
            .get(id)
            .map_err(|e| anyhow::anyhow!("rm {id}: no such container ({e})"))?;
        let running = record.exit_code.is_none()
            && (strata::run::record::alive(record.owner_pid)
                || runc.status(id).as_deref() == Some("running"));
        if running && !args.force {
            bail!("rm {id}: the container is running (stop it, or --force)");
        }
        let sn = snapshotter_named(&args.snapshotter, &record.snapshotter).open(root)?;
        let result = cleanup(&store, &runc, &*sn, &record, true);
        let _ = sn.close();
        result.with_context(|| format!("rm {id}"))?;
        println!("{id}");
    }
    Ok(())
}

pub(crate) fn stop(root: &Path, args: &StopArgs) -> anyhow::Result<()> {
    let store = ContainerStore::new(root);
    let runc = Runc::find(&root.join("runc"))?;
    for id in &args.ids {
        let record = store
            .get(id)
            .map_err(|e| anyhow::anyhow!("stop {id}: no such container ({e})"))?;
        if runc.status(id).as_deref() != Some("running") {
            println!("{id}");
            continue;
        }
        runc.kill(id, "TERM")
            .with_context(|| format!("stop {id}"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.time);
        let stopped = || runc.status(id).as_deref() != Some("running");
        while !stopped() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if !stopped() {
            eprintln!("{id}: still running after {} s: SIGKILL", args.time);
            runc.kill(id, "KILL")
                .with_context(|| format!("stop {id}"))?;
        }
        // Its `strata run` records the exit and cleans up; wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while strata::run::record::alive(record.owner_pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        println!("{id}");
    }
    Ok(())
}

pub(crate) fn logs(root: &Path, args: &LogsArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let store = ContainerStore::new(root);
    let path = store.bundle(&args.id).join("log");
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "logs {}: no log (only containers started with `strata run -d` have one)",
            args.id
        )
    })?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out)?;
    out.flush()?;
    Ok(())
}
