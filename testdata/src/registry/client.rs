//! [`RawClient`]: a deliberately small HTTP/1.1 client for the harness's own
//! pushes and for tests that must see exactly what went over the wire (a
//! reset, a short body, flipped bytes) without a real client's retries.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;

use super::http::{self, BodyReader, Framing, Head};

/// How long a single read or write may block before the request fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A response read by [`RawClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in the order received.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty for [`RawClient::download`] and HEAD).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8, for assertions and error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 connection to one address.
///
/// Sends `Host`, `Content-Length` and any extra headers given; follows no
/// redirects and does no auth beyond the headers you pass (see
/// [`basic_auth`]). A body that ends early or a connection reset comes back
/// as an `io::Error` (`UnexpectedEof`, `ConnectionReset`) and drops the
/// connection; the next request opens a new one.
#[derive(Debug)]
pub struct RawClient {
    addr: SocketAddr,
    conn: Option<Conn>,
    connects: u64,
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawClient {
    /// A client for `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Self {
        RawClient {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// How many TCP connections this client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.connects
    }

    /// Sends a request with `body` (none when empty, except that POST, PUT
    /// and PATCH always carry a `Content-Length`) and reads the whole response.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<RawResponse> {
        let mut body_reader = body;
        self.exchange(
            method,
            target,
            headers,
            Some((&mut body_reader, body.len() as u64)),
            None,
        )
    }

    /// `GET target` with extra `headers`, body read into memory.
    pub fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> io::Result<RawResponse> {
        self.request("GET", target, headers, &[])
    }

    /// Sends a request whose body of `len` bytes is streamed from `body`.
    pub fn upload(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &mut dyn Read,
        len: u64,
    ) -> io::Result<RawResponse> {
        self.exchange(method, target, headers, Some((body, len)), None)
    }

    /// Sends a bodiless request and streams the response body into `sink`
    /// instead of memory (the returned `body` is empty).
    pub fn download(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        sink: &mut dyn Write,
    ) -> io::Result<RawResponse> {
        self.exchange(method, target, headers, None, Some(sink))
    }

    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&mut dyn Read, u64)>,
        sink: Option<&mut dyn Write>,
    ) -> io::Result<RawResponse> {
        let result = self.try_exchange(method, target, headers, body, sink);
        if result.is_err() {
            // The connection is in an unknown state: never reuse it.
            self.conn = None;
        }
        result
    }

    fn try_exchange(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&mut dyn Read, u64)>,
        sink: Option<&mut dyn Write>,
    ) -> io::Result<RawResponse> {
        let mut head = Head::new(format!("{method} {target} HTTP/1.1"));
        head.push("Host", self.addr.to_string());
        head.push("User-Agent", "strata-testdata");
        for (name, value) in headers {
            head.push(name, *value);
        }
        let len = body.as_ref().map_or(0, |(_, len)| *len);
        let always_length = matches!(method, "POST" | "PUT" | "PATCH");
        if (len > 0 || always_length) && head.header("content-length").is_none() {
            head.push("Content-Length", len.to_string());
        }

        let fresh = self.conn.is_none();
        let conn = self.connect()?;
        let sent = conn.writer.write_all(&head.encode());
        let sent = match (sent, body) {
            (Ok(()), Some((body, len))) if len > 0 => {
                io::copy(&mut body.take(len), &mut conn.writer).map(drop)
            }
            (sent, _) => sent,
        };
        let response_head = match sent.and_then(|()| read_final_head(&mut conn.reader)) {
            Ok(head) => head,
            // A kept-alive connection the server already closed: retry once
            // on a new one, which is only safe when there was no body to resend.
            Err(_) if !fresh && len == 0 => {
                self.conn = None;
                return self.try_exchange(method, target, headers, None, sink);
            }
            Err(err) => return Err(err),
        };

        let framing = http::response_framing(&response_head, method)?;
        let mut body_out = Vec::new();
        {
            let mut reader = BodyReader::new(&mut conn.reader, framing);
            match sink {
                Some(sink) => io::copy(&mut reader, sink).map(drop)?,
                None => reader.read_to_end(&mut body_out).map(drop)?,
            }
        }
        if response_head.wants_close() || framing == Framing::UntilClose {
            self.conn = None;
        }
        Ok(RawResponse {
            status: response_head.status()?,
            headers: response_head.headers,
            body: body_out,
        })
    }

    fn connect(&mut self) -> io::Result<&mut Conn> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            self.connects += 1;
            self.conn = Some(Conn {
                reader: BufReader::new(stream.try_clone()?),
                writer: stream,
            });
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// Reads response heads until a final (non-1xx) one.
fn read_final_head(reader: &mut BufReader<TcpStream>) -> io::Result<Head> {
    loop {
        let head = http::read_head(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if head.status()? >= 200 {
            return Ok(head);
        }
    }
}

/// The value of an `Authorization: Basic …` header for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Turns an absolute `Location` (`http://host:port/v2/…?…`) into the
/// origin-form target a request line needs; relative ones pass through.
pub fn origin_form(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => location,
    }
}
