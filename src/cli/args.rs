//! Command-line types (clap). No logic: `main.rs` turns these into calls.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// keygate: an API-key gateway that runs beside your app.
///
/// keygate is a reverse proxy that checks API keys, maps paths to categories,
/// enforces per-key permissions (none / read / write) and rate limits, and forwards
/// allowed requests to the upstream unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version = VERSION,
    about,
    long_about = None,
    disable_help_subcommand = true,
    after_help = "Run `keygate help COMMAND` or `keygate COMMAND --help` for a command's options."
)]
pub(crate) struct Cli {
    /// Path to config.yaml [default: ./config.yaml, else /etc/keygate/config.yaml]
    #[arg(
        short,
        long,
        global = true,
        value_name = "CONFIG",
        env = "KEYGATE_CONFIG",
        // An empty $KEYGATE_CONFIG is the same as an unset one.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub(crate) config: Option<PathBuf>,

    /// Format of keygate's own diagnostics on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "KEYGATE_LOG_FORMAT"
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// `keygate --version`: the package version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KEYGATE_GIT_REV"),
    ")"
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway (the default command).
    ///
    /// SIGHUP reloads config.yaml and the keys file; SIGTERM or SIGINT shut down
    /// gracefully (a second signal exits at once).
    Serve,
    /// Validate config.yaml and the keys file together; exit 1 if invalid.
    Check,
    /// Create, list, show, edit, delete and reveal API keys (edits the keys file;
    /// a running gateway follows within 2 s).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Switch API access on or off for every key, or show the switch.
    Api {
        #[arg(value_enum)]
        state: ApiState,
    },
    /// Show the API request log, newest first (the "API Logs" page).
    Logs(LogsArgs),
    /// Cluster mode: show the shared store, the version and the replicas.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage webhook endpoints: signed events about keys, the API switch,
    /// integration health and writes.
    #[command(subcommand)]
    Webhooks(crate::cli::webhooks::WebhooksCommand),
    /// Run a self-contained demo: a sample API as upstream, two sample keys, and
    /// ready-to-paste curl commands. Needs no files. Ctrl-C stops it.
    Demo {
        /// Port of the demo gateway on 127.0.0.1 (metrics on the next port; 0 picks
        /// free ports).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The demo reads no config: this hidden stand-in keeps the global `-c` out
        /// of its help (and ignores it).
        #[arg(short, long, hide = true, value_name = "CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script to standard output, e.g.
    /// `keygate completions bash > /etc/bash_completion.d/keygate`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output, e.g. `keygate man > keygate.1`.
    Man,
    /// Print this help, or a command's (`keygate help keys create`).
    Help {
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ApiState {
    On,
    Off,
    Status,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key and print it (once: keygate stores only its hash).
    Create {
        /// The key's name, e.g. "Zapier" (unique, ignoring case).
        #[arg(long)]
        name: String,
        /// Access to one category: CATEGORY=none|read|write (repeatable).
        #[arg(long = "perm", value_name = "CATEGORY=LEVEL")]
        perms: Vec<String>,
        /// Access to every category not named with --perm (the "*" level).
        #[arg(long, value_name = "LEVEL")]
        all: Option<String>,
        /// The key's own rate limit instead of the default: N/s or N/m, with an
        /// optional burst (20/s:40).
        #[arg(long, value_name = "N/s[:BURST]")]
        rate: Option<String>,
        /// Expiry: a date (2027-01-01) or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
        /// Print only the key (for scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// List keys: name, id, masked key, permissions, last used, created.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one key by id or name.
    Show {
        #[arg(value_name = "ID|NAME")]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a key; effective within 2 s on a running gateway.
    Edit {
        #[arg(value_name = "ID|NAME")]
        key: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Set one category's level (others are kept): CATEGORY=none|read|write.
        #[arg(long = "perm", value_name = "CATEGORY=LEVEL")]
        perms: Vec<String>,
        /// Set the "*" level (every category not named).
        #[arg(long, value_name = "LEVEL")]
        all: Option<String>,
        /// N/s[:BURST], N/m[:BURST], or "none" for the default limit.
        #[arg(long, value_name = "N/s[:BURST]|none")]
        rate: Option<String>,
        /// A date or RFC 3339 time, or "never".
        #[arg(long, value_name = "DATE|never")]
        expires: Option<String>,
    },
    /// Delete a key; effective within 2 s on a running gateway.
    Delete {
        #[arg(value_name = "ID|NAME")]
        key: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Cluster mode: write the cluster's keys as a keys file (for GitOps).
    Export {
        /// Write to FILE (mode 0600) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a key's full value (operator-supplied keys, or keys sealed with
    /// KEYGATE_SEAL_KEY).
    Reveal {
        #[arg(value_name = "ID|NAME")]
        key: String,
    },
}

/// The `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// The shared store, the cluster version and every replica's version and staleness.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write the cluster's keys as a keys file (standard output or -o FILE).
    #[command(hide = true)]
    Export {
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The arguments of `keygate logs`.
#[derive(Debug, Default, Args)]
pub(crate) struct LogsArgs {
    /// Only paths containing this text.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Only this method (GET, POST…).
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Only this status (404) or class (4xx).
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only this key (name or id).
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Only records newer than this: 30m, 1h, 2d, or an RFC 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only requests that took longer than this (500ms, 2s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) slower_than: Option<String>,
    /// How many records at most.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// Keep printing new records as they arrive.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Print the records as JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
}
