//! Loop devices for mounts with the `loop` option (as containerd's `mount.Mount` sets
//! them up): a free device from `/dev/loop-control`, configured in one
//! `LOOP_CONFIGURE` call with autoclear, so the kernel detaches it when the last user
//! (the mounted filesystem) lets go. libc has no loop ioctls, so the ABI is spelled out
//! here from `include/uapi/linux/loop.h`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; LO_NAME_SIZE],
    crypt_name: [u8; LO_NAME_SIZE],
    encrypt_key: [u8; LO_KEY_SIZE],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device attached to a file; detached by the kernel once it is closed and no
/// longer mounted (autoclear).
#[derive(Debug)]
pub(crate) struct LoopDevice {
    path: PathBuf,
    _device: File,
}

impl LoopDevice {
    /// The device node, e.g. `/dev/loop3`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Attaches `file` to a free loop device (read-only when `read_only`).
pub(crate) fn attach(file: &Path, read_only: bool) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", file.display())))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/loop-control: {e}")))?;
    // Another process may take the free device between GET_FREE and CONFIGURE: EBUSY,
    // ask again.
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("find a free loop device: {e}"),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        let mut flags = LO_FLAGS_AUTOCLEAR;
        if read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        let mut file_name = [0u8; LO_NAME_SIZE];
        let name = file.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        file_name[..n].copy_from_slice(&name[..n]);
        let config = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags,
                file_name,
                crypt_name: [0; LO_NAME_SIZE],
                encrypt_key: [0; LO_KEY_SIZE],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is, laid
        // out as the kernel's and alive for the call.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                std::ptr::from_ref(&config),
            )
        };
        if rc == 0 {
            return Ok(LoopDevice {
                path,
                _device: device,
            });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io::Error::new(
                e.kind(),
                format!("attach {} to {}: {e}", file.display(), path.display()),
            ));
        }
    }
    Err(io::Error::other(format!(
        "attach {} to a loop device: every free device was taken first",
        file.display()
    )))
}
