//! `strata serve`: loads the daemon's configuration, applies the command-line overrides,
//! sets up logging and runs the daemon until SIGTERM / SIGINT.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use strata::serve::config::{Config, LogFormat};

/// Arguments of `strata serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Flags override the configuration file; `strata config default` prints it, documented.\n\
containerd: [proxy_plugins.strata] type = \"snapshot\" address = \"/run/strata/strata.sock\"\n\n\
Examples:\n  strata serve\n  strata serve --config /etc/strata/config.toml --socket /run/strata/strata.sock\n  \
strata --log-level strata=debug serve --log-format json"
)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML). Default: /etc/strata/config.toml, if it exists.
    #[arg(long, value_name = "FILE", env = "STRATA_CONFIG")]
    config: Option<PathBuf>,

    /// Unix socket to serve (default: the config's `socket`, /run/strata/strata.sock).
    /// STRATA_SOCKET is where the other commands look for the daemon, so it is read here
    /// too.
    #[arg(long, value_name = "PATH", env = "STRATA_SOCKET")]
    socket: Option<PathBuf>,

    /// Log line format (default: the config's `log_format`, text).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// `root` and `log_level`: the global flags (or their environment variables) when given;
/// otherwise the configuration's values stand.
pub(crate) fn run(
    root: Option<&Path>,
    log_level: Option<&str>,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(root) = root {
        config.root = root.to_path_buf();
    }
    if let Some(level) = log_level {
        config.log_level = level.to_string();
    }
    if let Some(socket) = &args.socket {
        config.socket = socket.clone();
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    init_logging(&config.log_level, config.log_format);
    // A restarted daemon (systemd) also brings back the lazy artifact volumes whose
    // serving processes died, as it resumes its own lazy layers.
    super::lazy_volume::revive(
        &config.root,
        &strata::volume::VolumeStore::new(&config.root),
    );
    strata::serve::run(&config).with_context(|| format!("serve {}", config.socket.display()))
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
