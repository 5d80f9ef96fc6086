//! [`DaemonSnapshotter`]: a [`Snapshotter`] that is a running `strata serve`, reached over
//! its socket with the same snapshots.v1 API containerd uses. The CLI falls back to it
//! when the daemon holds a snapshotter's metadata (one process at a time may open it).
//! gRPC status codes become error kinds again, as containerd's `errdefs.FromGRPC` does.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use prost_types::FieldMask;
use strata_formats::ErrorKind;
use strata_proto::snapshots::v1 as api;
use strata_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_snapshotters::{Info, Kind, Labels, Mount, SnapshotError, Snapshotter, Usage};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use super::service::info_to_wire;

/// One snapshotter of a running daemon.
#[derive(Debug)]
pub struct DaemonSnapshotter {
    runtime: Runtime,
    client: SnapshotsClient<Channel>,
    name: String,
}

fn from_status(status: &Status) -> SnapshotError {
    let kind = match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::NotImplemented,
        Code::DataLoss => ErrorKind::DataCorrupt,
        _ => ErrorKind::Internal,
    };
    SnapshotError::new(kind, status.message().to_owned())
}

fn info_from_wire(info: api::Info) -> Info {
    let time = |t: Option<prost_types::Timestamp>| {
        t.and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    Info {
        name: info.name,
        parent: (!info.parent.is_empty()).then_some(info.parent),
        kind: Kind::from_i32(info.kind).unwrap_or(Kind::Committed),
        labels: info.labels.into_iter().collect(),
        created: time(info.created_at),
        updated: time(info.updated_at),
    }
}

fn mounts_from_wire(mounts: Vec<strata_proto::types::Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|m| Mount {
            kind: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

fn labels_to_wire(labels: Labels) -> HashMap<String, String> {
    labels.into_iter().collect()
}

impl DaemonSnapshotter {
    /// Connects to the daemon on `socket`, for its snapshotter `name`.
    ///
    /// # Errors
    ///
    /// Unavailable when nothing answers on the socket.
    pub fn connect(socket: &Path, name: &str) -> Result<DaemonSnapshotter, SnapshotError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SnapshotError::internal(format!("start a runtime: {e}")))?;
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(
                // The URI is required by the API but unused: the connector dials the socket.
                Endpoint::from_static("http://localhost").connect_with_connector(
                    tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }),
                ),
            )
            .map_err(|e| connect_error(socket, &e))?;
        Ok(DaemonSnapshotter {
            runtime,
            client: SnapshotsClient::new(channel),
            name: name.to_owned(),
        })
    }

    fn call<T, F, Fut>(&self, f: F) -> Result<T, SnapshotError>
    where
        F: FnOnce(SnapshotsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.runtime
            .block_on(f(self.client.clone()))
            .map(tonic::Response::into_inner)
            .map_err(|s| from_status(&s))
    }
}

impl Snapshotter for DaemonSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let req = api::StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        let resp = self.call(|mut c| async move { c.stat(req).await })?;
        Ok(info_from_wire(resp.info.unwrap_or_default()))
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        let req = api::UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            info: Some(info_to_wire(&info)),
            update_mask: Some(FieldMask {
                paths: fieldpaths.to_vec(),
            }),
        };
        let resp = self.call(|mut c| async move { c.update(req).await })?;
        Ok(info_from_wire(resp.info.unwrap_or_default()))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let req = api::UsageRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        let resp = self.call(|mut c| async move { c.usage(req).await })?;
        Ok(Usage {
            size: resp.size,
            inodes: resp.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let req = api::MountsRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        Ok(mounts_from_wire(
            self.call(|mut c| async move { c.mounts(req).await })?
                .mounts,
        ))
    }

    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let req = api::PrepareSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels: labels_to_wire(labels),
        };
        Ok(mounts_from_wire(
            self.call(|mut c| async move { c.prepare(req).await })?
                .mounts,
        ))
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotError> {
        let req = api::ViewSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels: labels_to_wire(labels),
        };
        Ok(mounts_from_wire(
            self.call(|mut c| async move { c.view(req).await })?.mounts,
        ))
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<(), SnapshotError> {
        let req = api::CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: labels_to_wire(labels),
            ..Default::default()
        };
        self.call(|mut c| async move { c.commit(req).await })
            .map(|_| ())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let req = api::RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        self.call(|mut c| async move { c.remove(req).await })
            .map(|_| ())
    }

    fn walk(
        &self,
        filters: &[String],
        f: &mut dyn FnMut(&Info) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let req = api::ListSnapshotsRequest {
            snapshotter: self.name.clone(),
            filters: filters.to_vec(),
        };
        let infos: Vec<Info> = self.runtime.block_on(async {
            let mut stream = self
                .client
                .clone()
                .list(req)
                .await
                .map_err(|s| from_status(&s))?
                .into_inner();
            let mut infos = Vec::new();
            while let Some(batch) = stream.message().await.map_err(|s| from_status(&s))? {
                infos.extend(batch.info.into_iter().map(info_from_wire));
            }
            Ok::<_, SnapshotError>(infos)
        })?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let req = api::CleanupRequest {
            snapshotter: self.name.clone(),
        };
        self.call(|mut c| async move { c.cleanup(req).await })
            .map(|_| ())
    }

    fn close(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// A failed connect to the daemon's socket, with its root cause (tonic's own text is only
/// "transport error"): "nothing listens on <socket>" when there is no socket file or no
/// one accepts on it.
fn connect_error(socket: &Path, e: &tonic::transport::Error) -> SnapshotError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        {
            return SnapshotError::new(
                ErrorKind::Unavailable,
                format!("nothing listens on {} ({io})", socket.display()),
            );
        }
        cause = c.source();
    }
    SnapshotError::new(
        ErrorKind::Unavailable,
        format!(
            "strata serve on {}: {}",
            socket.display(),
            crate::error_chain::chain(e)
        ),
    )
}
