//! The converter's view of a source tar: the unpacker's reader ([`TarLayer`]: one parser
//! for headers, PAX records, GNU long names and sparse maps, with its bounds), asked to
//! keep each entry's header blocks as read, so the converter copies them unchanged into
//! the eStargz output while knowing each entry's effective name, link, size, owners, times
//! and xattrs exactly as the unpacker sees them.

use std::collections::BTreeMap;

use super::EstargzError;
use crate::tar_layer::{Header, Limits, TarLayer, TarLayerError, Timestamp};

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
/// and metadata; the payload is then read through [`SourceTar::read_payload`].
pub(crate) struct SourceTar<R> {
    tar: TarLayer<R>,
}

fn bad(msg: impl Into<String>) -> EstargzError {
    EstargzError::InvalidTar(msg.into())
}

fn from_tar(e: TarLayerError) -> EstargzError {
    match e {
        TarLayerError::Read { at, source } => {
            EstargzError::io(format!("reading the source tar ({at})"), source)
        }
        other => bad(other.to_string()),
    }
}

fn utf8(entry: &str, field: &str, b: Vec<u8>) -> Result<String, EstargzError> {
    String::from_utf8(b).map_err(|e| {
        bad(format!(
            "entry {entry:?}: {field} {:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })
}

/// The TOC's whole-second modification time: the nearest second, halves away from zero.
fn round_to_second(t: Timestamp) -> i64 {
    let up = if t.secs >= 0 {
        t.nanos >= 500_000_000
    } else {
        t.nanos > 500_000_000
    };
    t.secs.saturating_add(i64::from(up))
}

impl<R: std::io::Read> SourceTar<R> {
    pub(crate) fn new(r: R) -> Self {
        Self {
            tar: TarLayer::new(r, Limits::default()).keep_headers(),
        }
    }

    /// The next entry's raw header blocks and metadata; `None` at the end of the archive.
    /// Skips whatever the caller left unread of the previous payload.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Meta)>, EstargzError> {
        let Some(h) = self.tar.next_header().map_err(from_tar)? else {
            return Ok(None);
        };
        let Header {
            raw,
            typeflag,
            name,
            link,
            uname,
            gname,
            size,
            mode,
            uid,
            gid,
            mtime,
            atime: _,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
        } = h;
        let name = String::from_utf8(name).map_err(|e| {
            bad(format!(
                "name {:?} is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })?;
        if sparse.is_some() {
            // eStargz has no holes; expanding them would need new headers, not copies.
            return Err(bad(format!(
                "entry {name:?}: sparse files cannot be converted to eStargz"
            )));
        }
        let mut attrs = BTreeMap::new();
        for (k, v) in xattrs {
            let k = k.into_string().map_err(|k| {
                bad(format!(
                    "entry {name:?}: xattr name {:?} is not UTF-8",
                    k.to_string_lossy()
                ))
            })?;
            attrs.insert(k, v);
        }
        let meta = Meta {
            typeflag,
            link: utf8(&name, "link name", link)?,
            size,
            mode: mode as u32,
            uid,
            gid,
            uname: utf8(&name, "user name", uname)?,
            gname: utf8(&name, "group name", gname)?,
            mtime: round_to_second(mtime),
            dev_major,
            dev_minor,
            xattrs: attrs,
            name,
        };
        Ok(Some((raw, meta)))
    }

    /// Reads up to `buf.len()` bytes of the current entry's payload.
    pub(crate) fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize, EstargzError> {
        self.tar.read_data(buf).map_err(from_tar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_to_the_nearest_second() {
        let t = |secs, nanos| round_to_second(Timestamp { secs, nanos });
        assert_eq!(t(12, 500_000_000), 13);
        assert_eq!(t(12, 490_000_000), 12);
        assert_eq!(t(-3, 0), -3);
        // -12.5 and -12.4
        assert_eq!(t(-13, 500_000_000), -13);
        assert_eq!(t(-13, 600_000_000), -12);
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

    /// One header block with its checksum.
    fn block(kind: u8, name: &str, size: u64) -> [u8; 512] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        *h.as_bytes()
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(512) * 512, 0);
        v
    }

    /// A PAX `path` and `size`, then a GNU long name, then a header whose own size field
    /// says 0 and whose name is short: the payload is 5 bytes (PAX), the name the GNU one
    /// (Go's archive/tar applies GNU long names after PAX records). A reader that took
    /// the header's size would parse "hello" as the next header; one that took the PAX
    /// path would name the file `pax/loses`.
    fn tricky_layer(long: &str) -> (Vec<u8>, usize) {
        let mut pax = Vec::new();
        for (k, v) in [
            ("path", "pax/loses"),
            ("size", "5"),
            ("mtime", ""),
            ("SCHILY.xattr.user.empty", ""),
        ] {
            let rec = format!(" {k}={v}\n");
            // The length counts its own digits.
            let len = (1..5)
                .map(|d| rec.len() + d)
                .find(|n| n.to_string().len() + rec.len() == *n)
                .unwrap();
            pax.extend_from_slice(format!("{len}{rec}").as_bytes());
        }
        let mut layer = Vec::new();
        layer.extend_from_slice(&block(b'x', "PaxHeaders/x", pax.len() as u64));
        layer.extend_from_slice(&padded(&pax));
        let mut name = long.as_bytes().to_vec();
        name.push(0);
        layer.extend_from_slice(&block(b'L', "././@LongLink", name.len() as u64));
        layer.extend_from_slice(&padded(&name));
        layer.extend_from_slice(&block(b'0', "short", 0));
        let headers = layer.len();
        layer.extend_from_slice(&padded(b"hello"));
        layer.extend_from_slice(&block(b'0', "after", 3));
        layer.extend_from_slice(&padded(b"end"));
        layer.extend_from_slice(&[0u8; 1024]);
        (layer, headers)
    }

    #[test]
    fn converter_and_unpacker_read_a_layer_the_same_way() {
        let long = format!("dir/{}/from-gnu", "g".repeat(150));
        let (layer, headers) = tricky_layer(&long);

        // The unpacker's view.
        let mut unpacked = Vec::new();
        let mut tl = TarLayer::new(&layer[..], Limits::default());
        while let Some(e) = tl.next_entry().unwrap() {
            let mut data = vec![0u8; tl.remaining() as usize];
            tl.read_data_exact(&mut data).unwrap();
            if e.size == 5 {
                // An empty PAX mtime keeps the header's; an empty xattr is still an xattr.
                assert_eq!(e.mtime.secs, 1_700_000_000);
                assert_eq!(e.xattrs, [("user.empty".into(), Vec::new())]);
            }
            unpacked.push((e.path.to_string_lossy().into_owned(), e.size, data));
        }
        let expected = vec![
            (long.clone(), 5, b"hello".to_vec()),
            ("after".to_string(), 3, b"end".to_vec()),
        ];
        assert_eq!(unpacked, expected);

        // The converter's view, header bytes included.
        let mut src = SourceTar::new(&layer[..]);
        let mut converted = Vec::new();
        let mut raws = Vec::new();
        while let Some((raw, m)) = src.next_entry().unwrap() {
            let mut data = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let n = src.read_payload(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            if m.size == 5 {
                assert_eq!(m.mtime, 1_700_000_000);
                assert_eq!(
                    m.xattrs,
                    BTreeMap::from([("user.empty".into(), Vec::new())])
                );
            }
            converted.push((m.name, m.size, data));
            raws.push(raw);
        }
        assert_eq!(converted, expected);
        assert_eq!(raws[0], layer[..headers]);

        // And what the converted blob says.
        let mut blob = Vec::new();
        crate::estargz::convert(
            &layer[..],
            &mut blob,
            &crate::estargz::WriteOptions::default(),
        )
        .unwrap();
        let r = crate::estargz::EstargzReader::open(blob, None).unwrap();
        assert_eq!(r.read_file(&long).unwrap(), b"hello");
        assert_eq!(r.read_file("after").unwrap(), b"end");
        assert!(r.read_file("pax/loses").is_err());
    }

    #[test]
    fn sparse_entries_are_refused_not_read_packed() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("GNU.sparse.major", &b"0"[..]),
            ("GNU.sparse.minor", &b"1"[..]),
            ("GNU.sparse.name", &b"real"[..]),
            ("GNU.sparse.size", &b"100"[..]),
            ("GNU.sparse.map", &b"10,3"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "GNUSparseFile.0/real", &b"abc"[..])
            .unwrap();
        let data = b.into_inner().unwrap();
        let e = TarLayer::new(&data[..], Limits::default())
            .next_entry()
            .unwrap()
            .unwrap();
        assert_eq!((e.path.to_str(), e.size), (Some("real"), 100));
        let err = SourceTar::new(&data[..]).next_entry().unwrap_err();
        assert!(err.to_string().contains("sparse"), "{err}");
    }
}
