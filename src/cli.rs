//! Command-line types (clap). No logic: `main.rs` turns these into calls.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// keygate: an API-key gateway that runs beside your app.
///
/// keygate is a reverse proxy that checks API keys, maps paths to categories,
/// enforces per-key permissions (none / read / write) and rate limits, and forwards
/// allowed requests to the upstream unchanged.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, long_about = None)]
pub struct Cli {
    /// Path to config.yaml [default: $KEYGATE_CONFIG, else ./config.yaml, else
    /// /etc/keygate/config.yaml]
    #[arg(short, long, global = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Format of keygate's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default command).
    ///
    /// SIGHUP reloads config.yaml and the keys file; SIGTERM or SIGINT shut down
    /// gracefully (a second signal exits at once).
    Serve,
    /// Validate config.yaml and the keys file together; exit 1 if invalid.
    Check,
    /// Run a self-contained demo: a sample API as upstream, two sample keys, and
    /// ready-to-paste curl commands. Needs no files. Ctrl-C stops it.
    Demo {
        /// Port of the demo gateway on 127.0.0.1 (metrics on the next port; 0 picks
        /// free ports).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}
