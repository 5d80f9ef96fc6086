//! `strata-bench cri`: a lazy cold start through Kubernetes' CRI vs the same through `ctr`,
//! both on Strata's `stargz` snapshotter behind containerd 1.6, side by side in one run
//! (issue #19's target: CRI within 1.1× of `ctr`, the CRI plugin adding no fetches).
//!
//! - `ctr`: `ctr-remote image rpull --snapshotter stargz` + `ctr run --rm … python3.11`;
//! - `CRI`: PullImage, then RunPodSandbox (host network, a pause image imported before the
//!   clock starts), CreateContainer + StartContainer of the same python, ContainerStatus
//!   polled every 10 ms until it exited — what kubelet does for a pod, through
//!   `strata_proto::cri` on containerd's socket (CRI plugin: `snapshotter = "stargz"`,
//!   `disable_snapshot_annotations = false`).
//!
//! The image is the Debian-package fixture converted to eStargz by `strata convert`. Every
//! run starts a fresh containerd and `strata serve` on empty roots (not timed), syncs and
//! drops the page cache, then times from the pull to the container's exit. Cases alternate
//! run by run. The registry is a loopback docker-registry, or, with `--registry`, the
//! host:port of another one reached over plain HTTP (e.g. the slow link of
//! `benches/slow-link.sh`), to which the eStargz image is pushed first.
//! Needs root, containerd, ctr, ctr-remote, runc and docker-registry.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hyper_util::rt::TokioIo;
use strata_proto::cri::v1 as cri;
use strata_proto::cri::v1::image_service_client::ImageServiceClient;
use strata_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use strata_testdata::containerd::{CTR, Containerd, CriConfig, cri_config};
use strata_testdata::registry::{FaultProxy, RegistryServer};
use strata_testdata::{ImageSpec, LayerSpec, Platform, write_oci_layout_tar};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::convert::{loadavg, mib};
use crate::pull::mounts_under;
use crate::stats::summarize;
use crate::strata_serve::StrataServe;

/// What the container prints.
const EXPECTED: &str = "hello from python";
/// The container's command (as in `cold-start`).
const COMMAND: [&str; 3] = [
    "/usr/bin/python3.11",
    "-c",
    "import email.parser, http.client, zoneinfo; print('hello from python')",
];
/// The pod sandbox image, imported into each fresh containerd.
const PAUSE: &str = "strata.bench/pause:1";

#[derive(Debug, Args)]
pub(crate) struct CriArgs {
    /// The strata binary (`strata serve`, `strata convert`).
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The ctr-remote binary (stargz-snapshotter's), for the `ctr` case's lazy pull.
    #[arg(long, default_value = "/usr/bin/ctr-remote")]
    ctr_remote: PathBuf,
    /// Runs of each case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A registry (HOST:PORT, plain HTTP) to serve the eStargz image from instead of the
    /// loopback one, e.g. benches/slow-link.sh's address.
    #[arg(long)]
    registry: Option<String>,
    /// Directory for the daemons' roots (default: a temp dir under /var/tmp, on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Ctr,
    Cri,
}

impl Case {
    const ALL: [Case; 2] = [Case::Ctr, Case::Cri];

    fn label(self) -> &'static str {
        match self {
            Case::Ctr => "ctr-remote rpull + ctr run (stargz)",
            Case::Cri => "CRI: PullImage + RunPodSandbox + Create/StartContainer (stargz)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Case::Ctr => "ctr",
            Case::Cri => "cri",
        }
    }
}

/// One timed run: the pull, then everything up to the container's exit, and the blob
/// bytes the registry sent meanwhile (loopback registry only: counted by a proxy).
#[derive(Debug, Clone, Copy)]
struct Sample {
    pull: Duration,
    start: Duration,
    bytes: Option<u64>,
}

pub(crate) fn run(args: &CriArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("cri needs root (containerd, mounts, /proc/sys/vm/drop_caches)");
    }
    for bin in [
        Path::new(strata_testdata::containerd::CONTAINERD),
        Path::new(CTR),
        &args.ctr_remote,
    ] {
        if !bin.exists() {
            bail!(
                "{} is missing (scripts/setup.sh installs it)",
                bin.display()
            );
        }
    }
    let strata = fs::canonicalize(&args.strata)
        .with_context(|| format!("{} (build it first)", args.strata.display()))?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-cri.")
        .tempdir_in(&base)?;
    let image =
        strata_testdata::debian_image::build_debian_image(&work.path().join("layout"))?.image;
    let uncompressed: u64 = image.layers.iter().map(|l| l.uncompressed_size).sum();
    let layers = image.layers.len();
    let registry = RegistryServer::start().context("start the registry")?;
    registry.push_image("bench/debian", "1", &image)?;
    drop(image);
    let source = format!("{}/bench/debian:1", registry.host());
    // On loopback, everything goes through a counting proxy (no faults set).
    let counter = match args.registry {
        None => Some(FaultProxy::start(registry.addr()).context("start the counting proxy")?),
        Some(_) => None,
    };
    let host = match (&args.registry, &counter) {
        (Some(host), _) => host.clone(),
        (None, Some(proxy)) => proxy.host(),
        (None, None) => registry.host(),
    };
    let reference = format!("{host}/bench/debian:esgz");
    let conv = work.path().join("convert-root");
    for cmd in [
        vec!["pull", "--plain-http", &source],
        vec!["convert", "--plain-http", "--push", &source, &reference],
    ] {
        let out = Command::new(&strata)
            .arg("--root")
            .arg(&conv)
            .args(&cmd)
            .env("DOCKER_CONFIG", work.path())
            .env("STRATA_HOSTS_DIR", work.path().join("no-hosts"))
            .output()?;
        if !out.status.success() {
            bail!(
                "strata {cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    fs::remove_dir_all(&conv)?;
    let hosts = work.path().join("certs.d");
    fs::create_dir_all(hosts.join(&host))?;
    fs::write(
        hosts.join(&host).join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    let pause = pause_image_tar(work.path())?;
    let env = Env {
        strata: &strata,
        ctr_remote: &args.ctr_remote,
        hosts: &hosts,
        pause: &pause,
        reference: &reference,
        counter: counter.as_ref(),
    };

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Case::ALL.len()];
    for run in 0..args.runs {
        let mut order: Vec<usize> = (0..Case::ALL.len()).collect();
        order.rotate_left(run % Case::ALL.len());
        let mut line = String::new();
        for k in order {
            let case = Case::ALL[k];
            let dir = work.path().join(format!("run{run}-{k}"));
            let sample = measure(&env, case, &dir)
                .with_context(|| format!("run {}: {}", run + 1, case.label()));
            unmount_all(&dir);
            let sample = sample?;
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            let _ = write!(
                line,
                "  {}: {:.2}s",
                case.short(),
                (sample.pull + sample.start).as_secs_f64()
            );
            samples[k].push(sample);
        }
        eprintln!("run {}/{}:{line}", run + 1, args.runs);
    }

    println!(
        "image: Debian-package fixture as eStargz (strata convert), {layers} layers, {:.1} MiB uncompressed, \
         registry {}; {} runs; load average {}",
        mib(uncompressed),
        if args.registry.is_some() {
            host.as_str()
        } else {
            "loopback"
        },
        args.runs,
        loadavg()
    );
    println!(
        "| case | pull median | start → exit median | pull → exit median (min–max) | / ctr | blob bytes fetched (median) |"
    );
    println!("|---|---|---|---|---|---|");
    let total = |s: &[Sample]| s.iter().map(|s| s.pull + s.start).collect::<Vec<_>>();
    let reference_median = summarize(&total(&samples[0])).median;
    for (k, case) in Case::ALL.iter().enumerate() {
        let pull = summarize(&samples[k].iter().map(|s| s.pull).collect::<Vec<_>>());
        let start = summarize(&samples[k].iter().map(|s| s.start).collect::<Vec<_>>());
        let all = summarize(&total(&samples[k]));
        let mut bytes: Vec<u64> = samples[k].iter().filter_map(|s| s.bytes).collect();
        bytes.sort_unstable();
        let bytes = bytes.get(bytes.len() / 2).map_or_else(
            || "not counted".to_owned(),
            |b| format!("{:.2} MiB", mib(*b)),
        );
        println!(
            "| {} | {:.3} s | {:.3} s | {:.3} s ({:.3}–{:.3}) | {:.2}× | {bytes} |",
            case.label(),
            pull.median.as_secs_f64(),
            start.median.as_secs_f64(),
            all.median.as_secs_f64(),
            all.min.as_secs_f64(),
            all.max.as_secs_f64(),
            all.median.as_secs_f64() / reference_median.as_secs_f64()
        );
    }
    Ok(())
}

/// What every run shares.
struct Env<'a> {
    strata: &'a Path,
    ctr_remote: &'a Path,
    hosts: &'a Path,
    pause: &'a Path,
    reference: &'a str,
    counter: Option<&'a FaultProxy>,
}

impl Env<'_> {
    fn reset_count(&self) {
        if let Some(proxy) = self.counter {
            proxy.clear_requests();
        }
    }

    /// Blob bytes sent since [`reset_count`](Self::reset_count).
    fn blob_bytes(&self) -> Option<u64> {
        self.counter.map(|proxy| {
            proxy
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
                .map(|r| r.bytes_sent)
                .sum()
        })
    }
}

/// One cold run of `case` in `dir`.
fn measure(env: &Env<'_>, case: Case, dir: &Path) -> anyhow::Result<Sample> {
    fs::create_dir_all(dir)?;
    let serve = StrataServe::start_with_config(
        env.strata,
        &dir.join("strata"),
        &format!("config_path = {:?}\n", env.hosts.to_string_lossy()),
    )?;
    let proxy = format!(
        "[proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = {:?}\n\n",
        serve.socket
    );
    let containerd_dir = dir.join("containerd");
    let containerd = match case {
        Case::Ctr => Containerd::start(&containerd_dir, "bench", &proxy)?,
        Case::Cri => {
            let config = proxy
                + &cri_config(&CriConfig {
                    dir: &containerd_dir,
                    snapshotter: "stargz",
                    sandbox_image: PAUSE,
                    registry_config_path: env.hosts,
                });
            Containerd::start_with_cri(&containerd_dir, "k8s.io", &config)?
        }
    };
    let context = |what: &str| {
        let serve_log = serve.log();
        let tail: Vec<&str> = serve_log.lines().rev().take(15).collect();
        format!(
            "{what}\ncontainerd log tail:\n{}\nstrata serve log tail:\n{}",
            containerd.log_tail(15),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    };
    let run_ok = |mut cmd: Command, what: &str| -> anyhow::Result<Output> {
        let out = cmd.output().with_context(|| format!("start {what}"))?;
        if !out.status.success() {
            bail!(
                "{}",
                context(&format!(
                    "{what} failed ({}):\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            );
        }
        Ok(out)
    };
    let sample = match case {
        Case::Ctr => {
            env.reset_count();
            drop_caches()?;
            let started = Instant::now();
            let mut rpull = containerd.command(env.ctr_remote);
            rpull.args([
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                "stargz",
                env.reference,
            ]);
            run_ok(rpull, "ctr-remote image rpull")?;
            let pull = started.elapsed();
            let mut run = containerd.command(CTR);
            run.args(["run", "--rm", "--runc-root"])
                .arg(dir.join("runc"))
                .args(["--snapshotter", "stargz", env.reference, "cri-bench"])
                .args(COMMAND);
            let out = run_ok(run, "ctr run")?;
            let start = started.elapsed() - pull;
            if String::from_utf8_lossy(&out.stdout).trim() != EXPECTED {
                bail!("{}", context("the container's output"));
            }
            Sample {
                pull,
                start,
                bytes: env.blob_bytes(),
            }
        }
        Case::Cri => {
            let mut import = containerd.command(CTR);
            import
                .args(["images", "import", "--snapshotter", "stargz"])
                .arg(env.pause);
            run_ok(import, "ctr images import (pause)")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let log_dir = dir.join("pods/bench");
            fs::create_dir_all(&log_dir)?;
            env.reset_count();
            let mut sample = rt
                .block_on(cri_cold_start(&containerd.socket, env.reference, &log_dir))
                .map_err(|e| anyhow::anyhow!("{}", context(&format!("{e:#}"))))?;
            let log = fs::read_to_string(log_dir.join("python.log")).unwrap_or_default();
            if !log
                .lines()
                .any(|l| l.ends_with(&format!(" stdout F {EXPECTED}")))
            {
                bail!("{}", context(&format!("the container's log:\n{log}")));
            }
            sample.bytes = env.blob_bytes();
            sample
        }
    };
    containerd.stop();
    serve.stop()?;
    Ok(sample)
}

/// Unix-socket gRPC channel (the URI is required by the API but unused).
async fn channel(socket: &Path) -> anyhow::Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", socket.display()))
}

/// PullImage → exit of the python container, as kubelet drives it; the pod is removed
/// afterwards (not timed).
async fn cri_cold_start(socket: &Path, reference: &str, log_dir: &Path) -> anyhow::Result<Sample> {
    let ch = channel(socket).await?;
    let mut images = ImageServiceClient::new(ch.clone());
    let mut runtime = RuntimeServiceClient::new(ch);
    let spec = cri::ImageSpec {
        image: reference.into(),
        ..Default::default()
    };
    let host_network = cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "bench".into(),
            uid: "strata-bench-cri".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    drop_caches()?;
    let started = Instant::now();
    images
        .pull_image(cri::PullImageRequest {
            image: Some(spec.clone()),
            auth: None,
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .context("PullImage")?;
    let pull = started.elapsed();
    let pod = runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let container = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "python".into(),
                    attempt: 0,
                }),
                image: Some(spec),
                command: COMMAND.iter().map(|s| s.to_string()).collect(),
                log_path: "python.log".into(),
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(host_network),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    runtime
        .start_container(cri::StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .context("StartContainer")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without a status")?;
        if status.state == cri::ContainerState::ContainerExited as i32 {
            if status.exit_code != 0 {
                bail!("the container exited with {}: {status:?}", status.exit_code);
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("the container did not exit within 120 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = started.elapsed() - pull;
    runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: container,
        })
        .await
        .context("RemoveContainer")?;
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .context("StopPodSandbox")?;
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .context("RemovePodSandbox")?;
    Ok(Sample {
        pull,
        start,
        bytes: None,
    })
}

/// The pause image: the host's dash and `sleep` with their libraries, sleeping until
/// killed (the CRI stops a sandbox with SIGKILL).
fn pause_image_tar(dir: &Path) -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut layer = LayerSpec::new().created_by("pause");
    let mut files = vec![
        ("/bin/dash".to_owned(), "bin/sh".to_owned()),
        ("/bin/sleep".to_owned(), "bin/sleep".to_owned()),
    ];
    for bin in ["/bin/dash", "/bin/sleep"] {
        let out = Command::new("ldd").arg(bin).output().context("run ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                files.push((path.to_owned(), path.trim_start_matches('/').to_owned()));
            }
        }
    }
    files.sort();
    files.dedup();
    for (host, inside) in files {
        let bytes = fs::read(&host).with_context(|| format!("read {host}"))?;
        layer = layer.file(inside, 0o755, bytes);
    }
    let image = ImageSpec::new(Platform::new("linux", arch, None))
        .layer(layer)
        .env("PATH=/bin")
        .cmd([
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        ]);
    let tar = dir.join("pause.tar");
    write_oci_layout_tar(&tar, &[(PAUSE, image.into())])?;
    Ok(tar)
}

/// Unmounts what a run left under `dir` (lazy layers stay mounted after `strata serve`
/// stops, by design), deepest first; the fd holder then exits by itself.
fn unmount_all(dir: &Path) {
    let mut left = mounts_under(dir);
    left.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in left {
        let _ = Command::new("umount").arg(&m).status();
    }
}

fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches")
}
