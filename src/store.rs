//! [`Store`]: one Strata root on disk, with its content store and metadata database.
//!
//! Layout under the root (default `/var/lib/strata`):
//! - `content/blobs/sha256/<hex>`, `content/ingest/<sha256(ref)>/`: the content store;
//! - `metadata.db`: images, leases, blob labels;
//! - `gc.lock`: writers that create not-yet-referenced content hold it shared, the
//!   garbage collector exclusively, so a collection never sweeps an import in progress.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::FlockOperation;

use crate::content::{ContentError, LocalContentStore};
use crate::metadata::gc::{self, GcError, GcOptions, GcReport};
use crate::metadata::{MetadataDb, MetadataError};

/// Why a root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The content store failed to open.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The metadata database failed to open.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The root itself is unusable.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A Strata root: content store plus metadata database.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    content: LocalContentStore,
    metadata: MetadataDb,
}

/// A held `gc.lock` (shared or exclusive); released on drop.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the root.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            context: format!("create {}", root.display()),
            source,
        })?;
        let metadata = MetadataDb::open(root.join("metadata.db"))?;
        let content = LocalContentStore::open(root.join("content"), Arc::new(metadata.clone()))?;
        Ok(Self {
            root,
            content,
            metadata,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &LocalContentStore {
        &self.content
    }

    /// The metadata database.
    pub fn metadata(&self) -> &MetadataDb {
        &self.metadata
    }

    fn gc_lock(&self, op: FlockOperation) -> Result<GcLock, StoreError> {
        let path = self.root.join("gc.lock");
        let io_err = |source| StoreError::Io {
            context: format!("lock {}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        rustix::fs::flock(file.as_fd(), op).map_err(|e| io_err(e.into()))?;
        Ok(GcLock { _file: file })
    }

    /// Holds off garbage collection while the caller writes content that is not referenced
    /// yet (an import, a pull). Blocks while a collection runs.
    pub fn hold_gc(&self) -> Result<GcLock, StoreError> {
        self.gc_lock(FlockOperation::LockShared)
    }

    /// Runs a garbage collection, waiting for writers that hold [`hold_gc`](Self::hold_gc).
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, GcError> {
        let _lock = self
            .gc_lock(FlockOperation::LockExclusive)
            .map_err(|e| match e {
                StoreError::Content(c) => GcError::Content(c),
                StoreError::Metadata(m) => GcError::Metadata(m),
                StoreError::Io { context, source } => {
                    GcError::Content(ContentError::Io { context, source })
                }
            })?;
        gc::collect(&self.metadata, &self.content, opts)
    }
}
