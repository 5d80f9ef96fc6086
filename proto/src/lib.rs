//! strata-proto: containerd's wire protocols, generated with tonic.
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

mod generated {
    //! The code `tonic-prost-build` writes into `OUT_DIR`, nested by protobuf package.
    #![allow(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/containerd.rs"));
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

#[cfg(test)]
mod wire_compat;
