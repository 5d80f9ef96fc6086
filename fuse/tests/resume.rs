//! Restart without breaking readers: a "supervisor" keeps a duplicate of the connection's
//! `/dev/fuse` descriptor, the serving process goes away (its threads stop, one request is
//! read and never answered), and a new server resumes the live connection from the saved INIT
//! state. Open files and new lookups keep working, the lost request is answered after a
//! resend, and nobody sees `ENOTCONN`.

mod fixture;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::mpsc;
use std::time::Duration;

use fixture::{BIG_LEN, CHUNK, HELLO, Mounted, big_data, layer_blob, layer_fs};
use strata_fuse::{FuseServer, InitState, ServeOptions};

/// Reads one request off the connection and drops it, as a process killed mid-request would.
fn swallow_one_request(dev: &OwnedFd) -> Vec<u8> {
    let mut pfd = libc::pollfd {
        fd: dev.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "a request should be pending");
    let mut buf = vec![0u8; 132 << 10];
    // SAFETY: valid buffer.
    let n = unsafe { libc::read(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0, "read: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

#[test]
fn resume_serves_a_live_connection_after_the_server_goes_away() {
    let blob = layer_blob();
    let want = big_data();
    let mut m = Mounted::new(layer_fs(blob.clone()));
    let server = m.server.take().unwrap();

    // An open file handle from before the restart.
    let big = fs::File::open(m.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 1000];
    big.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(buf, want[10..1010]);

    // The supervisor keeps a duplicate and the INIT state (as JSON, as it would on disk).
    let supervisor = server.device().try_clone_to_owned().unwrap();
    let saved = serde_json::to_string(&server.init_state()).unwrap();
    let connection = server.connection_id();
    assert!(connection.is_some());

    // The daemon goes away: its threads stop, its descriptor is closed.
    drop(server.stop().unwrap());

    // A reader asks for something while nobody serves; the dying process had read that
    // request and never answered it.
    let (tx, rx) = mpsc::channel();
    let path = m.join("dev/sda");
    let stalled = std::thread::spawn(move || {
        let r = fs::symlink_metadata(&path).map(|md| md.rdev());
        tx.send(()).unwrap();
        r
    });
    let lost = swallow_one_request(&supervisor);
    assert!(lost.len() >= 40);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the reader stalls, it does not fail"
    );

    // A new process resumes from the supervisor's descriptor and the saved state.
    let state: InitState = serde_json::from_str(&saved).unwrap();
    let resumed = FuseServer::resume(
        layer_fs(blob),
        supervisor.try_clone().unwrap(),
        state,
        Some(m.path().to_owned()),
        &ServeOptions::default(),
    )
    .unwrap();
    assert_eq!(resumed.connection_id(), connection);
    m.server = Some(resumed);

    // The lost request was resent and answered.
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the stalled reader finishes after the resume");
    let rdev = stalled.join().unwrap().unwrap();
    assert_eq!((libc::major(rdev), libc::minor(rdev)), (8, 0));

    // The old handle reads parts not cached before, new lookups work.
    let off = 3 * CHUNK + 77;
    let mut buf = vec![0u8; 2 * CHUNK as usize];
    let n = big.read_at(&mut buf, off).unwrap();
    assert_eq!(&buf[..n], &want[off as usize..off as usize + n]);
    assert_eq!(fs::read(m.join("etc/hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(m.join("big.bin")).unwrap().len(), BIG_LEN);
    assert_eq!(
        fs::read_link(m.join("etc/link")).unwrap().to_str(),
        Some("hello.txt")
    );
    drop(supervisor);
}
