//! `strata serve` on its own: the built binary is started on a temp root and socket, and a
//! tonic client (strata-proto's `SnapshotsClient`, as containerd's proxy reaches it) calls
//! every RPC, including the error codes containerd's errdefs expects, `List` batching, the
//! socket rules (live socket refused, stale one taken over) and SIGTERM shutdown.
//!
//! The overlayfs snapshotter's mounts are returned as data and never mounted here, but
//! opening it probes overlay support, so these tests want root like the others.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use prost_types::FieldMask;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest,
    UsageRequest, ViewSnapshotRequest,
};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

mod support;

use support::{STRATA, log_tail, stop_child, wait_for_socket};

/// A `strata serve` child on its own root and socket; SIGTERMed on drop.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `config` (TOML text) in `dir` and waits for its socket.
    fn start(dir: &Path, config: &str) -> Daemon {
        let mut daemon = Daemon::spawn(dir, config);
        let child = daemon.child.as_mut().expect("just spawned");
        wait_for_socket("strata serve", child, &daemon.socket, &daemon.log);
        daemon
    }

    fn spawn(dir: &Path, config: &str) -> Daemon {
        Daemon::spawn_on(dir, config, &dir.join("run/strata.sock"))
    }

    fn spawn_on(dir: &Path, config: &str, socket: &Path) -> Daemon {
        fs::create_dir_all(dir).unwrap();
        let socket = socket.to_path_buf();
        let root = dir.join("root");
        let log = dir.join("serve.log");
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(STRATA)
            .arg("--root")
            .arg(&root)
            .args(["--log-level", "strata=debug,info", "serve", "--config"])
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            socket,
            root,
            log,
        }
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        stop_child(&mut child);
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

async fn client(socket: &Path) -> SnapshotsClient<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by the API but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect over unix socket");
    SnapshotsClient::new(channel)
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn prepare(sn: &str, key: &str, parent: &str) -> PrepareSnapshotRequest {
    PrepareSnapshotRequest {
        snapshotter: sn.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(sn: &str, name: &str, key: &str) -> CommitSnapshotRequest {
    CommitSnapshotRequest {
        snapshotter: sn.into(),
        name: name.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn stat(sn: &str, key: &str) -> StatSnapshotRequest {
    StatSnapshotRequest {
        snapshotter: sn.into(),
        key: key.into(),
    }
}

async fn list(client: &mut SnapshotsClient<Channel>, sn: &str, filters: &[&str]) -> Vec<Vec<Info>> {
    let mut stream = client
        .list(ListSnapshotsRequest {
            snapshotter: sn.into(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
        .await
        .expect("list")
        .into_inner();
    let mut batches = Vec::new();
    while let Some(batch) = stream.message().await.expect("list batch") {
        batches.push(batch.info);
    }
    batches
}

const CONFIG: &str = "[snapshotters]\nstrata = \"overlayfs\"\nplain = \"native\"\n";

/// Every RPC through the socket, on the default name (overlayfs) and on a name mapped to
/// native, with the error codes containerd's snapshotters answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_with_containerd_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), CONFIG);
    let mut c = client(&daemon.socket).await;

    for sn in ["strata", "plain"] {
        // Prepare a base layer with labels, write nothing, commit it.
        let mut req = prepare(sn, "extract-1", "");
        req.labels = labels(&[("containerd.io/snapshot.ref", "layer-1")]);
        let mounts = c.prepare(req).await.expect("prepare").into_inner().mounts;
        assert_eq!(mounts.len(), 1, "{sn}: {mounts:?}");
        assert_eq!(
            mounts[0].r#type, "bind",
            "{sn}: a base snapshot is a bind mount"
        );
        assert!(
            mounts[0].options.iter().any(|o| o == "rw"),
            "{sn}: {mounts:?}"
        );

        let again = c.prepare(prepare(sn, "extract-1", "")).await.unwrap_err();
        assert_eq!(again.code(), Code::AlreadyExists, "{sn}: {again:?}");

        let before = c
            .stat(stat(sn, "extract-1"))
            .await
            .expect("stat")
            .into_inner()
            .info
            .unwrap();
        assert_eq!(before.kind(), Kind::Active);
        assert_eq!(before.labels["containerd.io/snapshot.ref"], "layer-1");
        let created = before.created_at.unwrap();
        assert!(created.seconds > 1_600_000_000, "{sn}: created {created:?}");

        let mounted = c
            .mounts(MountsRequest {
                snapshotter: sn.into(),
                key: "extract-1".into(),
            })
            .await
            .expect("mounts");
        assert_eq!(
            mounted.into_inner().mounts,
            mounts,
            "{sn}: Mounts repeats Prepare's answer"
        );

        let mut req = commit(sn, "layer-1", "extract-1");
        req.labels = labels(&[("containerd.io/snapshot.ref", "layer-1"), ("gc", "keep")]);
        c.commit(req).await.expect("commit");
        let info = c
            .stat(stat(sn, "layer-1"))
            .await
            .expect("stat layer")
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.kind(), Kind::Committed);
        assert_eq!(info.parent, "");
        assert_eq!(info.labels["gc"], "keep");
        let gone = c.stat(stat(sn, "extract-1")).await.unwrap_err();
        assert_eq!(
            gone.code(),
            Code::NotFound,
            "{sn}: the active key is gone after commit"
        );

        // A child, a view, usage, update.
        c.prepare(prepare(sn, "container-1", "layer-1"))
            .await
            .expect("prepare child");
        let view = ViewSnapshotRequest {
            snapshotter: sn.into(),
            key: "view-1".into(),
            parent: "layer-1".into(),
            labels: HashMap::new(),
        };
        let view_mounts = c.view(view).await.expect("view").into_inner().mounts;
        assert!(
            view_mounts[0].options.iter().any(|o| o == "ro"),
            "{sn}: {view_mounts:?}"
        );
        let child = c
            .stat(stat(sn, "container-1"))
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(
            (child.kind(), child.parent.as_str()),
            (Kind::Active, "layer-1")
        );
        assert_eq!(
            c.stat(stat(sn, "view-1"))
                .await
                .unwrap()
                .into_inner()
                .info
                .unwrap()
                .kind(),
            Kind::View
        );

        let usage = c
            .usage(UsageRequest {
                snapshotter: sn.into(),
                key: "layer-1".into(),
            })
            .await
            .expect("usage");
        assert!(
            usage.into_inner().inodes >= 1,
            "{sn}: the layer's root directory counts"
        );

        let update = UpdateSnapshotRequest {
            snapshotter: sn.into(),
            info: Some(Info {
                name: "layer-1".into(),
                labels: labels(&[("gc", "drop"), ("x", "1")]),
                ..Info::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["labels.gc".into()],
            }),
        };
        let updated = c
            .update(update)
            .await
            .expect("update")
            .into_inner()
            .info
            .unwrap();
        assert_eq!(updated.labels["gc"], "drop");
        assert!(
            !updated.labels.contains_key("x"),
            "{sn}: only the masked label changes"
        );
        let (u, cr) = (updated.updated_at.unwrap(), updated.created_at.unwrap());
        assert!(
            (u.seconds, u.nanos) >= (cr.seconds, cr.nanos),
            "{sn}: updated {u:?} before created {cr:?}"
        );
        assert_eq!(
            cr,
            info.created_at.unwrap(),
            "{sn}: created survives an update"
        );

        let bad_path = UpdateSnapshotRequest {
            snapshotter: sn.into(),
            info: Some(Info {
                name: "layer-1".into(),
                parent: "other".into(),
                ..Info::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["parent".into()],
            }),
        };
        assert_eq!(
            c.update(bad_path).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{sn}"
        );

        // Errors: committing a view, a parent that is not committed, a missing key, bad labels.
        assert_eq!(
            c.commit(commit(sn, "layer-2", "view-1"))
                .await
                .unwrap_err()
                .code(),
            Code::FailedPrecondition,
            "{sn}: a view cannot be committed"
        );
        assert_eq!(
            c.prepare(prepare(sn, "x", "container-1"))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument,
            "{sn}: an active parent"
        );
        assert_eq!(
            c.prepare(prepare(sn, "y", "missing"))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound,
            "{sn}"
        );
        let long = "v".repeat(5000);
        let mut big = prepare(sn, "z", "");
        big.labels = labels(&[("k", &long)]);
        assert_eq!(
            c.prepare(big).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{sn}: label over 4096 bytes"
        );
        for missing in ["nope"] {
            assert_eq!(
                c.stat(stat(sn, missing)).await.unwrap_err().code(),
                Code::NotFound
            );
            let usage = UsageRequest {
                snapshotter: sn.into(),
                key: missing.into(),
            };
            assert_eq!(c.usage(usage).await.unwrap_err().code(), Code::NotFound);
            let rm = RemoveSnapshotRequest {
                snapshotter: sn.into(),
                key: missing.into(),
            };
            assert_eq!(c.remove(rm).await.unwrap_err().code(), Code::NotFound);
        }
        let rm_parent = RemoveSnapshotRequest {
            snapshotter: sn.into(),
            key: "layer-1".into(),
        };
        assert_eq!(
            c.remove(rm_parent).await.unwrap_err().code(),
            Code::FailedPrecondition,
            "{sn}: a snapshot with children cannot be removed"
        );

        // Commit with a rebase parent (containerd 2.2): its own parent is accepted, another is not.
        c.prepare(prepare(sn, "rebase-me", "layer-1"))
            .await
            .unwrap();
        let mut rebase = commit(sn, "layer-r", "rebase-me");
        rebase.parent = "other".into();
        assert_eq!(
            c.commit(rebase.clone()).await.unwrap_err().code(),
            Code::Unimplemented,
            "{sn}"
        );
        rebase.parent = "layer-1".into();
        c.commit(rebase).await.expect("commit with its own parent");

        // List with a filter, then remove everything top first and clean up.
        let all: Vec<Info> = list(&mut c, sn, &[]).await.concat();
        let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["container-1", "layer-1", "layer-r", "view-1"],
            "{sn}"
        );
        let committed: Vec<String> = list(&mut c, sn, &["kind==committed"])
            .await
            .concat()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(committed.len(), 2, "{sn}: {committed:?}");
        for key in ["container-1", "view-1", "layer-r", "layer-1"] {
            let rm = RemoveSnapshotRequest {
                snapshotter: sn.into(),
                key: key.into(),
            };
            c.remove(rm)
                .await
                .unwrap_or_else(|e| panic!("{sn}: remove {key}: {e:?}"));
        }
        c.cleanup(CleanupRequest {
            snapshotter: sn.into(),
        })
        .await
        .expect("cleanup");
        assert!(list(&mut c, sn, &[]).await.concat().is_empty(), "{sn}");
    }

    // The two names are two implementations: nothing leaks from one to the other.
    c.prepare(prepare("strata", "only-overlay", ""))
        .await
        .unwrap();
    assert_eq!(
        c.stat(stat("plain", "only-overlay"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // `overlayfs` names the same instance as `strata`.
    c.stat(stat("overlayfs", "only-overlay"))
        .await
        .expect("overlayfs and strata share one instance");

    // An unknown snapshotter name: InvalidArgument, as containerd's snapshots service says.
    let unknown = c.stat(stat("zfs", "k")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("snapshotter not loaded: zfs"),
        "{unknown:?}"
    );
    let listed = c
        .list(ListSnapshotsRequest {
            snapshotter: "zfs".into(),
            filters: vec![],
        })
        .await;
    assert_eq!(listed.unwrap_err().code(), Code::InvalidArgument);
    let log = fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("rpc=\"Prepare\" snapshotter=\"plain\" key=\"extract-1\""),
        "per-RPC debug lines:\n{}",
        log_tail(&daemon.log, 10)
    );
}

/// `List` is streamed in batches of at most 100 infos, and fewer when labels are large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), CONFIG);
    let mut c = client(&daemon.socket).await;

    for i in 0..230 {
        c.view(ViewSnapshotRequest {
            snapshotter: "plain".into(),
            key: format!("view-{i:03}"),
            parent: String::new(),
            labels: HashMap::new(),
        })
        .await
        .expect("view");
    }
    let batches = list(&mut c, "plain", &[]).await;
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 30]);

    // Six snapshots with 100 labels of 4 KiB each (~400 KiB apiece): a byte bound splits them.
    let value = "v".repeat(4000);
    for i in 0..6 {
        let mut req = prepare("strata", &format!("big-{i}"), "");
        req.labels = (0..100)
            .map(|j| (format!("l{j:03}"), value.clone()))
            .collect();
        c.prepare(req).await.expect("prepare with large labels");
    }
    let batches = list(&mut c, "strata", &[]).await;
    let total: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(total, 6);
    assert!(
        batches.len() > 1,
        "large infos are split over messages: {:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        batches.iter().all(|b| b.len() <= 3),
        "at most ~1 MiB per message"
    );
}

/// A second daemon on a live socket refuses to start and leaves the first one serving; a
/// stale socket file is taken over; SIGTERM removes the socket and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_refused_when_live_taken_over_when_stale_removed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();

    // A stale socket: bound, then its listener dropped without removing the file.
    let socket = dir.path().join("first/run/strata.sock");
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut first = Daemon::start(&dir.path().join("first"), CONFIG);
    let meta = fs::metadata(&first.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o660);
    client(&first.socket)
        .await
        .prepare(prepare("strata", "k", ""))
        .await
        .expect("the new daemon serves");

    // A second daemon on the same socket (own root): refused.
    let mut second = Daemon::spawn_on(&dir.path().join("second"), CONFIG, &first.socket);
    let mut child = second.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "second daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = fs::read_to_string(&second.log).unwrap();
    assert!(log.contains("is served by another process"), "{log}");
    client(&first.socket)
        .await
        .stat(stat("strata", "k"))
        .await
        .expect("the first daemon still serves");

    // SIGTERM: exit 0, socket gone, state kept for the next start.
    let status = first.terminate();
    assert!(status.success(), "{status}: {}", log_tail(&first.log, 10));
    assert!(!first.socket.exists(), "socket removed at shutdown");
    let root = first.root.clone();
    assert!(root.join("snapshotters/overlayfs").is_dir());
    let again = Daemon::start(&dir.path().join("first"), CONFIG);
    let info = client(&again.socket)
        .await
        .stat(stat("strata", "k"))
        .await
        .expect("state survives a restart");
    assert_eq!(info.into_inner().info.unwrap().kind(), Kind::Active);
}

/// The printed default configuration is a valid config file; an unknown key is refused by name.
#[test]
fn default_config_serves_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(STRATA)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("strata = \"overlayfs\"")
            && text.contains("socket = \"/run/strata/strata.sock\""),
        "{text}"
    );
    // Served with the flags overriding root and socket.
    let mut daemon = Daemon::start(&dir.path().join("ok"), &text);
    assert!(
        daemon.root.join("snapshotters/overlayfs").is_dir(),
        "--root overrides the config's root"
    );
    assert!(daemon.terminate().success());

    let bad = Daemon::spawn(&dir.path().join("bad"), "sockett = \"/tmp/x\"\n");
    let mut bad = bad;
    let status = bad.child.take().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = fs::read_to_string(&bad.log).unwrap();
    assert!(log.contains("sockett"), "{log}");
}

/// `log_format = "json"` in the config: every log line is one JSON object, the per-RPC
/// line carrying the RPC, snapshotter and key as fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &format!("log_format = \"json\"\n{CONFIG}"));
    let mut c = client(&daemon.socket).await;
    c.prepare(prepare("plain", "json-key", "")).await.unwrap();
    assert!(daemon.terminate().success());
    let log = fs::read_to_string(&daemon.log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["fields"]["rpc"] == "Prepare"
            && v["fields"]["snapshotter"] == "plain"
            && v["fields"]["key"] == "json-key"),
        "{log}"
    );
}
