//! Key events from snapshots: the diff of the keys before and after a change
//! (admin API, CLI, an edited keys file), and at start the diff against the keys
//! last seen (`state_dir/webhooks/keys_seen.json`), so changes made while the
//! gateway was stopped are sent too. Runs on the worker.

use std::fs;
use std::path::PathBuf;

use super::Webhooks;
use super::events;

/// Queues the events of a change of keys and remembers the keys now in force.
pub(crate) fn keys_changed(w: &Webhooks, before: &events::KeysSeen, after: &events::KeysSeen) {
    let state_dir = w.state_dir.clone();
    let actor = |id: Option<&str>| events::actor_from_audit(&state_dir, id);
    for e in events::diff(before, after, &actor) {
        w.fan_out(&e, None);
    }
    if before != after {
        save_keys_seen(w, after);
    }
}

fn keys_seen_path(w: &Webhooks) -> PathBuf {
    w.store.dir().join("keys_seen.json")
}

fn save_keys_seen(w: &Webhooks, seen: &events::KeysSeen) {
    let path = keys_seen_path(w);
    let text = serde_json::to_string(seen).unwrap_or_default();
    if let Err(e) = crate::keys::write::write_atomic(&path, &text) {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the keys webhooks last saw");
    }
}

/// At start: the keys changed while the gateway was stopped (an edited keys file,
/// the CLI) are sent now. The first start only remembers them.
pub(crate) fn catch_up(w: &Webhooks) {
    let Some(shared) = w.shared() else { return };
    let snap = shared.snapshot();
    let now = events::KeysSeen::of(&snap.keys, &snap.config.policy);
    match fs::read_to_string(keys_seen_path(w))
        .ok()
        .and_then(|t| serde_json::from_str::<events::KeysSeen>(&t).ok())
    {
        Some(before) => keys_changed(w, &before, &now),
        None => save_keys_seen(w, &now),
    }
}
