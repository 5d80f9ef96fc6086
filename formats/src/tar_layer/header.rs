//! One 512-byte tar header block decoded: V7, USTAR (with its name prefix) and GNU
//! (with atime and the old sparse map), numeric fields in octal or base-256, the checksum
//! checked the way Go's `archive/tar` checks it (signed or unsigned sum).

use super::SparseSegment;

pub(super) const BLOCK: usize = 512;

/// The fields of one header block, before extension headers are applied.
#[derive(Debug)]
pub(super) struct RawHeader {
    pub(super) typeflag: u8,
    pub(super) name: Vec<u8>,
    pub(super) link: Vec<u8>,
    /// Owner and group names (USTAR and GNU headers only; empty otherwise).
    pub(super) uname: Vec<u8>,
    pub(super) gname: Vec<u8>,
    pub(super) mode: i64,
    pub(super) uid: i64,
    pub(super) gid: i64,
    pub(super) size: i64,
    pub(super) mtime: i64,
    pub(super) atime: Option<i64>,
    pub(super) dev_major: i64,
    pub(super) dev_minor: i64,
    /// GNU old-style sparse (`S`) headers: the map held in the header, whether extension
    /// blocks follow, and the file's real size.
    pub(super) gnu_sparse: Option<GnuSparse>,
}

/// The sparse part of a GNU `S` header.
#[derive(Debug)]
pub(super) struct GnuSparse {
    pub(super) segments: Vec<SparseSegment>,
    pub(super) extended: bool,
    pub(super) real_size: i64,
}

fn cstr(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |i| &field[..i])
}

/// A numeric field: base-256 when the high bit of the first byte is set (two's complement),
/// otherwise octal with surrounding spaces and NULs ignored; an empty field is 0.
pub(super) fn parse_numeric(field: &[u8]) -> Result<i64, String> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // The first byte's 0x40 bit is the sign; the rest is big-endian magnitude.
        let negative = field[0] & 0x40 != 0;
        let fill = if negative { 0xff } else { 0 };
        let mut value: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 {
                (b & 0x7f) | if negative { 0x80 } else { 0 }
            } else {
                b
            };
            if value >> 56 != 0 && value >> 56 != u64::from(fill as u8) {
                return Err("base-256 number overflows 64 bits".into());
            }
            value = (value << 8) | u64::from(b);
        }
        return Ok(value as i64);
    }
    let trimmed = trim(field);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let text =
        std::str::from_utf8(trimmed).map_err(|_| "numeric field is not octal".to_string())?;
    i64::from_str_radix(text, 8).map_err(|_| format!("numeric field {text:?} is not octal"))
}

fn trim(field: &[u8]) -> &[u8] {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !is_pad(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |i| i + 1);
    &field[start..end]
}

pub(super) fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<(), String> {
    let stored = parse_numeric(&block[148..156]).map_err(|e| format!("bad checksum field: {e}"))?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        return Err(format!(
            "header checksum mismatch (stored {stored}, computed {unsigned})"
        ));
    }
    Ok(())
}

fn sparse_pairs(area: &[u8], count: usize) -> Result<Vec<SparseSegment>, String> {
    let mut out = Vec::new();
    for i in 0..count {
        let pair = &area[i * 24..i * 24 + 24];
        if pair[0] == 0 {
            break;
        }
        let offset = parse_numeric(&pair[..12])?;
        let length = parse_numeric(&pair[12..])?;
        if offset < 0 || length < 0 {
            return Err("negative sparse offset or length".into());
        }
        out.push(SparseSegment {
            offset: offset as u64,
            length: length as u64,
        });
    }
    Ok(out)
}

/// Decodes one header block (which is not all zeros).
pub(super) fn parse_header(block: &[u8; BLOCK]) -> Result<RawHeader, String> {
    check_checksum(block)?;
    let num = |name: &str, r: std::ops::Range<usize>| {
        parse_numeric(&block[r]).map_err(|e| format!("bad {name} field: {e}"))
    };
    let magic = &block[257..265];
    let ustar = magic == b"ustar\x0000";
    let gnu = magic == b"ustar  \x00";
    let mut name = cstr(&block[..100]).to_vec();
    if ustar {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let typeflag = block[156];
    let mut header = RawHeader {
        typeflag,
        name,
        link: cstr(&block[157..257]).to_vec(),
        uname: if ustar || gnu {
            cstr(&block[265..297]).to_vec()
        } else {
            Vec::new()
        },
        gname: if ustar || gnu {
            cstr(&block[297..329]).to_vec()
        } else {
            Vec::new()
        },
        mode: num("mode", 100..108)?,
        uid: num("uid", 108..116)?,
        gid: num("gid", 116..124)?,
        size: num("size", 124..136)?,
        mtime: num("mtime", 136..148)?,
        atime: None,
        dev_major: if ustar || gnu {
            num("devmajor", 329..337)?
        } else {
            0
        },
        dev_minor: if ustar || gnu {
            num("devminor", 337..345)?
        } else {
            0
        },
        gnu_sparse: None,
    };
    if header.size < 0 {
        return Err(format!("negative size {}", header.size));
    }
    if gnu {
        let atime = num("atime", 345..357)?;
        if atime != 0 {
            header.atime = Some(atime);
        }
        if typeflag == b'S' {
            header.gnu_sparse = Some(GnuSparse {
                segments: sparse_pairs(&block[386..482], 4)?,
                extended: block[482] != 0,
                real_size: num("realsize", 483..495)?,
            });
        }
    }
    Ok(header)
}

/// Decodes a GNU sparse extension block: up to 21 more segments and whether another
/// extension block follows.
pub(super) fn parse_sparse_extension(
    block: &[u8; BLOCK],
) -> Result<(Vec<SparseSegment>, bool), String> {
    Ok((sparse_pairs(&block[..504], 21)?, block[504] != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_in_octal_and_base_256() {
        assert_eq!(parse_numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_numeric(b"  17 \0").unwrap(), 0o17);
        assert_eq!(parse_numeric(b"\0\0\0\0").unwrap(), 0);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap(),
            1 << 32
        );
        assert_eq!(parse_numeric(&[0xff; 12]).unwrap(), -1);
        assert!(parse_numeric(b"12x").is_err());
        assert!(parse_numeric(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
