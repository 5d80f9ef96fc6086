//! HTTP/1.1 wire primitives shared by the proxies, the push helper and
//! [`RawClient`](super::RawClient): reading a message head, deciding how its
//! body is framed (RFC 9112 §6.3), and streaming a body in or out.
//!
//! Bodies are always handled as decoded payload bytes: a chunked body is
//! decoded on the way in and re-chunked on the way out. The fault proxy
//! counts, corrupts and cuts at payload offsets, which would be meaningless
//! in the middle of chunk-size lines.

use std::io::{self, BufRead, Read, Write};

/// Longest head (start line plus headers) accepted; registries send a few KiB.
const MAX_HEAD: usize = 64 * 1024;

/// Copy buffer size for streaming bodies.
pub(crate) const COPY_BUF: usize = 64 * 1024;

/// A request or response head: the start line and the header fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Request line (`GET /v2/ HTTP/1.1`) or status line, without CRLF.
    pub(crate) start: String,
    /// Header fields as received; names keep their case, lookups ignore it.
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// A head with `start` and no header fields.
    pub(crate) fn new(start: impl Into<String>) -> Self {
        Head {
            start: start.into(),
            headers: Vec::new(),
        }
    }

    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Removes every field named `name`; returns the first removed value.
    pub(crate) fn remove(&mut self, name: &str) -> Option<String> {
        let first = self.header(name).map(str::to_owned);
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        first
    }

    /// Appends a field.
    pub(crate) fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Whether the comma-separated header `name` lists `token` (e.g. `Connection: close`).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Method, target and version of a request line.
    pub(crate) fn request_line(&self) -> io::Result<(&str, &str, &str)> {
        let mut parts = self.start.split(' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v), None) if !m.is_empty() && v.starts_with("HTTP/1.") => {
                Ok((m, t, v))
            }
            _ => Err(invalid(format!("bad request line {:?}", self.start))),
        }
    }

    /// Status code of a status line.
    pub(crate) fn status(&self) -> io::Result<u16> {
        let mut parts = self.start.splitn(3, ' ');
        match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
                .parse()
                .map_err(|_| invalid(format!("bad status line {:?}", self.start))),
            _ => Err(invalid(format!("bad status line {:?}", self.start))),
        }
    }

    /// Whether the sender wants the connection closed after this message:
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    pub(crate) fn wants_close(&self) -> bool {
        let http10 = self.start.starts_with("HTTP/1.0") || self.start.ends_with("HTTP/1.0");
        self.has_token("connection", "close")
            || (http10 && !self.has_token("connection", "keep-alive"))
    }

    /// The head as wire bytes, ending with the blank line.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one head. `Ok(None)` means the peer closed the connection cleanly
/// before sending anything, the normal end of a keep-alive connection.
pub(crate) fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut total = 0;
    let mut line = Vec::new();
    // RFC 9112 §2.2: a server should ignore empty lines before a request line.
    let start = loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            if total == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > MAX_HEAD {
            return Err(invalid("head too long".into()));
        }
        let text = trim_eol(&line)?;
        if !text.is_empty() {
            break text.to_owned();
        }
    };
    let mut head = Head::new(start);
    loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > MAX_HEAD {
            return Err(invalid("head too long".into()));
        }
        let text = trim_eol(&line)?;
        if text.is_empty() {
            return Ok(Some(head));
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {text:?}")))?;
        head.push(name.trim(), value.trim());
    }
}

fn trim_eol(line: &[u8]) -> io::Result<&str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).map_err(|_| invalid("head is not UTF-8".into()))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Framing of a request body: chunked, `Content-Length`, or none.
pub(crate) fn request_framing(head: &Head) -> io::Result<Framing> {
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match content_length(head)? {
        Some(0) | None => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// Framing of a response to a `method` request.
pub(crate) fn response_framing(head: &Head, method: &str) -> io::Result<Framing> {
    let status = head.status()?;
    if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match content_length(head)? {
        Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(Framing::UntilClose),
    }
}

fn content_length(head: &Head) -> io::Result<Option<u64>> {
    head.header("content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))
        })
        .transpose()
}

/// Reads the payload of one body from a connection, leaving the reader at
/// the start of the next message.
#[derive(Debug)]
pub(crate) struct BodyReader<'a, R> {
    inner: &'a mut R,
    state: BodyState,
}

#[derive(Debug)]
enum BodyState {
    /// Bytes left of a fixed body or of the current chunk.
    Remaining {
        left: u64,
        chunked: bool,
    },
    /// Chunked: positioned at a chunk-size line.
    ChunkStart,
    UntilClose,
    Done,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    pub(crate) fn new(inner: &'a mut R, framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Remaining {
                left: n,
                chunked: false,
            },
            Framing::Chunked => BodyState::ChunkStart,
            Framing::UntilClose => BodyState::UntilClose,
        };
        BodyReader { inner, state }
    }

    /// Whether the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.inner.take(4096).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(trim_eol(&line)?.to_owned())
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::UntilClose => {
                    let n = self.inner.read(buf)?;
                    if n == 0 {
                        self.state = BodyState::Done;
                    }
                    return Ok(n);
                }
                BodyState::ChunkStart => {
                    let line = self.read_line()?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        // Trailer fields, if any, end with an empty line; they are dropped.
                        while !self.read_line()?.is_empty() {}
                        self.state = BodyState::Done;
                    } else {
                        self.state = BodyState::Remaining {
                            left: size,
                            chunked: true,
                        };
                    }
                }
                BodyState::Remaining { left, chunked } => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("body ended {left} bytes early"),
                        ));
                    }
                    let left = left - n as u64;
                    self.state = match (left, chunked) {
                        (0, false) => BodyState::Done,
                        (0, true) => {
                            if !self.read_line()?.is_empty() {
                                return Err(invalid("chunk not followed by CRLF".into()));
                            }
                            BodyState::ChunkStart
                        }
                        (left, chunked) => BodyState::Remaining { left, chunked },
                    };
                    return Ok(n);
                }
            }
        }
    }
}

/// Reads and discards the rest of a body.
pub(crate) fn drain<R: BufRead>(body: &mut BodyReader<'_, R>) -> io::Result<u64> {
    io::copy(body, &mut io::sink())
}

/// Writes payload bytes in the framing chosen for the outgoing message.
#[derive(Debug)]
pub(crate) struct BodyWriter<W> {
    inner: W,
    chunked: bool,
    frame: Vec<u8>,
}

impl<W: Write> BodyWriter<W> {
    /// A writer that chunk-encodes when `framing` is [`Framing::Chunked`]
    /// and passes bytes through otherwise.
    pub(crate) fn new(inner: W, framing: Framing) -> Self {
        BodyWriter {
            inner,
            chunked: framing == Framing::Chunked,
            frame: Vec::new(),
        }
    }

    /// Writes all of `data` (one chunk when chunked; empty data writes nothing).
    pub(crate) fn write_payload(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.chunked {
            return self.inner.write_all(data);
        }
        // One write per chunk: separate writes of size line, data and CRLF
        // would leave small segments waiting on the peer's delayed ACK.
        self.frame.clear();
        write!(self.frame, "{:x}\r\n", data.len())?;
        self.frame.extend_from_slice(data);
        self.frame.extend_from_slice(b"\r\n");
        self.inner.write_all(&self.frame)
    }

    /// Ends the body (the last chunk when chunked) and flushes.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.inner.write_all(b"0\r\n\r\n")?;
        }
        self.inner.flush()
    }
}

/// Streams a whole body from `body` to `out`; returns the payload length.
pub(crate) fn copy_body<R: BufRead, W: Write>(
    body: &mut BodyReader<'_, R>,
    out: &mut BodyWriter<W>,
) -> io::Result<u64> {
    let mut buf = vec![0; COPY_BUF];
    let mut total = 0;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            out.finish()?;
            return Ok(total);
        }
        out.write_payload(&buf[..n])?;
        total += n as u64;
    }
}

/// Decodes `%XX` escapes and `+` (as a space) of a query component.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(raw: &[u8], framing: Framing) -> (Vec<u8>, Vec<u8>) {
        let mut reader = io::BufReader::new(raw);
        let mut out = Vec::new();
        BodyReader::new(&mut reader, framing)
            .read_to_end(&mut out)
            .unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        (out, rest)
    }

    #[test]
    fn chunked_body_is_decoded_and_stops_at_its_end() {
        let raw = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            body(raw, Framing::Chunked),
            (b"hello!".to_vec(), b"NEXT".to_vec())
        );
        let (data, rest) = body(b"abcdefNEXT", Framing::Length(6));
        assert_eq!(
            (data.as_slice(), rest.as_slice()),
            (&b"abcdef"[..], &b"NEXT"[..])
        );
    }

    #[test]
    fn short_fixed_body_is_an_eof_error() {
        let mut reader = io::BufReader::new(&b"abc"[..]);
        let err = BodyReader::new(&mut reader, Framing::Length(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunked_writer_round_trips() {
        let mut wire = Vec::new();
        let mut writer = BodyWriter::new(&mut wire, Framing::Chunked);
        writer.write_payload(b"hello ").unwrap();
        writer.write_payload(b"world").unwrap();
        writer.finish().unwrap();
        assert_eq!(body(&wire, Framing::Chunked).0, b"hello world");
    }

    #[test]
    fn heads_parse_and_frame() {
        let raw = b"\r\nHEAD /v2/ HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n";
        let head = read_head(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(head.request_line().unwrap(), ("HEAD", "/v2/", "HTTP/1.1"));
        assert!(head.wants_close());
        assert_eq!(read_head(&mut &b""[..]).unwrap(), None);
        let resp = Head {
            start: "HTTP/1.1 200 OK".into(),
            headers: vec![("Content-Length".into(), "9".into())],
        };
        assert_eq!(response_framing(&resp, "HEAD").unwrap(), Framing::Empty);
        assert_eq!(response_framing(&resp, "GET").unwrap(), Framing::Length(9));
        let close = Head::new("HTTP/1.1 200 OK");
        assert_eq!(
            response_framing(&close, "GET").unwrap(),
            Framing::UntilClose
        );
        assert_eq!(request_framing(&close).unwrap(), Framing::Empty);
    }

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(
            percent_decode("repository%3Afoo%2Fbar%3Apull%2Cpush+x%zz"),
            "repository:foo/bar:pull,push x%zz"
        );
    }
}
