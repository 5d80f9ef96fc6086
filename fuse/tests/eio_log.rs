//! A chunk that cannot be had is `EIO` for the reader and one log line naming the layer,
//! the file and the cause for the operator.

mod fixture;

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use fixture::{Mounted, failing_fs, layer_blob};

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_chunk_is_logged_with_layer_file_and_cause() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The worker threads log, so the subscriber must be global (this binary has one test).
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let m = Mounted::new(failing_fs(layer_blob()));
    let err = std::fs::read(m.join("etc/hello.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("etc/hello.txt"))
        .unwrap_or_else(|| panic!("no log line names the file:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("failing-layer"), "{line}");
    assert!(line.contains("registry unreachable"), "{line}");
}
