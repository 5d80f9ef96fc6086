//! The holder process (`strata fd-holder --socket PATH`): a single-threaded poll loop that
//! keeps descriptors by key and answers put, remove and list requests ([`super::protocol`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::protocol::{self, Message, Op};

/// Most descriptors held.
pub const MAX_ENTRIES: usize = 65_536;
/// Most clients connected at once.
const MAX_CLIENTS: usize = 256;
/// How long the holder waits, holding nothing and with no client, before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(3);

/// An entry: the descriptor and its metadata.
type Entry = (OwnedFd, Vec<u8>);

/// Serves `socket` until idle (nothing held, no client, for [`IDLE_EXIT`]). Returns at
/// once, successfully, when another holder already answers there.
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
    if socket.exists() {
        if protocol::connect(socket).is_ok() {
            tracing::info!(socket = %socket.display(), "another fd holder answers here; exiting");
            return Ok(());
        }
        std::fs::remove_file(socket)?;
    }
    let listener = protocol::listen(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %socket.display(), "fd holder: listening");
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut clients: Vec<OwnedFd> = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        let mut polled: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polled is a valid array of pollfd for the call.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 1000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if polled[0].revents & libc::POLLIN != 0 {
            match protocol::accept(listener.as_fd()) {
                Ok(client) if clients.len() < MAX_CLIENTS => clients.push(client),
                Ok(_) => tracing::warn!("fd holder: too many clients; connection refused"),
                Err(e) => tracing::warn!(error = %e, "fd holder: accept"),
            }
        }
        let mut closed = Vec::new();
        for (i, p) in polled.iter().enumerate().skip(1) {
            if p.revents == 0 {
                continue;
            }
            let client = &clients[i - 1];
            let keep = match protocol::recv(client.as_fd()) {
                Ok(Some((message, fd))) => handle(&mut entries, client, message, fd),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "fd holder: bad message; closing that connection");
                    false
                }
            };
            if !keep {
                closed.push(i - 1);
            }
        }
        for i in closed.into_iter().rev() {
            clients.remove(i);
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
            entries.insert(message.key, (fd, message.meta));
            answer(Message::done(Ok(())), None)
        }
        (Op::Remove, None) => {
            tracing::debug!(key = message.key, "fd holder: remove");
            entries.remove(&message.key);
            answer(Message::done(Ok(())), None)
        }
        (Op::List, None) => {
            for (key, (fd, meta)) in entries.iter() {
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
