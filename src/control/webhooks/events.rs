//! Event types, subscription patterns, payloads, and the key-change diff.
//!
//! An event's body is `{"type", "timestamp", "data"}` (docs/webhooks.md), serialised once
//! when the event is made: every retry sends the same bytes under the same id.
//! Key events carry the key's id, name, permissions and the actor, never the key.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::store::{KeyRecord, KeySet};
use crate::policy::{CategoryId, Policy};

/// Every fixed event type; request events are `<category>.created|updated|deleted`.
pub(crate) const FIXED_TYPES: [&str; 9] = [
    "key.created",
    "key.updated",
    "key.deleted",
    "key.expired",
    "api.enabled",
    "api.disabled",
    "key.failing",
    "key.recovered",
    "webhook.test",
];

/// One event, ready to deliver.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// `msg_` + ULID: the `webhook-id`.
    pub(crate) id: String,
    pub(crate) kind: String,
    /// The serialised body.
    pub(crate) body: String,
    /// The body for endpoints with `include_body`, when it differs (write
    /// events that carry the response body).
    pub(crate) with_body: Option<String>,
}

impl Event {
    pub(crate) fn new(kind: &str, data: Value) -> Self {
        let ts = now_rfc3339();
        let body = json!({ "type": kind, "timestamp": ts, "data": data }).to_string();
        Self {
            id: new_event_id(),
            kind: kind.to_string(),
            body,
            with_body: None,
        }
    }

    /// The body sent to an endpoint (with the response body when it asked).
    pub(crate) fn body_for(&self, include_body: bool) -> &str {
        match (&self.with_body, include_body) {
            (Some(b), true) => b,
            _ => &self.body,
        }
    }
}

/// Adds a response body to a write event's data: `body` (text when it is UTF-8,
/// else base64, as `body_encoding` says), `body_truncated: true` when the body
/// was longer than 64 KiB (or could not be kept).
pub(crate) fn add_response_body(data: &mut Value, bytes: &[u8], truncated: bool) {
    use base64::Engine;
    // A body cut in the middle of a character is still text up to that point.
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(t) => {
            data["body"] = json!(t);
            data["body_encoding"] = json!("utf8");
        }
        None => {
            data["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            data["body_encoding"] = json!("base64");
        }
    }
    if truncated {
        data["body_truncated"] = json!(true);
    }
}

pub(crate) fn new_event_id() -> String {
    let ulid = crate::proxy::requestid::new_ulid();
    format!("msg_{}", ulid.to_str().unwrap_or("0"))
}

pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Checks one subscription pattern: a fixed type, `<category>.<verb>`, `x.*` or `*`.
pub(crate) fn validate_pattern(p: &str, policy: &Policy) -> Result<(), String> {
    if p == "*" || FIXED_TYPES.contains(&p) {
        return Ok(());
    }
    if let Some(prefix) = p.strip_suffix(".*") {
        if matches!(prefix, "key" | "api" | "webhook") || policy.category_id(prefix).is_some() {
            return Ok(());
        }
        return Err(format!("{p:?}: no event type starts with {prefix:?}"));
    }
    if let Some((cat, verb)) = p.rsplit_once('.')
        && matches!(verb, "created" | "updated" | "deleted")
        && policy.category_id(cat).is_some()
    {
        return Ok(());
    }
    Err(format!(
        "{p:?} is not an event type (key.created, key.*, <category>.created, webhook.test, * …)"
    ))
}

/// Does a pattern select the event type `kind`?
pub(crate) fn pattern_matches(p: &str, kind: &str) -> bool {
    p == "*"
        || p == kind
        || p.strip_suffix(".*").is_some_and(|prefix| {
            kind.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        })
}

pub(crate) fn any_matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, kind))
}

/// The event type of a successful write, if the request was one.
pub(crate) fn write_kind(method: &http::Method, status: u16, category: &str) -> Option<String> {
    if !(200..300).contains(&status) {
        return None;
    }
    let verb = match *method {
        http::Method::POST => "created",
        http::Method::PUT | http::Method::PATCH => "updated",
        http::Method::DELETE => "deleted",
        _ => return None,
    };
    Some(format!("{category}.{verb}"))
}

/// A key's permissions as written: `"*"` and every category whose level differs.
pub(crate) fn permissions(k: &KeyRecord, policy: &Policy) -> BTreeMap<String, &'static str> {
    let mut m = BTreeMap::new();
    m.insert("*".to_string(), k.star.as_str());
    for i in 0..policy.category_count() {
        let cid = CategoryId(i as u16);
        let l = k.level(cid);
        if l != k.star {
            m.insert(policy.category_name(cid).to_string(), l.as_str());
        }
    }
    m
}

pub(crate) fn key_data(k: &KeyRecord, policy: &Policy, actor: &str) -> Value {
    view_data(&KeyView::of(k, policy), actor)
}

fn view_data(k: &KeyView, actor: &str) -> Value {
    json!({
        "key": {
            "id": k.id,
            "name": k.name,
            "permissions": k.permissions,
            "expires_at": k.expires_at,
        },
        "actor": actor,
    })
}

/// What key events compare and carry of a key; never its value or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) permissions: BTreeMap<String, String>,
    pub(crate) rate: String,
    pub(crate) expires_at: Option<String>,
}

impl KeyView {
    pub(crate) fn of(k: &KeyRecord, policy: &Policy) -> Self {
        Self {
            id: k.id.as_str().to_string(),
            name: k.name.to_string(),
            permissions: permissions(k, policy)
                .into_iter()
                .map(|(c, l)| (c, l.to_string()))
                .collect(),
            rate: format!("{}/{:?}:{}", k.rate.count, k.rate.per, k.rate.burst),
            expires_at: k.expires_at.and_then(|t| t.format(&Rfc3339).ok()),
        }
    }
}

/// The keys and the API switch of one snapshot, as key events see them; kept in
/// `state_dir/webhooks/keys_seen.json` so changes made while the gateway was
/// stopped are sent when it starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct KeysSeen {
    pub(crate) api_enabled: bool,
    pub(crate) keys: BTreeMap<String, KeyView>,
    /// Counts the changes sent; part of the ids of their events (see
    /// [`stable_id`]).
    #[serde(default)]
    pub(crate) generation: u64,
    /// Random, made with the file: ids never repeat after the state is wiped.
    #[serde(default)]
    pub(crate) epoch: String,
}

impl PartialEq for KeysSeen {
    fn eq(&self, other: &Self) -> bool {
        self.api_enabled == other.api_enabled && self.keys == other.keys
    }
}

/// The id of the `index`th event of change number `generation`: the same when a
/// change is sent again after a crash between sending and remembering it, so a
/// receiver sees one id per event.
pub(crate) fn stable_id(epoch: &str, generation: u64, index: usize, kind: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{epoch}.{generation}.{index}.{kind}").as_bytes());
    let hex: String = h.iter().take(13).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

impl KeysSeen {
    pub(crate) fn of(set: &KeySet, policy: &Policy) -> Self {
        Self {
            api_enabled: set.api_enabled,
            keys: set
                .iter()
                .map(|k| (k.id.as_str().to_string(), KeyView::of(k, policy)))
                .collect(),
            generation: 0,
            epoch: String::new(),
        }
    }
}

/// The events a change of keys means: created, updated, deleted keys and the
/// API switch. `actor_of` names who made the change of a key id (`None` = switch).
pub(crate) fn diff(
    old: &KeysSeen,
    new: &KeysSeen,
    actor_of: &dyn Fn(Option<&str>) -> String,
) -> Vec<Event> {
    let mut out = Vec::new();
    for (id, k) in &new.keys {
        match old.keys.get(id) {
            None => out.push(Event::new("key.created", view_data(k, &actor_of(Some(id))))),
            Some(o) => updated(o, k, actor_of, &mut out),
        }
    }
    for (id, k) in &old.keys {
        if !new.keys.contains_key(id) {
            out.push(Event::new("key.deleted", view_data(k, &actor_of(Some(id)))));
        }
    }
    switch(old.api_enabled, new.api_enabled, actor_of, &mut out);
    out
}

/// As [`diff`], straight from two snapshots' key sets (both in id order): no copy
/// of either set is made, and only a changed key is turned into a [`KeyView`].
pub(crate) fn diff_sets(
    (old, old_policy): (&KeySet, &Policy),
    (new, new_policy): (&KeySet, &Policy),
    actor_of: &dyn Fn(Option<&str>) -> String,
) -> Vec<Event> {
    let same_categories = old_policy.category_count() == new_policy.category_count()
        && (0..old_policy.category_count()).all(|i| {
            old_policy.category_name(CategoryId(i as u16))
                == new_policy.category_name(CategoryId(i as u16))
        });
    let mut out = Vec::new();
    let mut gone = Vec::new();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.id.cmp(&b.id),
        };
        match order {
            std::cmp::Ordering::Less => {
                let Some(a) = o.next() else { break };
                let v = KeyView::of(a, old_policy);
                gone.push(Event::new(
                    "key.deleted",
                    view_data(&v, &actor_of(Some(&v.id))),
                ));
            }
            std::cmp::Ordering::Greater => {
                let Some(b) = n.next() else { break };
                let v = KeyView::of(b, new_policy);
                out.push(Event::new(
                    "key.created",
                    view_data(&v, &actor_of(Some(&v.id))),
                ));
            }
            std::cmp::Ordering::Equal => {
                let (Some(a), Some(b)) = (o.next(), n.next()) else {
                    break;
                };
                if !(same_categories && a.same_view(b)) {
                    let (va, vb) = (KeyView::of(a, old_policy), KeyView::of(b, new_policy));
                    updated(&va, &vb, actor_of, &mut out);
                }
            }
        }
    }
    out.append(&mut gone);
    switch(old.api_enabled, new.api_enabled, actor_of, &mut out);
    out
}

/// `key.updated` when what events show of the key changed.
fn updated(
    o: &KeyView,
    k: &KeyView,
    actor_of: &dyn Fn(Option<&str>) -> String,
    out: &mut Vec<Event>,
) {
    let mut changed = Vec::new();
    if o.name != k.name {
        changed.push("name");
    }
    if o.permissions != k.permissions {
        changed.push("permissions");
    }
    if o.rate != k.rate {
        changed.push("rate_limit");
    }
    if o.expires_at != k.expires_at {
        changed.push("expires_at");
    }
    if !changed.is_empty() {
        let mut data = view_data(k, &actor_of(Some(&k.id)));
        data["changed"] = json!(changed);
        out.push(Event::new("key.updated", data));
    }
}

fn switch(old: bool, new: bool, actor_of: &dyn Fn(Option<&str>) -> String, out: &mut Vec<Event>) {
    if old != new {
        let kind = if new { "api.enabled" } else { "api.disabled" };
        out.push(Event::new(kind, json!({ "actor": actor_of(None) })));
    }
}

/// Writes what [`KeysSeen`] holds for `set`, one key at a time (no copy of the set).
pub(crate) fn write_seen(
    w: &mut dyn std::io::Write,
    set: &KeySet,
    policy: &Policy,
    generation: u64,
    epoch: &str,
) -> std::io::Result<()> {
    struct Keys<'a>(&'a KeySet, &'a Policy);
    impl Serialize for Keys<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(
                self.0
                    .iter()
                    .map(|k| (k.id.as_str(), KeyView::of(k, self.1))),
            )
        }
    }
    #[derive(Serialize)]
    struct Seen<'a> {
        api_enabled: bool,
        keys: Keys<'a>,
        generation: u64,
        epoch: &'a str,
    }
    let seen = Seen {
        api_enabled: set.api_enabled,
        keys: Keys(set, policy),
        generation,
        epoch,
    };
    serde_json::to_writer(w, &seen).map_err(std::io::Error::other)
}

/// Who made the latest change to `key_id` (or the API switch, for `None`) in the
/// last minute, from the tail of `state_dir/audit.log`; else `keys_file` (an edit
/// of the file by hand or by GitOps). Blocking: called off the request path.
pub(crate) fn actor_from_audit(state_dir: &Path, key_id: Option<&str>) -> String {
    const TAIL: u64 = 64 * 1024;
    let fallback = || "keys_file".to_string();
    let Ok(mut f) = std::fs::File::open(state_dir.join("audit.log")) else {
        return fallback();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_err() {
        return fallback();
    }
    let mut text = String::new();
    if f.read_to_string(&mut text).is_err() {
        return fallback();
    }
    actor_from_lines(text.lines().rev(), key_id)
}

/// Who made the latest change to `key_id` (or the switch) in the last minute,
/// from audit records newest first (the file's lines, or the cluster's audit
/// stream); else `keys_file`.
pub(crate) fn actor_from_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    key_id: Option<&str>,
) -> String {
    let recent = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let ts = v["ts"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        if ts.is_none_or(|t| t < recent) {
            break;
        }
        let action = v["action"].as_str().unwrap_or("");
        let hit = match key_id {
            Some(id) => v["key_id"].as_str() == Some(id) && action != "key.reveal",
            None => action.starts_with("api."),
        };
        if hit && let Some(a) = v["actor"].as_str() {
            return a.to_string();
        }
    }
    "keys_file".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "key.created"));
        assert!(pattern_matches("key.*", "key.failing"));
        assert!(!pattern_matches("key.*", "keys.created"));
        assert!(pattern_matches("candidates.*", "candidates.deleted"));
        assert!(!pattern_matches("key.created", "key.deleted"));
    }

    #[test]
    fn write_kinds() {
        use http::Method;
        assert_eq!(
            write_kind(&Method::POST, 201, "jobs").as_deref(),
            Some("jobs.created")
        );
        assert_eq!(
            write_kind(&Method::PATCH, 200, "jobs").as_deref(),
            Some("jobs.updated")
        );
        assert_eq!(write_kind(&Method::DELETE, 404, "jobs"), None);
        assert_eq!(write_kind(&Method::GET, 200, "jobs"), None);
    }

    fn view(id: &str, name: &str, level: &str) -> KeyView {
        KeyView {
            id: id.into(),
            name: name.into(),
            permissions: BTreeMap::from([("*".to_string(), level.to_string())]),
            rate: "20/Second:40".into(),
            expires_at: None,
        }
    }

    #[test]
    fn diff_names_every_change() {
        let old = KeysSeen {
            api_enabled: true,
            keys: BTreeMap::from([
                ("a".into(), view("a", "A", "read")),
                ("b".into(), view("b", "B", "read")),
            ]),
            ..KeysSeen::default()
        };
        let new = KeysSeen {
            api_enabled: false,
            keys: BTreeMap::from([
                ("a".into(), view("a", "A", "write")),
                ("c".into(), view("c", "C", "read")),
            ]),
            ..KeysSeen::default()
        };
        let events = diff(&old, &new, &|id| {
            format!("actor-{}", id.unwrap_or("switch"))
        });
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["key.updated", "key.created", "key.deleted", "api.disabled"]
        );
        let updated: Value = serde_json::from_str(&events[0].body).unwrap();
        assert_eq!(updated["data"]["changed"], json!(["permissions"]));
        assert_eq!(updated["data"]["actor"], "actor-a");
        let deleted: Value = serde_json::from_str(&events[2].body).unwrap();
        assert_eq!(deleted["data"]["key"]["name"], "B");
        assert!(diff(&new, &new, &|_| String::new()).is_empty());
    }

    #[test]
    fn stable_ids_depend_on_epoch_generation_and_position() {
        let a = stable_id("e1", 3, 0, "key.created");
        assert_eq!(a, stable_id("e1", 3, 0, "key.created"));
        assert!(a.starts_with("msg_") && a.len() == 30);
        assert_ne!(a, stable_id("e2", 3, 0, "key.created"));
        assert_ne!(a, stable_id("e1", 4, 0, "key.created"));
        assert_ne!(a, stable_id("e1", 3, 1, "key.created"));
    }

    #[test]
    fn response_bodies_are_text_or_base64() {
        let mut d = json!({});
        add_response_body(&mut d, b"{\"id\":7}", false);
        assert_eq!(d["body"], "{\"id\":7}");
        assert_eq!(d["body_encoding"], "utf8");
        assert!(d.get("body_truncated").is_none());
        let mut d = json!({});
        add_response_body(&mut d, &[0xff, 0x00, 0x01], false);
        assert_eq!(d["body_encoding"], "base64");
        assert_eq!(d["body"], "/wAB");
        // Cut inside "é": the text up to the cut, marked truncated.
        let mut d = json!({});
        add_response_body(&mut d, &"abé".as_bytes()[..3], true);
        assert_eq!(d["body"], "ab");
        assert_eq!(d["body_encoding"], "utf8");
        assert_eq!(d["body_truncated"], true);
    }

    #[test]
    fn body_shape() {
        let e = Event::new("webhook.test", json!({"hello": 1}));
        assert!(e.id.starts_with("msg_"));
        let v: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["type"], "webhook.test");
        assert!(OffsetDateTime::parse(v["timestamp"].as_str().unwrap(), &Rfc3339).is_ok());
        assert_eq!(v["data"]["hello"], 1);
    }
}
