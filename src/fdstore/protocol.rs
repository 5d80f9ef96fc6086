//! The fd holder's wire format: one `SOCK_SEQPACKET` message per request or answer,
//! `[op u8][status u8][key length u16 LE][key][metadata]`, with at most one descriptor
//! attached as `SCM_RIGHTS`. Everything received is bounded and checked; a message that
//! does not parse is an `InvalidData` error.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A connected socket to the holder at `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: addr is a valid sockaddr_un of length len.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("connect to {}: {e}", path.display()),
        ));
    }
    Ok(fd)
}

/// A listening socket at `path` (which must not exist).
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: addr is a valid sockaddr_un of length len.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("bind {}: {e}", path.display()),
        ));
    }
    // SAFETY: plain listen(2) on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Accepts one connection.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: accept4 without an address; the result is checked.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const CMSG_SPACE: usize = 64;

/// Sends `message` with `fd` attached.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &Message,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let bytes = message.encode();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw: RawFd = fd.as_raw_fd();
        // SAFETY: control has room for one cmsg with one int; the CMSG macros stay inside it.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), raw);
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message and its descriptor; `None` at end of stream.
pub fn recv(socket: BorrowedFd<'_>) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut control = [0u8; CMSG_SPACE];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_SPACE as _;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // Take ownership of every descriptor received first, so that none leaks on an error.
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, with the CMSG macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count =
                    ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n > MAX_MESSAGE {
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
