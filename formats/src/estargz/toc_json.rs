//! Byte-level compatibility helpers for the TOC JSON: Go's `json.MarshalIndent(toc, "", "\t")`
//! output, base64 `[]byte` fields, and the RFC 3339 `modtime` strings.
//!
//! The TOC digest is the sha256 of these exact bytes, so matching Go's encoder (including
//! its HTML escaping of `<`, `>`, `&`) lets a TOC we write be compared with one written by
//! stargz-snapshotter for the same entries.

use std::collections::BTreeMap;
use std::io;

use base64::Engine as _;
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// Serializes `value` like Go's `json.MarshalIndent(value, "", "\t")`.
pub(crate) fn marshal_indent_go<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        GoFormatter(PrettyFormatter::with_indent(b"\t")),
    );
    value.serialize(&mut ser)?;
    Ok(out)
}

/// serde_json's pretty printer, plus the escapes Go's encoder adds by default.
struct GoFormatter(PrettyFormatter<'static>);

impl Formatter for GoFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Go escapes these so JSON can sit inside HTML/JS; serde_json passes them through.
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc)?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// serde helpers for Go's `map[string][]byte`: values are standard base64 with padding.
pub(crate) mod xattrs_base64 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeMap};

    pub(crate) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(k, &base64::engine::general_purpose::STANDARD.encode(v))?;
        }
        m.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw.unwrap_or_default() {
            let bytes = match v {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map_err(|e| {
                        serde::de::Error::custom(format!("xattr {k:?}: invalid base64: {e}"))
                    })?,
                None => Vec::new(),
            };
            out.insert(k, bytes);
        }
        Ok(out)
    }
}

/// Formats Unix seconds as Go's `t.UTC().Format(time.RFC3339)`; empty for the epoch, as
/// stargz treats 0 as "unknown".
pub(crate) fn format_modtime(unix: i64) -> String {
    if unix == 0 {
        return String::new();
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to Unix seconds,
/// dropping any fraction. `None` when malformed.
pub(crate) fn parse_modtime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let oh: i64 = rest[1..3]
                .parse()
                .ok()
                .filter(|_| rest[1..3].bytes().all(|c| c.is_ascii_digit()))?;
            let om: i64 = rest[4..6]
                .parse()
                .ok()
                .filter(|_| rest[4..6].bytes().all(|c| c.is_ascii_digit()))?;
            let off = oh * 3600 + om * 60;
            if rest.starts_with('-') { -off } else { off }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modtime_round_trips_and_matches_go() {
        assert_eq!(format_modtime(0), "");
        assert_eq!(format_modtime(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_modtime(-1), "1969-12-31T23:59:59Z");
        for t in [1, 951_782_400, 1_700_000_000, 4_102_444_800, -86_400 * 365] {
            assert_eq!(parse_modtime(&format_modtime(t)), Some(t));
        }
        assert_eq!(
            parse_modtime("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T00:00:00Z",
            "2023-11-14T00:00:00",
            "2023-11-14T00:00:00+1:00",
            "２０２３-11-14T00:00:00Z",
        ] {
            assert_eq!(parse_modtime(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_escapes_like_go() {
        let v = serde_json::json!({"a": ["<x>&\u{2028}é\n"], "b": []});
        let s = String::from_utf8(marshal_indent_go(&v).unwrap()).unwrap();
        assert_eq!(
            s,
            "{\n\t\"a\": [\n\t\t\"\\u003cx\\u003e\\u0026\\u2028é\\n\"\n\t],\n\t\"b\": []\n}"
        );
    }
}
