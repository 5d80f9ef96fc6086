//! `strata config`: the daemon's configuration file.

use clap::Subcommand;

/// `strata config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the default configuration, every key commented (for /etc/strata/config.toml).
    #[command(after_help = "Examples:\n  strata config default | less\n  \
        mkdir -p /etc/strata && strata config default > /etc/strata/config.toml")]
    Default,
}

pub(crate) fn run(command: &ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Default => print!("{}", strata::serve::config::DEFAULT_CONFIG),
    }
    Ok(())
}
