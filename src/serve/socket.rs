//! The daemon's unix socket: created with its parent directory (0711) and mode 0660,
//! refused when another live process serves the path, taken over when stale.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Mode of the socket: containerd (root) connects; group members may too.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a parent directory we create: traversable, not listable.
pub const PARENT_MODE: u32 = 0o711;

/// The socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A live process answers on the path.
    #[error("socket {}: is served by another process", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path.
    #[error("socket {}: exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system call failed.
    #[error("socket {}: {what}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Checks that `path` can be served: creates its parent directory, refuses a live socket
/// or a non-socket file there, and removes a stale socket file.
///
/// # Errors
///
/// [`SocketError::InUse`] when a process accepts connections on `path`,
/// [`SocketError::NotASocket`] when a non-socket file is there, [`SocketError::Io`] otherwise.
pub fn claim(path: &Path) -> Result<(), SocketError> {
    let io_err = |what, source| SocketError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PARENT_MODE)
            .create(parent)
            .map_err(|e| io_err("create parent directory", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(SocketError::NotASocket {
            path: path.to_path_buf(),
        }),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(SocketError::InUse {
                path: path.to_path_buf(),
            }),
            // Nobody listens: a daemon that died without removing its socket.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(|e| io_err("remove stale socket", e))
            }
            Err(e) => Err(io_err("probe existing socket", e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", e)),
    }
}

/// Binds `path` (after [`claim`]ing it) with mode [`SOCKET_MODE`], non-blocking.
///
/// # Errors
///
/// As [`claim`], and [`SocketError::Io`] when binding fails.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let io_err = |what, source| SocketError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    claim(path)?;
    let listener = UnixListener::bind(path).map_err(|e| io_err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| io_err("set mode", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("set non-blocking", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn creates_parent_and_sets_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/strata/s.sock");
        let _listener = bind(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            PARENT_MODE
        );
    }

    #[test]
    fn live_socket_is_refused_and_stale_one_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        assert!(
            err.to_string().contains("is served by another process"),
            "{err}"
        );
        drop(live);
        // The file stays behind with nobody listening: stale.
        assert!(path.exists());
        bind(&path).unwrap();
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
