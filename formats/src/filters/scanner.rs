//! containerd's filter scanner: characters, tokens and the character classes that delimit them.

/// One character as containerd's scanner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ch {
    Eof,
    /// NUL, or U+FFFD (Go's decoder reports a literal U+FFFD as a decoding
    /// error, and containerd rejects both).
    Illegal,
    Char(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    Eof,
    Illegal,
    Quoted,
    Value,
    Field,
    Separator,
    Operator,
    /// A character that starts no token (containerd returns the rune itself).
    Other(char),
}

/// containerd's scanner, state for state: `pos` is the start of the last
/// character read, `ppos` the end; `value` is set after an operator so that
/// the next run of characters is scanned as a value.
pub(super) struct Scanner<'a> {
    input: &'a str,
    pos: usize,
    pub(super) ppos: usize,
    value: bool,
    /// The first error met; like containerd's, it is sticky, and it is what
    /// an `Illegal` token reports.
    pub(super) err: Option<&'static str>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(input: &'a str) -> Scanner<'a> {
        Scanner {
            input,
            pos: 0,
            ppos: 0,
            value: false,
            err: None,
        }
    }

    fn error(&mut self, msg: &'static str) {
        self.err.get_or_insert(msg);
    }

    fn next(&mut self) -> Ch {
        if self.pos >= self.input.len() {
            return Ch::Eof;
        }
        self.pos = self.ppos;
        let Some(c) = self
            .input
            .get(self.ppos..)
            .and_then(|rest| rest.chars().next())
        else {
            return Ch::Eof;
        };
        self.ppos += c.len_utf8();
        match c {
            char::REPLACEMENT_CHARACTER => {
                self.error("rune error");
                Ch::Illegal
            }
            '\0' => {
                self.error("unexpected null");
                Ch::Illegal
            }
            c => Ch::Char(c),
        }
    }

    pub(super) fn peek(&mut self) -> Ch {
        let (pos, ppos) = (self.pos, self.ppos);
        let ch = self.next();
        self.pos = pos;
        self.ppos = ppos;
        ch
    }

    fn text(&self, from: usize) -> &'a str {
        self.input.get(from..self.ppos).unwrap_or("")
    }

    /// Returns the next token's start, kind and text.
    pub(super) fn scan(&mut self) -> (usize, Token, &'a str) {
        let mut ch = self.next();
        let mut pos = self.pos;
        loop {
            let c = match ch {
                Ch::Eof => return (self.pos, Token::Eof, ""),
                Ch::Illegal => return (self.pos, Token::Illegal, ""),
                Ch::Char(c) => c,
            };
            if is_quote_char(c) {
                let token = if self.scan_quoted(c) {
                    Token::Quoted
                } else {
                    Token::Illegal
                };
                return (pos, token, self.text(pos));
            }
            if is_separator_char(c) {
                self.value = false;
                return (pos, Token::Separator, self.text(pos));
            }
            if is_operator_char(c) {
                self.scan_while(is_operator_char);
                self.value = true;
                return (pos, Token::Operator, self.text(pos));
            }
            if c.is_whitespace() {
                ch = self.next();
                pos = self.pos;
                continue;
            }
            if self.value {
                self.scan_while(is_value_char);
                self.value = false;
                return (pos, Token::Value, self.text(pos));
            }
            if is_field_char(c) {
                self.scan_while(is_field_char);
                return (pos, Token::Field, self.text(pos));
            }
            return (self.pos, Token::Other(c), "");
        }
    }

    fn scan_while(&mut self, accept: fn(char) -> bool) {
        while let Ch::Char(c) = self.peek() {
            if !accept(c) {
                break;
            }
            self.next();
        }
    }

    /// Scans up to the closing `quote`; false if the literal is unterminated
    /// or holds a malformed escape (the scan still runs to the closing quote
    /// then, so the token covers the whole literal).
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        let mut ch = self.next();
        while ch != Ch::Char(quote) {
            match ch {
                Ch::Eof | Ch::Illegal | Ch::Char('\n') => {
                    self.error("quoted literal not terminated");
                    return false;
                }
                Ch::Char('\\') => {
                    let (after, ok) = self.scan_escape(quote);
                    ch = after;
                    legal &= ok;
                }
                Ch::Char(_) => ch = self.next(),
            }
        }
        legal
    }

    /// Called after a backslash; returns the character after the escape.
    fn scan_escape(&mut self, quote: char) -> (Ch, bool) {
        let ch = self.next();
        match ch {
            Ch::Char('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => (self.next(), true),
            Ch::Char(c) if c == quote => (self.next(), true),
            Ch::Char('0'..='7') => self.scan_digits(ch, 8, 3),
            Ch::Char('x') => {
                let first = self.next();
                self.scan_digits(first, 16, 2)
            }
            Ch::Char('u') => {
                let first = self.next();
                self.scan_digits(first, 16, 4)
            }
            Ch::Char('U') => {
                let first = self.next();
                self.scan_digits(first, 16, 8)
            }
            _ => {
                self.error("illegal escape sequence");
                (ch, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: Ch, base: u32, mut n: u32) -> (Ch, bool) {
        while n > 0 && matches!(ch, Ch::Char(c) if c.to_digit(16).is_some_and(|d| d < base)) {
            ch = self.next();
            n -= 1;
        }
        if n > 0 {
            self.error("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

fn is_quote_char(c: char) -> bool {
    matches!(c, '/' | '|' | '"')
}

fn is_separator_char(c: char) -> bool {
    matches!(c, ',' | '.')
}

/// Go's `IsLetter || IsDigit || IsNumber || IsGraphic || IsPunct`, minus `,`
/// and spaces: everything but spaces and the "other" categories (Cc, Cf, Co,
/// Cs, Cn). Unassigned code points (Cn) are accepted here, which containerd
/// rejects; std has no table for them and nobody writes them in a filter.
fn is_value_char(c: char) -> bool {
    c != ',' && !c.is_whitespace() && !c.is_control() && !is_format_or_private_use(c)
}

/// General categories Cf and Co (Unicode 15.0, as in Go 1.21+).
fn is_format_or_private_use(c: char) -> bool {
    const RANGES: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xE000, 0xF8FF),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
        (0xF0000, 0xFFFFD),
        (0x100000, 0x10FFFD),
    ];
    let c = u32::from(c);
    RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}
