//! The reverse-proxy engine under [`TokenAuthGateway`](super::TokenAuthGateway)
//! and [`FaultProxy`](super::FaultProxy): a loopback listener, a thread per
//! client connection, HTTP/1.1 keep-alive on both sides, bodies streamed in
//! 64 KiB pieces (never buffered whole), and a [`Handler`] that decides per
//! request whether to answer locally or forward with some [`Shaping`].
//!
//! Each client connection keeps its own upstream connection and reuses it
//! while responses are cleanly delimited, so a client that reuses its
//! connection causes no new upstream connects (thousands of range requests
//! would otherwise pile up sockets in TIME_WAIT).

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::http::{self, BodyReader, COPY_BUF, Head};

mod forward;

use forward::{Exchange, wait_until_acked};

/// A response the proxy produces itself, without contacting upstream.
#[derive(Debug, Clone)]
pub(crate) struct LocalResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl LocalResponse {
    /// A JSON response (`Content-Type: application/json`).
    pub(crate) fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        LocalResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// How a forwarded response is altered on its way to the client.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shaping {
    /// Sleep before forwarding the request.
    pub(crate) delay: Option<Duration>,
    /// Pace the response body at this rate.
    pub(crate) bytes_per_sec: Option<u64>,
    /// Stop the body after some bytes.
    pub(crate) cut: Option<Cut>,
    /// `(offset, count)` payload ranges to XOR with 0xff.
    pub(crate) flips: Vec<(u64, u64)>,
}

/// How a body is cut short; no effect when the body is not longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Send `after` body bytes, then reset the connection (SO_LINGER 0).
    Reset { after: u64 },
    /// Send `after` body bytes, then close cleanly (FIN).
    Truncate { after: u64 },
}

/// What to do with one request.
#[derive(Debug)]
pub(crate) enum Route {
    Local(LocalResponse),
    Forward(Shaping),
}

/// How one exchange ended, for the handler's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Status sent to the client (0 if none was).
    pub(crate) status: u16,
    /// Body payload bytes sent to the client.
    pub(crate) body_bytes: u64,
    /// Whether the response was delivered whole.
    pub(crate) complete: bool,
}

/// Per-request policy of a proxy.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Whatever the handler wants back in [`Handler::finished`].
    type Note: Send;
    /// Decides what to do; may edit the request head before it is forwarded.
    fn route(&self, method: &str, head: &mut Head) -> (Route, Self::Note);
    /// Called once per request after its response was sent or abandoned.
    fn finished(&self, note: Self::Note, outcome: Outcome);
}

/// A running proxy listener; stops and joins its threads on drop.
#[derive(Debug)]
pub(crate) struct ProxyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Clones of live sockets, keyed by connection id and whether it is the
    /// upstream side; shut down on drop so blocked connection threads wake up.
    sockets: Mutex<HashMap<(u64, bool), TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn track(&self, id: u64, upstream: bool, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            lock(&self.sockets).insert((id, upstream), clone);
        }
    }

    /// Forgets a connection's socket clone, so closing the connection's own
    /// handles really closes the socket.
    fn untrack(&self, id: u64, upstream: bool) {
        lock(&self.sockets).remove(&(id, upstream));
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not make every later assertion panic too.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProxyServer {
    /// Listens on `127.0.0.1:0`; `upstream` is where forwarded requests go
    /// (`None` for a server that only answers locally).
    pub(crate) fn start<H: Handler>(
        name: &str,
        handler: Arc<H>,
        upstream: Option<SocketAddr>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || accept_loop(&listener, &handler, upstream, &accept_shared))?;
        Ok(ProxyServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in lock(&self.shared.sockets).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop<H: Handler>(
    listener: &TcpListener,
    handler: &Arc<H>,
    upstream: Option<SocketAddr>,
    shared: &Arc<Shared>,
) {
    for stream in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared.track(id, false, &stream);
        let (handler, conn_shared) = (Arc::clone(handler), Arc::clone(shared));
        let spawned = thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || {
                // Errors only mean the client or upstream went away.
                let _ = serve(stream, &*handler, upstream, &conn_shared, id);
                conn_shared.untrack(id, false);
                conn_shared.untrack(id, true);
            });
        let mut threads = lock(&shared.threads);
        threads.retain(|t| !t.is_finished());
        if let Ok(thread) = spawned {
            threads.push(thread);
        }
    }
}

/// The upstream side of one client connection.
struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// What the connection loop does after an exchange.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Close with SO_LINGER 0 so the client sees a reset.
    Reset,
}

fn serve<H: Handler>(
    client: TcpStream,
    handler: &H,
    upstream_addr: Option<SocketAddr>,
    shared: &Shared,
    id: u64,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(COPY_BUF, client.try_clone()?);
    let mut writer = client;
    let mut upstream: Option<Upstream> = None;
    while !shared.stopped() {
        let Some(mut head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let (method, _, _) = head.request_line()?;
        let method = method.to_owned();
        let request_framing = http::request_framing(&head)?;
        let client_close = head.wants_close();
        // Answer `Expect: 100-continue` ourselves: the body is streamed
        // upstream right away, so the client must not wait for upstream's 100.
        if head.has_token("expect", "100-continue") {
            head.remove("expect");
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let (route, note) = handler.route(&method, &mut head);
        let (outcome, next) = match route {
            Route::Local(response) => {
                // The request body must be consumed to find the next request.
                if http::drain(&mut BodyReader::new(&mut reader, request_framing)).is_ok() {
                    let outcome = write_local(&mut writer, &method, &response, client_close);
                    (outcome, Next::KeepAlive)
                } else {
                    (
                        Outcome {
                            status: 0,
                            body_bytes: 0,
                            complete: false,
                        },
                        Next::Close,
                    )
                }
            }
            Route::Forward(shaping) => {
                let mut exchange = Exchange {
                    reader: &mut reader,
                    writer: &mut writer,
                    upstream: &mut upstream,
                    upstream_addr,
                    shared,
                    id,
                };
                exchange.forward(&method, &head, request_framing, &shaping)
            }
        };
        handler.finished(note, outcome);
        let next = if outcome.status == 0 || !outcome.complete {
            next.max_close()
        } else if client_close {
            Next::Close
        } else {
            next
        };
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = writer.shutdown(Shutdown::Write);
                return Ok(());
            }
            Next::Reset => {
                // An abortive close discards whatever the kernel has not sent
                // yet; wait for it so the client really gets the promised bytes.
                wait_until_acked(&writer, shared, Duration::from_secs(10));
                rustix::net::sockopt::set_socket_linger(&writer, Some(Duration::ZERO))?;
                shared.untrack(id, false);
                return Ok(());
            }
        }
    }
    Ok(())
}

impl Next {
    /// After a failed exchange the connection cannot carry another request.
    fn max_close(self) -> Next {
        match self {
            Next::KeepAlive => Next::Close,
            other => other,
        }
    }
}

fn write_local(
    writer: &mut TcpStream,
    method: &str,
    response: &LocalResponse,
    close: bool,
) -> Outcome {
    let mut head = Head::new(format!(
        "HTTP/1.1 {} {}",
        response.status,
        reason(response.status)
    ));
    for (name, value) in &response.headers {
        head.push(name, value.clone());
    }
    head.push("Content-Length", response.body.len().to_string());
    if close {
        head.push("Connection", "close");
    }
    let mut wire = head.encode();
    let body_len = if method == "HEAD" {
        0
    } else {
        wire.extend_from_slice(&response.body);
        response.body.len() as u64
    };
    let complete = writer.write_all(&wire).is_ok();
    Outcome {
        status: response.status,
        body_bytes: if complete { body_len } else { 0 },
        complete,
    }
}

/// The reason phrase for the statuses this harness sends itself.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
