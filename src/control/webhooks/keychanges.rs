//! Key events from snapshots: the diff of the keys before and after a change
//! (admin API, CLI, an edited keys file), and at start the diff against the keys
//! last seen (`state_dir/webhooks/keys_seen.json`), so changes made while the
//! gateway was stopped are sent too. Runs on the worker.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::Webhooks;
use super::events;

/// Queues the events of a change of keys and remembers the keys now in force.
/// Event ids come from the change's generation (see [`events::stable_id`]), so a
/// change sent again after a crash keeps its ids.
pub(crate) fn keys_changed(w: &Webhooks, before: &events::KeysSeen, after: &events::KeysSeen) {
    if before == after {
        return;
    }
    let generation = w.keys_generation.load(Ordering::Relaxed) + 1;
    let state_dir = w.state_dir.clone();
    let actor = |id: Option<&str>| events::actor_from_audit(&state_dir, id);
    for (i, mut e) in events::diff(before, after, &actor).into_iter().enumerate() {
        e.id = events::stable_id(epoch(w), generation, i, &e.kind);
        w.fan_out(&e, None);
    }
    w.keys_generation.store(generation, Ordering::Relaxed);
    let mut seen = after.clone();
    seen.generation = generation;
    seen.epoch = epoch(w).to_string();
    save_keys_seen(w, &seen);
}

/// This state's epoch (made once if the file had none).
fn epoch(w: &Webhooks) -> &str {
    w.keys_epoch.get_or_init(events::new_event_id)
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
    let snap = shared.load();
    let now = events::KeysSeen::of(&snap.keys, &snap.config.policy);
    match fs::read_to_string(keys_seen_path(w))
        .ok()
        .and_then(|t| serde_json::from_str::<events::KeysSeen>(&t).ok())
    {
        Some(before) => {
            w.keys_generation
                .store(before.generation, Ordering::Relaxed);
            let _ = w.keys_epoch.set(if before.epoch.is_empty() {
                events::new_event_id()
            } else {
                before.epoch.clone()
            });
            keys_changed(w, &before, &now);
        }
        None => {
            let mut now = now;
            now.epoch = epoch(w).to_string();
            save_keys_seen(w, &now);
        }
    }
}
