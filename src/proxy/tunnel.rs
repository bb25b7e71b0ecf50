//! WebSocket (and other HTTP/1.1 upgrade) tunnels: opened only after the upstream
//! answered `101`, bytes copied both ways without buffering, and closed within a
//! second when the key that opened it is deleted or expires, or the API is
//! switched off (checked against the snapshot in force).

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;

use crate::keys::KeyId;
use crate::proxy::snapshot::Snapshots;

/// How often an open tunnel re-checks its key against the snapshot.
const RECHECK: Duration = Duration::from_millis(500);

/// Is the key that opened a tunnel still allowed to keep it open?
fn still_allowed(snapshots: &Snapshots, key: &KeyId) -> bool {
    let snap = snapshots.load();
    snap.keys.api_enabled
        && snap
            .keys
            .get(key)
            .is_some_and(|k| !k.is_expired(OffsetDateTime::now_utc()))
}

/// Joins the client's and the upstream's upgraded connections and copies between
/// them until either side closes or the key loses its access.
pub(crate) fn spawn(snapshots: Snapshots, key: KeyId, client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(RECHECK);
        loop {
            tokio::select! {
                r = &mut copy => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "tunnel closed with an error");
                    }
                    return;
                }
                _ = tick.tick() => {
                    if !still_allowed(&snapshots, &key) {
                        tracing::info!(key_id = %key, "closing a tunnel: its key was removed or the API was switched off");
                        return;
                    }
                }
            }
        }
    });
}
