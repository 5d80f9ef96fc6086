//! The fd holder's wire format: one `SOCK_SEQPACKET` message per request or answer,
//! `[op u8][status u8][key length u16 LE][key][metadata]`, with at most one descriptor
//! attached as `SCM_RIGHTS`. Everything received is bounded and checked; a message that
//! does not parse is an `InvalidData` error.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Longest key.
pub const MAX_KEY: usize = 1024;
/// Longest metadata.
pub const MAX_META: usize = 64 << 10;
/// Header bytes before the key.
const HEADER: usize = 4;
/// Largest message.
pub const MAX_MESSAGE: usize = HEADER + MAX_KEY + MAX_META;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Keep the attached descriptor under the key (request).
    Put,
    /// Close the descriptor kept under the key (request).
    Remove,
    /// Send every entry (request).
    List,
    /// One entry, with its descriptor (answer to List).
    Entry,
    /// The end of an answer, with its status.
    Done,
}

impl Op {
    fn byte(self) -> u8 {
        match self {
            Op::Put => 1,
            Op::Remove => 2,
            Op::List => 3,
            Op::Entry => 4,
            Op::Done => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Put,
            2 => Op::Remove,
            3 => Op::List,
            4 => Op::Entry,
            5 => Op::Done,
            _ => return None,
        })
    }
}

/// An answer's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok,
    /// Refused; the metadata holds the reason.
    Error,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What it is.
    pub op: Op,
    /// Answers: the outcome (requests: Ok).
    pub status: Status,
    /// The entry's key.
    pub key: String,
    /// Metadata, or an error's reason.
    pub meta: Vec<u8>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Message {
    /// A request, checking the bounds.
    pub fn request(op: Op, key: &str, meta: &[u8]) -> io::Result<Message> {
        if key.len() > MAX_KEY || meta.len() > MAX_META {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd holder: key of {} bytes or metadata of {} bytes is too long (max {MAX_KEY}, {MAX_META})",
                    key.len(),
                    meta.len()
                ),
            ));
        }
        Ok(Message {
            op,
            status: Status::Ok,
            key: key.to_owned(),
            meta: meta.to_vec(),
        })
    }

    /// The end of an answer.
    pub fn done(result: Result<(), String>) -> Message {
        match result {
            Ok(()) => Message {
                op: Op::Done,
                status: Status::Ok,
                key: String::new(),
                meta: Vec::new(),
            },
            Err(reason) => {
                let mut meta = reason.into_bytes();
                meta.truncate(MAX_META);
                Message {
                    op: Op::Done,
                    status: Status::Error,
                    key: String::new(),
                    meta,
                }
            }
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len() + self.meta.len());
        out.push(self.op.byte());
        out.push(match self.status {
            Status::Ok => 0,
            Status::Error => 1,
        });
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.meta);
        out
    }

    /// Parses wire bytes.
    pub fn decode(bytes: &[u8]) -> io::Result<Message> {
        if bytes.len() < HEADER || bytes.len() > MAX_MESSAGE {
            return Err(invalid(format!(
                "fd holder message of {} bytes",
                bytes.len()
            )));
        }
        let op = Op::from_byte(bytes[0])
            .ok_or_else(|| invalid(format!("fd holder message with op {}", bytes[0])))?;
        let status = match bytes[1] {
            0 => Status::Ok,
            1 => Status::Error,
            s => return Err(invalid(format!("fd holder message with status {s}"))),
        };
        let key_len = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        if key_len > MAX_KEY || HEADER + key_len > bytes.len() {
            return Err(invalid(format!(
                "fd holder message with a {key_len}-byte key in {} bytes",
                bytes.len()
            )));
        }
        let key = std::str::from_utf8(&bytes[HEADER..HEADER + key_len])
            .map_err(|_| invalid("fd holder key is not UTF-8"))?
            .to_owned();
        let meta = bytes[HEADER + key_len..].to_vec();
        if meta.len() > MAX_META {
            return Err(invalid("fd holder metadata too long"));
        }
        Ok(Message {
            op,
            status,
            key,
            meta,
        })
    }
}

fn unix_address(path: &Path) -> io::Result<SocketAddrUnix> {
    SocketAddrUnix::new(path).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("socket path {}: {e}", path.display()),
        )
    })
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Retries `f` while it is interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// A connected socket to the holder at `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = unix_address(path)?;
    retry(|| net::connect(&fd, &addr))
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {}: {e}", path.display())))?;
    Ok(fd)
}

/// A listening socket at `path` (which must not exist).
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = unix_address(path)?;
    net::bind(&fd, &addr).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("bind {}: {e}", path.display()))
    })?;
    net::listen(&fd, 64)?;
    Ok(fd)
}

/// Accepts one connection.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    retry(|| net::accept_with(listener, SocketFlags::CLOEXEC))
}

/// Sends `message` with `fd` attached.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &Message,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let bytes = message.encode();
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("fd holder: no room for the descriptor"));
    }
    retry(|| {
        net::sendmsg(
            socket,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })?;
    Ok(())
}

/// Receives one message and its descriptor; `None` at end of stream.
pub fn recv(socket: BorrowedFd<'_>) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    // Room for more than one descriptor, so that a message carrying several is refused
    // rather than silently cut to one.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = retry(|| {
        net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })?;
    // Take ownership of every descriptor received first, so that none leaks on an error.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let n = received.bytes;
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if received
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        || n > MAX_MESSAGE
    {
        return Err(invalid(
            "fd holder message truncated (too long, or too many descriptors)",
        ));
    }
    if fds.len() > 1 {
        return Err(invalid(format!(
            "fd holder message with {} descriptors",
            fds.len()
        )));
    }
    let message = Message::decode(&buf[..n])?;
    Ok(Some((message, fds.pop())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let m = Message::request(Op::Put, "sha256:abc", b"{\"x\":1}").unwrap();
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        let d = Message::done(Err("no".into()));
        assert_eq!(Message::decode(&d.encode()).unwrap(), d);
        assert!(Message::decode(&[1, 0, 9]).is_err(), "short");
        assert!(Message::decode(&[9, 0, 0, 0]).is_err(), "op");
        assert!(Message::decode(&[1, 7, 0, 0]).is_err(), "status");
        assert!(
            Message::decode(&[1, 0, 200, 0, b'k']).is_err(),
            "key past the end"
        );
        assert!(
            Message::decode(&[1, 0, 1, 0, 0xff]).is_err(),
            "key not UTF-8"
        );
        assert!(Message::request(Op::Put, &"k".repeat(MAX_KEY + 1), b"").is_err());
        assert!(Message::request(Op::Put, "k", &vec![0; MAX_META + 1]).is_err());
    }

    #[test]
    fn a_descriptor_travels_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = listen(&path).unwrap();
        let client = connect(&path).unwrap();
        let server = accept(listener.as_fd()).unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let m = Message::request(Op::Put, "k", b"meta").unwrap();
        send(client.as_fd(), &m, Some(file.as_fd())).unwrap();
        let (got, fd) = recv(server.as_fd()).unwrap().unwrap();
        assert_eq!(got, m);
        let fd = fd.unwrap();
        let a = rustix::fs::fstat(&file).unwrap();
        let b = rustix::fs::fstat(&fd).unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        drop(client);
        assert!(recv(server.as_fd()).unwrap().is_none());
    }

    use std::os::fd::AsFd;
}
