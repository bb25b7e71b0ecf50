//! Following the keys source: polls its version (for a file: device, inode,
//! modification time, length — through symlinks, so a Kubernetes `..data` swap is
//! seen) and, once a change has settled for one period, reloads the keys through the
//! [`Reloader`]. Two rules make a change always take effect in the end:
//!
//! * a read that fails (out of file descriptors, a volume being remounted) is
//!   retried with backoff until it succeeds, whatever the version says;
//! * every [`DIGEST_EVERY`] the content's SHA-256 is compared with the one in force,
//!   which catches edits no timestamp shows (same size within one mtime tick).
//!
//! A file that does not parse or validate leaves the last good snapshot in force
//! and is logged once per distinct error; it is not re-read until it changes.
//!
//! Polling (not inotify) is deliberate: it sees in-place writes, renames, delete and
//! re-create, and symlink swaps alike, on every filesystem, for one `stat` a period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::LoadError;
use crate::config::identity::Identity;

use super::reload::Reloader;

/// How often the version is looked at. A change applies within about two periods.
pub(crate) const PERIOD: Duration = Duration::from_millis(300);
/// How often the content is hashed and compared, whatever the version says.
pub(crate) const DIGEST_EVERY: Duration = Duration::from_secs(10);
/// The longest wait between retries of a source that could not be read.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the watcher knows about a version that did not load.
#[derive(Debug, Default)]
struct Failed {
    /// A version (and its digest) that parsed but was invalid: not retried until
    /// it changes.
    invalid: Option<(Option<Identity>, Option<[u8; 32]>)>,
    /// The source could not be read: retry at this time.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
}

impl Failed {
    fn report(&mut self, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            tracing::error!(error = %msg, "keys reload failed; the last good keys stay in force");
            self.last_error = Some(msg);
        }
    }
}

/// Runs until the process ends.
pub(crate) async fn watch(reloader: Arc<Reloader>) {
    let mut failed = Failed::default();
    let mut settling: Option<Option<Identity>> = None;
    let mut next_digest = Instant::now() + DIGEST_EVERY;
    loop {
        tokio::time::sleep(PERIOD).await;
        let r = reloader.clone();
        let (now, in_force) =
            match tokio::task::spawn_blocking(move || (r.source().version(), r.current())).await {
                Ok(x) => x,
                Err(_) => continue,
            };
        let mut reason = None;
        if failed.retry_at.is_some_and(|t| t <= Instant::now()) {
            reason = Some("retry");
        } else if failed.retry_at.is_none() {
            let known = now == in_force.keys_identity
                || failed.invalid.as_ref().is_some_and(|(v, _)| *v == now);
            if known {
                settling = None;
            } else if settling.as_ref() != Some(&now) {
                // Coalesce bursts: act once the version looks the same two periods running.
                settling = Some(now.clone());
            } else {
                reason = Some("changed");
            }
        }
        if reason.is_none() && Instant::now() >= next_digest {
            next_digest = Instant::now() + DIGEST_EVERY;
            let r = reloader.clone();
            if let Ok(Ok(d)) = tokio::task::spawn_blocking(move || r.source().digest()).await {
                let invalid = failed
                    .invalid
                    .as_ref()
                    .is_some_and(|(_, fd)| *fd == Some(d));
                if Some(d) != in_force.keys_digest && !invalid {
                    reason = Some("content differs");
                }
            }
        }
        let Some(reason) = reason else { continue };
        settling = None;
        let r = reloader.clone();
        let result = tokio::task::spawn_blocking(move || r.reload_keys()).await;
        match result {
            Ok(Ok(n)) => {
                tracing::info!(keys = n, reason, "keys reloaded");
                failed = Failed::default();
            }
            Ok(Err(e)) => on_error(&mut failed, e, now, &reloader),
            Err(_) => {}
        }
    }
}

fn on_error(failed: &mut Failed, e: LoadError, version: Option<Identity>, reloader: &Reloader) {
    if e.unreadable {
        failed.backoff = (failed.backoff * 2).clamp(PERIOD, MAX_BACKOFF);
        failed.retry_at = Some(Instant::now() + failed.backoff);
        tracing::debug!(error = %e, backoff = ?failed.backoff, "keys source unreadable; retrying");
        failed.report(e.to_string());
    } else {
        let digest = reloader.source().digest().ok();
        failed.invalid = Some((version, digest));
        failed.retry_at = None;
        failed.backoff = Duration::ZERO;
        failed.report(e.to_string());
    }
}
