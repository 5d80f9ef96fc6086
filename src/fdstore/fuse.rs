//! What the fd holder knows of the FUSE connections it keeps: which descriptors are
//! connections, and how to answer a connection's `STATFS` while its daemon is down (the
//! one request `umount` sends before unmounting), leaving every other request to the
//! restarted daemon.

use std::io;
use std::os::fd::BorrowedFd;

/// `/dev/fuse` is character device 10:229.
const FUSE_DEVICE: (u32, u32) = (10, 229);
/// The first kernel whose FUSE can resend requests a server read and never answered
/// (`FUSE_HAS_RESEND`, Linux 6.10).
const RESEND_KERNEL: (u32, u32) = (6, 10);
/// `struct fuse_in_header`: len u32, opcode u32, unique u64, then the rest.
const IN_HEADER: usize = 40;
/// The read buffer: the kernel refuses reads smaller than 8 KiB or than its largest
/// request; a strata layer negotiates `max_write` = 4 KiB.
const READ_BUFFER: usize = 256 << 10;

mod opcode {
    pub(super) const FORGET: u32 = 2;
    pub(super) const STATFS: u32 = 17;
    pub(super) const INTERRUPT: u32 = 36;
    pub(super) const BATCH_FORGET: u32 = 42;
}

/// Whether `fd` is an open `/dev/fuse` (a FUSE connection).
pub(super) fn is_fuse_device(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)) == FUSE_DEVICE
    })
}

/// Whether this kernel resends requests a server read and did not answer, which is what
/// lets the holder read a connection's requests without losing any.
pub(super) fn kernel_resends() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| {
            let mut parts = release.trim().split(['.', '-']);
            let major = parts.next()?.parse::<u32>().ok()?;
            let minor = parts.next()?.parse::<u32>().ok()?;
            Some((major, minor) >= RESEND_KERNEL)
        })
        .unwrap_or(false)
}

/// Reads one request from the connection `dev` (non-blocking: the daemon set it so) and
/// answers it if it is a `STATFS`; forgets and interrupts need no answer, anything else is
/// left unanswered, for the kernel to resend to the next server. `false` when the
/// connection is gone.
pub(super) fn answer_one(dev: BorrowedFd<'_>, buf: &mut Vec<u8>) -> bool {
    if buf.is_empty() {
        buf.resize(READ_BUFFER, 0);
    }
    let n = match rustix::io::read(dev, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NODEV) => return false,
        // Nothing there (another reader took it), interrupted, or a request too large for
        // us: the kernel keeps its requests; nothing to do.
        Err(_) => return true,
    };
    if n < IN_HEADER {
        return true;
    }
    let opcode = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    let unique = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
    match opcode {
        opcode::STATFS => {
            if let Err(e) = write_reply(dev, unique, &statfs()) {
                tracing::debug!(error = %e, "fd holder: answering STATFS");
            }
        }
        opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT => {}
        _ => tracing::debug!(opcode, "fd holder: a request left for the next server"),
    }
    true
}

/// `struct fuse_statfs_out` of a read-only layer whose sizes the holder does not know:
/// 4 KiB blocks, names up to 255 bytes, nothing free.
fn statfs() -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    for _ in 0..5 {
        out.extend_from_slice(&0u64.to_le_bytes()); // blocks, bfree, bavail, files, ffree
    }
    for v in [4096u32, 255, 4096, 0] {
        out.extend_from_slice(&v.to_le_bytes()); // bsize, namelen, frsize, padding
    }
    out.extend_from_slice(&[0u8; 24]); // spare
    out
}

fn write_reply(dev: BorrowedFd<'_>, unique: u64, body: &[u8]) -> io::Result<()> {
    let len = (16 + body.len()) as u32;
    let mut reply = Vec::with_capacity(len as usize);
    reply.extend_from_slice(&len.to_le_bytes());
    reply.extend_from_slice(&0i32.to_le_bytes());
    reply.extend_from_slice(&unique.to_le_bytes());
    reply.extend_from_slice(body);
    rustix::io::write(dev, &reply)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statfs_answer_has_the_kernel_layout() {
        assert_eq!(statfs().len(), 80);
    }

    #[test]
    fn a_regular_file_is_not_a_connection() {
        let f = tempfile::tempfile().unwrap();
        assert!(!is_fuse_device(std::os::fd::AsFd::as_fd(&f)));
    }
}
