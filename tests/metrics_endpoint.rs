//! `strata serve` with `metrics_address` set: RPCs over the unix socket show up on the
//! Prometheus endpoint, counted by method, snapshotter and gRPC code, with latency
//! histograms; a non-loopback address is refused at start-up.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, StatSnapshotRequest,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

mod support;

use support::{STRATA, log_tail, stop_child, wait_for_socket};

/// Spawns `strata serve` with `config` (TOML) in `dir`; returns the child, socket and log.
fn spawn(dir: &Path, config: &str) -> (Child, PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let socket = dir.join("strata.sock");
    let log = dir.join("serve.log");
    let config_path = dir.join("config.toml");
    fs::write(&config_path, config).unwrap();
    let out = fs::File::create(&log).unwrap();
    let child = Command::new(STRATA)
        .arg("--root")
        .arg(dir.join("root"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (child, socket, log)
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn client(socket: &Path) -> SnapshotsClient<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by the API but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect over unix socket");
    SnapshotsClient::new(channel)
}

/// `GET /metrics` over plain HTTP/1.1; retried briefly, since the endpoint starts just after
/// the unix socket. Returns the status line and the body.
async fn scrape(addr: SocketAddr) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("metrics endpoint {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head and body");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample line starting with `series` (name and full label set).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{series}: value {v:?}: {e}"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_are_counted_and_timed_on_the_metrics_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (mut child, socket, log) = spawn(dir.path(), &format!("metrics_address = \"{addr}\"\n"));
    wait_for_socket("strata serve", &mut child, &socket, &log);

    let (status, body) = scrape(addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\nstrata_build_info{version=\""), "{body}");
    assert_eq!(
        sample(
            &body,
            "strata_snapshotter_requests_total{rpc=\"Prepare\",snapshotter=\"overlayfs\",code=\"OK\"}"
        ),
        None
    );

    let mut c = client(&socket).await;
    let prepare = |key: &str| PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: key.into(),
        ..Default::default()
    };
    c.prepare(prepare("a")).await.expect("prepare a");
    let again = c.prepare(prepare("a")).await.expect_err("prepare a twice");
    assert_eq!(again.code(), Code::AlreadyExists);
    c.commit(CommitSnapshotRequest {
        snapshotter: "overlayfs".into(),
        name: "a-committed".into(),
        key: "a".into(),
        ..Default::default()
    })
    .await
    .expect("commit a");
    for key in ["missing-1", "missing-2"] {
        let err = c
            .stat(StatSnapshotRequest {
                snapshotter: "native".into(),
                key: key.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    let (status, body) = scrape(addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let count = |rpc: &str, snapshotter: &str, code: &str| {
        sample(
            &body,
            &format!(
                "strata_snapshotter_requests_total{{rpc=\"{rpc}\",snapshotter=\"{snapshotter}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(count("Prepare", "overlayfs", "OK"), Some(1.0), "{body}");
    assert_eq!(
        count("Prepare", "overlayfs", "AlreadyExists"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(count("Commit", "overlayfs", "OK"), Some(1.0), "{body}");
    assert_eq!(count("Stat", "native", "NotFound"), Some(2.0), "{body}");
    assert_eq!(count("Stat", "overlayfs", "NotFound"), None, "{body}");
    let histogram = |suffix: &str, rpc: &str, snapshotter: &str, extra: &str| {
        sample(
            &body,
            &format!(
                "strata_snapshotter_request_duration_seconds_{suffix}{{rpc=\"{rpc}\",snapshotter=\"{snapshotter}\"{extra}}}"
            ),
        )
    };
    assert_eq!(
        histogram("count", "Prepare", "overlayfs", ""),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        histogram("bucket", "Prepare", "overlayfs", ",le=\"+Inf\""),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        histogram("bucket", "Stat", "native", ",le=\"10\""),
        Some(2.0),
        "{body}"
    );
    let sum = histogram("sum", "Prepare", "overlayfs", "").expect("Prepare latency sum");
    assert!(sum > 0.0 && sum < 10.0, "Prepare latency sum {sum}");

    drop(c);
    stop_child(&mut child);
    assert!(child.wait().unwrap().success(), "{}", log_tail(&log, 30));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "metrics endpoint closed after SIGTERM"
    );
}

#[test]
fn non_loopback_metrics_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket, log) = spawn(dir.path(), "metrics_address = \"0.0.0.0:9102\"\n");
    let status = child.wait().unwrap();
    let log = fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("metrics_address 0.0.0.0:9102: not a loopback address"),
        "{log}"
    );
    assert!(!socket.exists(), "socket left behind: {log}");

    let (mut child, _, log) = spawn(&dir.path().join("bad"), "metrics_address = \"localhost\"\n");
    let status = child.wait().unwrap();
    let log = fs::read_to_string(log).unwrap();
    assert!(
        !status.success() && log.contains("metrics_address \"localhost\""),
        "{log}"
    );
}
