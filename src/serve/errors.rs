//! The one place snapshotter errors become gRPC statuses, as containerd's `errdefs.ToGRPC`
//! does, so that containerd's proxy client (`errdefs.FromGRPC`) gets back the same error
//! class a builtin snapshotter would have returned.
//!
//! containerd maps InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
//! Unavailable and NotImplemented (→ Unimplemented) to their codes. containerd 1.6 sends any
//! other error as Unknown; containerd 2.x (`errdefs/pkg/errgrpc`) sends ErrInternal as
//! Internal and ErrDataLoss as DataLoss, which is what we send: the client reads all three
//! as "unknown", and the finer code helps anyone reading the wire.

use strata_formats::ErrorKind;
use strata_snapshotters::SnapshotError;
use tonic::{Code, Status};

/// The gRPC code containerd uses for errors of `kind`.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::DataCorrupt => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status sent for `err`: its code and its message, unchanged (containerd's clients
/// show the message to users).
pub fn to_status(err: &SnapshotError) -> Status {
    Status::new(code_for(err.kind()), err.message())
}

/// The status of a worker thread that panicked or was cancelled mid-call.
pub fn worker_failed(rpc: &str, err: &tokio::task::JoinError) -> Status {
    Status::internal(format!("{rpc}: worker thread failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_as_containerd_errdefs() {
        let cases = [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::NotImplemented, Code::Unimplemented),
            (ErrorKind::DataCorrupt, Code::DataLoss),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            assert_eq!(code_for(kind), code, "{kind:?}");
        }
    }

    #[test]
    fn status_keeps_the_message() {
        let status = to_status(&SnapshotError::not_found("snapshot k: does not exist"));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "snapshot k: does not exist");
    }
}
