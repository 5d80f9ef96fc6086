//! eStargz footers: the fixed-size tail that says where the TOC starts.
//!
//! - gzip (51 bytes): an empty gzip member whose FEXTRA field holds subfield `SG` with the
//!   22-byte payload `%016xSTARGZ` (the TOC member's blob offset).
//! - legacy stargz/CRFS (47 bytes, read only): the same without the `SG` subfield header.
//! - stargz's zstd:chunked (48 bytes on disk): a zstd skippable frame whose 40-byte payload
//!   is the TOC offset, compressed and uncompressed TOC lengths (u64 LE), manifest type 1
//!   and the magic `GnUlInUx`. The offset points at the compressed TOC inside its own
//!   skippable frame (frame start + 8).
//!
//! Parsing checks every byte of the fixed layout, so random tails are never mistaken for a
//! footer.

use super::EstargzError;

/// Size of the gzip eStargz footer.
pub const GZIP_FOOTER_SIZE: usize = 51;
/// Size of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: usize = 47;
/// Size of the zstd:chunked footer on disk, skippable-frame header included.
pub const ZSTD_FOOTER_SIZE: usize = 48;
/// The most bytes a reader must fetch from the tail to find any footer.
pub const MAX_FOOTER_SIZE: usize = GZIP_FOOTER_SIZE;

/// The magic of a zstd skippable frame (the first of the 16 allowed values).
pub const SKIPPABLE_FRAME_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The zstd:chunked footer magic of stargz-snapshotter (`GnUlInUx`).
pub const ZSTD_CHUNKED_MAGIC: [u8; 8] = *b"GnUlInUx";
/// zstd:chunked manifest type written by stargz ("CRFS" TOC JSON).
pub const ZSTD_MANIFEST_TYPE_CRFS: u64 = 1;

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
// An empty final stored deflate block, then CRC32 and ISIZE of nothing.
const GZIP_TRAILER: [u8; 13] = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];

/// Which footer a blob ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterKind {
    /// The 51-byte eStargz gzip footer.
    Gzip,
    /// The 47-byte legacy stargz footer.
    LegacyGzip,
    /// stargz's zstd:chunked footer.
    ZstdChunked,
}

/// A parsed footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The footer's format.
    pub kind: FooterKind,
    /// gzip: blob offset of the member holding the TOC tar entry. zstd: blob offset of
    /// the compressed TOC (after its skippable-frame header).
    pub toc_offset: u64,
    /// zstd only: compressed TOC length.
    pub toc_compressed_len: u64,
    /// zstd only: uncompressed TOC JSON length.
    pub toc_uncompressed_len: u64,
}

impl Footer {
    /// The footer's size in the blob.
    pub fn size(&self) -> usize {
        match self.kind {
            FooterKind::Gzip => GZIP_FOOTER_SIZE,
            FooterKind::LegacyGzip => LEGACY_FOOTER_SIZE,
            FooterKind::ZstdChunked => ZSTD_FOOTER_SIZE,
        }
    }

    /// Finds and parses the footer at the end of `tail` (the last bytes of a blob; pass
    /// at least [`MAX_FOOTER_SIZE`] when the blob is that large).
    pub fn parse(tail: &[u8]) -> Result<Self, EstargzError> {
        if let Some(f) = last(tail, GZIP_FOOTER_SIZE).and_then(parse_gzip) {
            return Ok(f);
        }
        if let Some(f) = last(tail, LEGACY_FOOTER_SIZE).and_then(parse_legacy) {
            return Ok(f);
        }
        if let Some(f) = last(tail, ZSTD_FOOTER_SIZE).and_then(parse_zstd) {
            return Ok(f);
        }
        Err(EstargzError::InvalidFooter(format!(
            "the last {} bytes are neither a gzip eStargz (51-byte), legacy stargz (47-byte) nor zstd:chunked footer",
            tail.len().min(MAX_FOOTER_SIZE)
        )))
    }
}

fn last(tail: &[u8], n: usize) -> Option<&[u8]> {
    tail.len().checked_sub(n).map(|start| &tail[start..])
}

/// The 51-byte gzip footer pointing at `toc_offset`.
pub fn gzip_footer(toc_offset: u64) -> [u8; GZIP_FOOTER_SIZE] {
    let mut f = [0u8; GZIP_FOOTER_SIZE];
    f[..10].copy_from_slice(&GZIP_HEADER);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12] = b'S';
    f[13] = b'G';
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    f[38..].copy_from_slice(&GZIP_TRAILER);
    f
}

/// The legacy 47-byte footer; stargz no longer writes it, tests use it to exercise readers.
pub fn legacy_gzip_footer(toc_offset: u64) -> [u8; LEGACY_FOOTER_SIZE] {
    let mut f = [0u8; LEGACY_FOOTER_SIZE];
    f[..10].copy_from_slice(&GZIP_HEADER);
    f[10..12].copy_from_slice(&22u16.to_le_bytes());
    f[12..34].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    f[34..].copy_from_slice(&GZIP_TRAILER);
    f
}

/// The zstd:chunked footer, skippable-frame header included.
pub fn zstd_footer(
    toc_offset: u64,
    toc_compressed_len: u64,
    toc_uncompressed_len: u64,
) -> [u8; ZSTD_FOOTER_SIZE] {
    let mut f = [0u8; ZSTD_FOOTER_SIZE];
    f[..4].copy_from_slice(&SKIPPABLE_FRAME_MAGIC);
    f[4..8].copy_from_slice(&40u32.to_le_bytes());
    f[8..16].copy_from_slice(&toc_offset.to_le_bytes());
    f[16..24].copy_from_slice(&toc_compressed_len.to_le_bytes());
    f[24..32].copy_from_slice(&toc_uncompressed_len.to_le_bytes());
    f[32..40].copy_from_slice(&ZSTD_MANIFEST_TYPE_CRFS.to_le_bytes());
    f[40..48].copy_from_slice(&ZSTD_CHUNKED_MAGIC);
    f
}

fn parse_offset_payload(p: &[u8]) -> Option<u64> {
    if p.len() != 22 || &p[16..] != b"STARGZ" || !p[..16].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let v = u64::from_str_radix(std::str::from_utf8(&p[..16]).ok()?, 16).ok()?;
    // Go parses it as an int64.
    (v <= i64::MAX as u64).then_some(v)
}

fn parse_gzip(f: &[u8]) -> Option<Footer> {
    if f[..10] != GZIP_HEADER
        || f[10..12] != 26u16.to_le_bytes()
        || &f[12..14] != b"SG"
        || f[14..16] != 22u16.to_le_bytes()
        || f[38..] != GZIP_TRAILER
    {
        return None;
    }
    let toc_offset = parse_offset_payload(&f[16..38])?;
    Some(Footer {
        kind: FooterKind::Gzip,
        toc_offset,
        toc_compressed_len: 0,
        toc_uncompressed_len: 0,
    })
}

fn parse_legacy(f: &[u8]) -> Option<Footer> {
    if f[..10] != GZIP_HEADER || f[10..12] != 22u16.to_le_bytes() || f[34..] != GZIP_TRAILER {
        return None;
    }
    let toc_offset = parse_offset_payload(&f[12..34])?;
    Some(Footer {
        kind: FooterKind::LegacyGzip,
        toc_offset,
        toc_compressed_len: 0,
        toc_uncompressed_len: 0,
    })
}

fn parse_zstd(f: &[u8]) -> Option<Footer> {
    if f[..4] != SKIPPABLE_FRAME_MAGIC
        || f[4..8] != 40u32.to_le_bytes()
        || f[40..48] != ZSTD_CHUNKED_MAGIC
    {
        return None;
    }
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(f[r].try_into().unwrap_or_default());
    if u(32..40) != ZSTD_MANIFEST_TYPE_CRFS {
        return None;
    }
    Some(Footer {
        kind: FooterKind::ZstdChunked,
        toc_offset: u(8..16),
        toc_compressed_len: u(16..24),
        toc_uncompressed_len: u(24..32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_footer_exact_bytes() {
        let f = gzip_footer(0x1234);
        let mut expected = vec![
            0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        expected.extend_from_slice(b"0000000000001234STARGZ");
        expected.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.to_vec(), expected);
        let p = Footer::parse(&f).unwrap();
        assert_eq!(
            (p.kind, p.toc_offset, p.size()),
            (FooterKind::Gzip, 0x1234, 51)
        );
        // It is a valid, empty gzip member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn legacy_footer_is_read() {
        let f = legacy_gzip_footer(0xabcdef);
        assert_eq!(f.len(), 47);
        assert_eq!(&f[10..12], &[22, 0]);
        let mut tail = vec![7u8; 10];
        tail.extend_from_slice(&f);
        let p = Footer::parse(&tail).unwrap();
        assert_eq!((p.kind, p.toc_offset), (FooterKind::LegacyGzip, 0xabcdef));
    }

    #[test]
    fn zstd_footer_exact_bytes() {
        let f = zstd_footer(0x0102, 0x30, 0x40);
        let mut expected = vec![0x50, 0x2a, 0x4d, 0x18, 40, 0, 0, 0];
        expected.extend_from_slice(&0x0102u64.to_le_bytes());
        expected.extend_from_slice(&0x30u64.to_le_bytes());
        expected.extend_from_slice(&0x40u64.to_le_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(b"GnUlInUx");
        assert_eq!(f.to_vec(), expected);
        let p = Footer::parse(&f).unwrap();
        assert_eq!(
            (
                p.kind,
                p.toc_offset,
                p.toc_compressed_len,
                p.toc_uncompressed_len
            ),
            (FooterKind::ZstdChunked, 0x0102, 0x30, 0x40)
        );
        // containers/storage's magic differs in one byte and is not ours.
        let mut other = f;
        other[41] = b'N';
        assert!(Footer::parse(&other).is_err());
    }

    #[test]
    fn rejects_near_misses() {
        let good = gzip_footer(5);
        for i in 0..good.len() {
            let mut f = good;
            f[i] ^= 0x40;
            // Flipping a hex digit's case keeps it valid hex; everything else must fail.
            if (16..32).contains(&i) && f[i].is_ascii_hexdigit() {
                continue;
            }
            assert!(Footer::parse(&f).is_err(), "byte {i}");
        }
        assert!(Footer::parse(&[]).is_err());
        assert!(Footer::parse(&gzip_footer(u64::MAX)).is_err());
    }
}
