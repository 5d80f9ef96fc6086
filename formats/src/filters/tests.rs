//! Unit tests for filter parsing, scanning, unquoting, Go regex translation and matching.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::go_regex::compile_go_regex;
use super::parser::unquote;
use super::scanner::{Scanner, Token};
use super::*;

/// containerd's filter test corpus item.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: &'static str,
    other: &'static str,
    labels: BTreeMap<&'static str, &'static str>,
}

impl Adaptor for Entry {
    fn field(&self, path: &[String]) -> Option<String> {
        let present = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        match path.first().map(String::as_str) {
            Some("name") => present(self.name),
            Some("other") => present(self.other),
            Some("labels") => self
                .labels
                .get(path[1..].join(".").as_str())
                .map(|v| v.to_string()),
            _ => None,
        }
    }
}

fn entry(
    name: &'static str,
    other: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Entry {
    Entry {
        name,
        other,
        labels: labels.iter().copied().collect(),
    }
}

fn corpus() -> Vec<Entry> {
    vec![
        entry("foo", "", &[("foo", "true")]),
        entry("bar", "", &[]),
        entry(
            "foo",
            "",
            &[("foo", "present"), ("more complex label", "present")],
        ),
        entry("bar", "", &[("bar", "true")]),
        entry(
            "fooer",
            "",
            &[("more complex label with \\ and \"", "present")],
        ),
        entry(
            "fooer",
            "",
            &[("more complex label with \\ and \".post", "present")],
        ),
        entry("baz", "too complex, yo", &[]),
        entry("bazo", "abc", &[]),
        entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
    ]
}

fn matching(filter: &Filter) -> Vec<usize> {
    corpus()
        .iter()
        .enumerate()
        .filter(|(_, e)| filter.matches(*e))
        .map(|(i, _)| i)
        .collect()
}

/// containerd's TestFilters, case for case.
#[test]
fn containerd_filter_cases() {
    let all: Vec<usize> = (0..9).collect();
    let ok: &[(&str, &[usize])] = &[
        ("", &all),
        ("name", &all),
        ("labels.foo", &[0, 2, 8]),
        ("labels.foo,name", &[0, 2, 8]),
        ("labels.foo==true", &[0]),
        ("labels.foo==omg_asdf.asdf-qwer", &[8]),
        ("name==bar", &[1, 3]),
        ("name!=bar", &[0, 2, 4, 5, 6, 7, 8]),
        ("name==bar,labels.bar", &[3]),
        ("other==\"too complex, yo\"", &[6]),
        ("other~=[abc]+,name!=foo", &[6, 7]),
        ("other~=/[abc]+/,name!=foo", &[6, 7]),
        ("other~=/[abc]{1,2}/,name!=foo", &[6, 7]),
        ("other~=/[abc]{0,1}\"\\//,name!=foo", &[]),
        ("name==bar,labels.bar==true", &[3]),
        ("name==bar,labels.bar==wrong", &[]),
        (r#"name==foo,labels."more complex label""#, &[2]),
        (
            r#"labels."more complex label with \\ and \""==present"#,
            &[4],
        ),
        (
            r#"labels."more complex label with \\ and \"".post==present"#,
            &[5],
        ),
    ];
    for (input, want) in ok {
        let filter = Filter::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(matching(&filter), *want, "{input:?}");
    }

    let errors = [
        (
            "labels.|foo|==omg_asdf.asdf-qwer",
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
        ),
        (
            r#"labels.?"more complex label with \\ and \"".post==present"#,
            r#"filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted"#,
        ),
        (
            "name==foo,",
            "filters: parse error: [name==foo,]: expected field or quoted",
        ),
        (
            "labels.",
            "filters: parse error: [labels.]: expected field or quoted",
        ),
        (
            "image~=,id?=?fbaq",
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
        ),
        (
            "labels.ns/key==value",
            "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated",
        ),
        (
            "labels.key==/value",
            "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated",
        ),
    ];
    for (input, want) in errors {
        let err = Filter::parse(input).expect_err(input);
        assert_eq!(err.to_string(), want, "{input:?}");
    }
}

#[test]
fn more_parse_errors() {
    let cases = [
        ("name===x", "[name >|=|< ==x]: unsupported operator \"===\""),
        ("name=x", "[name >|=|< x]: unsupported operator \"=\""),
        (
            "name x",
            "[name  >|x|< ]: expected an operator (\"==\"|\"!=\"|\"~=\")",
        ),
        (
            "name ",
            "[name ]: expected an operator (\"==\"|\"!=\"|\"~=\")",
        ),
        ("name==x ", "[name==x >| |< ]: unexpected input:  "),
        ("name==x ,a", "[name==x >| |< ,a]: unexpected input:  "),
        ("name==", "[name==]: expected value or quoted"),
        ("name==.x", "[name== >|.|< x]: expected value or quoted"),
        // A bare value cannot start with `.`, `=`, `!`, `~`, `/`, `|` or `"`.
        ("name~=.*", "[name~= >|.|< *]: expected value or quoted"),
        ("name== ==x", "[name==  >|=|< =x]: expected value or quoted"),
        ("  ", "[  ]: expected field or quoted"),
        (",", "[ >|,|< ]: expected field or quoted"),
        ("a..b", "[a. >|.|< b]: expected field or quoted"),
        ("-a", "[ >|-|< a]: expected field or quoted"),
        ("a\0b", "[a >|\0|< b]: unexpected null"),
        ("a==b\0", "[a==b >|\0|< ]: unexpected input: \u{FFFD}"),
        ("a\u{FFFD}", "[a >|\u{FFFD}|< ]: rune error"),
        (
            r#"labels."\g""#,
            r#"[labels. >|"|< \g"]: illegal escape sequence"#,
        ),
        (
            r#"labels."\xaz""#,
            r#"[labels. >|"|< \xaz"]: illegal numeric escape sequence"#,
        ),
        (
            r#"labels."\"#,
            r#"[labels. >|"|< \]: illegal escape sequence"#,
        ),
        (
            r#"labels."\""#,
            r#"[labels. >|"|< \"]: quoted literal not terminated"#,
        ),
        (
            r#"labels."\777"==x"#,
            r#"[labels. >|"|< \777"==x]: unquoting failed: quote syntax error"#,
        ),
        (
            r#"labels."\U00110000""#,
            r#"[labels. >|"|< \U00110000"]: unquoting failed: quote syntax error"#,
        ),
        (
            "labels.\"a\nb\"",
            "[labels. >|\"|< a\nb\"]: quoted literal not terminated",
        ),
        ("name==/x/", "[name== >|/|< x/]: invalid quote encountered"),
        ("name!=|x|", "[name!= >|||< x|]: invalid quote encountered"),
        (
            r#"name=="x"y"#,
            r#"[name=="x" >|y|< ]: unexpected input: y"#,
        ),
        ("name==x,", "[name==x,]: expected field or quoted"),
        ("é==x", "[ >|é|< ==x]: expected field or quoted"),
    ];
    for (input, want) in cases {
        let err = Filter::parse(input).expect_err(input);
        assert_eq!(
            err.to_string(),
            format!("filters: parse error: {want}"),
            "{input:?}"
        );
    }
    let FilterError::Parse {
        input,
        position,
        message,
    } = Filter::parse("name==").expect_err("error");
    assert_eq!(
        (input.as_str(), position, message.as_str()),
        ("name==", 6, "expected value or quoted")
    );
    assert_eq!(
        Filter::parse("=").expect_err("error").kind(),
        ErrorKind::InvalidArgument
    );
}

fn map_adaptor(fields: &[(&str, &str)]) -> impl Fn(&[String]) -> Option<String> {
    let fields: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |path: &[String]| fields.get(&path.join(".")).cloned()
}

#[test]
fn semantics() {
    let item = map_adaptor(&[
        ("name", "abc"),
        ("kind", "committed"),
        ("labels.containerd.io/gc.root", "2024"),
        ("labels.empty", ""),
    ]);
    let cases: &[(&str, bool)] = &[
        ("name", true),
        ("parent", false),
        ("labels.empty", true),
        ("labels.empty==\"\"", true),
        ("labels.empty!=\"\"", false),
        ("name==abc", true),
        ("name==ab", false),
        ("name!=abc", false),
        ("name!=x", true),
        // Absent fields read as "" for != and ~=, but == needs presence.
        ("parent!=x", true),
        ("parent!=\"\"", false),
        ("parent==\"\"", false),
        ("parent~=^$", true),
        ("parent~=/./", false),
        ("name~=^ab", true),
        ("name~=^b", false),
        ("name~=|^a.c$|", true),
        ("name~=\"^a\\\\w+$\"", true),
        ("labels.\"containerd.io/gc.root\"", true),
        ("labels.containerd.\"io/gc\".root==2024", true),
        (
            "labels.\"containerd.io/gc.root\"==2024,kind==committed",
            true,
        ),
        ("labels.\"containerd.io/gc.root\"==2024,kind==active", false),
        ("  name == abc,  kind~=  ^c", true),
        ("name==\"\\x61bc\"", true),
        ("name==\"\\u0061\\U00000062\\143\"", true),
        // A bad regexp is no parse error; it matches nothing.
        ("name~=(", false),
        ("name~=a**", false),
        // Non-UTF-8 values and paths never equal, always differ.
        ("name==\"\\xff\"", false),
        ("name!=\"\\xff\"", true),
        ("labels.\"\\xff\"", false),
        ("labels.\"\\xff\"!=x", true),
        ("name~=\"\\xff\"", false),
    ];
    for (input, want) in cases {
        let filter = Filter::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(filter.matches(&item), *want, "{input:?}");
    }
}

#[test]
fn values_take_any_graphic_character() {
    let item = map_adaptor(&[("a", "x=y!z~/|\"é牛:@"), ("b", "sha256:0123")]);
    for input in [
        "a==x=y!z~/|\"é牛:@",
        "b==sha256:0123",
        "a~=牛",
        "b~=^sha256:[0-9]+$",
    ] {
        assert!(
            Filter::parse(input).expect(input).matches(&item),
            "{input:?}"
        );
    }
    // Format characters (Cf) end a value, as in Go.
    let err = Filter::parse("a==x\u{200B}y").expect_err("zero-width space");
    assert!(
        err.to_string().ends_with("unexpected input: \u{200B}"),
        "{err}"
    );
}

#[test]
fn any_of_several_filters() {
    let item = map_adaptor(&[("name", "abc")]);
    let no: &[&str] = &[];
    assert!(Filter::parse_any(no).expect("empty").matches(&item));
    assert!(
        Filter::parse_any(&["name==x", "name==abc"])
            .expect("parse")
            .matches(&item)
    );
    assert!(
        !Filter::parse_any(&["name==x", "name==y"])
            .expect("parse")
            .matches(&item)
    );
    assert!(
        Filter::parse_any(&["name==x", ""])
            .expect("parse")
            .matches(&item)
    );
    let owned = vec![String::from("name==abc,kind")];
    assert!(!Filter::parse_any(&owned).expect("parse").matches(&item));
    let err = Filter::parse_any(&["name==x", "name=="]).expect_err("second is bad");
    assert_eq!(
        err.to_string(),
        "filters: parse error: [name==]: expected value or quoted"
    );
    assert!(Filter::always().matches(&item));
    assert!(Filter::default().matches(&item));
    let parsed: Filter = "name==abc".parse().expect("from_str");
    assert!(parsed.matches(&item));
}

#[test]
fn debug_shows_the_parsed_selectors() {
    let filter = Filter::parse(r#"a."b.c"==x,d,e!="\xff",f~=("#).expect("parse");
    let debug = format!("{filter:?}");
    for part in [
        r#"["a", "b.c"] == "x""#,
        r#"["d"]"#,
        r#"["e"] != b"\xff""#,
        r#"["f"] ~= "(" (invalid"#,
    ] {
        assert!(debug.contains(part), "{debug} lacks {part}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Eof,
    Illegal(&'static str),
    Quoted,
    Value,
    Field,
    Separator,
    Operator,
}

/// containerd's TestScanner, token for token.
#[test]
fn containerd_scanner_cases() {
    use Tok::*;
    type Case = (&'static str, &'static [(usize, Tok, &'static str)]);
    let cases: &[Case] = &[
        ("name", &[(0, Field, "name"), (4, Eof, "")]),
        (
            "name==value,foo!=bar",
            &[
                (0, Field, "name"),
                (4, Operator, "=="),
                (6, Value, "value"),
                (11, Separator, ","),
                (12, Field, "foo"),
                (15, Operator, "!="),
                (17, Value, "bar"),
                (20, Eof, ""),
            ],
        ),
        (
            "name==value,labels.foo=value,other.bar~=match",
            &[
                (0, Field, "name"),
                (4, Operator, "=="),
                (6, Value, "value"),
                (11, Separator, ","),
                (12, Field, "labels"),
                (18, Separator, "."),
                (19, Field, "foo"),
                (22, Operator, "="),
                (23, Value, "value"),
                (28, Separator, ","),
                (29, Field, "other"),
                (34, Separator, "."),
                (35, Field, "bar"),
                (38, Operator, "~="),
                (40, Value, "match"),
                (45, Eof, ""),
            ],
        ),
        (
            r"name~=[abc]\+,foo=test",
            &[
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Value, r"[abc]\+"),
                (13, Separator, ","),
                (14, Field, "foo"),
                (17, Operator, "="),
                (18, Value, "test"),
                (22, Eof, ""),
            ],
        ),
        (
            "name~=/[abc]{0,2}/,foo=test",
            &[
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Quoted, "/[abc]{0,2}/"),
                (18, Separator, ","),
                (19, Field, "foo"),
                (22, Operator, "="),
                (23, Value, "test"),
                (27, Eof, ""),
            ],
        ),
        (
            "name~=牛,labels.moo=true",
            &[
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Value, "牛"),
                (9, Separator, ","),
                (10, Field, "labels"),
                (16, Separator, "."),
                (17, Field, "moo"),
                (20, Operator, "="),
                (21, Value, "true"),
                (25, Eof, ""),
            ],
        ),
        (
            "name~=|牛|,labels.moo=true",
            &[
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Quoted, "|牛|"),
                (11, Separator, ","),
                (12, Field, "labels"),
                (18, Separator, "."),
                (19, Field, "moo"),
                (22, Operator, "="),
                (23, Value, "true"),
                (27, Eof, ""),
            ],
        ),
        (
            r#"name~="asdf\n\tfooo""#,
            &[
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Quoted, r#""asdf\n\tfooo""#),
                (20, Eof, ""),
            ],
        ),
        (
            "foo\0bar",
            &[
                (0, Field, "foo"),
                (3, Illegal("unexpected null"), ""),
                (4, Field, "bar"),
                (7, Eof, ""),
            ],
        ),
        (
            "foo = bar    ",
            &[
                (0, Field, "foo"),
                (4, Operator, "="),
                (6, Value, "bar"),
                (13, Eof, ""),
            ],
        ),
        (
            "compound.labels==punctuated_value.foo-bar",
            &[
                (0, Field, "compound"),
                (8, Separator, "."),
                (9, Field, "labels"),
                (15, Operator, "=="),
                (17, Value, "punctuated_value.foo-bar"),
                (41, Eof, ""),
            ],
        ),
        (
            "interrupted=",
            &[
                (0, Field, "interrupted"),
                (11, Operator, "="),
                (12, Eof, ""),
            ],
        ),
        (
            "doublevalue=value value",
            &[
                (0, Field, "doublevalue"),
                (11, Operator, "="),
                (12, Value, "value"),
                (18, Field, "value"),
                (23, Eof, ""),
            ],
        ),
        (
            r#""leading quote".postquote==value"#,
            &[
                (0, Quoted, r#""leading quote""#),
                (15, Separator, "."),
                (16, Field, "postquote"),
                (25, Operator, "=="),
                (27, Value, "value"),
                (32, Eof, ""),
            ],
        ),
        (
            "input==,id!=ff",
            &[
                (0, Field, "input"),
                (5, Operator, "=="),
                (7, Separator, ","),
                (8, Field, "id"),
                (10, Operator, "!="),
                (12, Value, "ff"),
                (14, Eof, ""),
            ],
        ),
        (
            r"input~=/foo\/bar/,id!=ff",
            &[
                (0, Field, "input"),
                (5, Operator, "~="),
                (7, Quoted, r"/foo\/bar/"),
                (17, Separator, ","),
                (18, Field, "id"),
                (20, Operator, "!="),
                (22, Value, "ff"),
                (24, Eof, ""),
            ],
        ),
        (
            "input~=|foo/bar|,id!=ff",
            &[
                (0, Field, "input"),
                (5, Operator, "~="),
                (7, Quoted, "|foo/bar|"),
                (16, Separator, ","),
                (17, Field, "id"),
                (19, Operator, "!="),
                (21, Value, "ff"),
                (23, Eof, ""),
            ],
        ),
        (
            "labels.containerd.io/key==value",
            &[
                (0, Field, "labels"),
                (6, Separator, "."),
                (7, Field, "containerd"),
                (17, Separator, "."),
                (18, Field, "io"),
                (20, Illegal("quoted literal not terminated"), "/key==value"),
                (31, Eof, ""),
            ],
        ),
        (
            "labels.\"containerd.io\nkey\"==value",
            &[
                (0, Field, "labels"),
                (6, Separator, "."),
                (
                    7,
                    Illegal("quoted literal not terminated"),
                    "\"containerd.io\n",
                ),
                (22, Field, "key"),
                (25, Illegal("quoted literal not terminated"), "\"==value"),
                (33, Eof, ""),
            ],
        ),
        (
            r#"labels."\g""#,
            &[
                (0, Field, "labels"),
                (6, Separator, "."),
                (7, Illegal("illegal escape sequence"), r#""\g""#),
                (11, Eof, ""),
            ],
        ),
        (
            r#"labels."\xaz""#,
            &[
                (0, Field, "labels"),
                (6, Separator, "."),
                (7, Illegal("illegal numeric escape sequence"), r#""\xaz""#),
                (13, Eof, ""),
            ],
        ),
    ];
    for (input, want) in cases {
        let mut scanner = Scanner::new(input);
        let mut got = Vec::new();
        loop {
            let (pos, token, text) = scanner.scan();
            let token = match token {
                Token::Eof => Eof,
                Token::Illegal => Illegal(scanner.err.unwrap_or_default()),
                Token::Quoted => Quoted,
                Token::Value => Value,
                Token::Field => Field,
                Token::Separator => Separator,
                Token::Operator => Operator,
                Token::Other(c) => panic!("{input:?}: unexpected character {c:?}"),
            };
            got.push((pos, token, text));
            if token == Eof {
                break;
            }
        }
        assert_eq!(got, *want, "{input:?}");
        assert_eq!(scanner.scan().1, Token::Eof, "{input:?}: must stay at EOF");
    }
}

#[test]
fn unquote_like_go() {
    let cases: &[(&str, Option<&[u8]>)] = &[
        (r#""""#, Some(b"")),
        (r#""abc""#, Some(b"abc")),
        (r#""a\"b\\c""#, Some(b"a\"b\\c")),
        (r#""\a\b\f\n\r\t\v""#, Some(b"\x07\x08\x0c\n\r\t\x0b")),
        (r#""\x41\101\u00e9\U0001F600""#, Some("AAé😀".as_bytes())),
        (r#""\xff\377""#, Some(b"\xff\xff")),
        (r#""\ud800""#, Some("\u{FFFD}".as_bytes())),
        (r"/a\/b/", Some(b"a/b")),
        (r"|a\|b/|", Some(b"a|b/")),
        (r#""\/""#, None),
        (r"/\|/", None),
        (r#""\'""#, None),
        (r#""\400""#, None),
        (r#""\q""#, None),
        (r#""\x4""#, None),
        ("\"a", None),
        ("'a'", None),
    ];
    for (quoted, want) in cases {
        assert_eq!(unquote(quoted).as_deref(), *want, "{quoted}");
    }
}

#[test]
fn go_regex_translation() {
    let cases: &[(&str, Option<&str>)] = &[
        ("^ext", Some("^ext")),
        (r"\d+\.\w", Some(r"[0-9]+\.[0-9A-Za-z_]")),
        (r"[\d\s-]", Some(r"[[0-9][\t\n\f\r ]\-]")),
        (r"\bx\B", Some(r"(?-u:\b)x(?-u:\B)")),
        (r"\Q.*\E+", Some(r"\.\*+")),
        (r"\Qa.", Some(r"a\.")),
        ("a{2}b{1,}c{0,3}?", Some("a{2}b{1,}c{0,3}?")),
        ("{x}a{,3}a{01}", Some(r"\{x\}a\{\,3\}a\{01\}")),
        (r"\<a\>", Some("<a>")),
        ("[a&&b]", Some(r"[a\&\&b]")),
        ("[[]", Some(r"[\[]")),
        ("[]a]", Some(r"[\]a]")),
        ("[^]-]", Some(r"[^\]\-]")),
        ("[a-z-]", Some(r"[a-z\-]")),
        ("[[:alpha:][:^digit:]]", Some("[[:alpha:][:^digit:]]")),
        (r"[\x41-\x{5A}\n]", Some(r"[A-Z\x{A}]")),
        (r"\101\0", Some(r"A\x{0}")),
        (
            "(?i)a(?-i:b)(?)c(?ii)(?i-i)",
            Some("(?i)a(?-i:b)c(?i)(?-i)"),
        ),
        ("(?P<x>a)(?<y>b)(?P<1>c)", Some("(a)(b)(c)")),
        (r"\p{Greek}\PL\p{^L}", Some(r"\p{Greek}\P{L}\P{L}")),
        ("a**", None),
        ("a*?*", None),
        ("a+{2}", None),
        ("a{1001}", None),
        ("a{3,2}", None),
        (r"\1", None),
        (r"\C", None),
        (r"\q", None),
        ("a\\", None),
        ("[a", None),
        ("[]", None),
        ("[z-a]", None),
        ("[[:foo:]]", None),
        (r"[\b]", None),
        ("(?x)a", None),
        ("(?i-)a", None),
        ("(?--i)a", None),
        ("(?P<>a)", None),
        (r"\x{110000}", None),
    ];
    for (go, want) in cases {
        assert_eq!(go_regex::translate(go).as_deref(), *want, "{go:?}");
    }
}

#[test]
fn go_regex_semantics() {
    let cases: &[(&str, &str, bool)] = &[
        (r"^\d+$", "123", true),
        // Go's perl classes and word boundaries are ASCII-only.
        (r"^\d$", "٣", false),
        (r"^\w$", "é", false),
        (r"^\s$", "\u{A0}", false),
        (r"^\s$", "\x0b", false),
        (r"\bé", "é", false),
        ("^{x}$", "{x}", true),
        ("^a{,2}$", "a{,2}", true),
        ("^[a&&b]+$", "&a", true),
        (r"^\Q*.\E$", "*.", true),
        (r"^\Q*.\E$", "ab", false),
        (r"[\x{D800}]", "a", false),
        (r"[^\x{D800}]", "a", true),
        (r"a|\x{DFFF}", "a", true),
        (r"^[\x{D000}-\x{E000}]$", "\u{D7FF}", true),
    ];
    for (go, haystack, want) in cases {
        let re = compile_go_regex(go.as_bytes()).unwrap_or_else(|| panic!("{go:?} should compile"));
        assert_eq!(re.is_match(haystack), *want, "{go:?} on {haystack:?}");
    }
}

#[test]
fn error_location_rendering() {
    assert_eq!(render_location("ab", 0, "m"), "[ >|a|< b]: m");
    assert_eq!(render_location("ab", 2, "m"), "[ab]: m");
    assert_eq!(render_location("aé", 1, "m"), "[a >|é|< ]: m");
    // Not a character boundary: fall back to the whole input, no panic.
    assert_eq!(render_location("é", 1, "m"), "[é]: m");
    assert_eq!(render_location("", 5, "m"), "[]: m");
}

/// One selector of a generated filter: path components, operator and
/// value, all as the parser should return them.
#[derive(Debug, Clone)]
struct GenSelector {
    path: Vec<(String, bool)>,
    op: Option<(&'static str, String, u8)>,
    spaces: (bool, bool, bool),
}

fn quote(s: &str, delim: char) -> String {
    let mut out = String::from(delim);
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\0' => out.push_str(r"\x00"),
            char::REPLACEMENT_CHARACTER => out.push_str(r"\ufffd"),
            c if c == delim => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(delim);
    out
}

fn render(selectors: &[GenSelector]) -> String {
    let mut out = String::new();
    for (i, s) in selectors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if s.spaces.0 {
            out.push(' ');
        }
        for (j, (component, quoted)) in s.path.iter().enumerate() {
            if j > 0 {
                out.push('.');
            }
            if *quoted {
                out.push_str(&quote(component, '"'));
            } else {
                out.push_str(component);
            }
        }
        if let Some((op, value, style)) = &s.op {
            if s.spaces.1 {
                out.push(' ');
            }
            out.push_str(op);
            if s.spaces.2 {
                out.push_str(" \t");
            }
            match style {
                0 => out.push_str(value),
                1 => out.push_str(&quote(value, '"')),
                2 => out.push_str(&quote(value, '/')),
                _ => out.push_str(&quote(value, '|')),
            }
        }
    }
    out
}

fn gen_selector() -> impl Strategy<Value = GenSelector> {
    let component = prop_oneof![
        "[A-Za-z0-9_]{1,8}".prop_map(|s| (s, false)),
        any::<String>().prop_map(|s| (s, true)),
    ];
    let bare_value = "[A-Za-z0-9_:@+-][A-Za-z0-9_:@+=!~./|\"-]{0,12}".prop_map(|s| (s, 0u8));
    let quoted_value = (any::<String>(), 1u8..4).prop_map(|(s, style)| (s, style));
    let op = prop_oneof![Just("=="), Just("!="), Just("~=")];
    let op = proptest::option::of((op, prop_oneof![bare_value, quoted_value]).prop_map(
        |(op, (value, style))| {
            // Only regexps may use the alternative quotes.
            let style = if op != "~=" && style > 1 { 1 } else { style };
            (op, value, style)
        },
    ));
    (
        proptest::collection::vec(component, 1..4),
        op,
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(path, op, spaces)| GenSelector { path, op, spaces })
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(input in any::<String>()) {
        let filter = Filter::parse(&input);
        if let Ok(filter) = filter {
            let _ = filter.matches(&map_adaptor(&[("a", "b")]));
        }
        let _ = go_regex::translate(&input);
    }

    #[test]
    fn grammar_soup_never_panics(input in r#"[a-z_0-9.,=!~/|"\\ \t\n\x00\u{FFFD}xuU{}\[\]()*?é-]{0,40}"#) {
        if let Ok(filter) = Filter::parse(&input) {
            let _ = filter.matches(&map_adaptor(&[("a", "b"), ("a.b", "")]));
        }
        let _ = go_regex::translate(&input);
        let _ = compile_go_regex(input.as_bytes());
    }

    #[test]
    fn generated_expressions_parse(selectors in proptest::collection::vec(gen_selector(), 1..5)) {
        let input = render(&selectors);
        let filter = Filter::parse(&input).map_err(|e| TestCaseError::fail(format!("{input:?}: {e}")))?;
        let Kind::All(parsed) = &filter.kind else {
            return Err(TestCaseError::fail(format!("{input:?}: not a selector list")));
        };
        prop_assert_eq!(parsed.len(), selectors.len());
        for (got, want) in parsed.iter().zip(&selectors) {
            let want_path: Vec<String> = want.path.iter().map(|(c, _)| c.clone()).collect();
            match &got.path {
                FieldPath::Utf8(path) => prop_assert_eq!(path, &want_path),
                FieldPath::NotUtf8(_) => return Err(TestCaseError::fail("path should be UTF-8")),
            }
            let got_op = match &got.op {
                Op::Present => None,
                Op::Equal(v) => Some(("==", v)),
                Op::NotEqual(v) => Some(("!=", v)),
                Op::Matches { pattern, .. } => Some(("~=", pattern)),
            };
            match (got_op, &want.op) {
                (None, None) => {}
                (Some((op, value)), Some((want_op, want_value, _))) => {
                    prop_assert_eq!(op, *want_op);
                    prop_assert_eq!(&value.0, want_value.as_bytes());
                }
                (got, want) => return Err(TestCaseError::fail(format!("{input:?}: {got:?} vs {want:?}"))),
            }
        }
    }
}
