//! Key events from snapshots: the diff of the keys before and after a change
//! (admin API, CLI, an edited keys file), and at start the diff against the keys
//! last seen (`state_dir/webhooks/keys_seen.json`), so changes made while the
//! gateway was stopped are sent too. Runs on the worker.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::Webhooks;
use super::events;
use crate::proxy::snapshot::Snapshot;

/// A snapshot replaced another: queues the events of the change and remembers
/// the keys now in force. Compares the two key sets in place (100,000 keys cost
/// no copy of either).
pub(crate) fn snapshots_changed(w: &Webhooks, old: &Snapshot, new: &Snapshot) {
    let state_dir = w.state_dir.clone();
    let actor = |id: Option<&str>| events::actor_from_audit(&state_dir, id);
    let events = events::diff_sets(
        (&old.keys, &old.config.policy),
        (&new.keys, &new.config.policy),
        &actor,
    );
    send(w, events, new);
}

/// Queues the events of a change of keys and remembers the keys now in force.
/// Event ids come from the change's generation (see [`events::stable_id`]), so a
/// change sent again after a crash keeps its ids.
fn send(w: &Webhooks, events: Vec<events::Event>, now: &Snapshot) {
    if events.is_empty() {
        return;
    }
    let generation = w.keys_generation.load(Ordering::Relaxed) + 1;
    for (i, mut e) in events.into_iter().enumerate() {
        e.id = events::stable_id(epoch(w), generation, i, &e.kind);
        w.fan_out(&e, None);
    }
    w.keys_generation.store(generation, Ordering::Relaxed);
    save_keys_seen(w, now, generation);
}

/// This state's epoch (made once if the file had none).
fn epoch(w: &Webhooks) -> &str {
    w.keys_epoch.get_or_init(events::new_event_id)
}

fn keys_seen_path(w: &Webhooks) -> PathBuf {
    w.store.dir().join("keys_seen.json")
}

fn save_keys_seen(w: &Webhooks, now: &Snapshot, generation: u64) {
    let path = keys_seen_path(w);
    let (set, policy) = (&now.keys, &now.config.policy);
    let written = crate::keys::write::write_atomic_with(&path, |out| {
        events::write_seen(out, set, policy, generation, epoch(w))
    });
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the keys webhooks last saw");
    }
}

/// At start: the keys changed while the gateway was stopped (an edited keys file,
/// the CLI) are sent now. The first start only remembers them.
pub(crate) fn catch_up(w: &Webhooks) {
    let Some(shared) = w.shared() else { return };
    let snap = shared.load();
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
            let now = events::KeysSeen::of(&snap.keys, &snap.config.policy);
            let state_dir = w.state_dir.clone();
            let actor = |id: Option<&str>| events::actor_from_audit(&state_dir, id);
            let events = events::diff(&before, &now, &actor);
            drop((before, now));
            send(w, events, &snap);
        }
        None => save_keys_seen(w, &snap, 0),
    }
}
