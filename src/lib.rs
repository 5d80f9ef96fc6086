//! Strata, the hub: content store, metadata, and (as the project grows) the registry
//! client, range fetcher, chunk cache and daemon, wired together for the `strata` CLI.
//!
//! The lower crates define formats and seams; this crate implements the seams and composes
//! everything from a typed configuration with explicit constructor calls (no globals):
//! - [`artifact`]: OCI artifacts (models) pushed from a directory, and their chunk indexes;
//! - [`cache`]: the chunk cache of lazily mounted layers (by digest, bounded, LRU);
//! - [`content`]: the content-addressed blob store (containerd content-store semantics);
//! - [`fdstore`]: the fd holder that keeps FUSE connections alive across daemon restarts;
//! - [`metadata`]: the transactional database of images, leases and blob labels, and the
//!   garbage collector that marks from them;
//! - [`image`]: OCI image handling: importing image layouts and `docker save` archives;
//! - [`registry`]: the OCI distribution client: references, `hosts.toml` mirrors, docker
//!   credentials, token auth, resolve/fetch/push;
//! - [`run`]: `strata run`, a container started with runc over a Strata snapshot;
//! - [`metrics`]: Prometheus counters and latency histograms of `strata serve`'s RPCs and
//!   the loopback HTTP endpoint that exposes them;
//! - [`serve`]: `strata serve`, the containerd proxy-snapshotter daemon (config, socket,
//!   gRPC service, shutdown);
//! - [`lazy_mount`]: an eStargz image's rootfs mounted from its registry over FUSE;
//! - [`stargz`]: the `stargz` snapshotter's provider: eStargz layers mounted lazily;
//! - [`snapshots`]: the root's snapshotters by name, and [`image::unpack`] layers into them;
//! - [`store`]: a Strata root on disk, opening all of the above together;
//! - [`volume`]: image volumes, an image (or a directory of it) mounted read-only.

pub mod alloc;
pub mod artifact;
pub mod cache;
pub mod content;
mod direct_io;
pub mod error_chain;
pub mod fdstore;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod lazy_mount;
pub mod metadata;
pub mod metrics;
pub mod registry;
pub mod run;
pub mod serve;
pub mod snapshots;
pub mod stargz;
pub mod store;
pub mod volume;
