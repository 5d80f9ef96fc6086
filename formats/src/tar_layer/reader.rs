//! [`TarLayer`]: the entries of an uncompressed tar stream, one at a time, with extension
//! headers (PAX, GNU long names) applied, sparse maps decoded, paths cleaned and whiteouts
//! classified. Payloads are streamed, never held.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;

use super::header::{BLOCK, RawHeader, is_zero_block, parse_header, parse_sparse_extension};
use super::path::{clean_path, whiteout_kind};
use super::sparse::{PaxSparse, decimal, parse_payload_map, validate};
use super::{Entry, EntryKind, Limits, Position, SparseSegment, TarLayerError, Timestamp};

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
    /// When headers are kept (the eStargz converter copies them): the header blocks of
    /// the entry being read, as read.
    raw: Option<Vec<u8>>,
}

/// One entry's header as the archive states it, extension headers applied, before path
/// cleaning and classification: what [`TarLayer::next_entry`] builds an [`Entry`] from,
/// and what the eStargz converter reads (so the two cannot read one layer two ways).
#[derive(Debug)]
pub(crate) struct Header {
    /// The header blocks as read (global and per-entry extension headers with their data,
    /// the entry's own header, old-GNU sparse extension blocks); empty unless kept.
    pub(crate) raw: Vec<u8>,
    /// The entry type: `'0'` or `'7'` (files, old-GNU sparse `'S'` included), `'1'` to
    /// `'6'`; the legacy `\0` is `'5'` when the name ends in `/`, `'0'` otherwise.
    pub(crate) typeflag: u8,
    /// The effective name and link target, as stored (not cleaned).
    pub(crate) name: Vec<u8>,
    pub(crate) link: Vec<u8>,
    /// Owner and group names.
    pub(crate) uname: Vec<u8>,
    pub(crate) gname: Vec<u8>,
    /// The file's size (a sparse file's full size); 0 for every other type.
    pub(crate) size: u64,
    /// The mode field as stored (non-negative; may carry file-type bits).
    pub(crate) mode: i64,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: Timestamp,
    pub(crate) atime: Option<Timestamp>,
    /// Device numbers (0 unless a device).
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    /// `SCHILY.xattr.*` records in archive order.
    pub(crate) xattrs: Vec<(OsString, Vec<u8>)>,
    /// A sparse file's map; `None` when the payload is the file.
    pub(crate) sparse: Option<Vec<SparseSegment>>,
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
            raw: None,
        }
    }

    /// Keeps each entry's header blocks (extension headers and their data included) in
    /// [`Header::raw`], for a caller that copies them.
    pub(crate) fn keep_headers(mut self) -> Self {
        self.raw = Some(Vec::new());
        self
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
        if let Some(raw) = &mut self.raw {
            raw.extend_from_slice(&data);
        }
        data.truncate(size as usize);
        Ok(data)
    }

    /// The next entry, or `None` after the end-of-archive marker (or a clean end of
    /// stream at an entry boundary, which Go's reader accepts too). Skips whatever is left
    /// of the previous entry's payload.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarLayerError> {
        match self.next_header()? {
            Some(h) => self.entry(h).map(Some),
            None => Ok(None),
        }
    }

    /// The next entry's [`Header`]: extension headers read and applied, names, xattrs and
    /// the sparse map bounded and checked, the payload positioned; `None` at the end of the
    /// archive. [`TarLayer::next_entry`] is this plus path cleaning and classification.
    pub(crate) fn next_header(&mut self) -> Result<Option<Header>, TarLayerError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        self.in_entry = false;
        if let Some(raw) = &mut self.raw {
            raw.clear();
        }
        let mut ext = Extensions::default();
        let mut pending_extension = false;
        loop {
            let Some(block) = self.header_block()? else {
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
                // Global PAX headers are ignored, as containerd ignores them (when headers
                // are kept, its bytes go with the next entry's).
                b'g' => {
                    self.read_extension(header.size)?;
                    continue;
                }
                _ => return self.header(header, ext).map(Some),
            }
            pending_extension = true;
        }
    }

    /// Reads a block of the header area, keeping its bytes when headers are kept.
    fn header_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarLayerError> {
        let block = self.read_block()?;
        if let (Some(raw), Some(b)) = (&mut self.raw, &block) {
            raw.extend_from_slice(b);
        }
        Ok(block)
    }

    /// Applies the extensions to the entry's own header and positions the payload.
    fn header(&mut self, h: RawHeader, ext: Extensions) -> Result<Header, TarLayerError> {
        let mut name = h.name;
        let mut link = h.link;
        let (mut uname, mut gname) = (h.uname, h.gname);
        let mut size = h.size as u64;
        let (mut uid, mut gid) = (h.uid, h.gid);
        let mut mtime = Timestamp {
            secs: h.mtime,
            nanos: 0,
        };
        let mut atime = h.atime.map(|secs| Timestamp { secs, nanos: 0 });
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparse::default();
        self.last =
            Some(String::from_utf8_lossy(ext.long_name.as_ref().unwrap_or(&name)).into_owned());
        self.in_entry = true;
        for (key, value) in ext.pax {
            // As in Go's archive/tar, a record with an empty value leaves the header's field
            // as it is; an xattr may still be empty (containerd sets it from PAXRecords).
            if value.is_empty() && !key.starts_with(b"SCHILY.xattr.") {
                continue;
            }
            let text = || String::from_utf8_lossy(&value).into_owned();
            let number =
                |what: &str| decimal(&text()).map_err(|e| self.invalid(format!("PAX {what}: {e}")));
            match key.as_slice() {
                b"path" => name = value,
                b"linkpath" => link = value,
                b"uname" => uname = value,
                b"gname" => gname = value,
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
        // GNU long names win over PAX `path`/`linkpath`, as in Go's archive/tar (which
        // applies them after the PAX records), and a PAX sparse file's real name over both.
        if let Some(long) = ext.long_name {
            name = long;
        }
        if let Some(long) = ext.long_link {
            link = long;
        }
        if let Some(real) = sparse.name.take() {
            name = real;
        }
        self.last = Some(String::from_utf8_lossy(&name).into_owned());
        for (what, bytes) in [
            ("path", &name),
            ("link target", &link),
            ("user name", &uname),
            ("group name", &gname),
        ] {
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
        // The legacy `\0` type is a directory when the name ends in `/`, as in Go.
        let typeflag = match h.typeflag {
            0 if name.ends_with(b"/") => b'5',
            0 | b'S' => b'0',
            t => t,
        };
        let (mut dev_major, mut dev_minor) = (0, 0);
        match typeflag {
            b'0' | b'7' | b'1' | b'2' | b'5' | b'6' => {}
            b'3' | b'4' => {
                dev_major = u32::try_from(h.dev_major).map_err(|_| {
                    self.invalid(format!("device major {} is out of range", h.dev_major))
                })?;
                dev_minor = u32::try_from(h.dev_minor).map_err(|_| {
                    self.invalid(format!("device minor {} is out of range", h.dev_minor))
                })?;
            }
            other => {
                return Err(self.invalid(format!("unsupported entry type {:?}", other as char)));
            }
        }
        let is_file = matches!(typeflag, b'0' | b'7');
        // Header-only types have no payload whatever their size field says (as in Go).
        let mut payload = if is_file { size } else { 0 };
        let mut segments = None;
        if is_file {
            if let Some(gnu) = h.gnu_sparse {
                let mut map = gnu.segments;
                let mut extended = gnu.extended;
                while extended {
                    let block = self
                        .header_block()?
                        .ok_or_else(|| TarLayerError::Truncated {
                            at: self.position(),
                        })?;
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
        self.remaining = payload;
        self.padding = pad(payload);
        Ok(Header {
            raw: self.raw.as_mut().map(std::mem::take).unwrap_or_default(),
            typeflag,
            name,
            link,
            uname,
            gname,
            size,
            mode: h.mode,
            uid: uid as u64,
            gid: gid as u64,
            mtime,
            atime,
            dev_major,
            dev_minor,
            xattrs,
            sparse: segments,
        })
    }

    /// Cleans the header's paths and classifies it (whiteouts included).
    fn entry(&self, h: Header) -> Result<Entry, TarLayerError> {
        let path = clean_path(&h.name);
        let mut size = h.size;
        let mut segments = h.sparse;
        let mut kind = match h.typeflag {
            b'0' | b'7' => EntryKind::File,
            b'5' => EntryKind::Dir,
            b'1' => {
                let target = clean_path(&h.link);
                if target.as_os_str().is_empty() {
                    return Err(self.invalid("hard link to the root directory"));
                }
                EntryKind::Hardlink { target }
            }
            b'2' => EntryKind::Symlink {
                target: OsString::from_vec(h.link),
            },
            b'3' => EntryKind::CharDevice {
                major: h.dev_major,
                minor: h.dev_minor,
            },
            b'4' => EntryKind::BlockDevice {
                major: h.dev_major,
                minor: h.dev_minor,
            },
            b'6' => EntryKind::Fifo,
            other => {
                return Err(self.invalid(format!("unsupported entry type {:?}", other as char)));
            }
        };
        if let Some(whiteout) =
            whiteout_kind(path.as_os_str().as_encoded_bytes()).map_err(|e| self.invalid(e))?
        {
            kind = whiteout;
            size = 0;
            segments = None;
        }
        Ok(Entry {
            path,
            kind,
            mode: (h.mode & 0o7777) as u32,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            atime: h.atime,
            size,
            xattrs: h.xattrs,
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
