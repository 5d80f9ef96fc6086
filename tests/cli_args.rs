//! What the `strata` command line accepts, rejects and says about its flags, run as a
//! user runs it: the real binary.

use std::process::{Command, Output};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn run(args: &[&str]) -> Output {
    Command::new(STRATA)
        .env_remove("STRATA_ROOT")
        .env_remove("STRATA_LOG")
        .args(args)
        .output()
        .expect("run strata")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_help_states_one_log_level_default_the_configs() {
    let out = run(&["serve", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    // `serve` logs at its configuration's `log_level` (info by default) unless the flag
    // is given: the help must not claim a fixed default of its own.
    assert!(!help.contains("[default: warn]"), "{help}");
    assert!(help.contains("log_level"), "{help}");
}
