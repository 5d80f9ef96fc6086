//! The fd holder: a small process that keeps duplicates of file descriptors for `strata
//! serve`, so that what they keep alive outlives the daemon.
//!
//! A FUSE mount lives as long as some process holds its `/dev/fuse` descriptor. If the
//! daemon serving lazily mounted layers dies, a container reading them would get
//! `ENOTCONN`, and a fresh mount would not help it (its overlay points at the old one).
//! So the daemon hands a duplicate of each connection's descriptor to the holder
//! (`strata fd-holder`, started on first use, in its own session), and a restarted daemon
//! takes them back ([`FdStore::take_all`]) and resumes serving the same connections; the
//! kernel queues the requests meanwhile, so readers only wait.
//!
//! Protocol ([`protocol`]): one `SOCK_SEQPACKET` unix socket (mode 0600), one message per
//! request and answer, descriptors as `SCM_RIGHTS`. Requests: put (key, meta, one fd),
//! remove (key), list (answered by one message per entry, each with its fd, then an end
//! message). Keys are ≤ 1 KiB, metadata ≤ 64 KiB, at most 65,536 entries; a malformed
//! message closes that connection only.
//!
//! Lifecycle: the holder drops a FUSE connection once its mount is gone (the kernel
//! reports an error on the descriptor after an unmount or an abort) and exits when it holds
//! nothing and no client has been connected for [`holder::IDLE_EXIT`], or when its socket
//! is gone (the root was removed). While no daemon is connected it answers `STATFS` on the
//! connections itself, so that `umount` of a layer does not wait for a daemon that may
//! never come back; every other request waits for the next daemon.
//!
//! One holder per socket: a holder keeps an exclusive `flock` on `<socket>.lock` for its
//! life and binds the socket only once it has the lock, so of several started at once
//! exactly one serves, and a late starter cannot replace a holder that is still binding
//! (which would strand the clients that already reached it).

mod fuse;
pub mod holder;
pub mod protocol;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::protocol::{Message, Op, Status};

/// One descriptor the holder keeps, with its key and metadata.
#[derive(Debug)]
pub struct HeldFd {
    /// The key it was put under.
    pub key: String,
    /// A duplicate of the descriptor (the holder keeps its own).
    pub fd: OwnedFd,
    /// The metadata put with it.
    pub meta: Vec<u8>,
}

/// A connection to the fd holder. Requests are serialised; each is acknowledged.
#[derive(Debug)]
pub struct FdStore {
    socket: Mutex<OwnedFd>,
}

impl FdStore {
    /// Connects to the holder listening on `socket`.
    ///
    /// # Errors
    ///
    /// Nobody listens there (or the socket cannot be created).
    pub fn connect(socket: &Path) -> io::Result<FdStore> {
        let fd = protocol::connect(socket)?;
        Ok(FdStore {
            socket: Mutex::new(fd),
        })
    }

    /// Connects to the holder on `socket`, starting `<exe> fd-holder --socket <socket>`
    /// first if none answers: in a new session, its standard streams on /dev/null, not
    /// our child (so it survives us and is never our zombie).
    ///
    /// # Errors
    ///
    /// The holder could not be started or did not answer within 5 s.
    pub fn connect_or_spawn(socket: &Path, exe: &Path) -> io::Result<FdStore> {
        if let Ok(store) = FdStore::connect(socket) {
            return Ok(store);
        }
        spawn_detached(exe, socket)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match FdStore::connect(socket) {
                Ok(store) => return Ok(store),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "fd holder {} did not answer after start: {e}",
                            socket.display()
                        ),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn request(
        &self,
        message: &Message,
        fd: Option<BorrowedFd<'_>>,
    ) -> io::Result<Vec<(Message, Option<OwnedFd>)>> {
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        protocol::send(socket.as_fd(), message, fd)?;
        let mut answers = Vec::new();
        loop {
            let (answer, fd) = protocol::recv(socket.as_fd())?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the fd holder closed the connection",
                )
            })?;
            match answer.op {
                Op::Entry => answers.push((answer, fd)),
                Op::Done => {
                    return match answer.status {
                        Status::Ok => Ok(answers),
                        Status::Error => Err(io::Error::other(format!(
                            "fd holder: {}",
                            String::from_utf8_lossy(&answer.meta)
                        ))),
                    };
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("fd holder answered {other:?}"),
                    ));
                }
            }
        }
    }

    /// Hands the holder a duplicate of `fd` under `key` with `meta`; an entry with the
    /// same key is replaced (its descriptor closed).
    ///
    /// # Errors
    ///
    /// The key or metadata is too long, the holder refused or is gone.
    pub fn put(&self, key: &str, fd: BorrowedFd<'_>, meta: &[u8]) -> io::Result<()> {
        let message = Message::request(Op::Put, key, meta)?;
        self.request(&message, Some(fd)).map(|_| ())
    }

    /// Has the holder close its copy of `key` (nothing if it has none).
    ///
    /// # Errors
    ///
    /// The holder is gone.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        let message = Message::request(Op::Remove, key, &[])?;
        self.request(&message, None).map(|_| ())
    }

    /// Duplicates of every held descriptor, with keys and metadata; the holder keeps its
    /// copies.
    ///
    /// # Errors
    ///
    /// The holder is gone or answered something malformed.
    pub fn take_all(&self) -> io::Result<Vec<HeldFd>> {
        let message = Message::request(Op::List, "", &[])?;
        self.request(&message, None)?
            .into_iter()
            .map(|(m, fd)| {
                let fd = fd.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("fd holder: entry {} came without its descriptor", m.key),
                    )
                })?;
                Ok(HeldFd {
                    key: m.key,
                    fd,
                    meta: m.meta,
                })
            })
            .collect()
    }

    /// The raw socket, for tests that speak the protocol badly on purpose.
    #[doc(hidden)]
    pub fn raw_socket(&self) -> i32 {
        self.socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_raw_fd()
    }
}

/// Starts the holder as a grandchild in its own session: the intermediate child exits at
/// once (and is reaped here), so the holder is reparented to init.
fn spawn_detached(exe: &Path, socket: &Path) -> io::Result<()> {
    let mut command = Command::new(exe);
    command
        .arg("fd-holder")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("start {} fd-holder: {e}", exe.display())))?;
    child.wait()?;
    Ok(())
}
