//! The fd holder (`strata fd-holder`) as `strata serve` uses it: a descriptor put by a
//! process that is then SIGKILLed stays open in the holder, and a new client takes it back;
//! remove closes the holder's copy; a malformed message costs only its connection; two
//! clients starting a holder at once end with one; the holder exits when idle.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::fdstore::holder::IDLE_EXIT;
use strata::fdstore::{FdStore, protocol};

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
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(holders(&socket).len(), 1);
}
