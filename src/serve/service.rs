//! containerd's `Snapshots` gRPC service over the served snapshotters: each RPC picks the
//! snapshotter by the request's `snapshotter` field, runs the synchronous trait call on a
//! blocking worker thread, and converts the answer to the wire types.
//!
//! Every finished RPC goes through [`ServiceState::observe`], the one place that logs (and
//! measures) calls. An unknown snapshotter name is answered as containerd's own snapshots
//! service answers it: InvalidArgument, "snapshotter not loaded: <name>".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prost::Message as _;
use prost_types::Timestamp;
use strata_proto::snapshots::v1 as api;
use strata_proto::snapshots::v1::snapshots_server::Snapshots;
use strata_proto::types::Mount as ApiMount;
use strata_snapshotters::{Info, Kind, Labels, Mount, SnapshotError, Snapshotter};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::metrics::Metrics;

use super::errors::{to_status, worker_failed};
use super::snapshotters::ServedSnapshotters;

/// Most infos in one `List` message, as containerd's snapshots service batches them.
pub const LIST_BATCH_INFOS: usize = 100;
/// Most encoded bytes of infos in one `List` message: far under gRPC's default 4 MiB
/// message limit even when an info near the bound carries many 4 KiB labels.
pub const LIST_BATCH_BYTES: usize = 1024 * 1024;
/// `List` batches buffered ahead of a slow client.
const LIST_QUEUE: usize = 4;

/// What every RPC shares: the snapshotters and the observation hook.
#[derive(Debug)]
pub struct ServiceState {
    snapshotters: ServedSnapshotters,
    /// Where [`ServiceState::observe`] records calls when `metrics_address` is set.
    metrics: Option<Arc<Metrics>>,
}

impl ServiceState {
    /// State over `snapshotters`.
    pub fn new(snapshotters: ServedSnapshotters) -> Self {
        Self {
            snapshotters,
            metrics: None,
        }
    }

    /// Also records every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics registry calls are recorded in, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The served snapshotters.
    pub fn snapshotters(&self) -> &ServedSnapshotters {
        &self.snapshotters
    }

    fn snapshotter(&self, name: &str) -> Result<Arc<dyn Snapshotter>, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("snapshotter argument missing"));
        }
        self.snapshotters
            .get(name)
            .ok_or_else(|| Status::invalid_argument(format!("snapshotter not loaded: {name}")))
    }

    /// Records one finished RPC: a debug line for every call, a warning for failures
    /// other than the NotFound / AlreadyExists answers containerd expects in normal use.
    pub fn observe(
        &self,
        rpc: &'static str,
        snapshotter: &str,
        key: &str,
        started: Instant,
        result: Result<(), &Status>,
    ) {
        let elapsed = started.elapsed();
        if let Some(metrics) = &self.metrics {
            // gRPC's canonical code names, as Go's `codes.Code.String()` spells them.
            let code = match result {
                Ok(()) => "OK".to_owned(),
                Err(status) => format!("{:?}", status.code()),
            };
            metrics.observe(rpc, snapshotter, &code, elapsed);
        }
        match result {
            Ok(()) => tracing::debug!(rpc, snapshotter, key, ?elapsed, result = "OK", "rpc"),
            Err(status) => {
                let code = status.code();
                if matches!(code, Code::NotFound | Code::AlreadyExists) {
                    tracing::debug!(rpc, snapshotter, key, ?elapsed, result = ?code, error = status.message(), "rpc");
                } else {
                    tracing::warn!(rpc, snapshotter, key, ?elapsed, result = ?code, error = status.message(), "rpc failed");
                }
            }
        }
    }

    /// Runs `call` on snapshotter `name` on a blocking thread and observes the result.
    async fn call<T, F>(
        self: &Arc<Self>,
        rpc: &'static str,
        name: &str,
        key: &str,
        call: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Snapshotter) -> Result<T, SnapshotError> + Send + 'static,
    {
        let started = Instant::now();
        let result = match self.snapshotter(name) {
            Err(status) => Err(status),
            Ok(snapshotter) => {
                match tokio::task::spawn_blocking(move || call(snapshotter.as_ref())).await {
                    Ok(answer) => answer.map_err(|e| to_status(&e)),
                    Err(e) => Err(worker_failed(rpc, &e)),
                }
            }
        };
        self.observe(rpc, name, key, started, result.as_ref().map(|_| ()));
        result
    }
}

/// The tonic service: a cheap handle on the shared state.
#[derive(Debug, Clone)]
pub struct SnapshotService {
    state: Arc<ServiceState>,
}

impl SnapshotService {
    /// A service over `state`.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }
}

fn labels_from_wire(labels: HashMap<String, String>) -> Labels {
    labels.into_iter().collect()
}

fn mount_to_wire(mount: Mount) -> ApiMount {
    ApiMount {
        r#type: mount.kind,
        source: mount.source,
        target: mount.target,
        options: mount.options,
    }
}

fn mounts_to_wire(mounts: Vec<Mount>) -> Vec<ApiMount> {
    mounts.into_iter().map(mount_to_wire).collect()
}

fn kind_to_wire(kind: Kind) -> api::Kind {
    match kind {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    }
}

fn timestamp(time: SystemTime) -> Timestamp {
    Timestamp::from(time)
}

/// The wire form of an info: kind as the enum, times with nanoseconds.
pub fn info_to_wire(info: &Info) -> api::Info {
    api::Info {
        name: info.name.clone(),
        parent: info.parent.clone().unwrap_or_default(),
        kind: kind_to_wire(info.kind) as i32,
        created_at: Some(timestamp(info.created)),
        updated_at: Some(timestamp(info.updated)),
        labels: info
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The info `Update` hands the trait: name and labels are what it reads (containerd's
/// snapshotters ignore the other fields of an update).
fn info_from_wire(info: api::Info) -> Info {
    Info {
        name: info.name,
        parent: (!info.parent.is_empty()).then_some(info.parent),
        kind: Kind::from_i32(info.kind).unwrap_or(Kind::Committed),
        labels: labels_from_wire(info.labels),
        created: SystemTime::UNIX_EPOCH,
        updated: SystemTime::UNIX_EPOCH,
    }
}

/// Commit with containerd 2.2's `parent` ("rebase onto"): we do not advertise the rebase
/// capability, so containerd sends it empty; a parent equal to the snapshot's own is no
/// rebase at all, and any other is NotImplemented, as for a snapshotter without rebase.
fn commit(
    snapshotter: &dyn Snapshotter,
    name: &str,
    key: &str,
    parent: &str,
    labels: Labels,
) -> Result<(), SnapshotError> {
    if !parent.is_empty() {
        let current = snapshotter.stat(key)?.parent.unwrap_or_default();
        if current != parent {
            return Err(SnapshotError::new(
                strata_formats::ErrorKind::NotImplemented,
                format!(
                    "commit {key} as {name}: rebase from parent {current:?} onto {parent:?} is not supported"
                ),
            ));
        }
    }
    snapshotter.commit(name, key, labels)
}

/// Walks `filters`, sending batches bounded by [`LIST_BATCH_INFOS`] and [`LIST_BATCH_BYTES`].
/// Stops early when the client has gone (its stream receiver dropped).
fn list_batches(
    snapshotter: &dyn Snapshotter,
    filters: &[String],
    tx: &mpsc::Sender<Result<api::ListSnapshotsResponse, Status>>,
) -> Result<(), SnapshotError> {
    let gone = || {
        SnapshotError::new(
            strata_formats::ErrorKind::Internal,
            "list: client went away",
        )
    };
    let mut batch = api::ListSnapshotsResponse::default();
    let mut bytes = 0;
    snapshotter.walk(filters, &mut |info| {
        let wire = info_to_wire(info);
        // Field tag, length prefix and the message itself.
        let len = wire.encoded_len() + 8;
        if !batch.info.is_empty()
            && (batch.info.len() >= LIST_BATCH_INFOS || bytes + len > LIST_BATCH_BYTES)
        {
            tx.blocking_send(Ok(std::mem::take(&mut batch)))
                .map_err(|_| gone())?;
            bytes = 0;
        }
        bytes += len;
        batch.info.push(wire);
        Ok(())
    })?;
    if !batch.info.is_empty() {
        tx.blocking_send(Ok(batch)).map_err(|_| gone())?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        request: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let (key, parent, labels) = (r.key.clone(), r.parent, labels_from_wire(r.labels));
        let mounts = self
            .state
            .call("Prepare", &r.snapshotter, &r.key, move |s| {
                s.prepare(&key, &parent, labels)
            })
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn view(
        &self,
        request: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let (key, parent, labels) = (r.key.clone(), r.parent, labels_from_wire(r.labels));
        let mounts = self
            .state
            .call("View", &r.snapshotter, &r.key, move |s| {
                s.view(&key, &parent, labels)
            })
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn mounts(
        &self,
        request: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        let mounts = self
            .state
            .call("Mounts", &r.snapshotter, &r.key, move |s| s.mounts(&key))
            .await?;
        Ok(Response::new(api::MountsResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn commit(
        &self,
        request: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let (name, key, parent, labels) =
            (r.name, r.key.clone(), r.parent, labels_from_wire(r.labels));
        self.state
            .call("Commit", &r.snapshotter, &r.key, move |s| {
                commit(s, &name, &key, &parent, labels)
            })
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        self.state
            .call("Remove", &r.snapshotter, &r.key, move |s| s.remove(&key))
            .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        let info = self
            .state
            .call("Stat", &r.snapshotter, &r.key, move |s| s.stat(&key))
            .await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info_to_wire(&info)),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = r.info.map(info_from_wire);
        let key = info.as_ref().map(|i| i.name.clone()).unwrap_or_default();
        let info = self
            .state
            .call("Update", &r.snapshotter, &key, move |s| match info {
                Some(info) => s.update(info, &paths),
                None => Err(SnapshotError::invalid_argument(
                    "update: request carries no snapshot info",
                )),
            })
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(info_to_wire(&info)),
        }))
    }

    type ListStream = ReceiverStream<Result<api::ListSnapshotsResponse, Status>>;

    async fn list(
        &self,
        request: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = request.into_inner();
        let started = Instant::now();
        let snapshotter = match self.state.snapshotter(&r.snapshotter) {
            Ok(s) => s,
            Err(status) => {
                self.state
                    .observe("List", &r.snapshotter, "", started, Err(&status));
                return Err(status);
            }
        };
        let (tx, rx) = mpsc::channel(LIST_QUEUE);
        let state = Arc::clone(&self.state);
        // The walk streams from a blocking thread; its error, if any, ends the stream.
        tokio::task::spawn_blocking(move || {
            let result =
                list_batches(snapshotter.as_ref(), &r.filters, &tx).map_err(|e| to_status(&e));
            state.observe(
                "List",
                &r.snapshotter,
                "",
                started,
                result.as_ref().map(|_| ()),
            );
            if let Err(status) = result {
                let _ = tx.blocking_send(Err(status));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn usage(
        &self,
        request: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        let usage = self
            .state
            .call("Usage", &r.snapshotter, &r.key, move |s| s.usage(&key))
            .await?;
        Ok(Response::new(api::UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(&self, request: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.state
            .call("Cleanup", &r.snapshotter, "", |s| s.cleanup())
            .await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn info_keeps_nanoseconds_and_kind() {
        let created = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let info = Info {
            name: "k".into(),
            parent: Some("p".into()),
            kind: Kind::Active,
            labels: Labels::from([("a".to_string(), "b".to_string())]),
            created,
            updated: created + Duration::from_nanos(1),
        };
        let wire = info_to_wire(&info);
        assert_eq!(wire.kind, api::Kind::Active as i32);
        assert_eq!(
            wire.created_at,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            wire.updated_at,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_790
            })
        );
        assert_eq!(wire.parent, "p");
        assert_eq!(wire.labels["a"], "b");
        let base = Info {
            parent: None,
            kind: Kind::Committed,
            ..info
        };
        assert_eq!(info_to_wire(&base).parent, "");
        assert_eq!(info_to_wire(&base).kind, api::Kind::Committed as i32);
    }
}
