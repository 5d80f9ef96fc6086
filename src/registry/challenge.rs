//! `WWW-Authenticate` challenges (RFC 7235): which authentication a registry asks for,
//! and where to get a token.

use std::collections::BTreeMap;

/// One `WWW-Authenticate` challenge: a scheme with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased: `bearer`, `basic`.
    pub scheme: String,
    /// Parameters by lower-cased name: `realm`, `service`, `scope`, `error`.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses the challenges of one `WWW-Authenticate` header value (RFC 7235: several
/// challenges separated by commas, parameters as tokens or quoted strings with `\`
/// escapes). Malformed parts are skipped; a token68 credential is ignored.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut p = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|c| matches!(c, b' ' | b'\t' | b','));
        if p.eof() {
            break;
        }
        let scheme = p.token();
        if scheme.is_empty() {
            p.i += 1;
            continue;
        }
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        loop {
            p.skip(|c| matches!(c, b' ' | b'\t'));
            let start = p.i;
            let name = p.token();
            p.skip(|c| matches!(c, b' ' | b'\t'));
            if name.is_empty() || !p.eat(b'=') {
                // Not `name=`: the next challenge's scheme starts here.
                p.i = start;
                break;
            }
            p.skip(|c| matches!(c, b' ' | b'\t'));
            // Unquoted values should be tokens, but registries send bare URLs: take
            // everything up to the next comma or blank.
            let v = if p.eat(b'"') { p.quoted() } else { p.bare() };
            ch.params.insert(name.to_ascii_lowercase(), v);
            p.skip(|c| matches!(c, b' ' | b'\t'));
            if !p.eat(b',') {
                break;
            }
        }
        out.push(ch);
    }
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.i < self.s.len() && f(self.s[self.i]) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// An RFC 7230 token.
    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// An unquoted parameter value: up to a comma or blank.
    fn bare(&mut self) -> String {
        let start = self.i;
        self.skip(|c| !matches!(c, b',' | b' ' | b'\t'));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// The rest of a quoted string whose opening quote was eaten.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(&n) = self.s.get(self.i) {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (c[0].scheme.as_str(), c[0].param("realm")),
            ("basic", Some("Registry Realm"))
        );

        // Several challenges in one value, odd spacing, unquoted values, escapes, case.
        let c = parse_challenges(
            r#"Basic realm="a, \"quoted\" \\ realm" , BEARER Realm = https://r/token ,service=svc,error="insufficient_scope", Negotiate abc==, Digest realm="d""#,
        );
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate", "digest"]);
        assert_eq!(c[0].param("realm"), Some(r#"a, "quoted" \ realm"#));
        assert_eq!(c[1].param("realm"), Some("https://r/token"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[3].param("realm"), Some("d"));

        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ,").is_empty());
        // Unterminated quotes and junk do not panic.
        let c = parse_challenges(r#"Bearer realm="unterminated"#);
        assert_eq!(c[0].param("realm"), Some("unterminated"));
        let _ = parse_challenges("=\"\\");
    }
}
