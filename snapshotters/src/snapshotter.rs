//! The `Snapshotter` trait: containerd's `snapshots.Snapshotter` interface, synchronous.
//! The socket server calls it from blocking worker threads.

use crate::{Info, Labels, Mount, SnapshotError, Usage};

/// A snapshotter with containerd's semantics, to the letter. Keys and names share one
/// namespace per snapshotter; only committed snapshots can be parents.
///
/// Errors carry containerd's categories: NotFound (no such key), AlreadyExists (key
/// taken), FailedPrecondition (wrong kind or state, e.g. committing a view, removing a
/// snapshot with children), InvalidArgument (bad label, filter, or field path; updating
/// an immutable field; a parent that is not committed, as containerd's bolt store says).
pub trait Snapshotter: Send + Sync {
    /// Information about the snapshot `key` (active, view or committed).
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;

    /// Updates the mutable fields of `info.name`: only labels. `fieldpaths` empty
    /// replaces all labels; `labels` replaces all; `labels.<key>` sets or (absent from
    /// `info.labels`) deletes one; any other path is InvalidArgument. Bumps `updated`.
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError>;

    /// Resources used by `key` alone (not its parents). Committed snapshots are
    /// measured once, at commit, and the figure kept.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;

    /// The mounts of the active or view snapshot `key` (the same as Prepare/View
    /// returned). Committed snapshots have no mounts (FailedPrecondition).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;

    /// Creates the active snapshot `key` over the committed `parent` ("" for none) and
    /// returns its mounts.
    fn prepare(&self, key: &str, parent: &str, labels: Labels)
    -> Result<Vec<Mount>, SnapshotError>;

    /// Creates the read-only view `key` of the committed `parent` ("" for an empty one)
    /// and returns its mounts.
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotError>;

    /// Commits the active snapshot `key` as the committed snapshot `name` (which takes
    /// `key`'s parent); `key` no longer exists afterwards. `labels` replace key's labels.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<(), SnapshotError>;

    /// Removes the snapshot `key`. A snapshot with children cannot be removed
    /// (FailedPrecondition).
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;

    /// Calls `f` for every snapshot matching any of `filters` (containerd's filter
    /// syntax over `name`, `parent`, `kind`, `labels.<key>`; empty means all).
    fn walk(
        &self,
        filters: &[String],
        f: &mut dyn FnMut(&Info) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError>;

    /// Removes directories no longer referenced by metadata (left by crashes or
    /// asynchronous removal).
    fn cleanup(&self) -> Result<(), SnapshotError>;

    /// Releases resources. Calling it twice is not an error.
    fn close(&self) -> Result<(), SnapshotError>;
}
