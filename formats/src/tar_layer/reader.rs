//! [`TarLayer`]: the entries of an uncompressed tar stream, one at a time, with extension
//! headers (PAX, GNU long names) applied, sparse maps decoded, paths cleaned and whiteouts
//! classified. Payloads are streamed, never held.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;

use super::header::{BLOCK, RawHeader, is_zero_block, parse_header, parse_sparse_extension};
use super::path::{clean_path, whiteout_kind};
use super::sparse::{PaxSparse, decimal, parse_payload_map, validate};
use super::{Entry, EntryKind, Limits, Position, TarLayerError, Timestamp};

/// Reads the entries of an uncompressed tar layer from `R`: call [`TarLayer::next_entry`]
/// until it returns `None`, reading each file's payload with [`TarLayer::read_data`] in
/// between (what is left unread is skipped), then [`TarLayer::finish`] to consume what
/// follows the end-of-archive marker.
#[derive(Debug)]
pub struct TarLayer<R> {
    r: R,
    limits: Limits,
    /// Payload bytes of the current entry not yet read, then its padding to a block.
    remaining: u64,
    padding: u64,
    /// The current entry's path (while its payload is read) or the last one's.
    last: Option<String>,
    in_entry: bool,
    done: bool,
}

/// One PAX record: key and value bytes.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// Extension records collected before an entry's own header.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Vec<PaxRecord>,
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

/// Splits PAX extended header data into (key, value) records: `"<len> <key>=<value>\n"`.
fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // Some writers pad the data with NULs.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len_text =
            std::str::from_utf8(&rest[..space]).map_err(|_| "PAX record length is not a number")?;
        let len = usize::try_from(decimal(len_text)?).map_err(|_| "PAX record length overflows")?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("malformed PAX record of length {len}"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty key".into());
        }
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// PAX times: decimal seconds with an optional fraction, kept to the nanosecond.
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (negative, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(match (negative, nanos) {
        (false, _) => Timestamp { secs, nanos },
        (true, 0) => Timestamp {
            secs: -secs,
            nanos: 0,
        },
        (true, n) => Timestamp {
            secs: -secs - 1,
            nanos: 1_000_000_000 - n,
        },
    })
}

impl<R: Read> TarLayer<R> {
    /// Reads entries from `r`, an uncompressed tar stream.
    pub fn new(r: R, limits: Limits) -> Self {
        Self {
            r,
            limits,
            remaining: 0,
            padding: 0,
            last: None,
            in_entry: false,
            done: false,
        }
    }

    /// Where the reader is, for errors.
    fn position(&self) -> Position {
        if self.done {
            return Position::Trailer;
        }
        match (&self.last, self.in_entry) {
            (Some(name), true) => Position::Entry(name.clone()),
            (Some(name), false) => Position::After(name.clone()),
            (None, _) => Position::Start,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> TarLayerError {
        TarLayerError::Invalid {
            at: self.position(),
            reason: reason.into(),
        }
    }

    fn io_error(&self, e: io::Error) -> TarLayerError {
        TarLayerError::from_io(self.position(), e)
    }

    /// Fills `buf` completely; `Ok(false)` when the stream ends before its first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool, TarLayerError> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarLayerError::Truncated {
                        at: self.position(),
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(true)
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarLayerError> {
        let mut block = [0u8; BLOCK];
        Ok(self.read_full(&mut block)?.then_some(block))
    }

    fn must_read_block(&mut self) -> Result<[u8; BLOCK], TarLayerError> {
        self.read_block()?.ok_or_else(|| TarLayerError::Truncated {
            at: self.position(),
        })
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarLayerError> {
        let mut buf = [0u8; 16 << 10];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            if !self.read_full(&mut buf[..want])? {
                return Err(TarLayerError::Truncated {
                    at: self.position(),
                });
            }
            n -= want as u64;
        }
        Ok(())
    }

    fn read_extension(&mut self, size: i64) -> Result<Vec<u8>, TarLayerError> {
        let size = size as u64;
        if size > self.limits.max_extension {
            return Err(self.invalid(format!(
                "extension header of {size} bytes exceeds the limit of {}",
                self.limits.max_extension
            )));
        }
        let mut data = vec![0u8; (size + pad(size)) as usize];
        if !self.read_full(&mut data)? && !data.is_empty() {
            return Err(TarLayerError::Truncated {
                at: self.position(),
            });
        }
        data.truncate(size as usize);
        Ok(data)
    }

    /// The next entry, or `None` after the end-of-archive marker (or a clean end of
    /// stream at an entry boundary, which Go's reader accepts too). Skips whatever is left
    /// of the previous entry's payload.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarLayerError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        self.in_entry = false;
        let mut ext = Extensions::default();
        let mut pending_extension = false;
        loop {
            let Some(block) = self.read_block()? else {
                if pending_extension {
                    return Err(TarLayerError::Truncated {
                        at: self.position(),
                    });
                }
                self.done = true;
                return Ok(None);
            };
            if is_zero_block(&block) {
                if pending_extension {
                    return Err(self.invalid("end-of-archive marker after an extension header"));
                }
                // The marker is two zero blocks; a lone one at the end of the stream is accepted.
                if let Some(second) = self.read_block()?
                    && !is_zero_block(&second)
                {
                    return Err(self.invalid("a header follows a single zero block"));
                }
                self.done = true;
                return Ok(None);
            }
            let header = parse_header(&block).map_err(|e| self.invalid(e))?;
            match header.typeflag {
                b'L' => ext.long_name = Some(trim_nul(self.read_extension(header.size)?)),
                b'K' => ext.long_link = Some(trim_nul(self.read_extension(header.size)?)),
                b'x' => {
                    let data = self.read_extension(header.size)?;
                    ext.pax
                        .extend(pax_records(&data).map_err(|e| self.invalid(e))?);
                }
                // Global PAX headers are ignored, as containerd ignores them.
                b'g' => {
                    self.read_extension(header.size)?;
                    continue;
                }
                _ => return self.entry(header, ext).map(Some),
            }
            pending_extension = true;
        }
    }

    /// Builds the entry from its header and extensions and positions the payload.
    fn entry(&mut self, h: RawHeader, ext: Extensions) -> Result<Entry, TarLayerError> {
        let mut name = ext.long_name.unwrap_or(h.name);
        let mut link = ext.long_link.unwrap_or(h.link);
        let mut size = h.size as u64;
        let (mut uid, mut gid) = (h.uid, h.gid);
        let mut mtime = Timestamp {
            secs: h.mtime,
            nanos: 0,
        };
        let mut atime = h.atime.map(|secs| Timestamp { secs, nanos: 0 });
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparse::default();
        self.last = Some(String::from_utf8_lossy(&name).into_owned());
        self.in_entry = true;
        for (key, value) in ext.pax {
            let text = || String::from_utf8_lossy(&value).into_owned();
            let number =
                |what: &str| decimal(&text()).map_err(|e| self.invalid(format!("PAX {what}: {e}")));
            match key.as_slice() {
                b"path" => name = value,
                b"linkpath" => link = value,
                b"size" => size = number("size")?,
                b"uid" => uid = i64::try_from(number("uid")?).unwrap_or(i64::MAX),
                b"gid" => gid = i64::try_from(number("gid")?).unwrap_or(i64::MAX),
                b"mtime" => {
                    mtime = pax_time(&value).ok_or_else(|| {
                        self.invalid(format!("PAX mtime {:?} is malformed", text()))
                    })?
                }
                b"atime" => {
                    atime = Some(pax_time(&value).ok_or_else(|| {
                        self.invalid(format!("PAX atime {:?} is malformed", text()))
                    })?)
                }
                b"GNU.sparse.major" => sparse.major = Some(text()),
                b"GNU.sparse.minor" => sparse.minor = Some(text()),
                b"GNU.sparse.name" => sparse.name = Some(value),
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                    sparse.real_size = Some(number("sparse size")?)
                }
                b"GNU.sparse.map" => sparse.map = Some(text()),
                b"GNU.sparse.offset" => sparse.offsets.push(number("sparse offset")?),
                b"GNU.sparse.numbytes" => sparse.lengths.push(number("sparse length")?),
                _ => {
                    if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                        if attr.is_empty() || attr.len() > 255 {
                            return Err(self.invalid(format!(
                                "xattr name {:?} is empty or too long",
                                String::from_utf8_lossy(attr)
                            )));
                        }
                        if value.len() > self.limits.max_xattr_value {
                            return Err(self.invalid(format!(
                                "xattr {} value of {} bytes exceeds the limit of {}",
                                String::from_utf8_lossy(attr),
                                value.len(),
                                self.limits.max_xattr_value
                            )));
                        }
                        xattrs.push((OsString::from_vec(attr.to_vec()), value));
                    }
                }
            }
        }
        if let Some(real) = sparse.name.take() {
            name = real;
        }
        self.last = Some(String::from_utf8_lossy(&name).into_owned());
        for (what, bytes) in [("path", &name), ("link target", &link)] {
            if bytes.contains(&0) {
                return Err(self.invalid(format!("{what} contains a NUL byte")));
            }
            if bytes.len() > self.limits.max_name {
                return Err(self.invalid(format!(
                    "{what} of {} bytes exceeds the limit of {}",
                    bytes.len(),
                    self.limits.max_name
                )));
            }
        }
        if uid < 0 || gid < 0 || h.mode < 0 {
            return Err(self.invalid("negative uid, gid or mode"));
        }
        let device = |this: &Self| -> Result<(u32, u32), TarLayerError> {
            let major = u32::try_from(h.dev_major).map_err(|_| {
                this.invalid(format!("device major {} is out of range", h.dev_major))
            })?;
            let minor = u32::try_from(h.dev_minor).map_err(|_| {
                this.invalid(format!("device minor {} is out of range", h.dev_minor))
            })?;
            Ok((major, minor))
        };
        let path = clean_path(&name);
        let mut kind = match h.typeflag {
            b'0' | b'7' | b'S' => EntryKind::File,
            0 if name.ends_with(b"/") => EntryKind::Dir,
            0 => EntryKind::File,
            b'5' => EntryKind::Dir,
            b'1' => {
                let target = clean_path(&link);
                if target.as_os_str().is_empty() {
                    return Err(self.invalid("hard link to the root directory"));
                }
                EntryKind::Hardlink { target }
            }
            b'2' => EntryKind::Symlink {
                target: OsString::from_vec(link),
            },
            b'3' => {
                let (major, minor) = device(self)?;
                EntryKind::CharDevice { major, minor }
            }
            b'4' => {
                let (major, minor) = device(self)?;
                EntryKind::BlockDevice { major, minor }
            }
            b'6' => EntryKind::Fifo,
            other => {
                return Err(self.invalid(format!("unsupported entry type {:?}", other as char)));
            }
        };
        let mut payload = if kind == EntryKind::File { size } else { 0 };
        let mut segments = None;
        if kind == EntryKind::File {
            if let Some(gnu) = h.gnu_sparse {
                let mut map = gnu.segments;
                let mut extended = gnu.extended;
                while extended {
                    let block = self.must_read_block()?;
                    let (more, next) =
                        parse_sparse_extension(&block).map_err(|e| self.invalid(e))?;
                    map.extend(more);
                    if map.len() > self.limits.max_sparse_segments {
                        return Err(self.invalid(format!(
                            "sparse map has more than {} segments",
                            self.limits.max_sparse_segments
                        )));
                    }
                    extended = next;
                }
                size = u64::try_from(gnu.real_size)
                    .map_err(|_| self.invalid("negative sparse file size"))?;
                segments = Some(map);
            } else if sparse.present() {
                let real = sparse
                    .real_size
                    .ok_or_else(|| self.invalid("sparse entry without GNU.sparse.size"))?;
                let map = if sparse.map_in_payload() {
                    let max = self.limits.max_sparse_segments;
                    let (map, blocks) = parse_payload_map(
                        || match self.read_block() {
                            Ok(Some(b)) => Ok(b),
                            Ok(None) => Err("stream truncated in the sparse map".to_string()),
                            Err(e) => Err(e.to_string()),
                        },
                        max,
                    )
                    .map_err(|e| self.invalid(e))?;
                    payload = payload
                        .checked_sub(blocks * BLOCK as u64)
                        .ok_or_else(|| self.invalid("sparse map is larger than the entry"))?;
                    map
                } else {
                    sparse
                        .map_from_records(self.limits.max_sparse_segments)
                        .map_err(|e| self.invalid(e))?
                };
                size = real;
                segments = Some(map);
            }
            if let Some(map) = &segments {
                validate(map, size, payload).map_err(|e| self.invalid(e))?;
            }
        } else {
            size = 0;
        }
        if let Some(whiteout) =
            whiteout_kind(path.as_os_str().as_encoded_bytes()).map_err(|e| self.invalid(e))?
        {
            kind = whiteout;
            size = 0;
            segments = None;
        }
        self.remaining = payload;
        self.padding = pad(payload);
        Ok(Entry {
            path,
            kind,
            mode: (h.mode & 0o7777) as u32,
            uid: uid as u64,
            gid: gid as u64,
            mtime,
            atime,
            size,
            xattrs,
            sparse: segments,
        })
    }
}

impl<R: Read> TarLayer<R> {
    /// Payload bytes of the current entry not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads up to `buf.len()` bytes of the current file's payload (for a sparse file, its
    /// data segments back to back); 0 once the payload is exhausted.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarLayerError> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.r.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(TarLayerError::Truncated {
                        at: self.position(),
                    });
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Reads exactly `buf.len()` bytes of the payload.
    pub fn read_data_exact(&mut self, buf: &mut [u8]) -> Result<(), TarLayerError> {
        if buf.len() as u64 > self.remaining {
            return Err(TarLayerError::Truncated {
                at: self.position(),
            });
        }
        let mut got = 0;
        while got < buf.len() {
            got += self.read_data(&mut buf[got..])?;
        }
        Ok(())
    }

    /// Reads whatever entries are left, then everything after the end-of-archive marker
    /// (containerd's diffID covers the whole stream), and returns the underlying reader.
    pub fn finish(mut self) -> Result<R, TarLayerError> {
        while self.next_entry()?.is_some() {}
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => return Ok(self.r),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }
}
