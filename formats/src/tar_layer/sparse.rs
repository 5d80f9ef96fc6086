//! GNU sparse files in their four encodings: the old GNU `S` header (map in the header and
//! extension blocks), and PAX formats 0.0 (repeated `GNU.sparse.offset`/`numbytes`), 0.1
//! (`GNU.sparse.map`) and 1.0 (the map in decimal lines at the start of the payload). The
//! map is validated (in order, no overlap, inside the file, covering exactly the stored
//! payload) so the writer can place segments with positioned writes and leave holes.

use super::SparseSegment;

/// The sparse description found in an entry's PAX records.
#[derive(Debug, Default)]
pub(super) struct PaxSparse {
    pub(super) major: Option<String>,
    pub(super) minor: Option<String>,
    pub(super) name: Option<Vec<u8>>,
    pub(super) real_size: Option<u64>,
    /// 0.1's `GNU.sparse.map`.
    pub(super) map: Option<String>,
    /// 0.0's repeated pairs, in order.
    pub(super) offsets: Vec<u64>,
    pub(super) lengths: Vec<u64>,
}

impl PaxSparse {
    /// Whether any record asked for a sparse file.
    pub(super) fn present(&self) -> bool {
        self.major.is_some()
            || self.map.is_some()
            || !self.offsets.is_empty()
            || self.real_size.is_some()
    }

    /// Whether the map is at the start of the payload (format 1.0).
    pub(super) fn map_in_payload(&self) -> bool {
        self.major.as_deref() == Some("1") && self.minor.as_deref() == Some("0")
    }

    /// The map of formats 0.0 and 0.1, held in the records.
    pub(super) fn map_from_records(&self, max: usize) -> Result<Vec<SparseSegment>, String> {
        if let Some(map) = &self.map {
            let numbers: Vec<&str> = if map.is_empty() {
                Vec::new()
            } else {
                map.split(',').collect()
            };
            if !numbers.len().is_multiple_of(2) {
                return Err("GNU.sparse.map has an odd number of fields".into());
            }
            if numbers.len() / 2 > max {
                return Err(format!("sparse map has more than {max} segments"));
            }
            return numbers
                .chunks(2)
                .map(|pair| {
                    Ok(SparseSegment {
                        offset: decimal(pair[0])?,
                        length: decimal(pair[1])?,
                    })
                })
                .collect();
        }
        if self.offsets.len() != self.lengths.len() {
            return Err("GNU.sparse.offset and GNU.sparse.numbytes records do not pair up".into());
        }
        if self.offsets.len() > max {
            return Err(format!("sparse map has more than {max} segments"));
        }
        Ok(self
            .offsets
            .iter()
            .zip(&self.lengths)
            .map(|(&offset, &length)| SparseSegment { offset, length })
            .collect())
    }
}

pub(super) fn decimal(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal number"));
    }
    s.parse().map_err(|_| format!("{s:?} is out of range"))
}

/// Parses a format 1.0 map from the start of the payload: a count, then offset and length
/// pairs, one decimal number per line. `next_block` yields the payload's 512-byte blocks;
/// returns the map and how many blocks it took.
pub(super) fn parse_payload_map(
    mut next_block: impl FnMut() -> Result<[u8; 512], String>,
    max: usize,
) -> Result<(Vec<SparseSegment>, u64), String> {
    let mut blocks = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut next_number = |blocks: &mut u64| -> Result<u64, String> {
        loop {
            if let Some(nl) = pending[pos..].iter().position(|&b| b == b'\n') {
                let line = std::str::from_utf8(&pending[pos..pos + nl])
                    .map_err(|_| "sparse map is not text")?;
                let value = decimal(line)?;
                pos += nl + 1;
                return Ok(value);
            }
            if pending.len() - pos > 64 {
                return Err("sparse map line is too long".into());
            }
            pending.drain(..pos);
            pos = 0;
            pending.extend_from_slice(&next_block()?);
            *blocks += 1;
        }
    };
    let count = next_number(&mut blocks)?;
    if count > max as u64 {
        return Err(format!("sparse map has {count} segments, more than {max}"));
    }
    let mut map = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = next_number(&mut blocks)?;
        let length = next_number(&mut blocks)?;
        map.push(SparseSegment { offset, length });
    }
    Ok((map, blocks))
}

/// Checks a map against the file's real size and the payload it describes: segments in
/// order, not overlapping, inside the file, and their lengths adding up to `payload`.
pub(super) fn validate(map: &[SparseSegment], real_size: u64, payload: u64) -> Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for s in map {
        let seg_end = s
            .offset
            .checked_add(s.length)
            .ok_or("sparse segment overflows")?;
        if s.offset < end {
            return Err(format!(
                "sparse segment at {} overlaps or is out of order",
                s.offset
            ));
        }
        if seg_end > real_size {
            return Err(format!(
                "sparse segment {}+{} is beyond the file size {real_size}",
                s.offset, s.length
            ));
        }
        end = seg_end;
        total = total.checked_add(s.length).ok_or("sparse map overflows")?;
    }
    if total != payload {
        return Err(format!(
            "sparse map covers {total} bytes but the entry stores {payload}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_map_across_blocks() {
        let mut text = b"60\n".to_vec();
        for i in 0..60u64 {
            text.extend_from_slice(format!("{}\n{}\n", 1_000_000 * i, i).as_bytes());
        }
        let mut blocks = text.chunks(512).map(|c| {
            let mut b = [0u8; 512];
            b[..c.len()].copy_from_slice(c);
            b
        });
        let (map, used) =
            parse_payload_map(|| blocks.next().ok_or_else(|| "eof".to_string()), 100).unwrap();
        assert_eq!((map.len(), used), (60, 2));
        assert_eq!(
            map[59],
            SparseSegment {
                offset: 59_000_000,
                length: 59
            }
        );
    }

    #[test]
    fn maps_are_validated() {
        let seg = |offset, length| SparseSegment { offset, length };
        assert!(validate(&[seg(0, 5), seg(10, 5)], 20, 10).is_ok());
        assert!(validate(&[seg(10, 5), seg(0, 5)], 20, 10).is_err());
        assert!(validate(&[seg(0, 5), seg(3, 5)], 20, 10).is_err());
        assert!(validate(&[seg(0, 5), seg(18, 5)], 20, 10).is_err());
        assert!(validate(&[seg(0, 5)], 20, 6).is_err());
        assert!(validate(&[seg(u64::MAX, 5)], 20, 5).is_err());
    }
}
