//! One line for an error and its causes, each cause once.
//!
//! Many errors already print their source in their own text (`"{what}: {source}"`), and
//! wrappers such as reqwest's keep the real cause ("Connection refused") only in their
//! source chain. [`chain`] walks the whole `source()` chain and prints every cause, except
//! one whose text the line already holds; a cause that starts with what the line ends with
//! (`layer X` then `layer X: entry …`) adds only what is new.

use std::error::Error;

/// `err` and all its causes on one line, outermost first, joined by ": ", each text once.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    join(parts)
}

/// The parts of an error chain (outermost first) on one line, each text once: see
/// [`chain`].
pub fn join<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = String::new();
    for part in parts {
        let text = new_part(&line, part.as_ref().trim());
        if text.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// What of `text` is not yet on `line`: nothing if the line holds it whole; else `text`
/// without its longest leading `a: b` that the line already ends with (`remove image "x"`
/// then `image "x": not found` adds `not found`).
fn new_part<'a>(line: &str, text: &'a str) -> &'a str {
    if line.contains(text) {
        return "";
    }
    let repeated = text
        .match_indices(": ")
        .map(|(i, _)| i)
        .filter(|&i| {
            line.strip_suffix(&text[..i])
                .is_some_and(|before| before.is_empty() || before.ends_with(' '))
        })
        .last();
    match repeated {
        Some(i) => &text[i + 2..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn nest(texts: &[&'static str]) -> E {
        let mut e: Option<Box<E>> = None;
        for t in texts.iter().rev() {
            e = Some(Box::new(E(t, e)));
        }
        *e.unwrap()
    }

    #[test]
    fn a_chain_whose_errors_repeat_their_source_reads_each_cause_once() {
        // As reqwest under a registry error under the command's context.
        let e = nest(&[
            "pull 127.0.0.1:1/alpine:3.20",
            "HEAD http://127.0.0.1:1/v2/alpine/manifests/3.20: error sending request",
            "error sending request",
            "client error (Connect)",
            "tcp connect error: Connection refused (os error 111)",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            chain(&e),
            "pull 127.0.0.1:1/alpine:3.20: HEAD http://127.0.0.1:1/v2/alpine/manifests/3.20: \
             error sending request: client error (Connect): tcp connect error: \
             Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_cause_starting_with_its_context_adds_only_what_is_new() {
        let e = nest(&[
            "layer sha256:ab",
            "layer sha256:ab: entry etc/x: bad header",
            "bad header",
        ]);
        assert_eq!(chain(&e), "layer sha256:ab: entry etc/x: bad header");
        let e = nest(&[
            "config missing.toml",
            "No such file or directory (os error 2)",
            "No such file or directory (os error 2)",
        ]);
        assert_eq!(
            chain(&e),
            "config missing.toml: No such file or directory (os error 2)"
        );
        let e = nest(&["remove image \"x\"", "image \"x\": not found"]);
        assert_eq!(chain(&e), "remove image \"x\": not found");
    }

    #[test]
    fn distinct_causes_all_show() {
        let e = nest(&["a", "b", "c"]);
        assert_eq!(chain(&e), "a: b: c");
        // Only a whole repeated prefix is dropped, not a word that happens to end the line.
        let e = nest(&["open bar", "ar: x"]);
        assert_eq!(chain(&e), "open bar: ar: x");
    }
}
