//! The `stargz` snapshotter under registry faults, through the test proxy: a layer is
//! provided over `strata serve`'s socket (a Prepare with `ctr-remote`'s labels, answered
//! AlreadyExists after the layer is mounted), then its files are read straight from the
//! snapshot's FUSE mount while the proxy breaks blob responses.
//! - flipped bytes: the read fails with EIO, never returns wrong bytes, the daemon's log
//!   names the layer and the file, and once the fault is gone the same file reads right;
//! - a registry outage: a short one is ridden out by retries (right bytes), a lasting one
//!   fails the read with EIO within a bound, and reads work again after it;
//! - a cache smaller than the layer: every file still reads right, the cache stays within
//!   its bound, and evicted chunks are fetched again.
//!
//! Prefetch and background fetch are off, so that every byte a read needs is fetched by
//! that read. Needs root (FUSE) and docker-registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use strata_formats::Digest;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::{MountsRequest, PrepareSnapshotRequest, ViewSnapshotRequest};
use strata_testdata::registry::{Fault, FaultProxy, FaultRule, RegistryServer};
use strata_testdata::{ImageSpec, LayerSpec, Platform};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

mod serve_support;
mod support;

use serve_support::{StrataServe, UnmountOnDrop};
use support::{STRATA, log_tail};

const FILES: u64 = 8;
const FILE_SIZE: u64 = 1 << 20;
const CHUNK: u64 = 256 << 10;

async fn client(socket: &Path) -> SnapshotsClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect over unix socket");
    SnapshotsClient::new(channel)
}

/// The original bytes of data file `i`.
fn original(i: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    strata_testdata::random::random_file(&path, FILE_SIZE, 1000 + i).unwrap();
    std::fs::read(path).unwrap()
}

/// The layer, mounted by `strata serve` through the proxy, and everything around it.
struct Lazy {
    _unmount: UnmountOnDrop,
    serve: StrataServe,
    proxy: FaultProxy,
    _registry: RegistryServer,
    fs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lazy {
    fn start(stargz_config: &str) -> Lazy {
        let dir = tempfile::tempdir().unwrap();
        let unmount = UnmountOnDrop(dir.path().to_path_buf());
        let registry = RegistryServer::start().expect("start docker-registry");
        let proxy = FaultProxy::start(registry.addr()).expect("start the proxy");
        let mut layer = LayerSpec::new().created_by("data");
        for i in 0..FILES {
            layer = layer.random_file(format!("data/{i}.bin"), 0o644, 1000 + i, FILE_SIZE);
        }
        let image = ImageSpec::new(Platform::new("linux", "amd64", None))
            .layer(layer)
            .build()
            .unwrap();
        registry.push_image("faults/app", "1", &image).unwrap();
        let source = format!("{}/faults/app:1", proxy.host());
        let converted = format!("{}/faults/app:esgz", proxy.host());
        let chunk = CHUNK.to_string();
        for args in [
            &["pull", "--plain-http", source.as_str()][..],
            &[
                "convert",
                "--plain-http",
                "--chunk-size",
                &chunk,
                "--push",
                &source,
                &converted,
            ],
        ] {
            let out = Command::new(STRATA)
                .arg("--root")
                .arg(dir.path().join("convert"))
                .args(args)
                .env("DOCKER_CONFIG", dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "strata {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let host = proxy.host();
        let hosts = dir.path().join("certs.d");
        std::fs::create_dir_all(hosts.join(&host)).unwrap();
        std::fs::write(hosts.join(&host).join("hosts.toml"), format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")).unwrap();
        let serve = StrataServe::start(
            &dir.path().join("strata"),
            &format!(
                "config_path = {:?}\n[stargz]\nprefetch = false\nbackground_fetch = false\nfd_holder = false\n{stargz_config}",
                hosts.to_string_lossy()
            ),
        );
        let layer_digest = converted_layer(&host);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let fs = runtime.block_on(async {
            let mut c = client(&serve.socket).await;
            let chain = Digest::of(b"faults chain").to_string();
            let labels: HashMap<String, String> = [
                ("containerd.io/snapshot.ref", chain.as_str()),
                (
                    "containerd.io/snapshot/remote/stargz.reference",
                    converted.as_str(),
                ),
                (
                    "containerd.io/snapshot/remote/stargz.digest",
                    layer_digest.as_str(),
                ),
                (
                    "containerd.io/snapshot/remote/stargz.layers",
                    layer_digest.as_str(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let prepared = c
                .prepare(PrepareSnapshotRequest {
                    snapshotter: "stargz".into(),
                    key: "extract-1".into(),
                    parent: String::new(),
                    labels,
                })
                .await;
            let status = prepared.expect_err("a provided layer answers AlreadyExists");
            assert_eq!(
                status.code(),
                tonic::Code::AlreadyExists,
                "{status:?}\n{}",
                log_tail(&serve.log, 20)
            );
            c.view(ViewSnapshotRequest {
                snapshotter: "stargz".into(),
                key: "v".into(),
                parent: chain.clone(),
                labels: HashMap::new(),
            })
            .await
            .unwrap();
            let mounts = c
                .mounts(MountsRequest {
                    snapshotter: "stargz".into(),
                    key: "v".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .mounts;
            assert_eq!(mounts[0].r#type, "bind", "{mounts:?}");
            PathBuf::from(&mounts[0].source)
        });
        assert!(
            fs.join("data/0.bin").exists(),
            "{}",
            log_tail(&serve.log, 20)
        );
        proxy.clear_requests();
        Lazy {
            _unmount: unmount,
            serve,
            proxy,
            _registry: registry,
            fs,
            _dir: dir,
        }
    }

    fn file(&self, i: u64) -> PathBuf {
        self.fs.join(format!("data/{i}.bin"))
    }

    fn blob_requests(&self) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .count()
    }
}

/// The converted image's only layer, from the registry.
fn converted_layer(host: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsS", "-H", "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"])
        .arg(format!("http://{host}/v2/faults/app/manifests/esgz"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{manifest}"))
        .to_owned()
}

fn eio(result: std::io::Result<Vec<u8>>) -> bool {
    matches!(result, Err(e) if e.raw_os_error() == Some(libc::EIO))
}

#[test]
fn flipped_bytes_are_eio_never_wrong_data_and_nothing_bad_is_cached() {
    let lazy = Lazy::start("");
    lazy.proxy.set_faults(vec![
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 100,
            count: 8,
        })
        .blobs(),
    ]);
    for i in [1, 2] {
        let read = std::fs::read(lazy.file(i));
        assert!(
            eio(read),
            "a corrupted chunk must fail the read with EIO, not return bytes"
        );
    }
    let log = lazy.serve.log_text();
    assert!(
        log.contains("data/1.bin") && log.contains("EIO"),
        "{}",
        log_tail(&lazy.serve.log, 20)
    );
    lazy.proxy.clear_faults();
    for i in [1, 2, 3] {
        assert!(
            std::fs::read(lazy.file(i)).unwrap() == original(i),
            "data/{i}.bin differs after the fault cleared"
        );
    }
}

#[test]
fn an_outage_is_retried_then_eio_and_reads_work_after_it() {
    let lazy = Lazy::start("");
    // Short: the first two blob requests fail; the client's retries get through.
    lazy.proxy
        .set_faults(vec![FaultRule::new(Fault::Status(503)).blobs().first(2)]);
    assert!(
        std::fs::read(lazy.file(0)).unwrap() == original(0),
        "a short outage must be ridden out"
    );
    // Lasting: every blob request fails until the read gives up.
    lazy.proxy
        .set_faults(vec![FaultRule::new(Fault::Status(503)).blobs()]);
    let started = Instant::now();
    let read = std::fs::read(lazy.file(1));
    let took = started.elapsed();
    assert!(eio(read), "a lasting outage must fail the read with EIO");
    // Bounded by the client's attempts with backoff (seconds, not minutes).
    assert!(took < Duration::from_secs(60), "EIO took {took:?}");
    let tries = lazy.blob_requests();
    assert!(
        tries >= 2,
        "the read was not retried ({tries} blob requests)"
    );
    eprintln!("lasting outage: EIO after {took:?} and {tries} blob requests");
    lazy.proxy.clear_faults();
    assert!(
        std::fs::read(lazy.file(1)).unwrap() == original(1),
        "reads must work again after the outage"
    );
}

#[test]
fn a_full_cache_evicts_and_reads_stay_right() {
    let bound = 3 * CHUNK;
    let lazy = Lazy::start(&format!("cache_max_size = {bound}\n"));
    for i in 0..FILES {
        assert!(
            std::fs::read(lazy.file(i)).unwrap() == original(i),
            "data/{i}.bin"
        );
    }
    let cache = lazy.serve.root.join("cache/stargz");
    // Chunks and assembled copies (not the 8-byte usage counter beside them).
    let held: u64 = walk_size(&cache.join("sha256")) + walk_size(&cache.join("files"));
    assert!(
        held <= bound,
        "the cache holds {held} bytes, over its bound of {bound}"
    );
    // data/0.bin was evicted long ago: reading it again fetches again, and right.
    let before = lazy.blob_requests();
    // Drop the kernel's copy so the read reaches the filesystem.
    Command::new("sh")
        .args(["-c", "echo 3 > /proc/sys/vm/drop_caches"])
        .status()
        .unwrap();
    assert!(std::fs::read(lazy.file(0)).unwrap() == original(0));
    assert!(
        lazy.blob_requests() > before,
        "an evicted chunk must be fetched again"
    );
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
