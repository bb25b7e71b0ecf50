//! Key and account events in cluster mode: once per change for the whole
//! cluster, whichever replica made it (admin API, console, CLI, a keys file
//! seeding or applied by revision) and however many replicas synced it.
//!
//! Redis keeps the keys the events last described (`:wh:keys_seen`) and the
//! cluster version they had (`:wh:keys_version`). When the cluster's version
//! moves past it, a replica reads the keys at the new version, diffs them against
//! `keys_seen`, and — compare-and-set on `keys_version`, in one script — writes
//! the new `keys_seen` and queues the events. Only one replica wins each step;
//! the others find nothing left to send. Two quick changes of one key may be
//! sent as one `key.updated` (as the keys file watcher does). Event ids come from
//! the cluster's epoch, the version and the event's place in the change, so a
//! step made again (a lost answer) keeps its ids. Who made a change comes from
//! the cluster's audit stream.

use std::collections::HashMap;

use redis::aio::ConnectionManager;

use super::super::events::{self, KeysSeen};
use super::super::queue::Delivery;
use super::super::worker::deliveries_to;
use super::super::{Webhooks, now_ms};
use super::{Shared, lock, scripts};
use crate::control::cluster::store::{self as cluster_store, Layout, Raw};
use crate::keys::store::KeySet;

/// Audit records looked at for the actor of a change.
const AUDIT_TAIL: usize = 200;

/// Sends the key events of the changes since the last step, if any.
pub(crate) async fn emit(
    w: &Webhooks,
    sh: &Shared,
    con: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let layout = Layout::new(&sh.cfg.name);
    let raw: Raw = cluster_store::read_pipe(&layout).query_async(con).await?;
    let (emitted, seen): (Option<String>, Option<String>) = redis::pipe()
        .atomic()
        .get(&sh.keys.keys_version)
        .get(&sh.keys.keys_seen)
        .query_async(con)
        .await?;
    let (state, _) = match cluster_store::decode(raw) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: the cluster's keys cannot be read; no key events");
            return Ok(());
        }
    };
    // Wiped or not seeded: nothing is "deleted".
    let Some(epoch) = state.epoch else {
        return Ok(());
    };
    let version = state.version;
    if emitted
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v >= version)
    {
        return Ok(());
    }
    let Some(shared) = w.shared() else {
        return Ok(());
    };
    let cfg = shared.load().config.clone();
    let file = state.file;
    let built = tokio::task::spawn_blocking(move || {
        KeySet::build(
            &cfg.keys_file,
            &file,
            &cfg.policy,
            &cfg.rate_limit.per_key,
            None,
        )
        .map(|set| KeysSeen::of(&set, &cfg.policy))
        .map_err(|e| e.to_string())
    })
    .await;
    let after = match built {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(error = %e, version, "webhooks: the cluster's keys do not fit this config; no key events for this version");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    let mut deliveries: Vec<Delivery> = Vec::new();
    // The first look only remembers the keys (as a first start does).
    if let Some(before) = seen
        .as_deref()
        .and_then(|s| serde_json::from_str::<KeysSeen>(s).ok())
    {
        // The endpoints as they are now in Redis (this replica may not have
        // followed one made a moment ago yet).
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&sh.keys.endpoints)
            .query_async(con)
            .await?;
        let endpoints = match super::endpoints::decode(all) {
            Ok(e) => e,
            Err(_) => w.endpoints_now(),
        };
        let lines = audit_tail(sh, con).await.unwrap_or_default();
        let actor =
            |id: Option<&str>| events::actor_from_lines(lines.iter().map(String::as_str), id);
        for (i, mut e) in events::diff(&before, &after, &actor)
            .into_iter()
            .enumerate()
        {
            e.id = events::stable_id(&epoch, version, i, &e.kind);
            deliveries.extend(deliveries_to(&e, &endpoints, None));
        }
    }
    let seen_json = serde_json::to_string(&after).unwrap_or_default();
    let max = lock(&sh.state).max;
    let script = scripts::keys_cas();
    let mut inv = script.prepare_invoke();
    inv.key(&sh.keys.pending)
        .key(&sh.keys.created)
        .key(&sh.keys.queue)
        .key(&sh.keys.keys_version)
        .key(&sh.keys.keys_seen);
    inv.arg(emitted.unwrap_or_default())
        .arg(version)
        .arg(seen_json)
        .arg(max);
    for d in &deliveries {
        inv.arg(d.key())
            .arg(serde_json::to_string(d).unwrap_or_default())
            .arg(d.created)
            .arg("");
    }
    let (added, dropped): (i64, u64) = inv.invoke_async(con).await?;
    if added < 0 {
        // Another replica took this step first: look again (maybe nothing left).
        sh.keys_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        return Ok(());
    }
    if dropped > 0 {
        w.metrics.dropped.inc_by(dropped);
    }
    if added > 0 {
        tracing::debug!(
            version,
            deliveries = added,
            at = now_ms(),
            "webhooks: key events queued"
        );
    }
    Ok(())
}

/// The newest audit records of the cluster, newest first.
async fn audit_tail(sh: &Shared, con: &mut ConnectionManager) -> redis::RedisResult<Vec<String>> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(&sh.keys.audit)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(AUDIT_TAIL)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(_, mut m)| m.remove("j"))
        .collect())
}
