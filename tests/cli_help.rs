//! Every `strata` command's `--help` teaches by example: README promises it, this walks
//! the whole command tree and holds it to that.

use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn help(path: &[String]) -> String {
    let out = Command::new(STRATA)
        .args(path)
        .arg("--help")
        .output()
        .expect("run strata");
    assert!(out.status.success(), "strata {path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:`, `help` left out.
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A name is indented by two; deeper lines continue a description.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_examples_in_its_help() {
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let text = help(&path);
        seen += 1;
        if !text.contains("Example") {
            missing.push(path.join(" "));
        }
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
    }
    assert!(seen > 25, "only {seen} commands found: the walk is broken");
    assert!(
        missing.is_empty(),
        "no examples in the help of: {missing:?}"
    );
}
