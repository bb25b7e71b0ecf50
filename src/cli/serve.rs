//! `keygate serve` and `keygate check`: the process-level glue around [`Gateway`]
//! (runtime, signals, exit codes).

use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::output;
use crate::config::{Config, LoadError};
use crate::control::reload;
use crate::control::source::KeysInput;
use crate::gateway::{Gateway, GatewayOptions};

/// Runs the gateway until SIGTERM/SIGINT, reloading on SIGHUP.
pub(crate) async fn serve(config_path: &Path) -> Result<(), String> {
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("signal setup: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signal setup: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signal setup: {e}"))?;
    let options = options(config_path)?;
    let gw = Gateway::start(config_path, options)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            // Errors are logged by the reloader; the old snapshot stays.
            _ = hup.recv() => { let _ = gw.reload(); }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: readyz now fails; draining");
    let shutdown = gw.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        _ = term.recv() => tracing::warn!("second signal: exiting now"),
        _ = int.recv() => tracing::warn!("second signal: exiting now"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// What the gateway needs from the environment: the admin token (named by
/// `admin.token_env`) and the seal key.
fn options(config_path: &Path) -> Result<GatewayOptions, String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    // cluster: the keys come from the shared store; the file is only a seed.
    if config.cluster.is_none() {
        keys_file_exists(&config)?;
    }
    Ok(GatewayOptions {
        admin_token: super::env::admin_token(&config.admin.token_env),
        seal_key: super::env::seal_key_text()?,
        redis_password: super::env::redis_password(&config),
        ..GatewayOptions::default()
    })
}

/// Validates config and keys together. Prints a summary; errors go to the caller.
pub(crate) fn check(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    keys_file_exists(&config)?;
    let keys = std::fs::read_to_string(&config.keys_file)
        .map_err(|e| LoadError::unreadable(&config.keys_file, &e).to_string())?;
    let keys_path = config.keys_file.clone();
    let snap =
        reload::build(Arc::new(config), KeysInput::Text(&keys), None).map_err(|e| e.to_string())?;
    output::line(&format!(
        "ok: {} ({}), {} ({}, API {})",
        config_path.display(),
        plural(
            snap.config.policy.category_count(),
            "category",
            "categories"
        ),
        keys_path.display(),
        plural(snap.keys.len(), "key", "keys"),
        if snap.keys.api_enabled { "on" } else { "off" }
    ));
    Ok(())
}

/// "1 key", "2 keys".
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A missing keys file, with the hint `keys list` gives.
fn keys_file_exists(config: &Config) -> Result<(), String> {
    if config.keys_file.exists() {
        return Ok(());
    }
    Err(format!(
        "{}: the keys file does not exist (keys_file in the config names it); create one with: keygate keys create --name NAME --perm CATEGORY=read",
        config.keys_file.display()
    ))
}
