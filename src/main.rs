//! keygate's entry point: parse the command line, set up diagnostics, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use keygate::cli::{Cli, Command, LogFormat};
use keygate::{commands, config, demo, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the gateway logs at info; other commands print their own output.
    let default_level = if !matches!(command, Command::Serve) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_format, default_level);
    let config_path = config::discover(cli.config.as_deref());
    let result = match command {
        Command::Serve => runtime().and_then(|rt| rt.block_on(run::serve(&config_path))),
        Command::Check => run::check(&config_path),
        Command::Demo { port } => runtime().and_then(|rt| rt.block_on(demo::run(port))),
        Command::Keys(cmd) => commands::keys(&config_path, cmd),
        Command::Api { state } => commands::api(&config_path, state),
        Command::Logs(args) => commands::logs(&config_path, args),
        Command::Webhooks(cmd) => keygate::webhooks::cli::run(&config_path, cmd), // webhooks:
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

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
