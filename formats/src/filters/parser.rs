//! containerd's recursive-descent filter parser, and Go-style unquoting of quoted fields and values.

use super::go_regex::compile_go_regex;
use super::scanner::{Ch, Scanner, Token};
use super::{Bytes, FieldPath, FilterError, Op, OpKind, Selector};

/// containerd's recursive-descent parser over [`Scanner`].
pub(super) struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(input: &'a str) -> Parser<'a> {
        Parser {
            input,
            scanner: Scanner::new(input),
        }
    }

    fn error(&self, position: usize, message: impl Into<String>) -> FilterError {
        FilterError::Parse {
            input: self.input.to_owned(),
            position,
            message: message.into(),
        }
    }

    fn scanner_error(&self, position: usize) -> FilterError {
        self.error(position, self.scanner.err.unwrap_or_default())
    }

    pub(super) fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut selectors = vec![self.selector()?];
        loop {
            match self.scanner.peek() {
                Ch::Char(',') => {
                    let (pos, token, _) = self.scanner.scan();
                    if token != Token::Separator {
                        return Err(self.error(pos, "expected a separator"));
                    }
                    selectors.push(self.selector()?);
                }
                Ch::Eof => return Ok(selectors),
                other => {
                    // Go prints an illegal rune (a negative token) as U+FFFD.
                    let shown = match other {
                        Ch::Char(c) => c,
                        Ch::Eof | Ch::Illegal => char::REPLACEMENT_CHARACTER,
                    };
                    let pos = self.scanner.ppos;
                    return Err(self.error(pos, format!("unexpected input: {shown}")));
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = FieldPath::new(self.fieldpath()?);
        // Only `,` or the end directly after the path make a presence test;
        // anything else, even a space, must lead to an operator.
        if matches!(self.scanner.peek(), Ch::Char(',') | Ch::Eof) {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        }
        let kind = self.operator()?;
        // Regexps may also be quoted with / or |, so they need fewer escapes.
        let value = Bytes(self.value(kind == OpKind::Matches)?);
        let op = match kind {
            OpKind::Equal => Op::Equal(value),
            OpKind::NotEqual => Op::NotEqual(value),
            OpKind::Matches => Op::Matches {
                regex: compile_go_regex(&value.0),
                pattern: value,
            },
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<Vec<u8>>, FilterError> {
        let mut path = vec![self.field()?];
        while self.scanner.peek() == Ch::Char('.') {
            let (pos, token, _) = self.scanner.scan();
            if token != Token::Separator {
                return Err(self.error(pos, "expected a field separator (`.`)"));
            }
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<Vec<u8>, FilterError> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, false),
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, "expected field or quoted")),
        }
    }

    fn operator(&mut self) -> Result<OpKind, FilterError> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Operator => match text {
                "==" => Ok(OpKind::Equal),
                "!=" => Ok(OpKind::NotEqual),
                "~=" => Ok(OpKind::Matches),
                // Operator text is only `=!~`, so Go's %q is plain quoting.
                other => Err(self.error(pos, format!("unsupported operator \"{other}\""))),
            },
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, r#"expected an operator ("=="|"!="|"~=")"#)),
        }
    }

    fn value(&mut self, allow_alt_quotes: bool) -> Result<Vec<u8>, FilterError> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Value | Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, allow_alt_quotes),
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, "expected value or quoted")),
        }
    }

    fn unquote(
        &self,
        pos: usize,
        quoted: &str,
        allow_alt_quotes: bool,
    ) -> Result<Vec<u8>, FilterError> {
        if !allow_alt_quotes && !quoted.starts_with('"') {
            return Err(self.error(pos, "invalid quote encountered"));
        }
        unquote(quoted).ok_or_else(|| self.error(pos, "unquoting failed: quote syntax error"))
    }
}

/// Go's `strconv.Unquote` extended to `/…/` and `|…|` (containerd's
/// `quote.go`). The result may not be UTF-8: `\xff` and `\377` are bytes.
pub(super) fn unquote(quoted: &str) -> Option<Vec<u8>> {
    let bytes = quoted.as_bytes();
    let (&quote, rest) = bytes.split_first()?;
    let (&last, inner) = rest.split_last()?;
    if last != quote || !matches!(quote, b'"' | b'/' | b'|') || inner.contains(&b'\n') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        if c == quote {
            return None;
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let escape = *inner.get(i + 1)?;
        i += 2;
        match escape {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0C),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0B),
            b'\\' => out.push(b'\\'),
            b'\'' | b'"' | b'|' | b'/' if escape == quote => out.push(escape),
            b'x' | b'u' | b'U' => {
                let n = match escape {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = inner.get(i..i + n)?;
                i += n;
                let mut v: u32 = 0;
                for &d in digits {
                    v = (v << 4) | char::from(d).to_digit(16)?;
                }
                if escape == b'x' {
                    // A single byte, possibly not UTF-8 on its own.
                    out.push(u8::try_from(v).ok()?);
                } else {
                    if v > 0x10FFFF {
                        return None;
                    }
                    // Go encodes a surrogate as U+FFFD.
                    let c = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            b'0'..=b'7' => {
                let digits = inner.get(i..i + 2)?;
                i += 2;
                let mut v = u32::from(escape - b'0');
                for &d in digits {
                    if !(b'0'..=b'7').contains(&d) {
                        return None;
                    }
                    v = (v << 3) | u32::from(d - b'0');
                }
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}
