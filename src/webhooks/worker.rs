//! The delivery worker: the one task that owns the queue. It turns jobs into
//! events (key diff, health detector, write events), fans each event out to the
//! enabled endpoints that subscribe, sends due deliveries (at most
//! [`MAX_IN_FLIGHT`] at a time), retries failures on `webhooks.retry_schedule`,
//! and disables an endpoint that has failed for `disable_after` (5 days), with an
//! `endpoint.disabled` entry in its log. Each endpoint keeps a log of its last
//! [`LOG_MAX`] attempts (`state_dir/webhooks/deliveries/<id>.jsonl`, read by
//! `keygate webhooks deliveries`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::events::{self, Event};
use super::health::{Detector, Seen};
use super::queue::{Delivery, DeliveryQueue, delivery_key};
use super::sign::signature_header;
use super::store::Endpoint;
use super::target::{self, Answer};
use super::{Job, Webhooks};
use crate::keys::watch::Identity;
use crate::record::{Decision, Record};

/// Deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// Attempts kept per endpoint log.
pub const LOG_MAX: usize = 100;
/// How often the worker looks for changed endpoints, the CLI inbox and expiries.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the worker keeps of a finished request.
#[derive(Debug, Clone)]
pub struct RequestSeen {
    pub seen: Seen,
    pub category: Option<Arc<str>>,
    pub request_id: String,
}

impl RequestSeen {
    pub fn from_record(r: &Record) -> Self {
        Self {
            seen: Seen {
                at_ms: (r.ts.unix_timestamp_nanos() / 1_000_000) as i64,
                method: r.method.to_string(),
                path: r.path.clone(),
                status: r.status,
                decision: r.decision,
                key: r
                    .key
                    .as_ref()
                    .map(|k| (k.id.as_str().to_string(), k.name.to_string())),
                ip: r.ip,
            },
            category: r.category.clone(),
            request_id: r.request_id.to_str().unwrap_or("").to_string(),
        }
    }
}

/// One line of an endpoint's delivery log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: String,
    pub attempt: u32,
    /// `delivered`, `retrying`, `failed` (gave up), `endpoint.disabled`.
    pub result: String,
    pub status: Option<u16>,
    pub duration_ms: Option<f64>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub next_retry: Option<String>,
    /// The body, for resend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The worker's state, shared with the admin handlers.
pub struct Inner {
    pub queue: Box<dyn DeliveryQueue>,
    pub endpoints: Vec<Endpoint>,
    pub endpoints_version: Option<Identity>,
    pub logs: HashMap<String, VecDeque<LogEntry>>,
    pub busy: HashSet<String>,
}

impl Inner {
    pub fn new(queue: Box<dyn DeliveryQueue>) -> Self {
        Self {
            queue,
            endpoints: Vec::new(),
            endpoints_version: None,
            logs: HashMap::new(),
            busy: HashSet::new(),
        }
    }
}

fn log_path(dir: &Path, endpoint_id: &str) -> PathBuf {
    dir.join("deliveries").join(format!("{endpoint_id}.jsonl"))
}

/// Reads an endpoint's persisted log (newest last).
pub fn read_log(webhooks_dir: &Path, endpoint_id: &str) -> VecDeque<LogEntry> {
    let Ok(text) = fs::read_to_string(log_path(webhooks_dir, endpoint_id)) else {
        return VecDeque::new();
    };
    let mut v: VecDeque<LogEntry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    while v.len() > LOG_MAX {
        v.pop_front();
    }
    v
}

impl Webhooks {
    /// Appends to an endpoint's log, in memory and on disk.
    pub(crate) fn log(&self, inner: &mut Inner, endpoint_id: &str, entry: LogEntry) {
        let dir = self.store.dir().to_path_buf();
        let log = inner
            .logs
            .entry(endpoint_id.to_string())
            .or_insert_with(|| read_log(&dir, endpoint_id));
        log.push_back(entry.clone());
        let rewrite = log.len() > 2 * LOG_MAX;
        while log.len() > LOG_MAX {
            log.pop_front();
        }
        let path = log_path(&dir, endpoint_id);
        let _ = fs::create_dir_all(dir.join("deliveries"));
        let result = if rewrite {
            let text: String = log
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .map(|l| l + "\n")
                .collect();
            crate::keys::write::write_atomic(&path, &text).map_err(|e| e.to_string())
        } else {
            let mut line = serde_json::to_string(&entry).unwrap_or_default();
            line.push('\n');
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the webhook delivery log");
        }
    }

    /// Queues `event` for `only`, or for every enabled endpoint that subscribes.
    pub(crate) fn fan_out(&self, event: &Event, only: Option<&str>) -> usize {
        let now = now_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let targets: Vec<String> = inner
            .endpoints
            .iter()
            .filter(|e| match only {
                Some(id) => e.id == id,
                None => e.enabled && events::any_matches(&e.events, &event.kind),
            })
            .map(|e| e.id.clone())
            .collect();
        let mut queued = 0;
        for id in targets {
            let d = Delivery {
                endpoint_id: id,
                event_id: event.id.clone(),
                kind: event.kind.clone(),
                body: event.body.clone(),
                attempt: 0,
                next_at: now,
                created: now,
            };
            match inner.queue.push(d) {
                Ok(()) => queued += 1,
                Err(_) => self.metrics.dropped.inc(),
            }
        }
        drop(inner);
        if queued > 0 {
            self.notify.notify_one();
        }
        queued
    }
}

struct Attempted {
    delivery: Delivery,
    result: Result<Answer, String>,
    at_ms: i64,
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    w: Arc<Webhooks>,
    mut rx: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut detector = Detector::new(w.config().failing);
    let mut in_flight: JoinSet<Attempted> = JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut expired: Option<HashSet<String>> = None;
    let mut last_housekeeping = std::time::Instant::now() - HOUSEKEEPING;
    catch_up(&w);
    let tls = match crate::tls::upstream_client_config(None) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "no TLS roots: https webhook endpoints will fail");
            None
        }
    };
    loop {
        // With every slot in flight, the next wake-up is a finished attempt (or
        // housekeeping), not a due delivery that could not be started anyway.
        let wait = if in_flight.len() >= MAX_IN_FLIGHT {
            HOUSEKEEPING
        } else {
            let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
            let next = inner.queue.next_due().map(|t| t - now_ms()).unwrap_or(500);
            Duration::from_millis(next.clamp(0, 500) as u64)
        };
        tokio::select! {
            _ = stop.changed() => {
                // Events already handed over go into the durable queue first.
                while let Ok(job) = rx.try_recv() {
                    handle_job(&w, job, &mut detector);
                }
                in_flight.abort_all();
                return;
            }
            job = rx.recv() => match job {
                Some(job) => handle_job(&w, job, &mut detector),
                None => return,
            },
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                match done {
                    Ok((id, a)) => {
                        tasks.remove(&id);
                        finish(&w, a);
                    }
                    // A send task that died: its delivery is free to be tried again.
                    Err(e) => {
                        if let Some(key) = tasks.remove(&e.id()) {
                            w.inner.lock().unwrap_or_else(|p| p.into_inner()).busy.remove(&key);
                        }
                    }
                }
            }
            _ = w.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            while let Ok(job) = rx.try_recv() {
                handle_job(&w, job, &mut detector);
            }
            in_flight.abort_all();
            return;
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = std::time::Instant::now();
            housekeeping(&w, &mut expired, &mut detector);
        }
        dispatch(&w, &mut in_flight, &mut tasks, tls.clone());
        update_gauges(&w);
    }
}

fn handle_job(w: &Webhooks, job: Job, detector: &mut Detector) {
    match job {
        Job::Event { event, only } => {
            w.fan_out(&event, only.as_deref());
        }
        Job::Keys { old, new } => {
            let before = events::KeysSeen::of(&old.keys, &old.config.policy);
            let after = events::KeysSeen::of(&new.keys, &new.config.policy);
            keys_changed(w, &before, &after);
        }
        Job::Request(r) => {
            let shared = w.shared();
            let exists = |id: &str| {
                shared
                    .as_ref()
                    .is_some_and(|s| s.snapshot().keys.get_str(id).is_some())
            };
            if let Some(h) = detector.observe(&r.seen, &exists) {
                w.fan_out(&Event::new(h.kind, h.data), None);
            }
            if r.seen.decision == Decision::Allowed
                && let Some(cat) = &r.category
                && let Ok(method) = r.seen.method.parse::<http::Method>()
                && let Some(kind) = events::write_kind(&method, r.seen.status, cat)
            {
                let data = json!({
                    "method": r.seen.method,
                    "path": r.seen.path,
                    "status": r.seen.status,
                    "category": &**cat,
                    "key": r.seen.key.as_ref().map(|(id, name)| json!({"id": id, "name": name})),
                    "request_id": r.request_id,
                });
                w.fan_out(&Event::new(&kind, data), None);
            }
        }
    }
}

/// Queues the events of a change of keys and remembers the keys now in force.
fn keys_changed(w: &Webhooks, before: &events::KeysSeen, after: &events::KeysSeen) {
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
fn catch_up(w: &Webhooks) {
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

fn housekeeping(w: &Webhooks, expired: &mut Option<HashSet<String>>, detector: &mut Detector) {
    // Endpoints changed by another process (the CLI) or by the admin API.
    let version = w.store.identity();
    let changed = {
        let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.endpoints_version != version
    };
    if changed {
        w.reload_endpoints();
    }
    let cfg = w.config();
    detector.set_config(cfg.failing);
    w.inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .queue
        .set_limit(cfg.queue_max);
    // Events the CLI asked for (`keygate webhooks test`, resend).
    let inbox = w.store.dir().join("inbox");
    if let Ok(rd) = fs::read_dir(&inbox) {
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            let _ = fs::remove_file(&path);
            if let Ok(req) = serde_json::from_str::<InboxItem>(&text) {
                let event = Event {
                    id: req.event_id,
                    kind: req.kind,
                    body: req.body,
                };
                w.fan_out(&event, Some(&req.endpoint_id));
            }
        }
    }
    // key.expired: keys whose expiry passed while this gateway ran.
    if let Some(shared) = w.shared() {
        let snap = shared.snapshot();
        let now = time::OffsetDateTime::now_utc();
        let seen = expired.get_or_insert_with(|| {
            snap.keys
                .iter()
                .filter(|k| k.is_expired(now))
                .map(|k| k.id.as_str().to_string())
                .collect()
        });
        for k in snap.keys.iter().filter(|k| k.is_expired(now)) {
            if seen.insert(k.id.as_str().to_string()) {
                let data = events::key_data(k, &snap.config.policy, "expiry");
                w.fan_out(&Event::new("key.expired", data), None);
            }
        }
    }
}

/// What the CLI drops into `state_dir/webhooks/inbox` for the gateway to send.
#[derive(Debug, Serialize, Deserialize)]
pub struct InboxItem {
    pub endpoint_id: String,
    pub event_id: String,
    pub kind: String,
    pub body: String,
}

fn dispatch(
    w: &Arc<Webhooks>,
    in_flight: &mut JoinSet<Attempted>,
    tasks: &mut HashMap<tokio::task::Id, String>,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
    if room == 0 {
        return;
    }
    let cfg = w.config();
    let now = now_ms();
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    let due = {
        let busy = &inner.busy;
        inner.queue.due(now, room, &|k| busy.contains(k))
    };
    for d in due {
        let key = d.key();
        let Some(ep) = inner
            .endpoints
            .iter()
            .find(|e| e.id == d.endpoint_id)
            .cloned()
        else {
            // The endpoint was deleted: nothing to deliver to.
            inner.queue.remove(&key);
            continue;
        };
        if !ep.enabled && d.kind != "webhook.test" {
            inner.queue.remove(&key);
            continue;
        }
        // Commit the attempt before making it: if the process dies mid-attempt,
        // the next one (after a restart) still waits its turn in the schedule.
        let wait = cfg
            .retry_schedule
            .get(d.attempt as usize)
            .copied()
            .unwrap_or(cfg.timeout);
        inner
            .queue
            .retry(&key, d.attempt + 1, now + wait.as_millis() as i64);
        inner.busy.insert(key.clone());
        let ts = now / 1000;
        let secrets = ep.signing_secrets(ts);
        let refs: Vec<&super::sign::SigningSecret> = secrets.iter().collect();
        let signature = signature_header(&refs, &d.event_id, ts, d.body.as_bytes());
        let headers = vec![
            ("webhook-id", d.event_id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ];
        let allow_private = cfg.allow_private_targets;
        let timeout = cfg.timeout;
        let tls = tls.clone();
        let handle = in_flight.spawn(async move {
            let result = match target::parse_url(&ep.url, allow_private) {
                Ok(t) => {
                    target::send(
                        &t,
                        allow_private,
                        tls,
                        headers,
                        Bytes::from(d.body.clone()),
                        timeout,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            Attempted {
                delivery: d,
                result,
                at_ms: now,
            }
        });
        tasks.insert(handle.id(), key);
    }
}

fn finish(w: &Webhooks, a: Attempted) {
    let cfg = w.config();
    let now = now_ms();
    let d = a.delivery;
    let key = d.key();
    let attempt = d.attempt + 1;
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.busy.remove(&key);
    let ok = matches!(&a.result, Ok(ans) if (200..300).contains(&ans.status));
    let (status, duration_ms, response, error) = match &a.result {
        Ok(ans) => (
            Some(ans.status),
            Some(ans.duration.as_secs_f64() * 1000.0),
            Some(ans.excerpt.clone()),
            if ok {
                None
            } else if (300..400).contains(&ans.status) {
                Some("redirects are not followed".to_string())
            } else {
                None
            },
        ),
        Err(e) => (None, None, None, Some(e.clone())),
    };
    let mut entry = LogEntry {
        event_id: d.event_id.clone(),
        kind: d.kind.clone(),
        time: crate::state::format_ms(a.at_ms),
        attempt,
        result: String::new(),
        status,
        duration_ms,
        response,
        error,
        next_retry: None,
        body: Some(d.body.clone()),
    };
    let mut failing_update: Option<Option<i64>> = None;
    let mut disable = false;
    let ep = inner
        .endpoints
        .iter()
        .find(|e| e.id == d.endpoint_id)
        .cloned();
    if ok {
        w.metrics.deliveries.with_label_values(&["success"]).inc();
        inner.queue.remove(&key);
        entry.result = "delivered".into();
        if ep.as_ref().is_some_and(|e| e.failing_since.is_some()) {
            failing_update = Some(None);
        }
    } else {
        let since = ep.as_ref().and_then(|e| e.failing_since);
        match since {
            None => failing_update = Some(Some(now)),
            Some(t) if now - t >= cfg.disable_after.as_millis() as i64 => disable = true,
            Some(_) => {}
        }
        match cfg.retry_schedule.get(d.attempt as usize) {
            Some(wait) if !disable => {
                w.metrics.deliveries.with_label_values(&["failure"]).inc();
                let next = now + wait.as_millis() as i64;
                inner.queue.retry(&key, attempt, next);
                entry.result = "retrying".into();
                entry.next_retry = Some(crate::state::format_ms(next));
            }
            _ => {
                w.metrics.deliveries.with_label_values(&["gave_up"]).inc();
                inner.queue.remove(&key);
                entry.result = "failed".into();
            }
        }
    }
    w.log(&mut inner, &d.endpoint_id, entry);
    if disable {
        for k in inner.queue.keys_for(&d.endpoint_id) {
            inner.queue.remove(&k);
        }
        let reason = format!(
            "failing since {} ({} or more): switched off; fix the receiver, then enable it again",
            ep.as_ref()
                .and_then(|e| e.failing_since)
                .map(crate::state::format_ms)
                .unwrap_or_default(),
            humanize(cfg.disable_after)
        );
        let entry = LogEntry {
            event_id: String::new(),
            kind: "endpoint.disabled".into(),
            time: crate::state::format_ms(now),
            attempt,
            result: "endpoint.disabled".into(),
            status: None,
            duration_ms: None,
            response: None,
            error: Some(reason.clone()),
            next_retry: None,
            body: None,
        };
        w.log(&mut inner, &d.endpoint_id, entry);
        if let Some(e) = inner.endpoints.iter_mut().find(|e| e.id == d.endpoint_id) {
            e.enabled = false;
            e.disabled_reason = Some(reason.clone());
        }
        drop(inner);
        persist(w, &d.endpoint_id, move |e| {
            e.enabled = false;
            e.disabled_reason = Some(reason);
        });
        super::store::audit(
            &w.state_dir,
            "keygate",
            "webhook.disable",
            &d.endpoint_id,
            &["enabled"],
        );
        tracing::warn!(endpoint = %d.endpoint_id, "webhook endpoint disabled: failing for too long");
    } else if let Some(f) = failing_update {
        if let Some(e) = inner.endpoints.iter_mut().find(|e| e.id == d.endpoint_id) {
            e.failing_since = f;
        }
        drop(inner);
        persist(w, &d.endpoint_id, move |e| e.failing_since = f);
    }
}

/// Saves a change the worker made to an endpoint, off the async workers.
fn persist(w: &Webhooks, id: &str, f: impl FnOnce(&mut Endpoint) + Send + 'static) {
    let store = w.store.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.update(&id, |e| {
            f(e);
            Ok(())
        }) {
            tracing::warn!(endpoint = %id, error = %e, "cannot save the webhook endpoint");
        }
    });
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 && s.is_multiple_of(86_400) {
        format!("{} days", s / 86_400)
    } else {
        format!("{s} s")
    }
}

fn update_gauges(w: &Webhooks) {
    let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    w.metrics.queue_depth.set(inner.queue.len() as i64);
    let age = inner
        .queue
        .oldest()
        .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    w.metrics.oldest_pending.set(age);
}

/// Forgets a deleted endpoint: its pending deliveries and its log.
pub(crate) fn forget(w: &Webhooks, endpoint_id: &str) {
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    for k in inner.queue.keys_for(endpoint_id) {
        inner.queue.remove(&k);
    }
    inner.logs.remove(endpoint_id);
    drop(inner);
    let _ = fs::remove_file(log_path(w.store.dir(), endpoint_id));
}

/// Makes a delivery due again now (resend), from the queue or the log.
pub(crate) fn resend(w: &Webhooks, endpoint_id: &str, event_id: &str) -> bool {
    let key = delivery_key(endpoint_id, event_id);
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    let found = inner.queue.get(&key).cloned().or_else(|| {
        let dir = w.store.dir().to_path_buf();
        let log = inner
            .logs
            .entry(endpoint_id.to_string())
            .or_insert_with(|| read_log(&dir, endpoint_id));
        log.iter()
            .rev()
            .find(|e| e.event_id == event_id)
            .and_then(|e| {
                Some(Delivery {
                    endpoint_id: endpoint_id.to_string(),
                    event_id: event_id.to_string(),
                    kind: e.kind.clone(),
                    body: e.body.clone()?,
                    attempt: 0,
                    next_at: 0,
                    created: now_ms(),
                })
            })
    });
    let Some(mut d) = found else {
        return false;
    };
    d.next_at = now_ms();
    let ok = inner.queue.push(d).is_ok();
    drop(inner);
    w.notify.notify_one();
    ok
}
