//! Error categories shared by every Strata crate: containerd's `errdefs`.
//!
//! Each library crate has its own typed error with a `kind()`; the kind is what the edges
//! map, once each: to gRPC codes in the daemon, to errno in the FUSE filesystem, to an exit
//! status in the CLI.

/// The category of an error, as containerd's `errdefs` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named thing does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The request is malformed (bad digest, bad label, bad filter).
    InvalidArgument,
    /// The system is not in a state that allows the operation (wrong size or digest at
    /// commit, removing a snapshot with children).
    FailedPrecondition,
    /// Retry later: a resource is busy or a peer is unreachable (a locked ingest ref).
    Unavailable,
    /// Stored or received bytes do not match their digest.
    DataCorrupt,
    /// The operation is not supported here.
    NotImplemented,
    /// Anything else: I/O failures, broken invariants.
    Internal,
}
