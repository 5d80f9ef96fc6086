//! strata-proto: containerd's wire protocols, generated with tonic.
//!
//! Role in Strata: the `containerd.services.snapshots.v1.Snapshots` gRPC service and the
//! `containerd.types.Mount` message, written from the API's schema (package, message and
//! field numbers are the wire contract), so that `strata serve` can be loaded by
//! containerd as a proxy snapshotter; later the CRI v1 protocol. Wire code only: no
//! behaviour lives here.
//!
//! This crate is filled in by the socket work; it holds no code yet.
