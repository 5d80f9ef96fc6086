//! Protocol test of the generated code: a tonic server implementing `Snapshots` with fixed,
//! request-echoing answers listens on a unix socket in a temp dir, and the generated client
//! calls every method over it (containerd reaches a proxy snapshotter the same way). One call
//! also uses containerd's literal method path instead of the generated client, so the routes
//! are checked against the wire contract, not against themselves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use prost_types::{FieldMask, Timestamp};
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_proto::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
use strata_proto::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse,
    RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest,
    UpdateSnapshotResponse, UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use strata_proto::types::Mount;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status};

const SNAPSHOTTER: &str = "strata";
const LAYER: &str = "sha256:layer";

/// The one committed snapshot the fixed server knows.
fn layer_info() -> Info {
    Info {
        name: LAYER.into(),
        parent: "sha256:base".into(),
        kind: Kind::Committed as i32,
        created_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        updated_at: Some(Timestamp {
            seconds: 1_700_000_060,
            nanos: 1,
        }),
        labels: [("containerd.io/snapshot.ref".to_string(), LAYER.to_string())].into(),
    }
}

fn active_info() -> Info {
    Info {
        name: "active-1".into(),
        parent: LAYER.into(),
        kind: Kind::Active as i32,
        ..Info::default()
    }
}

/// The mount the fixed server answers for `key`; parent and labels are echoed in the
/// options so the test sees that they arrived.
fn echo_mount(
    key: &str,
    parent: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Mount {
    let mut options = vec![format!("parent={parent}")];
    let mut pairs: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    options.extend(pairs);
    Mount {
        r#type: "bind".into(),
        source: format!("/snapshots/{key}"),
        target: String::new(),
        options,
    }
}

/// A fixed-answer `Snapshots` service: not a snapshotter, only a peer for the protocol.
#[derive(Debug, Default)]
struct FixedSnapshots {
    commits: Arc<Mutex<Vec<CommitSnapshotRequest>>>,
}

fn check_snapshotter(name: &str) -> Result<(), Status> {
    if name == SNAPSHOTTER {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "snapshotter {name}: not served here"
        )))
    }
}

fn check_known(key: &str) -> Result<(), Status> {
    if key == LAYER {
        Ok(())
    } else {
        Err(Status::not_found(format!("snapshot {key}: does not exist")))
    }
}

#[tonic::async_trait]
impl Snapshots for FixedSnapshots {
    async fn prepare(
        &self,
        request: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: vec![echo_mount(&r.key, &r.parent, &r.labels)],
        }))
    }

    async fn view(
        &self,
        request: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        let mut mount = echo_mount(&r.key, &r.parent, &r.labels);
        mount.options.insert(0, "ro".into());
        Ok(Response::new(ViewSnapshotResponse {
            mounts: vec![mount],
        }))
    }

    async fn mounts(
        &self,
        request: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        Ok(Response::new(MountsResponse {
            mounts: vec![echo_mount(&r.key, "", &Default::default())],
        }))
    }

    async fn commit(
        &self,
        request: Request<CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        self.commits
            .lock()
            .map_err(|_| Status::internal("commit log: lock poisoned"))?
            .push(r);
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        check_known(&r.key)?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        check_known(&r.key)?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(layer_info()),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        let sent = r
            .info
            .ok_or_else(|| Status::invalid_argument("update: info missing"))?;
        check_known(&sent.name)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        // Only label paths are mutable; the answer applies the masked labels to the
        // fixed info.
        let mut info = layer_info();
        for path in paths {
            let key = path.strip_prefix("labels.").ok_or_else(|| {
                Status::invalid_argument(format!("update mask path {path}: not a label"))
            })?;
            match sent.labels.get(key) {
                Some(value) => info.labels.insert(key.to_string(), value.clone()),
                None => info.labels.remove(key),
            };
        }
        Ok(Response::new(UpdateSnapshotResponse { info: Some(info) }))
    }

    type ListStream = tokio_stream::Iter<std::vec::IntoIter<Result<ListSnapshotsResponse, Status>>>;

    async fn list(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        // Two batches, as a server streaming a long list would send them.
        let batches = vec![
            Ok(ListSnapshotsResponse {
                info: vec![layer_info()],
            }),
            Ok(ListSnapshotsResponse {
                info: vec![active_info()],
            }),
        ];
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        request: Request<UsageRequest>,
    ) -> Result<Response<UsageResponse>, Status> {
        let r = request.into_inner();
        check_snapshotter(&r.snapshotter)?;
        check_known(&r.key)?;
        Ok(Response::new(UsageResponse {
            size: 5_000_000_000,
            inodes: 70_000,
        }))
    }

    async fn cleanup(&self, request: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        check_snapshotter(&request.into_inner().snapshotter)?;
        Ok(Response::new(()))
    }
}

/// A server on a unix socket; stopped (and awaited) by `stop`.
struct RunningServer {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    fn start(socket: &Path, service: FixedSnapshots) -> Self {
        let listener = UnixListener::bind(socket).expect("bind unix socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::builder().serve_with_incoming_shutdown(
            SnapshotsServer::new(service),
            UnixListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        RunningServer { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task joins")
            .expect("server ran without error");
    }
}

async fn connect(socket: PathBuf) -> Channel {
    // The URI is required by the API but unused: the connector always dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect over unix socket")
}

#[tokio::test]
async fn generated_client_and_server_round_trip_over_unix_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("snapshots.sock");
    let commits = Arc::new(Mutex::new(Vec::new()));
    let server = RunningServer::start(
        &socket,
        FixedSnapshots {
            commits: Arc::clone(&commits),
        },
    );
    let mut client = SnapshotsClient::new(connect(socket).await);

    // Stat: nested message, enum and both timestamps survive the trip.
    let info = client
        .stat(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: LAYER.into(),
        })
        .await
        .expect("stat")
        .into_inner()
        .info
        .expect("stat answers an info");
    assert_eq!(info, layer_info());
    assert_eq!(info.kind(), Kind::Committed);

    // List: a server stream of two batches, then its end.
    let mut stream = client
        .list(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec!["kind==committed".into()],
        })
        .await
        .expect("list")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(batch) = stream.message().await.expect("list batch") {
        listed.push(batch.info);
    }
    assert_eq!(listed, [vec![layer_info()], vec![active_info()]]);

    // Prepare and View: request fields arrive (echoed back in the mount options).
    let mounts = client
        .prepare(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "k".into(),
            parent: LAYER.into(),
            labels: [("a".to_string(), "b".to_string())].into(),
        })
        .await
        .expect("prepare")
        .into_inner()
        .mounts;
    assert_eq!(
        mounts,
        [Mount {
            r#type: "bind".into(),
            source: "/snapshots/k".into(),
            target: String::new(),
            options: vec![format!("parent={LAYER}"), "a=b".into()],
        }]
    );
    let view = client
        .view(ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "v".into(),
            parent: LAYER.into(),
            labels: Default::default(),
        })
        .await
        .expect("view")
        .into_inner()
        .mounts;
    assert_eq!(view.len(), 1);
    assert_eq!(
        view[0].options,
        ["ro".to_string(), format!("parent={LAYER}")]
    );
    let mounts = client
        .mounts(MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "k".into(),
        })
        .await
        .expect("mounts")
        .into_inner()
        .mounts;
    assert_eq!(mounts[0].source, "/snapshots/k");

    // Commit with containerd 2.2's parent field.
    let commit = CommitSnapshotRequest {
        snapshotter: SNAPSHOTTER.into(),
        name: "sha256:next".into(),
        key: "k".into(),
        labels: [(
            "containerd.io/snapshot.ref".to_string(),
            "sha256:next".to_string(),
        )]
        .into(),
        parent: LAYER.into(),
    };
    client.commit(commit.clone()).await.expect("commit");
    assert_eq!(*commits.lock().expect("commit log"), [commit]);

    // Update: the field mask travels.
    let updated = client
        .update(UpdateSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            info: Some(Info {
                name: LAYER.into(),
                labels: [("gc".to_string(), "keep".to_string())].into(),
                ..Info::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["labels.gc".into()],
            }),
        })
        .await
        .expect("update")
        .into_inner()
        .info
        .expect("update answers an info");
    assert_eq!(updated.labels.get("gc").map(String::as_str), Some("keep"));
    assert_eq!(updated.created_at, layer_info().created_at);

    let usage = client
        .usage(UsageRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: LAYER.into(),
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!((usage.size, usage.inodes), (5_000_000_000, 70_000));

    client
        .remove(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: LAYER.into(),
        })
        .await
        .expect("remove");
    client
        .cleanup(CleanupRequest {
            snapshotter: SNAPSHOTTER.into(),
        })
        .await
        .expect("cleanup");

    // Errors: the status code and message reach the client unchanged.
    let err = client
        .stat(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "missing".into(),
        })
        .await
        .expect_err("stat of a missing snapshot fails");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "snapshot missing: does not exist");

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn server_answers_containerds_literal_method_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("snapshots.sock");
    let server = RunningServer::start(&socket, FixedSnapshots::default());

    let mut grpc = tonic::client::Grpc::new(connect(socket).await);
    grpc.ready().await.expect("channel ready");
    let response: Response<StatSnapshotResponse> = grpc
        .unary(
            Request::new(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: LAYER.into(),
            }),
            PathAndQuery::from_static("/containerd.services.snapshots.v1.Snapshots/Stat"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("stat by containerd's path");
    assert_eq!(response.into_inner().info, Some(layer_info()));

    drop(grpc);
    server.stop().await;
}
