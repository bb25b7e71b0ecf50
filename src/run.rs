//! `keygate serve` and `keygate check`: the process-level glue around [`Gateway`]
//! (runtime, signals, exit codes).

use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::gateway::Gateway;
use crate::keys::file::KeysFile;
use crate::output;
use crate::record::NoObserver;
use crate::snapshot::Snapshot;

/// Runs the gateway until SIGTERM/SIGINT, reloading on SIGHUP.
pub async fn serve(config_path: &Path) -> Result<(), String> {
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("signal setup: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signal setup: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signal setup: {e}"))?;
    let gw = Gateway::start(config_path, Arc::new(NoObserver))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
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

/// Validates config and keys together. Prints a summary; errors go to the caller.
pub fn check(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let keys = KeysFile::load(&config.keys_file).map_err(|e| e.to_string())?;
    let keys_path = config.keys_file.clone();
    let snap = Snapshot::build(Arc::new(config), &keys, None).map_err(|e| e.to_string())?;
    output::line(&format!(
        "ok: {} ({} categories), {} ({} keys, API {})",
        config_path.display(),
        snap.config.policy.category_count(),
        keys_path.display(),
        snap.keys.len(),
        if snap.keys.api_enabled { "on" } else { "off" }
    ));
    Ok(())
}
