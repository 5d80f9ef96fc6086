//! `strata-bench`: Strata's end-to-end benchmarks, each run side by side with the
//! reference tool in the same invocation, reporting medians and the ratio.
//!
//! Absolute times on shared machines are noisy; the ratio between Strata and the
//! reference, measured back to back on the same input, is the number that matters.

mod ingest;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "strata-bench", version)]
#[command(after_help = "Example:\n  strata-bench ingest --strata target/release/strata --size 1GiB --runs 5")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Ingest of a large file (hash + write + fsync) vs `sha256sum` of the same file.
    #[command(after_help = "Example:\n  strata-bench ingest --strata target/release/strata --size 1GiB")]
    Ingest(ingest::IngestArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Ingest(args) => ingest::run(&args),
    }
}
