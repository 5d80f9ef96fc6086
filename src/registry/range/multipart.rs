//! Parsing `multipart/byteranges` answers to multi-range requests (RFC 9110 §14.6): the
//! boundary from `Content-Type`, then parts that each carry their own `Content-Range`.
//!
//! The body is parsed from memory (the caller reads it with a bound derived from the
//! ranges asked for), so a part's data is a zero-copy slice of the body. A body that
//! stops early yields the parts that arrived whole, so only the rest has to be asked for
//! again; anything malformed before that point is an error.

use std::ops::Range;

use bytes::Bytes;

use crate::registry::parse_content_range;

/// The longest boundary accepted (RFC 2046 allows 70 characters; Go uses 60).
const MAX_BOUNDARY: usize = 200;
/// The most bytes of preamble, or of one part's header block, accepted.
pub(super) const MAX_HEADER_BYTES: usize = 8 << 10;
/// What a part may add to the body besides its data (delimiter, headers, line breaks):
/// with [`MAX_HEADER_BYTES`] of slack, the bound on a body is the data asked for plus
/// this much per part.
pub(super) const PART_OVERHEAD: u64 = 1024;

/// One part of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// The bytes of the blob it holds.
    pub(super) range: Range<u64>,
    /// The blob's size as the part states it, if it does.
    pub(super) total: Option<u64>,
    /// The bytes.
    pub(super) data: Bytes,
}

/// The parts found in a body.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    /// Every part that arrived whole, in body order.
    pub(super) parts: Vec<Part>,
    /// Whether the closing delimiter was reached (else the body stopped early).
    pub(super) complete: bool,
}

/// The boundary of a `multipart/byteranges` Content-Type, or `None` for any other type.
pub(super) fn boundary(content_type: &str) -> Option<String> {
    let mut fields = content_type.split(';');
    if !fields
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/byteranges")
    {
        return None;
    }
    let value = fields.find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (!value.is_empty() && value.len() <= MAX_BOUNDARY && !value.contains(['\r', '\n']))
        .then(|| value.to_owned())
}

/// Whether `body[pos..]` starts with `pat`: yes, no, or too short to tell.
#[derive(Debug, PartialEq, Eq)]
enum Prefix {
    Yes,
    No,
    Short,
}

fn prefix(body: &[u8], pos: usize, pat: &[u8]) -> Prefix {
    let rest = body.get(pos..).unwrap_or_default();
    if rest.starts_with(pat) {
        Prefix::Yes
    } else if rest.len() < pat.len() && pat.starts_with(rest) {
        Prefix::Short
    } else {
        Prefix::No
    }
}

/// The end of the line starting at `pos` (the index after its `\n`), if it ends within
/// `limit` bytes; `Ok(None)` when the body stops first.
fn line_end(body: &[u8], pos: usize, limit: usize) -> Result<Option<usize>, String> {
    let window = &body[pos..body.len().min(pos + limit)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(pos + i + 1)),
        None if window.len() < limit => Ok(None),
        None => Err(format!("part headers longer than {MAX_HEADER_BYTES} bytes")),
    }
}

/// Parses a `multipart/byteranges` body with this boundary. Errors name what is wrong.
pub(super) fn parse(body: &Bytes, boundary: &str) -> Result<Parsed, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut out = Parsed::default();
    // The first delimiter opens the body or follows a preamble line.
    let search = &body[..body.len().min(MAX_HEADER_BYTES + delim.len())];
    let mut pos = match search.windows(delim.len()).position(|w| w == delim) {
        Some(i) if i == 0 || search[i - 1] == b'\n' => i + delim.len(),
        Some(_) => return Err("the first boundary is not at the start of a line".into()),
        None if body.len() < MAX_HEADER_BYTES => return Ok(out),
        None => return Err(format!("no boundary in the first {MAX_HEADER_BYTES} bytes")),
    };
    loop {
        // After a delimiter: `--` closes the body, else (optional padding) a line break.
        match prefix(body, pos, b"--") {
            Prefix::Yes => {
                out.complete = true;
                return Ok(out);
            }
            Prefix::Short => return Ok(out),
            Prefix::No => {}
        }
        let Some(next) = line_end(body, pos, MAX_HEADER_BYTES)? else {
            return Ok(out);
        };
        if !body[pos..next]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err("unexpected bytes after a boundary".into());
        }
        pos = next;
        // The part's header block, up to an empty line.
        let block_start = pos;
        let mut content_range = None;
        loop {
            let budget = MAX_HEADER_BYTES.saturating_sub(pos - block_start);
            if budget == 0 {
                return Err(format!("part headers longer than {MAX_HEADER_BYTES} bytes"));
            }
            let Some(next) = line_end(body, pos, budget)? else {
                return Ok(out);
            };
            let line = std::str::from_utf8(&body[pos..next])
                .map_err(|_| "a part header is not text".to_owned())?
                .trim_end_matches(['\r', '\n']);
            pos = next;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed part header {line:?}"))?;
            if name.trim().eq_ignore_ascii_case("content-range") {
                content_range = Some(parse_content_range(value).ok_or_else(|| {
                    format!("part with invalid Content-Range {:?}", value.trim())
                })?);
            }
        }
        let cr = content_range.ok_or_else(|| "a part has no Content-Range".to_owned())?;
        let len =
            usize::try_from(cr.end - cr.start).map_err(|_| "a part is too large".to_owned())?;
        let Some(end) = pos.checked_add(len).filter(|&e| e <= body.len()) else {
            return Ok(out);
        };
        out.parts.push(Part {
            range: cr.start..cr.end,
            total: cr.total,
            data: body.slice(pos..end),
        });
        pos = end;
        // The data is followed by a line break and the next delimiter.
        let mut matched = false;
        for lead in [&b"\r\n"[..], b"\n"] {
            let pat = [lead, delim].concat();
            match prefix(body, pos, &pat) {
                Prefix::Yes => {
                    pos += pat.len();
                    matched = true;
                    break;
                }
                Prefix::Short => return Ok(out),
                Prefix::No => {}
            }
        }
        if !matched {
            return Err(format!(
                "the part for bytes {}..{} is not followed by the boundary (its length does not match its Content-Range)",
                cr.start, cr.end
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as Go's `http.ServeContent` writes it.
    fn body(boundary: &str, parts: &[(u64, &[u8])], total: u64) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, (start, data)) in parts.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(b"\r\n");
            }
            let end = start + data.len() as u64 - 1;
            b.extend_from_slice(
                format!("--{boundary}\r\nContent-Range: bytes {start}-{end}/{total}\r\nContent-Type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            );
            b.extend_from_slice(data);
        }
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        b
    }

    #[test]
    fn boundaries_from_content_types() {
        assert_eq!(
            boundary("multipart/byteranges; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/ByteRanges;charset=x; BOUNDARY=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("application/octet-stream"), None);
        assert_eq!(boundary("multipart/byteranges"), None);
        assert_eq!(boundary("multipart/byteranges; boundary="), None);
        assert_eq!(
            boundary(&format!(
                "multipart/byteranges; boundary={}",
                "x".repeat(201)
            )),
            None
        );
    }

    #[test]
    fn whole_bodies_parse() {
        let raw = Bytes::from(body(
            "B0undary",
            &[(0, b"0123456789"), (100, b"abc"), (50, b"\r\n--B0undary")],
            1000,
        ));
        let p = parse(&raw, "B0undary").unwrap();
        assert!(p.complete);
        let got: Vec<(Range<u64>, &[u8])> = p
            .parts
            .iter()
            .map(|p| (p.range.clone(), &p.data[..]))
            .collect();
        assert_eq!(
            got,
            [
                (0..10, &b"0123456789"[..]),
                (100..103, b"abc"),
                (50..62, b"\r\n--B0undary")
            ]
        );
        assert!(p.parts.iter().all(|p| p.total == Some(1000)));
        // A preamble and LF-only line breaks are accepted too.
        let lf = Bytes::from_static(b"preamble\n--b\nContent-Range: bytes 1-2/*\n\nxy\n--b--");
        let p = parse(&lf, "b").unwrap();
        assert!(p.complete);
        assert_eq!(
            (
                p.parts[0].range.clone(),
                &p.parts[0].data[..],
                p.parts[0].total
            ),
            (1..3, &b"xy"[..], None)
        );
    }

    #[test]
    fn cut_bodies_keep_the_parts_that_arrived_whole() {
        let full = body("bnd", &[(0, b"0123456789"), (20, b"abcdefghij")], 100);
        let first_done = full.windows(3).position(|w| w == b"abc").unwrap();
        // The closing delimiter counts once its `--` is there; the final CRLF is optional.
        let closed = full.windows(7).position(|w| w == b"--bnd--").unwrap() + 7;
        for cut in 0..full.len() {
            let p = parse(&Bytes::copy_from_slice(&full[..cut]), "bnd")
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(p.complete, cut >= closed, "cut at {cut}");
            let whole = if cut >= first_done { 1 } else { 0 };
            assert!(
                p.parts.len() <= 2 && p.parts.len() >= whole,
                "cut at {cut}: {:?}",
                p.parts
            );
            if let Some(last) = p.parts.last() {
                assert_eq!(last.data.len() as u64, last.range.end - last.range.start);
            }
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let bad_len =
            Bytes::from_static(b"--b\r\nContent-Range: bytes 0-1/10\r\n\r\nabc\r\n--b--\r\n");
        assert!(
            parse(&bad_len, "b")
                .unwrap_err()
                .contains("does not match its Content-Range")
        );
        let no_range = Bytes::from_static(b"--b\r\nContent-Type: x\r\n\r\nab\r\n--b--\r\n");
        assert_eq!(
            parse(&no_range, "b").unwrap_err(),
            "a part has no Content-Range"
        );
        let bad_range = Bytes::from_static(b"--b\r\nContent-Range: bytes 5-1/10\r\n\r\n");
        assert!(
            parse(&bad_range, "b")
                .unwrap_err()
                .contains("invalid Content-Range")
        );
        let junk = Bytes::from_static(b"--bxyz\r\n");
        assert_eq!(
            parse(&junk, "b").unwrap_err(),
            "unexpected bytes after a boundary"
        );
        let huge_header =
            Bytes::from([&b"--b\r\nX: "[..], &vec![b'a'; MAX_HEADER_BYTES + 10]].concat());
        assert!(
            parse(&huge_header, "b")
                .unwrap_err()
                .contains("headers longer than")
        );
        let no_boundary = Bytes::from(vec![b'x'; MAX_HEADER_BYTES + 100]);
        assert!(
            parse(&no_boundary, "b")
                .unwrap_err()
                .contains("no boundary")
        );
        let mid_line = Bytes::from_static(b"xx--b\r\n");
        assert!(parse(&mid_line, "b").is_err());
    }
}
