//! strata-snapshotters: the `Snapshotter` contract with containerd's exact semantics, its
//! implementations, and the one conformance suite every implementation passes.
//!
//! Role in Strata: a snapshotter turns image layers into the mounts of a container's
//! rootfs. containerd calls it through the proxy-plugin socket (snapshots.v1: Prepare,
//! View, Mounts, Commit, Remove, Stat, Update, Usage, Walk, Cleanup), so it must behave as
//! containerd's own overlayfs and native snapshotters do, down to error kinds and label
//! limits. Implementations (overlayfs, native, EROFS, stargz) share one transactional
//! metadata store; they return mounts as data and perform mounts only through a small
//! mounter seam. The layer applier (tar + OCI whiteouts → a snapshot directory) lives
//! here too, reading with `strata_formats`.
//!
//! This crate is filled in by the snapshotter work; it holds no code yet.
