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

use clap::{CommandFactory, Parser};

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
    let config = cli.config;
    let config_path = || env::config_path(config.as_deref());
    let result = match command {
        Command::Serve => {
            config_path().and_then(|p| runtime().and_then(|rt| rt.block_on(serve::serve(&p))))
        }
        Command::Check => config_path().and_then(|p| serve::check(&p)),
        Command::Demo { port, config: _ } => runtime().and_then(|rt| rt.block_on(demo::run(port))),
        Command::Completions { shell } => {
            output::completions(shell, &mut Cli::command());
            Ok(())
        }
        Command::Man => output::man(Cli::command()),
        Command::Help { command } => help(&command),
        Command::Keys(cmd) => config_path().and_then(|p| commands::keys(&p, cmd)),
        Command::Api { state } => config_path().and_then(|p| commands::api(&p, state)),
        Command::Logs(args) => config_path().and_then(|p| commands::logs(&p, args)),
        Command::Cluster(cmd) => config_path().and_then(|p| commands::cluster(&p, cmd)),
        Command::Webhooks(cmd) => config_path().and_then(|p| webhooks::run(&p, cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal(cli.log_format, &e);
            ExitCode::FAILURE
        }
    }
}

/// `keygate help [COMMAND…]`: the long help of the command named.
fn help(path: &[String]) -> Result<(), String> {
    let mut cmd = Cli::command();
    cmd.build();
    for name in path {
        cmd = cmd
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| format!("help: no command {name:?} (see keygate --help)"))?;
    }
    match cmd.print_long_help() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot print the help: {e}"))
        }
        _ => Ok(()),
    }
}

/// The error that ends the process, on stderr: `keygate: …`, or with
/// `--log-format json` one JSON line shaped like the other diagnostics.
fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("keygate: {message}"),
        LogFormat::Json => {
            let timestamp = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": "ERROR",
                "fields": { "message": message },
                "target": "keygate",
            });
            eprintln!("{line}");
        }
    }
}

/// The runtime: `KEYGATE_WORKERS` threads when set, else one per available core
/// (the affinity mask and the cgroup's CPU quota). One worker runs tokio's
/// current-thread scheduler: the same event loop without the work-stealing machinery
/// a single worker never uses (docs/performance.md, "Runtime").
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let workers = std::env::var("KEYGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all()
        .build()
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
