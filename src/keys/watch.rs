//! Following keys.yaml: polls the file's identity (device, inode, modification time,
//! length — through symlinks, so a Kubernetes `..data` swap is seen) and, once a
//! change has settled for one period, reloads the keys into a new snapshot. A file
//! that does not parse or validate leaves the last good snapshot in force and is
//! logged once per distinct error.
//!
//! Polling (not inotify) is deliberate: it sees in-place writes, renames, delete and
//! re-create, and symlink swaps alike, on every filesystem, at a cost of one `stat`
//! per period.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::Shared;

/// How often the file is looked at. A change applies within about two periods.
pub const PERIOD: Duration = Duration::from_millis(300);

/// What identifies one version of the keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// The identity of the file at `path` now (through symlinks); `None` if missing.
pub fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}

/// Runs until the process ends. The version in force is the one the snapshot was
/// read from (its identity is taken before reading), so a change racing a load is
/// never missed; a version that failed to load is not retried until it changes.
pub async fn watch(shared: Arc<Shared>) {
    let path = shared.snapshot().config.keys_file.clone();
    let mut failed: Option<Option<Identity>> = None;
    let mut settling: Option<Option<Identity>> = None;
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(PERIOD).await;
        let now = identity(&path);
        if now == shared.snapshot().keys_identity || failed.as_ref() == Some(&now) {
            settling = None;
            continue;
        }
        // Coalesce bursts: act once the file looks the same two periods running.
        if settling.as_ref() != Some(&now) {
            settling = Some(now);
            continue;
        }
        settling = None;
        if now.is_none() {
            failed = Some(None);
            let msg = format!(
                "{}: the keys file is missing; the last loaded keys stay in force",
                path.display()
            );
            if last_error.as_deref() != Some(msg.as_str()) {
                tracing::error!("{msg}");
                last_error = Some(msg);
            }
            shared.metrics.reload("keys", false);
            continue;
        }
        match shared.reload_keys() {
            Ok(n) => {
                tracing::info!(keys = n, "keys reloaded");
                last_error = None;
                failed = None;
            }
            Err(e) => {
                failed = Some(now);
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "keys reload failed; the last good keys stay in force");
                    last_error = Some(msg);
                }
            }
        }
    }
}
