//! strata-proto: containerd's and Kubernetes' wire protocols, generated with tonic.
//!
//! Role in Strata: the `containerd.services.snapshots.v1.Snapshots` gRPC service and the
//! `containerd.types.Mount` message, so that `strata serve` can be loaded by containerd as a
//! proxy snapshotter (`[proxy_plugins.strata] type = "snapshot"`). Wire code only: no behaviour
//! lives here; the daemon implements [`snapshots::v1::snapshots_server::Snapshots`] over a
//! snapshotter.
//!
//! The `.proto` files under `proto/` are written from containerd's published API schema and are
//! wire-compatible with containerd 1.6 through 2.x, including `CommitSnapshotRequest.parent`
//! (field 5, containerd 2.2+). `build.rs` compiles them with the system `protoc`; the
//! `google.protobuf` well-known types are those of `prost-types` (`Empty` maps to `()`).
//!
//! [`cri::v1`] is the Kubernetes Container Runtime Interface (`runtime.v1`: the
//! `RuntimeService` and `ImageService` clients and their messages) that kubelet speaks to
//! containerd's CRI plugin; Strata's tests and benchmarks drive containerd through it as
//! kubelet does. Client only: Strata serves no CRI.

mod generated {
    //! The code `tonic-prost-build` writes into `OUT_DIR`, nested by protobuf package.
    #![allow(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/containerd.rs"));
}

mod generated_cri {
    //! The CRI client `tonic-prost-build` writes into `OUT_DIR`.
    #![allow(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]
    #![allow(clippy::all, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/cri.rs"));
}

/// `containerd.services.snapshots.*`
pub mod snapshots {
    /// `containerd.services.snapshots.v1`: the `Snapshots` service (client in
    /// [`v1::snapshots_client`], server trait and adapter in [`v1::snapshots_server`]) and its
    /// request, response and [`v1::Info`] messages.
    pub mod v1 {
        pub use crate::generated::containerd::services::snapshots::v1::*;
    }
}

/// `containerd.types`: [`types::Mount`].
pub mod types {
    pub use crate::generated::containerd::types::*;
}

/// The Kubernetes Container Runtime Interface.
pub mod cri {
    /// `runtime.v1`: [`v1::runtime_service_client::RuntimeServiceClient`] (sandboxes,
    /// containers, status), [`v1::image_service_client::ImageServiceClient`] (pull, status,
    /// list, remove, filesystem info) and their messages.
    pub mod v1 {
        pub use crate::generated_cri::runtime::v1::*;
    }
}

#[cfg(test)]
mod wire_compat;
