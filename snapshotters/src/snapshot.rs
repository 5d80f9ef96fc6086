//! The data a snapshotter exchanges with its callers, shaped as containerd's
//! `snapshots.Info`, `snapshots.Usage` and `mount.Mount`.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Snapshot labels. containerd limits each key + value to 4096 bytes
/// (`strata_formats::labels::validate_labels`).
pub type Labels = BTreeMap<String, String>;

/// The kind of a snapshot, numbered as containerd's `snapshots.Kind` (and the
/// snapshots.v1 protobuf enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only snapshot of a committed parent; cannot be committed.
    View = 1,
    /// A writable snapshot; can be committed.
    Active = 2,
    /// An immutable snapshot; can be a parent.
    Committed = 3,
}

impl Kind {
    /// containerd's string form (`view`, `active`, `committed`), used by the
    /// `kind` filter field and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    /// The kind for containerd's numeric value (1–3).
    pub fn from_i32(value: i32) -> Option<Kind> {
        match value {
            1 => Some(Kind::View),
            2 => Some(Kind::Active),
            3 => Some(Kind::Committed),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a snapshotter knows about one snapshot (containerd's `snapshots.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The snapshot's key (active, view) or name (committed).
    pub name: String,
    /// The committed parent's name; `None` for a base snapshot.
    pub parent: Option<String>,
    /// Active, view or committed.
    pub kind: Kind,
    /// User labels.
    pub labels: Labels,
    /// Creation time, nanosecond precision.
    pub created: SystemTime,
    /// Time of the last change (commit or update), nanosecond precision.
    pub updated: SystemTime,
}

/// Resources a snapshot uses on its own, not counting its parents
/// (containerd's `snapshots.Usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of inodes.
    pub inodes: i64,
    /// Bytes on disk.
    pub size: i64,
}

impl Usage {
    /// Adds another usage to this one (containerd's `Usage.Add`).
    pub fn add(&mut self, other: Usage) {
        self.inodes += other.inodes;
        self.size += other.size;
    }
}

/// A mount to perform, as data (containerd's `mount.Mount`): the snapshotter
/// describes mounts, the caller performs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Filesystem type: `bind`, `overlay`, `erofs`, `fuse.…`.
    pub kind: String,
    /// Source: a directory for `bind`, the string `overlay` for overlay.
    pub source: String,
    /// Optional target below the mount point (containerd 2.x); empty for the root.
    pub target: String,
    /// Options as `mount(8)` takes them: flags (`ro`, `rbind`) and data (`lowerdir=…`).
    pub options: Vec<String>,
}
