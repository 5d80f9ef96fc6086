//! Daemons started by tests and benchmarks (containerd, `strata serve`, the reference
//! stargz snapshotter): waiting for their socket, stopping them, reading their log.

use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long a daemon may take to listen on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a daemon could not be started.
///
/// `Debug` prints the message as `Display` does (log tail on its own lines), so that a
/// test's `.unwrap()` reads as the reason.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Its binary is not installed.
    #[error("{} not found: run scripts/setup.sh", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Writing its config, spawning or polling it failed.
    #[error("{name}: {context}: {source}")]
    Io {
        /// The daemon.
        name: String,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// It exited while starting.
    #[error("{name} exited while starting ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The daemon.
        name: String,
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// It did not listen on its socket within [`START_TIMEOUT`].
    #[error("{name} did not listen on {} within {:?}; log tail:\n{log_tail}", socket.display(), START_TIMEOUT)]
    Timeout {
        /// The daemon.
        name: String,
        /// The socket it should listen on.
        socket: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(name: &str, context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let (name, context) = (name.to_owned(), context.into());
        move |source| Error::Io {
            name,
            context,
            source,
        }
    }
}

/// The last `lines` lines of the log at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `socket` accepts connections; fails with the log tail if `child` exits
/// first or [`START_TIMEOUT`] passes (the child is left to the caller).
pub fn wait_for_socket(
    name: &str,
    child: &mut Child,
    socket: &Path,
    log: &Path,
) -> Result<(), Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().map_err(Error::io(name, "polling it"))? {
            return Err(Error::Exited {
                name: name.to_owned(),
                status: status.to_string(),
                log_tail: log_tail(log, 20),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                name: name.to_owned(),
                socket: socket.to_path_buf(),
                log_tail: log_tail(log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL; always reaps the child.
/// Returns whether it had to be killed.
pub fn stop(child: &mut Child) -> bool {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut killed = false;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    killed
}
