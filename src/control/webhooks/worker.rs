//! The delivery worker: the one task that owns the queue. It turns jobs into
//! events (key diff, health detector, write events), fans each event out to the
//! enabled endpoints that subscribe, sends due deliveries (at most
//! [`MAX_IN_FLIGHT`] at a time), retries failures on `webhooks.retry_schedule`,
//! and disables an endpoint that has failed for `disable_after` (5 days), with an
//! `endpoint.disabled` entry in its log ([`super::log`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::deliver::{Attempted, dispatch, finish};
use super::events::{self, Event};
use super::health::{Detector, Seen};
use super::keychanges::{catch_up, snapshots_changed};
use super::log::{LogEntry, log_path, read_log};
use super::queue::{Delivery, DeliveryQueue, delivery_key};
use super::store::Endpoint;
use super::{Job, MAX_IN_FLIGHT, Webhooks, now_ms};
use crate::config::identity::Identity;
use crate::observe::record::{Decision, Record};

/// How often the worker looks for changed endpoints, the CLI inbox and expiries.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// What the worker keeps of a finished request.
#[derive(Debug, Clone)]
pub(crate) struct RequestSeen {
    pub(crate) seen: Seen,
    pub(crate) category: Option<Arc<str>>,
    pub(crate) request_id: String,
    /// The response body's start, when an `include_body` endpoint wanted it.
    pub(crate) body: Option<crate::observe::record::CapturedBody>,
}

impl RequestSeen {
    pub(crate) fn from_record(r: &Record) -> Self {
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
            body: r.body.clone(),
        }
    }
}

/// The worker's state, shared with the admin handlers.
pub(crate) struct Inner {
    pub(crate) queue: Box<dyn DeliveryQueue>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) endpoints_version: Option<Identity>,
    pub(crate) logs: HashMap<String, VecDeque<LogEntry>>,
    pub(crate) busy: HashSet<String>,
}

impl Inner {
    pub(crate) fn new(queue: Box<dyn DeliveryQueue>) -> Self {
        Self {
            queue,
            endpoints: Vec::new(),
            endpoints_version: None,
            logs: HashMap::new(),
            busy: HashSet::new(),
        }
    }
}

impl Webhooks {
    /// Queues `event` for `only`, or for every enabled endpoint that subscribes.
    pub(crate) fn fan_out(&self, event: &Event, only: Option<&str>) -> usize {
        self.fan_out_with(event, only, false)
    }

    /// As [`Webhooks::fan_out`], for an event several replicas may see (cluster
    /// mode: only the first one queues it; it needs a stable id).
    pub(crate) fn fan_out_once(&self, event: &Event) -> usize {
        self.fan_out_with(event, None, true)
    }

    /// The deliveries of `event`: to `only`, or to every enabled endpoint that
    /// subscribes.
    pub(crate) fn deliveries_for(&self, event: &Event, only: Option<&str>) -> Vec<Delivery> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        deliveries_to(event, &inner.endpoints, only)
    }

    fn fan_out_with(&self, event: &Event, only: Option<&str>, once: bool) -> usize {
        let deliveries = self.deliveries_for(event, only);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut queued = 0;
        for d in deliveries {
            let r = if once {
                inner.queue.push_once(d)
            } else {
                inner.queue.push(d)
            };
            match r {
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

/// The deliveries of `event` to `endpoints`: to `only`, or to every enabled one
/// that subscribes.
pub(crate) fn deliveries_to(
    event: &Event,
    endpoints: &[Endpoint],
    only: Option<&str>,
) -> Vec<Delivery> {
    let now = now_ms();
    endpoints
        .iter()
        .filter(|e| match only {
            Some(id) => e.id == id,
            None => e.enabled && events::any_matches(&e.events, &event.kind),
        })
        .map(|e| Delivery {
            endpoint_id: e.id.clone(),
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            body: event.body_for(e.include_body).to_string(),
            attempt: 0,
            next_at: now,
            created: now,
            node: None,
        })
        .collect()
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
    // Cluster mode: key events come from the shared store (cluster::keyevents).
    if w.cluster.is_none() {
        catch_up(&w);
    }
    let tls = match crate::server::tls::upstream_client_config(None) {
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
        Job::Keys { old, new } => {
            snapshots_changed(w, &old, &new);
        }
        Job::Request(r) => {
            if let Some(b) = &r.body {
                w.body_bytes
                    .fetch_sub(b.bytes.len(), std::sync::atomic::Ordering::AcqRel);
            }
            let shared = w.shared();
            let exists = |id: &str| {
                shared
                    .as_ref()
                    .is_some_and(|s| s.load().keys.get_str(id).is_some())
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
                let mut event = Event::new(&kind, data.clone());
                if let Some(b) = &r.body {
                    let mut with = data;
                    events::add_response_body(&mut with, &b.bytes, b.truncated);
                    let mut full =
                        serde_json::from_str::<serde_json::Value>(&event.body).unwrap_or_default();
                    full["data"] = with;
                    event.with_body = Some(full.to_string());
                }
                w.fan_out(&event, None);
            }
        }
    }
}

fn housekeeping(w: &Webhooks, expired: &mut Option<HashSet<String>>, detector: &mut Detector) {
    // Endpoints changed by another process (the CLI) or by the admin API; in
    // cluster mode the pump follows them in Redis.
    if w.cluster.is_none() {
        let version = w.store.identity();
        let changed = {
            let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.endpoints_version != version
        };
        if changed {
            w.reload_endpoints();
        }
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
                    with_body: None,
                };
                w.fan_out(&event, Some(&req.endpoint_id));
            }
        }
    }
    // key.expired: keys whose expiry passed while this gateway ran.
    if let Some(shared) = w.shared() {
        let snap = shared.load();
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
                let mut event = Event::new("key.expired", data);
                if w.cluster.is_some() {
                    // Every replica sees the expiry: one id, the first one queues it.
                    let at = k.expires_at.map(|t| t.unix_timestamp()).unwrap_or(0);
                    event.id = events::stable_id("expired", at.unsigned_abs(), 0, k.id.as_str());
                    w.fan_out_once(&event);
                } else {
                    w.fan_out(&event, None);
                }
            }
        }
    }
}

/// What the CLI drops into `state_dir/webhooks/inbox` for the gateway to send.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InboxItem {
    pub(crate) endpoint_id: String,
    pub(crate) event_id: String,
    pub(crate) kind: String,
    pub(crate) body: String,
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
    inner.queue.forget_endpoint(endpoint_id);
    inner.logs.remove(endpoint_id);
    drop(inner);
    let _ = fs::remove_file(log_path(w.store.dir(), endpoint_id));
}

/// Makes a delivery due again now (resend), from the queue or the log.
pub(crate) fn resend(w: &Webhooks, endpoint_id: &str, event_id: &str) -> bool {
    let key = delivery_key(endpoint_id, event_id);
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    let found = inner.queue.get(&key).or_else(|| {
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
                    node: None,
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
