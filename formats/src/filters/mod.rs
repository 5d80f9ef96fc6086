//! containerd's filter expression syntax, as accepted by `ctr content ls`,
//! `ctr snapshots ls`, the snapshots.v1 `List` RPC and the content store's
//! `Walk`: a port of containerd's `pkg/filters` that parses, and reports
//! errors, the way containerd does.
//!
//! A filter string is a comma-separated list of selectors, all of which must
//! match (AND); [`Filter::parse_any`] combines several filter strings so that
//! any of them may match (OR), as a list of filters does on containerd's API.
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [ operator value ]
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | <any run of graphic characters but "," and spaces>
//! quoted    := a Go double-quoted string; after "~=" also /…/ or |…|
//! ```
//!
//! Examples: `name==foo,labels.bar`, `labels."containerd.io/gc.root"`,
//! `parent!=x`, `name~=^ext`, `name~=/^sha256:[0-9a-f]+$/`.
//!
//! A selector without an operator matches when the field is present. `==`
//! needs the field present and equal; `!=` and `~=` compare the field's value,
//! an absent field counting as the empty string (so `parent!=x` matches items
//! without a parent). `~=` takes a Go RE2 pattern, which is translated into the
//! `regex` crate's dialect; a pattern that does not compile is not a parse
//! error, it just matches nothing, exactly as in containerd.
//!
//! Where containerd's behaviour rests on Go-specific representation details,
//! this port keeps the observable behaviour (see the notes on [`FilterError`]
//! and [`Filter::parse`]).

mod go_regex;
mod parser;
mod scanner;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::errdefs::ErrorKind;

use self::parser::Parser;

/// Something a filter can be evaluated against: returns the value at a field
/// path, or `None` when the item has no such field.
///
/// The mapping of paths to fields is the implementor's; containerd's
/// convention is protobuf field names (`name`, `parent`, `kind`), with labels
/// addressed as `labels.<key>` where `<key>` is the rest of the path joined
/// with `.`.
///
/// Closures `Fn(&[String]) -> Option<String>` are adaptors too (containerd's
/// `AdapterFunc`).
pub trait Adaptor {
    /// Returns the value of the field at `path`, or `None` when it is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

impl<F> Adaptor for F
where
    F: Fn(&[String]) -> Option<String>,
{
    fn field(&self, path: &[String]) -> Option<String> {
        self(path)
    }
}

/// A parsed filter: evaluate it against items with [`Filter::matches`].
#[derive(Debug, Clone)]
pub struct Filter {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Matches everything (the empty filter, or an empty list of filters).
    Always,
    /// A single filter string: every selector must match.
    All(Vec<Selector>),
    /// A list of filter strings: any one must match.
    Any(Vec<Filter>),
}

impl Filter {
    /// Parses one filter string: a comma-separated list of selectors that
    /// must all match. The empty string is the filter that matches anything.
    ///
    /// Parsing follows containerd's scanner exactly, including its quirks:
    /// whitespace is skipped before a field, an operator or a value, but not
    /// before `,` or `.` nor at the end (`"name==a "` is an error), and
    /// quoted strings follow Go's escape syntax. A bare value cannot begin
    /// with `.`, `=`, `!`, `~`, `/`, `|` or `"` (those start other tokens), so
    /// `name~=.*` is an error; write `name~=/.*/` or `name~=".*"`.
    ///
    /// # Errors
    ///
    /// [`FilterError::Parse`], worded as containerd words it.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        // containerd special-cases exactly the empty string; "  " is an error.
        if expr.is_empty() {
            return Ok(Filter::always());
        }
        let selectors = Parser::new(expr).selectors()?;
        Ok(Filter {
            kind: Kind::All(selectors),
        })
    }

    /// Parses a list of filter strings into a filter that matches when any of
    /// them does (containerd's `ParseAll`); an empty list matches anything.
    ///
    /// # Errors
    ///
    /// The first filter string that does not parse.
    pub fn parse_any<S: AsRef<str>>(exprs: &[S]) -> Result<Filter, FilterError> {
        if exprs.is_empty() {
            return Ok(Filter::always());
        }
        let filters = exprs
            .iter()
            .map(|expr| Filter::parse(expr.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter {
            kind: Kind::Any(filters),
        })
    }

    /// The filter that matches anything.
    pub fn always() -> Filter {
        Filter { kind: Kind::Always }
    }

    /// Whether `item` satisfies this filter.
    pub fn matches(&self, item: &dyn Adaptor) -> bool {
        match &self.kind {
            Kind::Always => true,
            Kind::All(selectors) => selectors.iter().all(|s| s.matches(item)),
            Kind::Any(filters) => filters.iter().any(|f| f.matches(item)),
        }
    }
}

impl Default for Filter {
    /// The filter that matches anything, like an empty filter string.
    fn default() -> Filter {
        Filter::always()
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    /// Same as [`Filter::parse`].
    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::parse(s)
    }
}

/// Why a filter string did not parse.
///
/// Every variant is an invalid argument in gRPC terms (containerd wraps these
/// in `errdefs.ErrInvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The input is not in the filter syntax. Displays like containerd's
    /// error, e.g. `filters: parse error: [name==foo >|,|< ]: expected field
    /// or quoted`, marking the offending character between `>|` and `|<`
    /// (containerd marks a single byte; this marks the whole character).
    #[error("filters: parse error: {}", render_location(.input, *.position, .message))]
    Parse {
        /// The whole filter string that failed to parse.
        input: String,
        /// Byte offset into `input` where parsing failed; `input.len()` at
        /// the end of input.
        position: usize,
        /// What went wrong, e.g. `expected field or quoted`.
        message: String,
    },
}

impl FilterError {
    /// The errdefs category: always [`ErrorKind::InvalidArgument`], as in
    /// containerd.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Containerd's `[before >|here|< after]: message` rendering.
fn render_location(input: &str, position: usize, message: &str) -> String {
    match input.get(position..).and_then(|rest| rest.chars().next()) {
        Some(here) => {
            let before = &input[..position];
            let after = &input[position + here.len_utf8()..];
            format!("[{before} >|{here}|< {after}]: {message}")
        }
        None => format!("[{input}]: {message}"),
    }
}

/// A string that, after Go-style unquoting, may not be UTF-8 (`"\xff"` is a
/// valid Go string literal); containerd compares such values byte-wise.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

#[derive(Clone)]
enum FieldPath {
    Utf8(Vec<String>),
    /// A quoted component unquoted to non-UTF-8 bytes. No field of a real
    /// item (protobuf strings are UTF-8) can have that name, so the field is
    /// absent; the adaptor, which takes `String`s, is not consulted.
    NotUtf8(Vec<Bytes>),
}

impl FieldPath {
    fn new(components: Vec<Vec<u8>>) -> FieldPath {
        let mut utf8 = Vec::with_capacity(components.len());
        for component in &components {
            match std::str::from_utf8(component) {
                Ok(s) => utf8.push(s.to_owned()),
                Err(_) => return FieldPath::NotUtf8(components.into_iter().map(Bytes).collect()),
            }
        }
        FieldPath::Utf8(utf8)
    }
}

#[derive(Clone)]
enum Op {
    Present,
    Equal(Bytes),
    NotEqual(Bytes),
    /// `regex` is `None` when the pattern does not compile, in which case
    /// the selector never matches (containerd logs and returns false).
    Matches {
        pattern: Bytes,
        regex: Option<Regex>,
    },
}

#[derive(Clone)]
struct Selector {
    path: FieldPath,
    op: Op,
}

impl fmt::Debug for Selector {
    /// `["labels", "a.b"] == "x"`: the path as parsed, then the operator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            FieldPath::Utf8(path) => write!(f, "{path:?}")?,
            FieldPath::NotUtf8(path) => write!(f, "{path:?}")?,
        }
        match &self.op {
            Op::Present => Ok(()),
            Op::Equal(value) => write!(f, " == {value:?}"),
            Op::NotEqual(value) => write!(f, " != {value:?}"),
            Op::Matches {
                pattern,
                regex: Some(_),
            } => write!(f, " ~= {pattern:?}"),
            Op::Matches {
                pattern,
                regex: None,
            } => write!(f, " ~= {pattern:?} (invalid: matches nothing)"),
        }
    }
}

impl Selector {
    fn matches(&self, item: &dyn Adaptor) -> bool {
        let field = match &self.path {
            FieldPath::Utf8(path) => item.field(path),
            FieldPath::NotUtf8(_) => None,
        };
        // containerd reads an absent field as "" for everything but presence
        // and equality.
        let value = field.as_deref().unwrap_or("");
        match &self.op {
            Op::Present => field.is_some(),
            Op::Equal(want) => field.is_some() && value.as_bytes() == want.0,
            Op::NotEqual(want) => value.as_bytes() != want.0,
            Op::Matches { regex, .. } => regex.as_ref().is_some_and(|re| re.is_match(value)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Equal,
    NotEqual,
    Matches,
}
