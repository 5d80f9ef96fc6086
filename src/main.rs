//! `strata`: the command-line entry point. Parses arguments, runs one command, and prints
//! any error as a single line naming the thing and the cause.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
