//! [`FuseServer`]: serves one [`LayerFs`] on a `/dev/fuse` connection with a pool of
//! threads, from a fresh mount ([`FuseServer::mount`]) or from a connection another process
//! initialised ([`FuseServer::resume`]).
//!
//! Why our own server rather than `fuser`: a FUSE mount lives exactly as long as some process
//! holds its `/dev/fuse` descriptor, and a container's overlay keeps pointing at that mount.
//! To survive a restart of the daemon, a supervisor keeps a copy of the descriptor and hands
//! it to the new process, which must serve it *without* the INIT handshake: the kernel
//! answered INIT once and will not send it again. `fuser`'s `Session::from_fd` always waits
//! for INIT, so it cannot resume a live connection; this server can, because INIT's result is
//! a small value ([`InitState`]) saved at mount and handed to `resume`, and [`LayerFs`] keeps
//! no per-handle state (inode numbers come from the TOC).
//!
//! Requests a crashed process had read but not answered are not lost: on resume the server
//! sends `FUSE_NOTIFY_RESEND` (kernel 6.9+), which puts them back on the queue. For that to
//! work the workers read the descriptor the supervisor holds. Threads reading cloned
//! descriptors (`FUSE_DEV_IOC_CLONE`, [`ServeOptions::clone_fd`]) each get their own queue of
//! in-flight requests, but a clone dies with the process and the kernel fails its in-flight
//! requests with `ECONNABORTED`; so cloning is off unless asked for.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::abi::{self, InHeader, InitIn, InitInExt, InitOut, init_flag, take};
use crate::mount;
use crate::ops::{LayerFs, Negotiated, Reply, error_reply};

/// Bytes per request read: room for the largest request this server handles (names,
/// xattr names; writes are refused) with `max_write` at its 4 KiB floor.
const READ_BUFFER: usize = 132 << 10;
/// The largest read the kernel sends, in pages (1 MiB).
const MAX_PAGES: u16 = 256;
/// How long [`FuseServer::mount`] waits for the kernel's INIT.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection could not be mounted, resumed or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the mount point or connection.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The kernel spoke a protocol this server does not.
    #[error("FUSE protocol: {0}")]
    Protocol(String),
}

impl FuseError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// How a connection is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Threads answering requests.
    pub threads: usize,
    /// Negotiate FUSE passthrough: files the chunk source has whole on disk are read by the
    /// kernel directly. Needs `CAP_SYS_ADMIN`.
    pub passthrough: bool,
    /// Give each thread its own cloned descriptor (see the module docs for the cost).
    pub clone_fd: bool,
    /// Upper bound for the kernel's readahead, bytes.
    pub max_readahead: u32,
    /// Offer `FUSE_EXPORT_SUPPORT` (lookups of "." and ".."; NFS export of the mount).
    pub export_support: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            threads: 4,
            passthrough: false,
            clone_fd: false,
            max_readahead: 1 << 20,
            export_support: false,
        }
    }
}

/// What INIT negotiated: saved at mount, handed to [`FuseServer::resume`] by the process
/// that takes the connection over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitState {
    /// The protocol minor version in use.
    pub minor: u32,
    /// Every flag the kernel offered (both words).
    pub kernel_flags: u64,
    /// The flags in effect (both words).
    pub flags: u64,
    /// The readahead the kernel was told.
    pub max_readahead: u32,
    /// The largest read, in pages.
    pub max_pages: u16,
}

impl InitState {
    /// Whether the kernel agreed to FUSE passthrough.
    pub fn passthrough(&self) -> bool {
        self.flags & init_flag::PASSTHROUGH != 0
    }

    fn negotiated(&self) -> Negotiated {
        Negotiated {
            passthrough: self.flags & init_flag::PASSTHROUGH != 0,
        }
    }
}

/// A connection being served: its device, the worker threads, and the mount point.
/// Dropping it unmounts, like [`Self::unmount`]; [`Self::stop`] instead leaves the
/// connection up for another process to resume.
#[derive(Debug)]
pub struct FuseServer {
    dev: Arc<OwnedFd>,
    state: InitState,
    stop: Option<OwnedFd>,
    workers: Vec<JoinHandle<()>>,
    mountpoint: Option<PathBuf>,
    connection: Option<u32>,
}

impl FuseServer {
    /// Mounts `fs` read-only at `mountpoint` (fstype `fuse.strata`, private propagation),
    /// answers INIT and starts serving.
    pub fn mount(
        fs: Arc<LayerFs>,
        mountpoint: &Path,
        opts: &ServeOptions,
    ) -> Result<Self, FuseError> {
        let dev = mount::open_device()?;
        mount::mount_fuse(dev.as_fd(), mountpoint, fs.tree().name())?;
        let state = match answer_init(dev.as_fd(), opts) {
            Ok(s) => s,
            Err(e) => {
                let _ = mount::detach(mountpoint);
                return Err(e);
            }
        };
        let mut server = Self::start(fs, dev, state, Some(mountpoint.to_owned()), opts, false)
            .inspect_err(|_| {
                let _ = mount::detach(mountpoint);
            })?;
        server.connection = mount::connection_id(mountpoint).ok();
        Ok(server)
    }

    /// Serves `fs` on `dev`, a connection already initialised with `state` (by this or an
    /// earlier process): no INIT. Requests an earlier process read and never answered are
    /// asked for again (`FUSE_NOTIFY_RESEND`) when the kernel supports it. `fs` must be
    /// built from the same TOC as the filesystem first mounted, so inode numbers the kernel
    /// holds mean the same entries. `mountpoint`, when known, is what [`Self::unmount`]
    /// detaches.
    pub fn resume(
        fs: Arc<LayerFs>,
        dev: OwnedFd,
        state: InitState,
        mountpoint: Option<PathBuf>,
        opts: &ServeOptions,
    ) -> Result<Self, FuseError> {
        if state.minor < abi::MIN_KERNEL_MINOR_VERSION {
            return Err(FuseError::Protocol(format!(
                "saved INIT state has protocol 7.{}",
                state.minor
            )));
        }
        let mut server = Self::start(fs, dev, state, mountpoint, opts, true)?;
        if let Some(mp) = &server.mountpoint {
            server.connection = mount::connection_id(mp).ok();
        }
        Ok(server)
    }

    fn start(
        fs: Arc<LayerFs>,
        dev: OwnedFd,
        state: InitState,
        mountpoint: Option<PathBuf>,
        opts: &ServeOptions,
        resend: bool,
    ) -> Result<Self, FuseError> {
        set_nonblocking(dev.as_fd())
            .map_err(|e| FuseError::io("making /dev/fuse non-blocking", e))?;
        // SAFETY: plain eventfd creation; the result is checked.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(FuseError::io(
                "creating the stop eventfd",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh descriptor we own.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        if resend && state.kernel_flags & init_flag::HAS_RESEND != 0 {
            let notify = abi::OutHeader {
                len: size_of::<abi::OutHeader>() as u32,
                error: abi::NOTIFY_RESEND,
                unique: 0,
            };
            write_all(dev.as_fd(), abi::bytes_of(&notify))
                .map_err(|e| FuseError::io("asking the kernel to resend unanswered requests", e))?;
        }
        let dev = Arc::new(dev);
        let mut server = Self {
            dev,
            state,
            stop: Some(stop),
            workers: Vec::new(),
            mountpoint,
            connection: None,
        };
        if let Err(e) = server.spawn_workers(&fs, opts) {
            // Leave the mount to the caller: a failed resume must not take the layer away.
            server.mountpoint = None;
            return Err(e);
        }
        Ok(server)
    }

    fn spawn_workers(&mut self, fs: &Arc<LayerFs>, opts: &ServeOptions) -> Result<(), FuseError> {
        for i in 0..opts.threads.max(1) {
            let reader = if opts.clone_fd {
                Some(clone_device(self.dev.as_fd())?)
            } else {
                None
            };
            let worker = Worker {
                fs: Arc::clone(fs),
                dev: Arc::clone(&self.dev),
                reader,
                neg: self.state.negotiated(),
                stop: self.stop_fd()?,
            };
            let handle = std::thread::Builder::new()
                .name(format!("fuse-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| FuseError::io("starting a FUSE worker thread", e))?;
            self.workers.push(handle);
        }
        Ok(())
    }

    fn stop_fd(&self) -> Result<OwnedFd, FuseError> {
        let stop = self
            .stop
            .as_ref()
            .ok_or_else(|| FuseError::Protocol("server already stopped".into()))?;
        stop.try_clone()
            .map_err(|e| FuseError::io("duplicating the stop eventfd", e))
    }

    /// The negotiated INIT parameters, for a later [`Self::resume`].
    pub fn init_state(&self) -> InitState {
        self.state
    }

    /// The connection's device, e.g. to hand a duplicate to a supervisor.
    pub fn device(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// The kernel's id of the connection (its directory under `/sys/fs/fuse/connections`).
    pub fn connection_id(&self) -> Option<u32> {
        self.connection
    }

    /// Whether every worker has ended: the kernel ended the connection (the last mount of
    /// it is gone, or it was aborted).
    pub fn finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// Stops the worker threads (each finishes the request it is answering) and returns the
    /// device: the connection stays up, requests wait until someone resumes serving it.
    pub fn stop(mut self) -> Result<OwnedFd, FuseError> {
        self.join_workers();
        self.mountpoint = None;
        self.connection = None;
        // A duplicate is the same open file to the kernel: the connection and its
        // in-flight requests stay with it.
        self.dev
            .try_clone()
            .map_err(|e| FuseError::io("duplicating the /dev/fuse descriptor", e))
    }

    /// Unmounts (lazily, so open files elsewhere do not block it), aborts the connection if a
    /// copy of the mount in another namespace keeps it alive, and stops the workers.
    pub fn unmount(mut self) -> Result<(), FuseError> {
        self.shutdown()
    }

    /// [`Self::unmount`] of a mount that is now at `mountpoint`: a snapshot directory is
    /// renamed into the trash before it is removed, and its mounts move with it.
    pub fn unmount_at(mut self, mountpoint: &Path) -> Result<(), FuseError> {
        self.mountpoint = Some(mountpoint.to_owned());
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), FuseError> {
        let mut result = Ok(());
        if let Some(mp) = self.mountpoint.take() {
            result = mount::detach(&mp);
        }
        if let Some(id) = self.connection.take()
            && let Err(e) = mount::abort_connection(id)
        {
            warn!(connection = id, error = %e, "aborting the FUSE connection failed");
        }
        self.join_workers();
        result
    }

    fn join_workers(&mut self) {
        if let Some(stop) = self.stop.take() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for FuseServer {
    fn drop(&mut self) {
        if self.stop.is_some() || self.mountpoint.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new descriptor on the same connection, with its own queue of in-flight requests.
fn clone_device(dev: BorrowedFd<'_>) -> Result<OwnedFd, FuseError> {
    let clone = mount::open_device()?;
    let src = dev.as_raw_fd() as u32;
    // SAFETY: the ioctl reads one u32 from a valid pointer.
    if unsafe { libc::ioctl(clone.as_raw_fd(), abi::DEV_IOC_CLONE, &src) } < 0 {
        return Err(FuseError::io(
            "cloning the /dev/fuse descriptor",
            io::Error::last_os_error(),
        ));
    }
    set_nonblocking(clone.as_fd())
        .map_err(|e| FuseError::io("making the cloned descriptor non-blocking", e))?;
    Ok(clone)
}

fn write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // The device takes a whole message per write or none of it.
    // SAFETY: writes `buf.len()` bytes from a valid buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into a valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits until `fd` is readable; `Ok(false)` on timeout or when `stop` fires first.
fn wait_readable(fd: RawFd, stop: Option<RawFd>, timeout_ms: i32) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: polls two valid pollfd entries (a negative fd is ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 || n == 0 {
            return Ok(false);
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        return Ok(true);
    }
}

/// Reads the kernel's INIT from a new connection and answers it.
fn answer_init(dev: BorrowedFd<'_>, opts: &ServeOptions) -> Result<InitState, FuseError> {
    let mut buf = vec![0u8; READ_BUFFER];
    let fd = dev.as_raw_fd();
    if !wait_readable(fd, None, INIT_TIMEOUT.as_millis() as i32)
        .map_err(|e| FuseError::io("waiting for FUSE INIT", e))?
    {
        return Err(FuseError::Protocol(format!(
            "no INIT from the kernel within {INIT_TIMEOUT:?}"
        )));
    }
    let n = read_some(fd, &mut buf).map_err(|e| FuseError::io("reading FUSE INIT", e))?;
    let (h, body) = take::<InHeader>(&buf[..n])
        .ok_or_else(|| FuseError::Protocol("short INIT request".into()))?;
    if h.opcode != abi::opcode::INIT {
        return Err(FuseError::Protocol(format!(
            "first request has opcode {}, not INIT",
            h.opcode
        )));
    }
    let (init, rest) =
        take::<InitIn>(body).ok_or_else(|| FuseError::Protocol("short INIT body".into()))?;
    let mut kernel_flags = u64::from(init.flags);
    if kernel_flags & init_flag::INIT_EXT != 0
        && let Some((ext, _)) = take::<InitInExt>(rest)
    {
        kernel_flags |= u64::from(ext.flags2) << 32;
    }
    if init.major != abi::KERNEL_VERSION || init.minor < abi::MIN_KERNEL_MINOR_VERSION {
        let _ = write_all(dev, &error_reply(h.unique, libc::EPROTO));
        return Err(FuseError::Protocol(format!(
            "kernel speaks FUSE {}.{}, this server needs 7.{}+",
            init.major,
            init.minor,
            abi::MIN_KERNEL_MINOR_VERSION
        )));
    }
    let mut wanted = init_flag::ASYNC_READ
        | init_flag::PARALLEL_DIROPS
        | init_flag::DO_READDIRPLUS
        | init_flag::READDIRPLUS_AUTO
        | init_flag::MAX_PAGES
        | init_flag::CACHE_SYMLINKS
        | init_flag::INIT_EXT;
    if opts.export_support {
        wanted |= init_flag::EXPORT_SUPPORT;
    }
    if opts.passthrough {
        wanted |= init_flag::PASSTHROUGH;
    }
    let flags = wanted & kernel_flags;
    if opts.passthrough && flags & init_flag::PASSTHROUGH == 0 {
        warn!("the kernel does not offer FUSE passthrough; reads go through the daemon");
    }
    let state = InitState {
        minor: init.minor.min(abi::KERNEL_MINOR_VERSION),
        kernel_flags,
        flags,
        max_readahead: init.max_readahead.min(opts.max_readahead),
        max_pages: MAX_PAGES,
    };
    let out = InitOut {
        major: abi::KERNEL_VERSION,
        minor: abi::KERNEL_MINOR_VERSION,
        max_readahead: state.max_readahead,
        flags: flags as u32,
        max_background: 64,
        congestion_threshold: 48,
        max_write: 4096,
        time_gran: 1_000_000_000,
        max_pages: MAX_PAGES,
        flags2: (flags >> 32) as u32,
        // Passthrough's backing files are on a plain filesystem (depth 0), and the mount
        // itself must stay stackable under overlayfs.
        max_stack_depth: if flags & init_flag::PASSTHROUGH != 0 {
            1
        } else {
            0
        },
        ..InitOut::default()
    };
    let mut reply = Reply::with_capacity(size_of::<InitOut>());
    reply.push(&out);
    write_all(dev, &reply.finish(h.unique)).map_err(|e| FuseError::io("answering FUSE INIT", e))?;
    debug!(
        minor = state.minor,
        flags = format_args!("{:#x}", state.flags),
        "FUSE INIT answered"
    );
    Ok(state)
}

/// One serving thread.
struct Worker {
    fs: Arc<LayerFs>,
    dev: Arc<OwnedFd>,
    reader: Option<OwnedFd>,
    neg: Negotiated,
    stop: OwnedFd,
}

impl Worker {
    fn run(self) {
        let mut buf = vec![0u8; READ_BUFFER];
        let fd = self
            .reader
            .as_ref()
            .map_or(self.dev.as_raw_fd(), |r| r.as_raw_fd());
        loop {
            match wait_readable(fd, Some(self.stop.as_raw_fd()), -1) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    if e.raw_os_error() != Some(libc::ENODEV) {
                        warn!(error = %e, "polling /dev/fuse failed; worker stops");
                    }
                    return;
                }
            }
            let n = match read_some(fd, &mut buf) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR | libc::ENOENT) => continue,
                    Some(libc::ENODEV) => return,
                    _ => {
                        warn!(error = %e, "reading /dev/fuse failed; worker stops");
                        return;
                    }
                },
            };
            // SAFETY: `fd` stays open for the whole loop (owned by self).
            let dev = unsafe { BorrowedFd::borrow_raw(fd) };
            self.answer(dev, &buf[..n]);
        }
    }

    fn answer(&self, dev: BorrowedFd<'_>, msg: &[u8]) {
        let Some((unique, opcode, bytes)) =
            answer_request(&self.fs, msg, self.dev.as_fd(), self.neg)
        else {
            return;
        };
        if let Err(e) = write_all(dev, &bytes) {
            // ENOENT: the request was interrupted and is gone.
            if e.raw_os_error() != Some(libc::ENOENT) {
                debug!(opcode, unique, error = %e, "writing a FUSE reply failed");
            }
        }
    }
}

/// Decodes one request read from the device (header, then the body the header's length
/// bounds) and answers it: `(unique, opcode, reply bytes)`, or `None` when no reply is due
/// (a request too short to have a header, FORGET and the like). `dev` is where backing
/// files are registered for passthrough.
pub(crate) fn answer_request(
    fs: &LayerFs,
    msg: &[u8],
    dev: BorrowedFd<'_>,
    neg: Negotiated,
) -> Option<(u64, u32, Vec<u8>)> {
    let Some((h, _)) = take::<InHeader>(msg) else {
        warn!(bytes = msg.len(), "short FUSE request ignored");
        return None;
    };
    let body = if (h.len as usize) <= msg.len() && h.len as usize >= size_of::<InHeader>() {
        &msg[size_of::<InHeader>()..h.len as usize]
    } else {
        return Some((h.unique, h.opcode, error_reply(h.unique, libc::EINVAL)));
    };
    let out = if h.opcode == abi::opcode::INIT {
        Err(libc::EPROTO)
    } else {
        fs.handle(&h, body, dev, neg)
    };
    let bytes = match out {
        Ok(Some(reply)) => reply.finish(h.unique),
        Ok(None) => return None,
        Err(errno) => error_reply(h.unique, errno),
    };
    Some((h.unique, h.opcode, bytes))
}

/// A mount source string the kernel shows in `/proc/mounts`.
pub(crate) fn source_name(layer: &str) -> CString {
    let clean: Vec<u8> = layer
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() && b != b',' {
                b
            } else {
                b'_'
            }
        })
        .collect();
    let mut name = b"strata:".to_vec();
    name.extend_from_slice(&clean);
    CString::new(name).unwrap_or_else(|_| c"strata".to_owned())
}
