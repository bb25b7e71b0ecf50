//! The command line: argument types, `serve`/`check`, key and API-switch commands,
//! log printing, the demo, and the one module that writes to standard output. This
//! is the only part of the library that reads the environment.
//!
//! May import anything below it.

pub(crate) mod args;
pub(crate) mod cluster;
pub(crate) mod commands;
pub(crate) mod demo;
pub(crate) mod env;
pub(crate) mod logs;
pub(crate) mod output;
pub(crate) mod serve;
pub(crate) mod webhooks;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, LogFormat};

/// Parses the command line, sets up diagnostics and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the gateway logs at info; other commands print their own output.
    let default_level = if matches!(command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.log_format, default_level);
    let config_path = env::config_path(cli.config.as_deref());
    let result = match command {
        Command::Serve => runtime().and_then(|rt| rt.block_on(serve::serve(&config_path))),
        Command::Check => serve::check(&config_path),
        Command::Demo { port } => runtime().and_then(|rt| rt.block_on(demo::run(port))),
        Command::Keys(cmd) => commands::keys(&config_path, cmd),
        Command::Api { state } => commands::api(&config_path, state),
        Command::Logs(args) => commands::logs(&config_path, args),
        Command::Cluster(cmd) => commands::cluster(&config_path, cmd),
        Command::Webhooks(cmd) => webhooks::run(&config_path, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime: multi-threaded, `KEYGATE_WORKERS` threads when set.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = std::env::var("KEYGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        b.worker_threads(n);
    }
    b.build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
