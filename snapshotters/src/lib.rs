//! strata-snapshotters: the `Snapshotter` contract with containerd's exact semantics, its
//! implementations, and the one conformance suite every implementation passes.
//!
//! Role in Strata: a snapshotter turns image layers into the mounts of a container's
//! rootfs. containerd calls it through the proxy-plugin socket (snapshots.v1: Prepare,
//! View, Mounts, Commit, Remove, Stat, Update, Usage, Walk, Cleanup), so it must behave as
//! containerd's own overlayfs and native snapshotters do, down to error kinds and label
//! limits. Implementations (overlayfs, native and erofs here; layers provided remotely, such as
//! the hub's lazily mounted eStargz layers, come in through [`remote`]) share one
//! transactional metadata store; they return mounts as data and perform mounts only through the small
//! [`mount`] seam. The layer applier (tar + OCI whiteouts → a snapshot directory) lives
//! here too, reading with `strata_formats`.
//!
//! - [`snapshot`]: the data types ([`Info`], [`Kind`], [`Usage`], [`Mount`]).
//! - [`error`]: [`SnapshotError`], carrying containerd's error category.
//! - [`snapshotter`]: the [`Snapshotter`] trait.
//! - [`mount`]: performing and undoing a list of [`Mount`]s on a target directory.
//! - [`metastore`]: the transactional snapshot metadata store (redb) all implementations use.
//! - [`overlay`]: the overlayfs snapshotter (the default); [`native`]: full copies, for
//!   hosts without overlay; [`erofs`]: each committed layer one read-only EROFS image,
//!   stacked with overlayfs (containerd 2.x's `erofs`), images built through the
//!   [`erofs::LayerImageBuilder`] seam.
//! - [`remote`]: the remote-snapshot seam ([`remote::RemoteLayers`]): layers provided
//!   without containerd fetching and unpacking them.
//! - [`copy_tree`]: the native snapshotter's tree copy; [`disk_usage`]: `du`-style usage.
//! - `testsuite` (feature `testsuite`): the conformance suite run against every
//!   implementation (`conformance_tests!`).

pub mod apply;
pub mod copy_tree;
pub mod disk_usage;
pub mod erofs;
pub mod error;
pub mod metastore;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod remote;
pub mod snapshot;
pub mod snapshotter;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::SnapshotError;
pub use snapshot::{Info, Kind, Labels, Mount, Usage};
pub use snapshotter::Snapshotter;
pub use strata_formats::ErrorKind;
