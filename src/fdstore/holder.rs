//! The holder process (`strata fd-holder --socket PATH`): a single-threaded poll loop that
//! keeps descriptors by key and answers put, remove and list requests ([`super::protocol`]),
//! drops the FUSE connections whose mount is gone, and exits when it holds nothing or its
//! socket is gone.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use super::fuse;
use super::protocol::{self, Message, Op};

/// Most descriptors held.
pub const MAX_ENTRIES: usize = 65_536;
/// Most clients connected at once.
const MAX_CLIENTS: usize = 256;
/// How long the holder waits, holding nothing and with no client, before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(3);
/// How often the holder looks at its socket (and so notices its root is gone), at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// An entry: the descriptor, its metadata, and whether it is a FUSE connection.
struct Entry {
    fd: OwnedFd,
    meta: Vec<u8>,
    fuse: bool,
}

/// Serves `socket` until idle (nothing held, no client, for [`IDLE_EXIT`]) or until the
/// socket is gone (its root was removed, or another holder took its place). Returns at
/// once, successfully, when another holder already answers there.
///
/// Held FUSE connections are watched: one whose mount is gone (unmounted, or aborted) is
/// dropped. While no client is connected (the daemon is down), the holder answers the
/// connections' `STATFS` requests itself, so that `umount` (which asks `statfs` first)
/// completes; other requests it reads stay unanswered until the restarted daemon asks the
/// kernel to resend them (`FUSE_NOTIFY_RESEND`), so readers wait, they see no error. On a
/// kernel without resend the holder reads nothing.
///
/// # Errors
///
/// The socket cannot be created or polled.
pub fn run(socket: &Path) -> io::Result<()> {
    if let Some(parent) = socket.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    // The lock is held for the holder's life: whoever has it owns the socket path, so a
    // holder that starts while another is still binding cannot take its path (and strand
    // the clients that already reached it).
    let Some(_lock) = lock_or_defer(socket)? else {
        tracing::info!(socket = %socket.display(), "another fd holder answers here; exiting");
        return Ok(());
    };
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let listener = protocol::listen(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let identity = identity(socket);
    tracing::info!(socket = %socket.display(), "fd holder: listening");
    let answer_statfs = fuse::kernel_resends();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut clients: Vec<OwnedFd> = Vec::new();
    let mut idle_since = Instant::now();
    let mut checked = Instant::now();
    let mut buf = Vec::new();
    loop {
        // Held connections are polled for errors (their mount is gone) always, and for
        // requests only while nobody else serves them.
        let orphaned = clients.is_empty() && answer_statfs;
        let fuse_keys: Vec<&String> = entries
            .iter()
            .filter(|(_, e)| e.fuse)
            .map(|(k, _)| k)
            .collect();
        let fuse_events = if orphaned {
            PollFlags::IN
        } else {
            PollFlags::empty()
        };
        let mut polled: Vec<PollFd<'_>> = std::iter::once(listener.as_fd())
            .chain(clients.iter().map(AsFd::as_fd))
            .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
            .chain(
                fuse_keys
                    .iter()
                    .map(|k| PollFd::from_borrowed_fd(entries[*k].fd.as_fd(), fuse_events)),
            )
            .collect();
        let timeout = Timespec::try_from(CHECK_EVERY).unwrap_or_default();
        match rustix::event::poll(&mut polled, Some(&timeout)) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let polled: Vec<PollFlags> = polled.iter().map(PollFd::revents).collect();
        let first_fuse = 1 + clients.len();
        let mut gone = Vec::new();
        for (p, key) in polled[first_fuse..].iter().zip(&fuse_keys) {
            let error = p.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL);
            let request = p.contains(PollFlags::IN) && orphaned;
            if error || (request && !fuse::answer_one(entries[*key].fd.as_fd(), &mut buf)) {
                gone.push((*key).clone());
            }
        }
        for key in gone {
            tracing::info!(key, "fd holder: the connection's mount is gone; dropped");
            entries.remove(&key);
        }
        if polled[0].contains(PollFlags::IN) {
            match protocol::accept(listener.as_fd()) {
                Ok(client) if clients.len() < MAX_CLIENTS => clients.push(client),
                Ok(_) => tracing::warn!("fd holder: too many clients; connection refused"),
                Err(e) => tracing::warn!(error = %e, "fd holder: accept"),
            }
        }
        let mut closed = Vec::new();
        for (i, p) in polled[1..first_fuse].iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let client = &clients[i];
            let keep = match protocol::recv(client.as_fd()) {
                Ok(Some((message, fd))) => handle(&mut entries, client, message, fd),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "fd holder: bad message; closing that connection");
                    false
                }
            };
            if !keep {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            clients.remove(i);
        }
        if checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if self::identity(socket) != identity {
                // Its root was removed (or another holder replaced it): nobody can reach
                // what it holds any more.
                tracing::info!(socket = %socket.display(), held = entries.len(), "fd holder: the socket is gone; exiting");
                return Ok(());
            }
        }
        if !entries.is_empty() || !clients.is_empty() {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= IDLE_EXIT {
            tracing::info!("fd holder: nothing held and no client; exiting");
            let _ = std::fs::remove_file(socket);
            return Ok(());
        }
    }
}

/// How long a starting holder waits for one that holds the lock but does not answer
/// (still binding, or exiting) before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The lock file beside `socket`: `holder.sock` → `holder.sock.lock`.
fn lock_path(socket: &Path) -> std::path::PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    name.into()
}

/// Takes the socket's lock; `None` when another holder has it and answers on the socket.
/// A holder that has the lock but does not answer yet is starting (or exiting): wait.
fn lock_or_defer(socket: &Path) -> io::Result<Option<OwnedFd>> {
    let path = lock_path(socket);
    let lock = rustix::fs::open(
        &path,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", path.display()),
        )
    })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(lock)),
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        }
        if protocol::connect(socket).is_ok() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: locked by a holder that does not answer on {} after {LOCK_WAIT:?}",
                    path.display(),
                    socket.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The socket file's device and inode, `None` when it is gone.
fn identity(socket: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(socket)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Answers one request; `false` closes the connection.
fn handle(
    entries: &mut BTreeMap<String, Entry>,
    client: &OwnedFd,
    message: Message,
    fd: Option<OwnedFd>,
) -> bool {
    let answer = |m: Message, fd: Option<&OwnedFd>| {
        protocol::send(client.as_fd(), &m, fd.map(AsFd::as_fd)).is_ok()
    };
    match (message.op, fd) {
        (Op::Put, Some(fd)) => {
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&message.key) {
                return answer(
                    Message::done(Err(format!("already holding {MAX_ENTRIES} descriptors"))),
                    None,
                );
            }
            tracing::debug!(key = message.key, "fd holder: put");
            let fuse = fuse::is_fuse_device(fd.as_fd());
            // The holder's reads must never block its loop (the daemon sets this too; it is
            // the open file's flag, shared by every duplicate).
            if fuse && let Err(e) = rustix::io::ioctl_fionbio(&fd, true) {
                tracing::warn!(key = message.key, error = %e, "fd holder: making a connection non-blocking");
            }
            entries.insert(
                message.key,
                Entry {
                    fd,
                    meta: message.meta,
                    fuse,
                },
            );
            answer(Message::done(Ok(())), None)
        }
        (Op::Remove, None) => {
            tracing::debug!(key = message.key, "fd holder: remove");
            entries.remove(&message.key);
            answer(Message::done(Ok(())), None)
        }
        (Op::List, None) => {
            for (key, Entry { fd, meta, .. }) in entries.iter() {
                let entry = Message {
                    op: Op::Entry,
                    status: protocol::Status::Ok,
                    key: key.clone(),
                    meta: meta.clone(),
                };
                if !answer(entry, Some(fd)) {
                    return false;
                }
            }
            answer(Message::done(Ok(())), None)
        }
        (op, fd) => {
            tracing::warn!(
                ?op,
                with_fd = fd.is_some(),
                "fd holder: malformed request; closing that connection"
            );
            false
        }
    }
}
