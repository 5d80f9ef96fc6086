//! A minimal streaming tar reader that keeps every header block as read, so the converter
//! can copy headers (PAX, GNU long names, everything) unchanged into the eStargz output while
//! still knowing each entry's effective name, link, size, owners, times and xattrs.
//!
//! `tar::Archive` either hides the extension headers (normal mode) or ignores what they say
//! (raw mode, e.g. a PAX `size`); we need both the bytes and their meaning.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::EstargzError;

/// Extension headers (PAX, GNU long names) larger than this are refused: they are read into
/// memory, and real ones are a few hundred bytes.
const MAX_EXTENSION_SIZE: u64 = 1 << 20;

/// The effective metadata of one tar entry, extensions applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) name: String,
    pub(crate) typeflag: u8,
    pub(crate) link: String,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) uname: String,
    pub(crate) gname: String,
    pub(crate) mtime: i64,
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    pub(crate) xattrs: BTreeMap<String, Vec<u8>>,
}

/// Reads tar entries one by one: [`SourceTar::next_entry`] returns the raw header bytes
/// and metadata; the payload is then read through [`SourceTar::payload`].
pub(crate) struct SourceTar<R> {
    r: R,
    /// Payload bytes of the current entry not yet consumed, then its padding.
    remaining: u64,
    padding: u64,
    done: bool,
}

fn bad(msg: impl Into<String>) -> EstargzError {
    EstargzError::InvalidTar(msg.into())
}

fn utf8(field: &str, b: &[u8]) -> Result<String, EstargzError> {
    String::from_utf8(b.to_vec()).map_err(|_| {
        bad(format!(
            "{field} {:?} is not UTF-8",
            String::from_utf8_lossy(b)
        ))
    })
}

fn pad(size: u64) -> u64 {
    (512 - size % 512) % 512
}

impl<R: Read> SourceTar<R> {
    pub(crate) fn new(r: R) -> Self {
        Self {
            r,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    fn read_block(&mut self, block: &mut [u8; 512]) -> Result<bool, EstargzError> {
        let mut got = 0;
        while got < 512 {
            match self.r.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(bad("truncated tar header block")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EstargzError::io("reading the source tar", e)),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), EstargzError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            match self.r.read(&mut buf[..want]) {
                Ok(0) => return Err(bad("truncated tar entry payload")),
                Ok(k) => n -= k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EstargzError::io("reading the source tar", e)),
            }
        }
        Ok(())
    }

    fn read_extension(&mut self, size: u64, raw: &mut Vec<u8>) -> Result<Vec<u8>, EstargzError> {
        if size > MAX_EXTENSION_SIZE {
            return Err(bad(format!(
                "extension header of {size} bytes exceeds {MAX_EXTENSION_SIZE}"
            )));
        }
        let total = size + pad(size);
        let mut data = vec![0u8; usize::try_from(total).unwrap_or(0)];
        self.r
            .read_exact(&mut data)
            .map_err(|_| bad("truncated tar extension header"))?;
        raw.extend_from_slice(&data);
        data.truncate(size as usize);
        Ok(data)
    }

    /// The next entry's raw header blocks and metadata; `None` at the end of the archive.
    /// Skips whatever the caller left unread of the previous payload.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Meta)>, EstargzError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut raw = Vec::with_capacity(512);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let mut block = [0u8; 512];
            if !self.read_block(&mut block)? {
                if !raw.is_empty() {
                    return Err(bad("archive ends after an extension header"));
                }
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                if !raw.is_empty() {
                    return Err(bad("end-of-archive marker after an extension header"));
                }
                // Whatever follows the end marker is not part of the layer.
                self.done = true;
                return Ok(None);
            }
            check_checksum(&block)?;
            let h = tar::Header::from_byte_slice(&block);
            let size = h
                .entry_size()
                .map_err(|e| bad(format!("bad size field: {e}")))?;
            raw.extend_from_slice(&block);
            match block[156] {
                b'L' => long_name = Some(trim_nul(self.read_extension(size, &mut raw)?)),
                b'K' => long_link = Some(trim_nul(self.read_extension(size, &mut raw)?)),
                b'x' => {
                    let data = self.read_extension(size, &mut raw)?;
                    for ext in tar::PaxExtensions::new(&data) {
                        let ext = ext.map_err(|e| bad(format!("malformed PAX record: {e}")))?;
                        let key = ext.key().map_err(|_| bad("PAX key is not UTF-8"))?;
                        pax.push((key.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
                _ => {
                    let meta = self.meta(h, size, long_name, long_link, &pax)?;
                    self.remaining = meta.size;
                    self.padding = pad(meta.size);
                    return Ok(Some((raw, meta)));
                }
            }
        }
    }

    fn meta(
        &self,
        h: &tar::Header,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: &[(String, Vec<u8>)],
    ) -> Result<Meta, EstargzError> {
        // Like Go's reader, an all-NUL (or blank) numeric field means 0.
        let blank =
            |r: std::ops::Range<usize>| h.as_bytes()[r].iter().all(|&b| b == 0 || b == b' ');
        let num = |field: &str, r: std::ops::Range<usize>, v: io::Result<u64>| {
            if blank(r) {
                Ok(0)
            } else {
                v.map_err(|e| bad(format!("bad {field} field: {e}")))
            }
        };
        let mut m = Meta {
            name: utf8(
                "name",
                &long_name.unwrap_or_else(|| h.path_bytes().into_owned()),
            )?,
            typeflag: h.as_bytes()[156],
            link: utf8(
                "link name",
                &long_link.unwrap_or_else(|| {
                    h.link_name_bytes()
                        .map(|c| c.into_owned())
                        .unwrap_or_default()
                }),
            )?,
            size,
            mode: num("mode", 100..108, h.mode().map(u64::from))? as u32,
            uid: num("uid", 108..116, h.uid())?,
            gid: num("gid", 116..124, h.gid())?,
            uname: utf8("user name", h.username_bytes().unwrap_or_default())?,
            gname: utf8("group name", h.groupname_bytes().unwrap_or_default())?,
            mtime: i64::try_from(num("mtime", 136..148, h.mtime())?).unwrap_or(i64::MAX),
            dev_major: h.device_major().ok().flatten().unwrap_or(0),
            dev_minor: h.device_minor().ok().flatten().unwrap_or(0),
            xattrs: BTreeMap::new(),
        };
        for (k, v) in pax {
            let text = || utf8(k, v);
            let int = || {
                text()?.parse::<u64>().map_err(|_| {
                    bad(format!(
                        "PAX {k} {:?} is not a number",
                        String::from_utf8_lossy(v)
                    ))
                })
            };
            match k.as_str() {
                "path" => m.name = text()?,
                "linkpath" => m.link = text()?,
                "size" => m.size = int()?,
                "uid" => m.uid = int()?,
                "gid" => m.gid = int()?,
                "uname" => m.uname = text()?,
                "gname" => m.gname = text()?,
                "mtime" => {
                    m.mtime = parse_pax_time(&text()?).ok_or_else(|| {
                        bad(format!(
                            "PAX mtime {:?} is malformed",
                            String::from_utf8_lossy(v)
                        ))
                    })?
                }
                _ => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.insert(name.to_owned(), v.clone());
                    }
                }
            }
        }
        Ok(m)
    }

    /// Reads up to `buf.len()` bytes of the current entry's payload.
    pub(crate) fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize, EstargzError> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.r.read(&mut buf[..want]) {
                Ok(0) => return Err(bad("truncated tar entry payload")),
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EstargzError::io("reading the source tar", e)),
            }
        }
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// PAX times are decimal seconds with an optional fraction; Go rounds to the second.
fn parse_pax_time(s: &str) -> Option<i64> {
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut secs: i64 = int.parse().ok()?;
    if frac.as_bytes().first().is_some_and(|&d| d >= b'5') {
        secs = secs.checked_add(1)?;
    }
    Some(if neg { -secs } else { secs })
}

fn check_checksum(block: &[u8; 512]) -> Result<(), EstargzError> {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let digits = digits.trim_start();
    let stored = u64::from_str_radix(digits, 8)
        .map_err(|_| bad("tar header has a malformed checksum field"))?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != sum {
        return Err(bad(format!(
            "tar header checksum mismatch (stored {stored}, computed {sum})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_round_like_go() {
        assert_eq!(parse_pax_time("12.5"), Some(13));
        assert_eq!(parse_pax_time("12.49"), Some(12));
        assert_eq!(parse_pax_time("-3"), Some(-3));
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    fn reads_pax_and_long_names_and_keeps_raw_bytes() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "x", &b""[..]).unwrap();
        let data = b.into_inner().unwrap();
        let mut t = SourceTar::new(&data[..]);
        let (raw, m) = t.next_entry().unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.size, m.mode), (long.as_str(), 3, 0o600));
        assert_eq!(raw.len(), 512 * 3); // longname header + its data block + the header
        let mut buf = [0u8; 8];
        assert_eq!(t.read_payload(&mut buf).unwrap(), 3);
        let (_, m) = t.next_entry().unwrap().unwrap();
        assert_eq!(m.xattrs["user.a"], b"1");
        assert!(t.next_entry().unwrap().is_none());
        let mut corrupt = data.clone();
        corrupt[0] ^= 1;
        assert!(SourceTar::new(&corrupt[..]).next_entry().is_err());
    }
}
