//! Kubernetes' path, driven as kubelet drives it: a Rust CRI client (`strata_proto::cri`,
//! runtime.v1) talks to containerd 1.6's CRI plugin, which is configured with Strata's
//! lazy `stargz` proxy snapshotter (`snapshotter = "stargz"`, `disable_snapshot_annotations
//! = false`), registries from a `certs.d` directory (plain HTTP to a loopback
//! docker-registry), a locally built and imported pause image and no CNI (the pod uses the
//! host network).
//!
//! One test, in the order kubelet calls: PullImage of the Debian-package fixture converted
//! to eStargz (every layer a FUSE mount under Strata's root, no layer in containerd's
//! content store, a fraction of the image fetched), ImageStatus / ListImages / ImageFsInfo
//! against containerd's content store and Strata's snapshots, RunPodSandbox,
//! CreateContainer + StartContainer of python (exit code 3 and its stdout and stderr lines
//! in the CRI log file), RemoveContainer / StopPodSandbox / RemovePodSandbox (no active
//! snapshot, no mount left), RemoveImage (containerd's GC removes the image's content and
//! its snapshots, and Strata unmounts its layers). Registry traffic goes through the test
//! proxy, which counts the bytes.
//!
//! Needs root, containerd, ctr, runc, FUSE and docker-registry (scripts/setup.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use strata_proto::cri::v1 as cri;
use strata_proto::cri::v1::image_service_client::ImageServiceClient;
use strata_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use strata_proto::snapshots::v1 as snap;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_testdata::containerd::{Containerd, CriConfig, cri_config};
use strata_testdata::registry::{FaultProxy, RegistryServer};
use strata_testdata::{LayerSpec, write_oci_layout_tar};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

mod serve_support;
mod support;

use serve_support::{
    KillHolders, StrataServe, UnmountOnDrop, estargz_and_daemon, require_containerd,
    runnable_image, snapshot_rows,
};
use support::mounts::{mount_entries_under, mounts_under};
use support::{CTR, Env, log_tail};

/// The proxy plugin name containerd's CRI plugin is configured with: Strata's lazy
/// snapshotter.
const SNAPSHOTTER: &str = "stargz";
/// The namespace of the CRI's images, containers and snapshots.
const NAMESPACE: &str = "k8s.io";
/// The pod sandbox image, built here and imported (never pulled).
const PAUSE: &str = "strata.test/pause:1";
/// What the python container runs: modules from several layers, one line on each stream,
/// exit status 3.
const PYTHON: [&str; 3] = [
    "/usr/bin/python3.11",
    "-c",
    "import email.parser, http.client, zoneinfo, sys; print('hello from python'); \
     print('and from its stderr', file=sys.stderr); sys.exit(3)",
];

/// Unix-socket gRPC channel (the URI is required by the API but unused).
async fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()))
}

/// The pause image: dash, `sleep` and their libraries; sleeps until killed (the CRI stops
/// a sandbox with SIGKILL).
fn pause_image_tar(dir: &Path) -> PathBuf {
    let sleep = LayerSpec::new().created_by("sleep").file(
        "bin/sleep",
        0o755,
        std::fs::read("/bin/sleep").expect("read /bin/sleep"),
    );
    let image = runnable_image(vec![sleep]).cmd([
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
    ]);
    let tar = dir.join("pause.tar");
    write_oci_layout_tar(&tar, &[(PAUSE, image.into())]).expect("write the pause image");
    tar
}

/// Blob bytes the proxy sent (GETs of `/blobs/`).
fn blob_bytes(proxy: &FaultProxy) -> u64 {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .map(|r| r.bytes_sent)
        .sum()
}

/// The suite's world: registry (through the counting proxy), `strata serve`, containerd
/// with CRI, and the clients.
struct World {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
    containerd: Containerd,
    serve: StrataServe,
    proxy: FaultProxy,
    _registry: RegistryServer,
    env: Env,
}

impl World {
    fn context(&self, what: &str) -> String {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&self.serve.log, 30),
            self.containerd.log_tail(30)
        )
    }

    /// Strata's snapshots of [`SNAPSHOTTER`] (every namespace: containerd's keys).
    fn strata_snapshots(&mut self) -> Vec<snap::Info> {
        let mut client = self.snapshots.clone();
        self.rt.block_on(async move {
            let mut stream = client
                .list(snap::ListSnapshotsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    filters: vec![],
                })
                .await
                .expect("List on strata serve")
                .into_inner();
            let mut all = Vec::new();
            while let Some(batch) = stream.message().await.expect("List stream") {
                all.extend(batch.info);
            }
            all
        })
    }

    /// Σ Usage (bytes, inodes) of Strata's snapshots.
    fn strata_usage(&mut self) -> (u64, u64) {
        let keys: Vec<String> = self
            .strata_snapshots()
            .into_iter()
            .map(|i| i.name)
            .collect();
        let mut client = self.snapshots.clone();
        self.rt.block_on(async move {
            let (mut size, mut inodes) = (0, 0);
            for key in keys {
                let u = client
                    .usage(snap::UsageRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("Usage of {key}: {e}"))
                    .into_inner();
                size += u.size as u64;
                inodes += u.inodes as u64;
            }
            (size, inodes)
        })
    }

    /// containerd's view: the active snapshots `ctr snapshots ls` shows in `k8s.io`.
    fn containerd_active(&self) -> Vec<String> {
        let listing = self
            .containerd
            .ok(CTR, &["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
        snapshot_rows(&listing)
            .into_iter()
            .filter(|(_, _, kind)| kind != "Committed")
            .map(|(key, _, _)| key)
            .collect()
    }

    /// Waits until containerd lists `containerd` active snapshots and Strata holds
    /// `strata` (its own removal waits for containerd's garbage collection).
    fn wait_active(&mut self, containerd: usize, strata: usize, when: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (c, s) = (self.containerd_active(), self.active_snapshots());
            if c.len() == containerd && s.len() == strata {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                self.context(&format!(
                    "{when}: active snapshots in containerd {c:?} (want {containerd}), \
                     in Strata {s:?} (want {strata})"
                ))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn active_snapshots(&mut self) -> Vec<String> {
        self.strata_snapshots()
            .into_iter()
            .filter(|i| i.kind != snap::Kind::Committed as i32)
            .map(|i| i.name)
            .collect()
    }

    fn fuse_mounts(&self) -> usize {
        mount_entries_under(&self.serve.root)
            .iter()
            .filter(|m| m.fstype.starts_with("fuse"))
            .count()
    }

    fn image_status(&mut self, image: &str) -> Option<cri::Image> {
        let mut client = self.images.clone();
        let spec = image_spec(image);
        self.rt
            .block_on(client.image_status(cri::ImageStatusRequest {
                image: Some(spec),
                verbose: false,
            }))
            .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
            .into_inner()
            .image
    }

    fn list_images(&mut self) -> Vec<cri::Image> {
        let mut client = self.images.clone();
        self.rt
            .block_on(client.list_images(cri::ListImagesRequest { filter: None }))
            .expect("ListImages")
            .into_inner()
            .images
    }

    /// ImageFsInfo's image filesystem once its used bytes and inodes equal Σ Usage of
    /// Strata's snapshots (the CRI plugin refreshes them every `stats_collect_period`).
    fn image_fs_agrees(&mut self, when: &str) -> cri::FilesystemUsage {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut client = self.images.clone();
            let info = self
                .rt
                .block_on(client.image_fs_info(cri::ImageFsInfoRequest {}))
                .expect("ImageFsInfo")
                .into_inner();
            assert_eq!(info.image_filesystems.len(), 1, "{info:?}");
            let fs = info.image_filesystems[0].clone();
            let used = (
                fs.used_bytes.as_ref().map_or(0, |v| v.value),
                fs.inodes_used.as_ref().map_or(0, |v| v.value),
            );
            let strata = self.strata_usage();
            if used == strata {
                return fs;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                self.context(&format!(
                    "{when}: ImageFsInfo says {used:?} (bytes, inodes), Strata's snapshots' \
                     Usage adds up to {strata:?}"
                ))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

fn host_network() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn sandbox_config(log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "python".into(),
            uid: "strata-cri-test-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_network()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `<RFC 3339 time> <stream> <F|P> <text>` lines of a CRI log as (stream, tag, text).
fn cri_log_lines(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let time = parts.next().unwrap_or_default();
            assert!(
                time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
                "not a CRI log line (time): {line:?}"
            );
            let stream = parts.next().unwrap_or_default().to_owned();
            let tag = parts.next().unwrap_or_default().to_owned();
            let text = parts.next().unwrap_or_default().to_owned();
            (stream, tag, text)
        })
        .collect()
}

fn setup() -> (World, String, strata_testdata::BuiltImage) {
    let env = Env::new();
    let registry = RegistryServer::start().expect("start docker-registry");
    let proxy = FaultProxy::start(registry.addr()).expect("start the proxy");
    let fixture = strata_testdata::debian_image::build_debian_image(&env.path("layout"))
        .expect("build the Debian-package fixture");
    registry
        .push_image("cri/debian", "1", &fixture.image)
        .expect("push the fixture");
    let source = format!("{}/cri/debian:1", proxy.host());
    let esgz = format!("{}/cri/debian:esgz", proxy.host());
    // strata convert (eStargz) and `strata serve` reaching the proxy over plain HTTP.
    let serve = estargz_and_daemon(&env, &proxy.host(), &source, &esgz);
    let hosts = env.dir.path().join("certs.d");
    let containerd_dir = env.path("containerd");
    // containerd removes a container's snapshot from its metadata at once and from the
    // snapshotter at its next garbage collection, which by default waits for 100
    // mutations: one deletion triggers it here, so Strata's side can be checked.
    let config = format!(
        "[proxy_plugins]\n  [proxy_plugins.{SNAPSHOTTER}]\n    type = \"snapshot\"\n    address = {:?}\n\n\
         [plugins.\"io.containerd.gc.v1.scheduler\"]\n  deletion_threshold = 1\n\n{}",
        serve.socket,
        cri_config(&CriConfig {
            dir: &containerd_dir,
            snapshotter: SNAPSHOTTER,
            sandbox_image: PAUSE,
            registry_config_path: &hosts,
        })
    );
    let mut containerd = Containerd::start_with_cri(&containerd_dir, NAMESPACE, &config)
        .expect("start containerd with CRI");
    containerd.show_log_on_failure("strata serve", &serve.log);
    let pause = pause_image_tar(env.dir.path());
    containerd.ok(
        CTR,
        &[
            "images",
            "import",
            "--snapshotter",
            SNAPSHOTTER,
            pause.to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (runtime, images, snapshots) = rt.block_on(async {
        let cri = channel(&containerd.socket).await;
        (
            RuntimeServiceClient::new(cri.clone()),
            ImageServiceClient::new(cri),
            SnapshotsClient::new(channel(&serve.socket).await),
        )
    });
    proxy.clear_requests();
    (
        World {
            rt,
            runtime,
            images,
            snapshots,
            containerd,
            serve,
            proxy,
            _registry: registry,
            env,
        },
        esgz,
        fixture.image,
    )
}

#[test]
#[ignore = "needs root, containerd with CRI, runc, FUSE and docker-registry: make test runs it"]
fn kubelet_calls_run_python_lazily_on_strata_and_leave_nothing_behind() {
    require_containerd(&["/dev/fuse"]);
    let (mut w, esgz, fixture) = setup();
    let _holders = KillHolders(w.env.dir.path().to_path_buf());
    let _unmount = UnmountOnDrop(w.env.dir.path().to_path_buf());

    // The runtime answers as containerd's CRI, runtime.v1.
    let mut runtime = w.runtime.clone();
    let version =
        w.rt.block_on(runtime.version(cri::VersionRequest {
            version: "v1".into(),
        }))
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");

    // ---- PullImage: lazily. ----
    let mut images = w.images.clone();
    let started = Instant::now();
    let pulled =
        w.rt.block_on(images.pull_image(cri::PullImageRequest {
            image: Some(image_spec(&esgz)),
            auth: None,
            sandbox_config: None,
        }))
        .unwrap_or_else(|e| panic!("{}", w.context(&format!("PullImage {esgz}: {e}"))))
        .into_inner();
    let pull_time = started.elapsed();
    let manifest_digest = w.containerd.image_digest(&esgz);
    let manifest = w.containerd.json(&manifest_digest);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), fixture.layers.len());
    let layer_bytes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert_eq!(pulled.image_ref, config_digest, "PullImage's image ref");
    let log = w.serve.log_text();
    assert_eq!(
        log.matches("stargz: layer mounted lazily").count(),
        layers.len(),
        "{}",
        w.context("not every layer was mounted lazily")
    );
    assert_eq!(
        w.fuse_mounts(),
        layers.len(),
        "{}",
        w.context("one FUSE mount per layer under Strata's root")
    );
    let content = w.containerd.ok(CTR, &["content", "ls"]);
    assert!(
        !content.contains("application/vnd.oci.image.layer")
            && !content.contains("application/vnd.docker.image.rootfs"),
        "{}",
        w.context(&format!("containerd downloaded layers:\n{content}"))
    );
    for digest in [&manifest_digest, &config_digest] {
        assert!(
            content.contains(digest.as_str()),
            "{digest} not in\n{content}"
        );
    }
    let pull_bytes = blob_bytes(&w.proxy);
    eprintln!(
        "PullImage took {pull_time:?}; blob bytes fetched {pull_bytes} of {layer_bytes} \
         ({:.1} %)",
        pull_bytes as f64 * 100.0 / layer_bytes as f64
    );
    assert!(
        pull_bytes * 10 < layer_bytes,
        "{}",
        w.context(&format!(
            "PullImage fetched {pull_bytes} blob bytes of a {layer_bytes}-byte image"
        ))
    );
    // Strata holds the image's chain committed, each snapshot a remote (lazy) one.
    let chain: Vec<snap::Info> = w
        .strata_snapshots()
        .into_iter()
        .filter(|i| {
            i.labels
                .get("containerd.io/snapshot/cri.image-ref")
                .is_some_and(|r| r == &esgz)
        })
        .collect();
    assert_eq!(chain.len(), layers.len(), "{chain:#?}");
    assert!(
        chain.iter().all(|i| i.kind == snap::Kind::Committed as i32),
        "{chain:#?}"
    );

    // ---- ImageStatus / ListImages / ImageFsInfo. ----
    let status = w
        .image_status(&esgz)
        .unwrap_or_else(|| panic!("ImageStatus: no {esgz}"));
    assert_eq!(status.id, config_digest, "{status:?}");
    assert!(status.repo_tags.contains(&esgz), "{status:?}");
    let repo = esgz.rsplit_once(':').unwrap().0;
    assert!(
        status
            .repo_digests
            .contains(&format!("{repo}@{manifest_digest}")),
        "{status:?}"
    );
    // containerd's image size: manifest + config + layers, as the manifest gives them.
    let manifest_size = w.containerd.blob(&manifest_digest).len() as u64;
    let config_size = manifest["config"]["size"].as_u64().unwrap();
    assert_eq!(
        status.size,
        manifest_size + config_size + layer_bytes,
        "{status:?}"
    );
    let listed = w.list_images();
    let ids: BTreeMap<String, Vec<String>> = listed
        .iter()
        .map(|i| (i.id.clone(), i.repo_tags.clone()))
        .collect();
    assert!(
        listed
            .iter()
            .any(|i| i.id == config_digest && i.repo_tags.contains(&esgz)),
        "ListImages: {ids:#?}"
    );
    assert!(
        listed
            .iter()
            .any(|i| i.repo_tags.contains(&PAUSE.to_owned())),
        "ListImages: {ids:#?}"
    );
    let fs = w.image_fs_agrees("after PullImage");
    let mountpoint = fs.fs_id.map(|f| f.mountpoint).unwrap_or_default();
    assert!(
        mountpoint.ends_with(&format!("io.containerd.snapshotter.v1.{SNAPSHOTTER}")),
        "{mountpoint}"
    );

    // ---- RunPodSandbox (host network), CreateContainer, StartContainer. ----
    let log_dir = w.env.path("pods/default_python_strata-cri-test-uid");
    std::fs::create_dir_all(&log_dir).unwrap();
    let sandbox = sandbox_config(&log_dir);
    let started = Instant::now();
    let pod =
        w.rt.block_on(runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        }))
        .unwrap_or_else(|e| panic!("{}", w.context(&format!("RunPodSandbox: {e}"))))
        .into_inner()
        .pod_sandbox_id;
    let container =
        w.rt.block_on(runtime.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "python".into(),
                    attempt: 0,
                }),
                image: Some(image_spec(&esgz)),
                command: PYTHON.iter().map(|s| s.to_string()).collect(),
                log_path: "python/0.log".into(),
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(host_network()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox.clone()),
        }))
        .unwrap_or_else(|e| panic!("{}", w.context(&format!("CreateContainer: {e}"))))
        .into_inner()
        .container_id;
    w.rt.block_on(runtime.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    }))
    .unwrap_or_else(|e| panic!("{}", w.context(&format!("StartContainer: {e}"))));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status =
            w.rt.block_on(runtime.container_status(cri::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            }))
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a container status");
        if status.state == cri::ContainerState::ContainerExited as i32 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            w.context(&format!("the container did not exit: {status:?}"))
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let run_time = started.elapsed();
    let log_path = log_dir.join("python/0.log");
    let log = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    assert_eq!(
        status.exit_code,
        3,
        "{}",
        w.context(&format!("{status:?}\ncontainer log:\n{log}"))
    );
    assert_eq!(status.reason, "Error", "{status:?}");
    assert_eq!(status.log_path, log_path.to_string_lossy(), "{status:?}");
    // The digested reference, as the CRI says of image_ref.
    assert_eq!(
        status.image_ref,
        format!("{repo}@{manifest_digest}"),
        "{status:?}"
    );
    let mut lines = cri_log_lines(&log);
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".into(), "F".into(), "and from its stderr".into()),
            ("stdout".into(), "F".into(), "hello from python".into()),
        ],
        "container log:\n{log}"
    );
    let run_bytes = blob_bytes(&w.proxy);
    eprintln!(
        "RunPodSandbox → exit took {run_time:?}; blob bytes fetched in all {run_bytes} of \
         {layer_bytes} ({:.1} %)",
        run_bytes as f64 * 100.0 / layer_bytes as f64
    );
    assert!(
        run_bytes * 2 < layer_bytes,
        "{}",
        w.context(&format!(
            "pull and run fetched {run_bytes} blob bytes of a {layer_bytes}-byte image"
        ))
    );
    // The container's rootfs and the sandbox's are active snapshots now.
    w.wait_active(2, 2, "the container exited");

    // ---- RemoveContainer, StopPodSandbox, RemovePodSandbox: nothing left. ----
    w.rt.block_on(runtime.remove_container(cri::RemoveContainerRequest {
        container_id: container.clone(),
    }))
    .expect("RemoveContainer");
    w.wait_active(1, 1, "after RemoveContainer (the sandbox's is left)");
    w.rt.block_on(runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .expect("StopPodSandbox");
    w.rt.block_on(runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .expect("RemovePodSandbox");
    w.wait_active(0, 0, "after RemovePodSandbox");
    let left = mounts_under(&w.containerd.state);
    assert!(
        left.is_empty(),
        "mounts left under containerd's state: {left:?}"
    );
    let overlays: Vec<String> = mount_entries_under(w.env.dir.path())
        .into_iter()
        .filter(|m| !m.fstype.starts_with("fuse"))
        .map(|m| format!("{} ({})", m.point, m.fstype))
        .collect();
    assert!(overlays.is_empty(), "mounts left: {overlays:?}");
    let pods =
        w.rt.block_on(runtime.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))
            .expect("ListPodSandbox")
            .into_inner()
            .items;
    assert!(pods.is_empty(), "{pods:?}");
    // The image's layers stay mounted (committed, still the image's).
    assert_eq!(w.fuse_mounts(), layers.len());
    w.image_fs_agrees("after RemovePodSandbox");

    // ---- RemoveImage: containerd's GC takes the content and the snapshots. ----
    w.rt.block_on(images.remove_image(cri::RemoveImageRequest {
        image: Some(image_spec(&esgz)),
    }))
    .expect("RemoveImage");
    assert!(w.image_status(&esgz).is_none());
    assert!(!w.list_images().iter().any(|i| i.id == config_digest));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let content = w.containerd.ok(CTR, &["content", "ls"]);
        let left: Vec<String> = w
            .strata_snapshots()
            .into_iter()
            .filter(|i| {
                i.labels
                    .contains_key("containerd.io/snapshot/cri.image-ref")
            })
            .map(|i| i.name)
            .collect();
        let fuse = w.fuse_mounts();
        if !content.contains(&manifest_digest)
            && !content.contains(&config_digest)
            && left.is_empty()
            && fuse == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            w.context(&format!(
                "after RemoveImage: content\n{content}\nsnapshots left {left:?}, \
                 {fuse} FUSE mounts"
            ))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The pause image and its (committed) chain remain, and ImageFsInfo agrees.
    assert!(w.image_status(PAUSE).is_some());
    assert!(!w.strata_snapshots().is_empty());
    w.image_fs_agrees("after RemoveImage");
}
