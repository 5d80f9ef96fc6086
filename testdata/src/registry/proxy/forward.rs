//! Forwarding one request upstream and streaming the response back,
//! shaped: delayed, paced, corrupted or cut short as the handler asked.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::{Cut, LocalResponse, Next, Outcome, Shaping, Shared, Upstream, write_local};
use crate::registry::http::{self, BodyReader, BodyWriter, COPY_BUF, Framing, Head};

/// One forwarded request and its response.
pub(super) struct Exchange<'a> {
    pub(super) reader: &'a mut BufReader<TcpStream>,
    pub(super) writer: &'a mut TcpStream,
    pub(super) upstream: &'a mut Option<Upstream>,
    pub(super) upstream_addr: Option<SocketAddr>,
    pub(super) shared: &'a Shared,
    pub(super) id: u64,
}

impl Exchange<'_> {
    pub(super) fn forward(
        &mut self,
        method: &str,
        head: &Head,
        request_framing: Framing,
        shaping: &Shaping,
    ) -> (Outcome, Next) {
        if let Some(delay) = shaping.delay {
            self.sleep(delay);
        }
        let response = match self.send_request(head, request_framing) {
            Ok(response) => response,
            Err(err) => {
                self.drop_upstream();
                let body = format!(
                    "{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"upstream failed: {}\"}}]}}",
                    err.kind()
                );
                let outcome =
                    write_local(self.writer, method, &LocalResponse::json(502, body), true);
                return (outcome, Next::Close);
            }
        };
        let Ok(status) = response.status() else {
            self.drop_upstream();
            return (
                Outcome {
                    status: 0,
                    body_bytes: 0,
                    complete: false,
                },
                Next::Close,
            );
        };
        let framing = http::response_framing(&response, method).unwrap_or(Framing::UntilClose);
        let mut outcome = Outcome {
            status,
            body_bytes: 0,
            complete: false,
        };
        if self.writer.write_all(&response.encode()).is_err() {
            self.drop_upstream();
            return (outcome, Next::Close);
        }
        let upstream = self.upstream.as_mut().expect("request was sent upstream");
        let mut body = BodyReader::new(&mut upstream.reader, framing);
        let mut out = BodyWriter::new(&mut *self.writer, framing);
        let result = shape_body(&mut body, &mut out, shaping, self.shared, &mut outcome);
        let body_done = body.is_done();
        if !(matches!(result, Ok(Next::KeepAlive)) && body_done)
            || response.wants_close()
            || framing == Framing::UntilClose
        {
            self.drop_upstream();
        }
        match result {
            Ok(next) => {
                outcome.complete = next == Next::KeepAlive;
                let next = if framing == Framing::UntilClose || response.wants_close() {
                    next.max_close()
                } else {
                    next
                };
                (outcome, next)
            }
            Err(_) => (outcome, Next::Close),
        }
    }

    /// Sends the request head and body upstream and reads the final response head.
    fn send_request(&mut self, head: &Head, framing: Framing) -> io::Result<Head> {
        let reused = self.upstream.is_some();
        match self.try_send(head, framing) {
            // The kept-alive upstream connection had gone stale; a bodiless
            // request can safely be sent again on a new one.
            Err(_) if reused && framing == Framing::Empty => {
                self.drop_upstream();
                self.try_send(head, framing)
            }
            result => result,
        }
    }

    fn try_send(&mut self, head: &Head, framing: Framing) -> io::Result<Head> {
        if self.upstream.is_none() {
            let addr = self.upstream_addr.ok_or(io::ErrorKind::NotConnected)?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_nodelay(true)?;
            self.shared.track(self.id, true, &stream);
            *self.upstream = Some(Upstream {
                reader: BufReader::with_capacity(COPY_BUF, stream.try_clone()?),
                writer: stream,
            });
        }
        let upstream = self.upstream.as_mut().expect("connected above");
        upstream.writer.write_all(&head.encode())?;
        if framing != Framing::Empty {
            let mut body = BodyReader::new(&mut *self.reader, framing);
            let mut out = BodyWriter::new(&mut upstream.writer, framing);
            http::copy_body(&mut body, &mut out)?;
        }
        loop {
            let response =
                http::read_head(&mut upstream.reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
            if response.status()? >= 200 {
                return Ok(response);
            }
        }
    }

    fn drop_upstream(&mut self) {
        *self.upstream = None;
        self.shared.untrack(self.id, true);
    }

    fn sleep(&self, duration: Duration) {
        sleep_unless_stopped(self.shared, duration);
    }
}

/// Waits until the peer has acknowledged everything written to `stream`
/// (the `SIOCOUTQ` count is zero), the proxy stops, or `timeout` passes.
pub(super) fn wait_until_acked(stream: &TcpStream, shared: &Shared, timeout: Duration) {
    use std::os::fd::AsRawFd as _;
    let end = Instant::now() + timeout;
    while !shared.stopped() && Instant::now() < end {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one c_int
        // through the pointer, which points at a live local; the fd is open
        // for the duration of the call because `stream` is borrowed.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn sleep_unless_stopped(shared: &Shared, duration: Duration) {
    let end = Instant::now() + duration;
    while !shared.stopped() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Streams the response body to the client applying `shaping`; counts sent
/// bytes into `outcome`. Returns how the client connection must continue.
fn shape_body<R: io::BufRead, W: Write>(
    body: &mut BodyReader<'_, R>,
    out: &mut BodyWriter<W>,
    shaping: &Shaping,
    shared: &Shared,
    outcome: &mut Outcome,
) -> io::Result<Next> {
    let started = Instant::now();
    // Small writes when pacing, so the rate is smooth even for short bodies.
    let piece = match shaping.bytes_per_sec {
        Some(rate) => usize::try_from((rate / 20).clamp(1, COPY_BUF as u64)).unwrap_or(COPY_BUF),
        None => COPY_BUF,
    };
    let mut buf = vec![0; piece];
    loop {
        if shared.stopped() {
            return Ok(Next::Close);
        }
        let sent = outcome.body_bytes;
        let limit = match shaping.cut {
            Some(Cut::Reset { after } | Cut::Truncate { after }) => after.saturating_sub(sent),
            None => u64::MAX,
        };
        let n = body.read(&mut buf)?;
        if n == 0 {
            out.finish()?;
            return Ok(Next::KeepAlive);
        }
        let n_send = n.min(usize::try_from(limit).unwrap_or(usize::MAX));
        let chunk = &mut buf[..n_send];
        for &(offset, count) in &shaping.flips {
            let (start, end) = (
                offset.max(sent),
                offset.saturating_add(count).min(sent + n_send as u64),
            );
            for pos in start..end {
                chunk[(pos - sent) as usize] ^= 0xff;
            }
        }
        if let Some(rate) = shaping.bytes_per_sec {
            let due = Duration::from_secs_f64((sent + n_send as u64) as f64 / rate.max(1) as f64);
            sleep_unless_stopped(shared, due.saturating_sub(started.elapsed()));
        }
        out.write_payload(chunk)?;
        outcome.body_bytes += n_send as u64;
        if n_send < n {
            return Ok(match shaping.cut {
                Some(Cut::Reset { .. }) => Next::Reset,
                _ => Next::Close,
            });
        }
    }
}
