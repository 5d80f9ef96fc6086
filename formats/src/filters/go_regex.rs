//! Go RE2 regular expressions, as `~=` takes them, translated into the `regex` crate's dialect.
//!
//! Translation of Go RE2 syntax into the `regex` crate's. The dialects share
//! most syntax but differ where it matters for filters: Go's `\d \w \s \b`
//! are ASCII-only, `\Q…\E` quotes, an unparsable `{` is a literal, `\<` is a
//! literal, `[a&&b]`/`[[]` are plain characters, `a**` and `(?x)` are errors
//! and `(?)`/`(?ii)` are not. Each Go construct is re-emitted in an
//! unambiguous Rust form; where Go reports an error, `translate` returns
//! `None`.
//!
//! Not translated: Go's limit on nested repetition counts, and Unicode
//! classes (`\pL`) and `(?i)` compile only if `regex`'s Unicode table
//! features are enabled.

use std::fmt::Write as _;

use regex::Regex;

/// Go's maximum repetition count.
const MAX_REPEAT: u32 = 1000;

/// Matches nothing; stands in for a lone UTF-16 surrogate, which Go
/// accepts in a pattern but which no valid string contains.
const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";

pub(super) fn translate(pattern: &str) -> Option<String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    // Go forbids stacking repetitions (`a**`); the crate allows it.
    let mut last_was_repeat = false;
    while let Some(&c) = cs.get(i) {
        let mut repeat = false;
        match c {
            '\\' => i = escape_outside_class(&cs, i, &mut out)?,
            '[' => i = class(&cs, i, &mut out)?,
            '(' if cs.get(i + 1) == Some(&'?') => i = group_flags(&cs, i, &mut out)?,
            '*' | '+' | '?' => {
                if last_was_repeat {
                    return None;
                }
                out.push(c);
                i = non_greedy_suffix(&cs, i + 1, &mut out);
                repeat = true;
            }
            '{' => match counted_repeat(&cs, i) {
                Some((min, max, end)) => {
                    if last_was_repeat
                        || min > MAX_REPEAT
                        || max.is_some_and(|m| m > MAX_REPEAT || m < min)
                    {
                        return None;
                    }
                    match max {
                        Some(max) if max == min => write!(out, "{{{min}}}").ok()?,
                        Some(max) => write!(out, "{{{min},{max}}}").ok()?,
                        None => write!(out, "{{{min},}}").ok()?,
                    }
                    i = non_greedy_suffix(&cs, end, &mut out);
                    repeat = true;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            '(' | ')' | '|' | '^' | '$' | '.' => {
                out.push(c);
                i += 1;
            }
            _ => {
                push_literal(&mut out, u32::from(c));
                i += 1;
            }
        }
        last_was_repeat = repeat;
    }
    Some(out)
}

fn non_greedy_suffix(cs: &[char], i: usize, out: &mut String) -> usize {
    if cs.get(i) == Some(&'?') {
        out.push('?');
        i + 1
    } else {
        i
    }
}

/// An escape outside a class, at `cs[i] == '\\'`; returns the next index.
fn escape_outside_class(cs: &[char], i: usize, out: &mut String) -> Option<usize> {
    let e = *cs.get(i + 1)?;
    match e {
        'A' => out.push_str(r"\A"),
        'z' => out.push_str(r"\z"),
        // ASCII word boundaries, as in Go.
        'b' => out.push_str(r"(?-u:\b)"),
        'B' => out.push_str(r"(?-u:\B)"),
        'Q' => {
            let mut j = i + 2;
            while let Some(&c) = cs.get(j) {
                if c == '\\' && cs.get(j + 1) == Some(&'E') {
                    return Some(j + 2);
                }
                push_literal(out, u32::from(c));
                j += 1;
            }
            return Some(j);
        }
        'p' | 'P' => return unicode_class(cs, i, out),
        _ => match perl_class(e) {
            Some(class) => out.push_str(class),
            None => {
                let (code, next) = escape(cs, i)?;
                push_literal(out, code);
                return Some(next);
            }
        },
    }
    Some(i + 2)
}

/// Go's `\d \D \s \S \w \W`, which are ASCII-only.
fn perl_class(e: char) -> Option<&'static str> {
    Some(match e {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        's' => r"[\t\n\f\r ]",
        'S' => r"[^\t\n\f\r ]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        _ => return None,
    })
}

/// `\pX`, `\p{Name}`, `\P…`, `\p{^Name}` at `cs[i] == '\\'`.
fn unicode_class(cs: &[char], i: usize, out: &mut String) -> Option<usize> {
    let mut negated = *cs.get(i + 1)? == 'P';
    let first = *cs.get(i + 2)?;
    let (mut name, next): (String, usize) = if first == '{' {
        let close = (i + 3..cs.len()).find(|&j| cs[j] == '}')?;
        (cs[i + 3..close].iter().collect(), close + 1)
    } else {
        (first.to_string(), i + 3)
    };
    if let Some(rest) = name.strip_prefix('^') {
        negated = !negated;
        name = rest.to_owned();
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '))
    {
        return None;
    }
    write!(out, r"\{}{{{name}}}", if negated { 'P' } else { 'p' }).ok()?;
    Some(next)
}

/// Go's single-character escapes (`parseEscape`) at `cs[i] == '\\'`:
/// returns the code point (possibly a surrogate) and the next index.
fn escape(cs: &[char], i: usize) -> Option<(u32, usize)> {
    let c = *cs.get(i + 1)?;
    let mut j = i + 2;
    let is_octal = |c: Option<&char>| c.is_some_and(|c| ('0'..='7').contains(c));
    match c {
        // A lone \1-\7 is a backreference, which Go rejects.
        '1'..='7' if !is_octal(cs.get(j)) => None,
        '0'..='7' => {
            let mut v = c.to_digit(8)?;
            for _ in 1..3 {
                match cs.get(j).and_then(|d| d.to_digit(8)) {
                    Some(d) => {
                        v = v * 8 + d;
                        j += 1;
                    }
                    None => break,
                }
            }
            Some((v, j))
        }
        'x' => {
            if cs.get(j) == Some(&'{') {
                let mut v: u32 = 0;
                let mut digits = 0;
                j += 1;
                loop {
                    let d = *cs.get(j)?;
                    j += 1;
                    if d == '}' {
                        break;
                    }
                    v = v * 16 + d.to_digit(16)?;
                    if v > 0x10FFFF {
                        return None;
                    }
                    digits += 1;
                }
                (digits > 0).then_some((v, j))
            } else {
                let hi = cs.get(j)?.to_digit(16)?;
                let lo = cs.get(j + 1)?.to_digit(16)?;
                Some((hi * 16 + lo, j + 2))
            }
        }
        'a' => Some((0x07, j)),
        'f' => Some((0x0C, j)),
        'n' => Some((0x0A, j)),
        'r' => Some((0x0D, j)),
        't' => Some((0x09, j)),
        'v' => Some((0x0B, j)),
        // Escaped ASCII punctuation is itself (including `\<`, which the
        // crate reads as a word boundary).
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Some((u32::from(c), j)),
        _ => None,
    }
}

/// A bracketed class at `cs[i] == '['`, following Go's `parseClass`.
fn class(cs: &[char], i: usize, out: &mut String) -> Option<usize> {
    let mut j = i + 1;
    out.push('[');
    if cs.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    // `]` is a literal as the first item.
    let mut first = true;
    loop {
        let c = *cs.get(j)?;
        if c == ']' && !first {
            out.push(']');
            return Some(j + 1);
        }
        first = false;
        // `[:` without a later `:]` is a plain `[`.
        if c == '['
            && cs.get(j + 1) == Some(&':')
            && let Some(end) =
                (j + 2..cs.len().saturating_sub(1)).find(|&k| cs[k] == ':' && cs[k + 1] == ']')
        {
            let name: String = cs[j + 2..end].iter().collect();
            if !is_posix_class(name.strip_prefix('^').unwrap_or(&name)) {
                return None;
            }
            write!(out, "[:{name}:]").ok()?;
            j = end + 2;
            continue;
        }
        if c == '\\' {
            match cs.get(j + 1) {
                Some('p' | 'P') => {
                    j = unicode_class(cs, j, out)?;
                    continue;
                }
                Some(&e) => {
                    if let Some(class) = perl_class(e) {
                        // A nested class is a union in the crate's syntax.
                        out.push_str(class);
                        j += 2;
                        continue;
                    }
                }
                None => return None,
            }
        }
        let (lo, next) = class_char(cs, j)?;
        j = next;
        let mut hi = lo;
        if cs.get(j) == Some(&'-') && cs.get(j + 1).is_some_and(|&c| c != ']') {
            let (h, next) = class_char(cs, j + 1)?;
            if h < lo {
                return None;
            }
            hi = h;
            j = next;
        }
        push_class_range(out, lo, hi);
    }
}

fn class_char(cs: &[char], j: usize) -> Option<(u32, usize)> {
    match *cs.get(j)? {
        '\\' => escape(cs, j),
        c => Some((u32::from(c), j + 1)),
    }
}

fn is_posix_class(name: &str) -> bool {
    matches!(
        name,
        "alnum"
            | "alpha"
            | "ascii"
            | "blank"
            | "cntrl"
            | "digit"
            | "graph"
            | "lower"
            | "print"
            | "punct"
            | "space"
            | "upper"
            | "word"
            | "xdigit"
    )
}

fn push_class_range(out: &mut String, lo: u32, hi: u32) {
    const SURROGATES: std::ops::RangeInclusive<u32> = 0xD800..=0xDFFF;
    // The crate's ranges are over scalar values; clip off surrogates.
    let lo = if SURROGATES.contains(&lo) { 0xE000 } else { lo };
    let hi = if SURROGATES.contains(&hi) { 0xD7FF } else { hi };
    if lo > hi {
        out.push_str(NOTHING);
    } else if lo == hi {
        push_literal(out, lo);
    } else {
        push_literal(out, lo);
        out.push('-');
        push_literal(out, hi);
    }
}

/// One literal code point, escaped so that it means itself both inside
/// and outside a class.
fn push_literal(out: &mut String, code: u32) {
    match char::from_u32(code) {
        None => out.push_str(NOTHING),
        Some(c) if c.is_ascii_alphanumeric() || c == '<' || c == '>' => out.push(c),
        Some(c) if c.is_ascii_punctuation() => {
            out.push('\\');
            out.push(c);
        }
        Some(c) if !c.is_ascii() && !c.is_control() && !c.is_whitespace() => out.push(c),
        Some(_) => {
            let _ = write!(out, r"\x{{{code:X}}}");
        }
    }
}

/// Go's `parseRepeat` at `cs[i] == '{'`: `{n}`, `{n,}` or `{n,m}` without
/// leading zeros; returns (min, max, index after `}`), `None` when the
/// text is no repetition (Go then reads `{` as a literal). Counts too big
/// to parse come back as `u32::MAX`, which the caller rejects.
fn counted_repeat(cs: &[char], i: usize) -> Option<(u32, Option<u32>, usize)> {
    let (min, mut j) = int(cs, i + 1)?;
    let max = match *cs.get(j)? {
        ',' => {
            j += 1;
            if *cs.get(j)? == '}' {
                None
            } else {
                let (max, next) = int(cs, j)?;
                j = next;
                Some(max)
            }
        }
        _ => Some(min),
    };
    (*cs.get(j)? == '}').then_some((min, max, j + 1))
}

fn int(cs: &[char], start: usize) -> Option<(u32, usize)> {
    let end = (start..=cs.len()).find(|&k| !cs.get(k).is_some_and(char::is_ascii_digit))?;
    let digits = cs.get(start..end)?;
    if digits.is_empty() || (digits.len() > 1 && digits[0] == '0') {
        return None;
    }
    let value = digits
        .iter()
        .try_fold(0u32, |v, d| v.checked_mul(10)?.checked_add(d.to_digit(10)?))
        .unwrap_or(u32::MAX);
    Some((value, end))
}

/// `(?flags)`, `(?flags:` or a named group at `cs[i] == '('`, following
/// Go's `parsePerlFlags`; flags are re-emitted in a canonical form the
/// crate accepts (it rejects `(?)` and repeated flags, which Go allows).
fn group_flags(cs: &[char], i: usize, out: &mut String) -> Option<usize> {
    let named_from = match (cs.get(i + 2), cs.get(i + 3)) {
        (Some('P'), Some('<')) if cs.len() > i + 4 => Some(i + 4),
        (Some('<'), _) if cs.len() > i + 3 => Some(i + 3),
        _ => None,
    };
    if let Some(from) = named_from {
        let close = (from..cs.len()).find(|&j| cs[j] == '>')?;
        let name = &cs[from..close];
        if name.is_empty() || !name.iter().all(|c| *c == '_' || c.is_ascii_alphanumeric()) {
            return None;
        }
        // Names do not affect matching, and Go accepts names the crate
        // does not (`(?P<1>…)`).
        out.push('(');
        return Some(close + 1);
    }
    let mut on = String::new();
    let mut off = String::new();
    let mut negated = false;
    let mut saw_flag = false;
    let mut j = i + 2;
    loop {
        let c = *cs.get(j)?;
        j += 1;
        match c {
            'i' | 'm' | 's' | 'U' => {
                let (add, remove) = if negated {
                    (&mut off, &mut on)
                } else {
                    (&mut on, &mut off)
                };
                remove.retain(|f| f != c);
                if !add.contains(c) {
                    add.push(c);
                }
                saw_flag = true;
            }
            '-' if !negated => {
                negated = true;
                saw_flag = false;
            }
            ':' | ')' => {
                if negated && !saw_flag {
                    return None;
                }
                if on.is_empty() && off.is_empty() {
                    if c == ':' {
                        out.push_str("(?:");
                    }
                } else {
                    out.push_str("(?");
                    out.push_str(&on);
                    if !off.is_empty() {
                        out.push('-');
                        out.push_str(&off);
                    }
                    out.push(c);
                }
                return Some(j);
            }
            _ => return None,
        }
    }
}

/// Compiles a `~=` pattern as Go's `regexp.Compile` would; `None` where Go
/// would fail (then the selector matches nothing).
pub(super) fn compile_go_regex(pattern: &[u8]) -> Option<Regex> {
    let pattern = std::str::from_utf8(pattern).ok()?;
    Regex::new(&translate(pattern)?).ok()
}
