//! The fd holder (`strata fd-holder`) as `strata serve` uses it: a descriptor put by a
//! process that is then SIGKILLed stays open in the holder, and a new client takes it back;
//! remove closes the holder's copy; a malformed message costs only its connection; two
//! clients starting a holder at once end with one; the holder exits when idle.
//!
//! With real FUSE mounts of an eStargz layer, their server stopped as a daemon's would be:
//! `umount` of the layer completes at once and the holder, holding nothing live any more,
//! exits; a reader waits (no error) while the holder answers `statfs`, and the next server
//! resumes the connection and answers it; the holder exits when its root is removed.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use strata::fdstore::holder::{CHECK_EVERY, IDLE_EXIT};
use strata::fdstore::{FdStore, protocol};
use strata_formats::estargz::{EstargzReader, WriteOptions, convert};
use strata_fuse::{EstargzChunkSource, FuseServer, InitState, LayerFs, LayerTree, ServeOptions};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn holders(socket: &Path) -> Vec<i32> {
    let needle = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid: i32 = p.file_name().to_string_lossy().parse().ok()?;
            let cmdline = String::from_utf8_lossy(&std::fs::read(p.path().join("cmdline")).ok()?)
                .replace('\0', " ");
            (cmdline.contains("fd-holder") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

/// Kills the test's holders whatever happens.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in holders(&self.0) {
            // SAFETY: kill(2) of a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_descriptor_outlives_the_process_that_put_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/holder.sock");
    let _cleanup = Cleanup(socket.clone());
    let (mut reader, writer) = UnixStream::pair().unwrap();

    // A forked child plays the daemon: it puts the writing end, then dies by SIGKILL.
    // SAFETY: the child never returns into the test harness; it exits or is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let store = FdStore::connect_or_spawn(&socket, Path::new(STRATA))
            .unwrap_or_else(|_| unsafe { libc::_exit(2) });
        store
            .put("layer-1", writer.as_fd(), b"meta-1")
            .unwrap_or_else(|_| unsafe { libc::_exit(3) });
        // SAFETY: the child ends here, as if killed.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!();
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert!(libc::WIFSIGNALED(status), "child status {status}");
    drop(writer);

    // The holder keeps the writing end open: no EOF for the reader.
    reader
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = reader.read(&mut byte).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );

    // A new client (the restarted daemon) takes it back and writes through it.
    let store = FdStore::connect(&socket).unwrap();
    let held = store.take_all().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].key.as_str(), held[0].meta.as_slice()),
        ("layer-1", &b"meta-1"[..])
    );
    let mut back = UnixStream::from(held.into_iter().next().unwrap().fd);
    back.write_all(b"x").unwrap();
    reader.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");

    // Put under the same key replaces; remove closes the holder's copy: EOF once ours goes.
    let (mut reader2, writer2) = UnixStream::pair().unwrap();
    store.put("layer-1", writer2.as_fd(), b"meta-2").unwrap();
    drop(writer2);
    drop(back);
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        reader.read(&mut byte).unwrap(),
        0,
        "the replaced descriptor was closed"
    );
    assert_eq!(store.take_all().unwrap()[0].meta, b"meta-2");
    store.remove("layer-1").unwrap();
    reader2
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        reader2.read(&mut byte).unwrap(),
        0,
        "removed: the holder's copy is closed"
    );
    assert!(store.take_all().unwrap().is_empty());
    assert_eq!(holders(&socket).len(), 1);
}

#[test]
fn malformed_messages_close_only_their_connection_and_the_holder_exits_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("holder.sock");
    let _cleanup = Cleanup(socket.clone());
    let good = FdStore::connect_or_spawn(&socket, Path::new(STRATA)).unwrap();
    let (_r, w) = UnixStream::pair().unwrap();
    good.put("k", w.as_fd(), b"").unwrap();

    // Garbage, a put without its descriptor, a remove with one.
    for bytes in [
        vec![0xffu8, 1, 2],
        protocol::Message::request(protocol::Op::Put, "x", b"")
            .unwrap()
            .encode(),
    ] {
        let bad = protocol::connect(&socket).unwrap();
        // SAFETY: send(2) of a live buffer on our socket.
        let n = unsafe {
            libc::send(
                bad.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        assert_eq!(n as usize, bytes.len());
        assert!(
            protocol::recv(bad.as_fd()).unwrap().is_none(),
            "the holder closes a bad connection"
        );
    }
    let bad = protocol::connect(&socket).unwrap();
    protocol::send(
        bad.as_fd(),
        &protocol::Message::request(protocol::Op::Remove, "k", b"").unwrap(),
        Some(w.as_fd()),
    )
    .unwrap();
    assert!(protocol::recv(bad.as_fd()).unwrap().is_none());
    // The holder is fine and still holds its entry.
    assert_eq!(good.take_all().unwrap().len(), 1);

    // A second holder on the live socket exits at once, successfully.
    let second = Command::new(STRATA)
        .args(["fd-holder", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(holders(&socket).len(), 1);

    // Idle: nothing held, nobody connected → it exits and removes its socket.
    good.remove("k").unwrap();
    drop(good);
    let deadline = Instant::now() + IDLE_EXIT + Duration::from_secs(5);
    while !holders(&socket).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        holders(&socket).is_empty(),
        "the holder did not exit when idle"
    );
    assert!(!socket.exists());
}

#[test]
fn concurrent_starts_end_with_one_holder() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("holder.sock");
    let _cleanup = Cleanup(socket.clone());
    let stores: Vec<FdStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| FdStore::connect_or_spawn(&socket, Path::new(STRATA))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let (_r, w) = UnixStream::pair().unwrap();
    for (i, store) in stores.iter().enumerate() {
        store.put(&format!("k{i}"), w.as_fd(), b"").unwrap();
    }
    // Every client talks to the same holder.
    assert_eq!(stores[0].take_all().unwrap().len(), 4);
    // A holder that lost the race for the socket exits on its own; on a loaded machine
    // that can take more than a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders(&socket).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(holders(&socket).len(), 1);
}

/// A holder that starts while another has the lock but is not listening yet (it is between
/// bind and listen) waits for it instead of replacing its socket: replacing it would strand
/// the clients that already reached the first holder, which then exits for its lost socket.
#[test]
fn a_late_holder_never_replaces_one_still_binding() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("holder.sock");
    let _cleanup = Cleanup(socket.clone());
    // "The first holder": the lock taken, the socket bound but not yet listening.
    let lock = std::fs::File::create(dir.path().join("holder.sock.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let first = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::bind(&first, &rustix::net::SocketAddrUnix::new(&socket).unwrap()).unwrap();
    let inode = std::fs::metadata(&socket).unwrap().ino();

    let mut late = Command::new(STRATA)
        .args(["fd-holder", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        late.try_wait().unwrap().is_none(),
        "the late holder waits while the first has the lock"
    );
    assert_eq!(
        std::fs::metadata(&socket).unwrap().ino(),
        inode,
        "the late holder left the first one's socket alone"
    );
    // The first holder listens: the late one sees it answer and leaves.
    rustix::net::listen(&first, 8).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = late.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the late holder did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), inode);
    assert!(holders(&socket).is_empty());
}

/// The file in the test layer, 300 KiB, chunked at 64 KiB.
const DATA_LEN: usize = 300 << 10;

fn data() -> Vec<u8> {
    (0..DATA_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

/// An eStargz layer with `hello.txt` and `data.bin`.
fn layer_blob() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in [("hello.txt", b"hello\n".to_vec()), ("data.bin", data())] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_cksum();
        b.append(&h, &bytes[..]).unwrap();
    }
    let mut blob = Vec::new();
    let opts = WriteOptions {
        chunk_size: 64 << 10,
        threads: 1,
        ..WriteOptions::default()
    };
    convert(&b.into_inner().unwrap()[..], &mut blob, &opts).unwrap();
    blob
}

fn layer_fs(blob: Vec<u8>) -> Arc<LayerFs> {
    let reader = Arc::new(EstargzReader::open(blob, None).unwrap());
    let tree = LayerTree::build("holder-test", reader.index().layer_index().unwrap());
    Arc::new(LayerFs::new(
        tree,
        Arc::new(EstargzChunkSource::new(reader)),
    ))
}

/// Lazily unmounts the mount point whatever happens (a no-op once it is unmounted).
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// A layer mounted at `mountpoint` and handed to the holder at `socket` under `key`, with
/// its INIT state as the metadata; then its server stops and the client goes away, as a
/// daemon stopping would. Returns the state, for a resume.
fn mount_hold_and_stop(socket: &Path, mountpoint: &Path, key: &str) -> InitState {
    std::fs::create_dir_all(mountpoint).unwrap();
    let server =
        FuseServer::mount(layer_fs(layer_blob()), mountpoint, &ServeOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(mountpoint.join("hello.txt")).unwrap(),
        b"hello\n"
    );
    let store = FdStore::connect_or_spawn(socket, Path::new(STRATA)).unwrap();
    let state = server.init_state();
    store
        .put(key, server.device(), &serde_json::to_vec(&state).unwrap())
        .unwrap();
    drop(server.stop().unwrap());
    drop(store);
    state
}

fn fuse_mounted(mountpoint: &Path) -> bool {
    let want = mountpoint.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_layer_whose_server_stopped_unmounts_at_once_and_the_holder_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("root/fd-holder.sock");
    let mountpoint = dir.path().join("layer");
    let _cleanup = Cleanup(socket.clone());
    let _detach = Detach(mountpoint.clone());
    mount_hold_and_stop(&socket, &mountpoint, "layer-1");
    assert_eq!(holders(&socket).len(), 1, "the holder keeps the connection");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(holders(&socket).len(), 1, "a live mount keeps its holder");

    // util-linux umount asks statfs of the mount point before unmounting: with nobody
    // answering, it would wait for ever.
    let started = Instant::now();
    let mut umount = Command::new("umount")
        .arg(&mountpoint)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_for(Duration::from_secs(10), || {
        umount.try_wait().unwrap().is_some()
    });
    let took = started.elapsed();
    if !finished {
        let _ = umount.kill();
    }
    let out = umount.wait_with_output().unwrap();
    assert!(finished, "umount of the layer still blocked after {took:?}");
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("umount of a layer whose server stopped took {took:?}");
    assert!(took < Duration::from_secs(1), "umount took {took:?}");
    assert!(!fuse_mounted(&mountpoint));

    // The connection is gone: the holder drops it and, holding nothing, exits.
    let started = Instant::now();
    assert!(
        wait_for(IDLE_EXIT + CHECK_EVERY * 2 + Duration::from_secs(3), || {
            holders(&socket).is_empty()
        }),
        "the holder outlived the last mount"
    );
    eprintln!(
        "the holder exited {:?} after the unmount",
        started.elapsed()
    );
    assert!(!socket.exists());
}

#[test]
fn a_reader_waits_while_the_server_is_down_and_the_next_server_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("root/fd-holder.sock");
    let mountpoint = dir.path().join("layer");
    let _cleanup = Cleanup(socket.clone());
    let _detach = Detach(mountpoint.clone());
    mount_hold_and_stop(&socket, &mountpoint, "layer-1");

    // A reader of a file not read yet: its requests reach the holder, which must leave
    // them for the next server.
    let (tx, rx) = mpsc::channel();
    let path = mountpoint.join("data.bin");
    let reader = std::thread::spawn(move || {
        let r = std::fs::read(&path);
        tx.send(()).unwrap();
        r
    });
    // Meanwhile statfs (what umount and df ask) is answered.
    let started = Instant::now();
    rustix::fs::statfs(&mountpoint).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the reader stalls while nobody serves, it does not fail"
    );
    assert_eq!(holders(&socket).len(), 1);

    // The next server adopts the holder's connection and resumes it.
    let store = FdStore::connect(&socket).unwrap();
    let mut held = store.take_all().unwrap();
    assert_eq!(held.len(), 1);
    let held = held.pop().unwrap();
    let state: InitState = serde_json::from_slice(&held.meta).unwrap();
    let server = FuseServer::resume(
        layer_fs(layer_blob()),
        held.fd,
        state,
        Some(mountpoint.clone()),
        &ServeOptions::default(),
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the stalled reader finishes after the resume");
    assert!(reader.join().unwrap().unwrap() == data(), "wrong bytes");

    // The daemon releases the layer: unmounted, and the holder exits once idle.
    store.remove("layer-1").unwrap();
    server.unmount().unwrap();
    drop(store);
    assert!(!fuse_mounted(&mountpoint));
    assert!(wait_for(IDLE_EXIT + Duration::from_secs(3), || {
        holders(&socket).is_empty()
    }));
}

#[test]
fn the_holder_exits_when_its_root_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = root.join("fd-holder.sock");
    let mountpoint = dir.path().join("layer");
    let _cleanup = Cleanup(socket.clone());
    let _detach = Detach(mountpoint.clone());
    mount_hold_and_stop(&socket, &mountpoint, "layer-1");
    assert_eq!(holders(&socket).len(), 1);

    std::fs::remove_dir_all(&root).unwrap();
    let started = Instant::now();
    assert!(
        wait_for(CHECK_EVERY * 2 + Duration::from_secs(2), || holders(
            &socket
        )
        .is_empty()),
        "the holder outlived its root"
    );
    eprintln!("the holder exited {:?} after its root", started.elapsed());
}
