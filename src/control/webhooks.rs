//! Webhooks (docs/webhooks.md): signed events about keys, the API switch, integration
//! health and writes, delivered at least once to the endpoints operators add.
//!
//! The parts:
//! - [`config`] — the `webhooks:` section of config.yaml;
//! - [`store`] — endpoints in `state_dir/webhooks/endpoints.json`, audited;
//! - [`events`] — event types, patterns, payloads, and the key-change diff;
//! - [`queue`] — the durable, bounded delivery queue behind a small trait (a
//!   journal in `state_dir`, or in cluster mode a Redis stream with a consumer
//!   group: [`cluster`], which also keeps the endpoints and logs in Redis and
//!   sends key events once for the whole cluster);
//! - [`worker`] — the one task that owns the queue: fans events out, delivers,
//!   retries on `retry_schedule` (`deliver`: one attempt and its outcome),
//!   disables endpoints failing too long;
//! - [`log`] — each endpoint's delivery log; `keychanges` — key events from
//!   snapshots, and at start for changes made while the gateway was stopped;
//! - [`sign`] — Standard Webhooks signatures; [`target`] — SSRF rules and the HTTP
//!   attempt; [`health`] — `key.failing` / `key.recovered`;
//! - [`admin`] — `/admin/v1/webhooks…`; [`cli`] — `keygate webhooks …`; both
//!   through [`manage`];
//!   `webhooks/console.js` — the console's Webhooks tab.
//!
//! Hooks into the rest of keygate: [`Tee`] sees every finished request (one
//! atomic load when no endpoint wants request events: zero cost on the request
//! path), [`on_keys_changed`] runs where a snapshot replaces the old one, and the
//! gateway starts and stops the worker. Everything else happens on the worker
//! task, fed through a bounded channel (`try_send`: full means dropped and
//! counted, never the request waiting).

pub(crate) mod admin;
pub(crate) mod cluster;
mod deliver;
pub(crate) mod endpoint;
pub(crate) mod events;
pub(crate) mod health;
mod keychanges;
pub(crate) mod log;
pub(crate) mod manage;
pub(crate) mod metrics;
pub(crate) mod queue;
pub(crate) mod sign;
pub(crate) mod store;
pub(crate) mod target;
pub(crate) mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::observe::record::{Decision, Observer, Record};
use crate::proxy::snapshot::{Snapshot, Snapshots};
use metrics::WebhookMetrics;
use store::EndpointStore;

/// Jobs handed to the worker.
#[derive(Debug)]
pub(crate) enum Job {
    /// A finished request (health detector, write events).
    Request(Box<worker::RequestSeen>),
    /// A snapshot replaced another: diff the keys.
    Keys {
        old: Arc<Snapshot>,
        new: Arc<Snapshot>,
    },
}

/// Deliveries in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The console's Webhooks tab: a script that fills `<div id="webhooks-panel">`.
pub(crate) const CONSOLE_JS: &str = include_str!("webhooks/console.js");

/// Capacity of the hand-off channel from request tasks to the worker.
const INGEST: usize = 4096;

/// Bits of [`Webhooks::wants`].
const WANTS_HEALTH: u8 = 1;
const WANTS_WRITES: u8 = 2;
/// Some enabled endpoint with `include_body` subscribes to a write event.
const WANTS_BODY: u8 = 4;

/// Response bodies (of `include_body` write events) waiting in the hand-off to
/// the worker at most; beyond it a body is left out (`body_truncated: true`).
const BODY_BUDGET: usize = 8 * 1024 * 1024;

/// The webhook subsystem of one gateway.
pub(crate) struct Webhooks {
    pub(crate) state_dir: PathBuf,
    pub(crate) store: EndpointStore,
    /// Which request events some enabled endpoint wants ([`WANTS_HEALTH`],
    /// [`WANTS_WRITES`]); 0 = the request path does nothing.
    wants: AtomicU8,
    /// The event patterns of the enabled endpoints with `include_body`: which
    /// write events need the response body.
    body_patterns: arc_swap::ArcSwap<Vec<Vec<String>>>,
    /// Bytes of response bodies handed to the worker and not yet taken.
    pub(crate) body_bytes: AtomicUsize,
    ingest: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    pub(crate) inner: Mutex<worker::Inner>,
    pub(crate) notify: Notify,
    pub(crate) metrics: WebhookMetrics,
    stop: watch::Sender<bool>,
    pub(crate) shared: OnceLock<Snapshots>,
    pub(crate) boot_config: crate::config::webhooks::WebhooksConfig,
    /// Changes of keys sent so far (see `keychanges`).
    pub(crate) keys_generation: std::sync::atomic::AtomicU64,
    pub(crate) keys_epoch: OnceLock<String>,
    /// Cluster mode: the queue, endpoints and logs in Redis.
    pub(crate) cluster: Option<Arc<cluster::Shared>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Opens the queue and the endpoints in `state_dir` and registers the metrics.
    /// Call after the gateway took the state_dir lock.
    pub(crate) fn new(cfg: &Config, registry: &prometheus::Registry) -> Result<Arc<Self>, String> {
        let shared_cluster = match &cfg.cluster {
            Some(c) => Some(Arc::new(cluster::Shared::new(c, cfg.webhooks.queue_max)?)),
            None => None,
        };
        let (store, queue): (EndpointStore, Box<dyn queue::DeliveryQueue>) = match &shared_cluster {
            Some(sh) => (
                EndpointStore::with_redis(&cfg.state_dir, sh.store.clone()),
                Box::new(sh.queue()),
            ),
            None => {
                let store = EndpointStore::new(&cfg.state_dir);
                let q = queue::FileQueue::open(store.dir(), cfg.webhooks.queue_max)?;
                (store, Box::new(q))
            }
        };
        let metrics = WebhookMetrics::new(registry).map_err(|e| format!("metrics: {e}"))?;
        let (ingest, rx) = mpsc::channel(INGEST);
        let (stop, _) = watch::channel(false);
        let w = Arc::new(Self {
            state_dir: cfg.state_dir.clone(),
            store,
            wants: AtomicU8::new(0),
            body_patterns: arc_swap::ArcSwap::from_pointee(Vec::new()),
            body_bytes: AtomicUsize::new(0),
            ingest,
            rx: Mutex::new(Some(rx)),
            inner: Mutex::new(worker::Inner::new(queue)),
            notify: Notify::new(),
            metrics,
            stop,
            shared: OnceLock::new(),
            boot_config: cfg.webhooks.clone(),
            keys_generation: std::sync::atomic::AtomicU64::new(0),
            keys_epoch: OnceLock::new(),
            cluster: shared_cluster,
        });
        if w.cluster.is_some() {
            // The last-good copy until the pump has read Redis (never waits on it).
            match w.store.load_copy() {
                Ok(list) => w.install_endpoints(list, None),
                Err(e) => {
                    tracing::warn!(error = %e, "no copy of the webhook endpoints to start from")
                }
            }
        } else {
            w.reload_endpoints();
        }
        Ok(w)
    }

    /// Attaches to the gateway's shared state and spawns the worker.
    pub(crate) fn start(self: &Arc<Self>, snapshots: &Snapshots) {
        let _ = self.shared.set(snapshots.clone());
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            tokio::spawn(worker::run(self.clone(), rx, self.stop.subscribe()));
            if let Some(sh) = &self.cluster {
                tokio::spawn(cluster::pump::run(
                    self.clone(),
                    sh.clone(),
                    self.stop.subscribe(),
                ));
            }
        }
    }

    /// Stops the worker: attempts in flight are abandoned (they stay pending in
    /// the queue and are made again after a restart: at least once).
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// The settings in force (the snapshot's, else those at start).
    pub(crate) fn config(&self) -> crate::config::webhooks::WebhooksConfig {
        self.shared
            .get()
            .map(|s| s.load().config.webhooks.clone())
            .unwrap_or_else(|| self.boot_config.clone())
    }

    pub(crate) fn shared(&self) -> Option<Snapshots> {
        self.shared.get().cloned()
    }

    /// Hands a job to the worker; a full channel drops it and counts it.
    pub(crate) fn submit(&self, job: Job) {
        if self.ingest.try_send(job).is_err() {
            self.metrics.dropped.inc();
        }
    }

    /// Re-reads the endpoints file and recomputes what the request path must do.
    /// Blocking in cluster mode (Redis): use [`Webhooks::refresh`] there.
    pub(crate) fn reload_endpoints(&self) {
        let version = self.store.identity();
        let endpoints = match self.store.load() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook endpoints; the last ones stay in force");
                return;
            }
        };
        self.install_endpoints(endpoints, version);
    }

    /// Reads the endpoints again, off the async workers (after an admin change).
    pub(crate) async fn refresh(self: &Arc<Self>) {
        let w = self.clone();
        let _ = tokio::task::spawn_blocking(move || w.reload_endpoints()).await;
    }

    /// The endpoints in force now (what a read shows when Redis cannot answer).
    pub(crate) fn endpoints_now(&self) -> Vec<store::Endpoint> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints
            .clone()
    }

    /// Puts `endpoints` in force and recomputes what the request path must do.
    pub(crate) fn install_endpoints(
        &self,
        endpoints: Vec<store::Endpoint>,
        version: Option<crate::config::identity::Identity>,
    ) {
        let mut wants = 0;
        let mut body_patterns = Vec::new();
        for e in endpoints.iter().filter(|e| e.enabled) {
            if e.include_body && e.events.iter().any(|p| wants_writes(p)) {
                wants |= WANTS_BODY;
                body_patterns.push(e.events.clone());
            }
            if e.events.iter().any(|p| {
                events::pattern_matches(p, "key.failing")
                    || events::pattern_matches(p, "key.recovered")
            }) {
                wants |= WANTS_HEALTH;
            }
            if e.events.iter().any(|p| wants_writes(p)) {
                wants |= WANTS_WRITES;
            }
        }
        self.body_patterns.store(Arc::new(body_patterns));
        self.wants.store(wants, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.endpoints = endpoints;
        inner.endpoints_version = version;
        drop(inner);
        self.notify.notify_one();
    }

    /// The request-finished hook: runs on the request's task, so it only looks at
    /// one atomic unless some endpoint wants request events.
    fn finished(&self, r: &Record) {
        let wants = self.wants.load(Ordering::Relaxed);
        if wants == 0 {
            return;
        }
        let is_write = r.decision == Decision::Allowed
            && (200..300).contains(&r.status)
            && matches!(
                r.method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
            );
        let health = wants & WANTS_HEALTH != 0
            && (r.key.is_some()
                || matches!(
                    r.decision,
                    Decision::Unauthenticated | Decision::ApiDisabled | Decision::RateLimited
                ));
        if !(health || (wants & WANTS_WRITES != 0 && is_write)) {
            return;
        }
        let mut seen = worker::RequestSeen::from_record(r);
        if let Some(b) = &mut seen.body {
            // Bounded: bodies waiting for the worker take at most BODY_BUDGET.
            let n = b.bytes.len();
            if self.body_bytes.fetch_add(n, Ordering::AcqRel) + n > BODY_BUDGET {
                self.body_bytes.fetch_sub(n, Ordering::AcqRel);
                b.bytes = bytes::Bytes::new();
                b.truncated = true;
            }
        }
        let taken = seen.body.as_ref().map_or(0, |b| b.bytes.len());
        if self.ingest.try_send(Job::Request(Box::new(seen))).is_err() {
            self.body_bytes.fetch_sub(taken, Ordering::AcqRel);
            self.metrics.dropped.inc();
        }
    }

    /// Does an enabled endpoint with `include_body` want this response's event?
    /// One atomic load unless one does.
    fn wants_body(&self, r: &Record) -> bool {
        if self.wants.load(Ordering::Relaxed) & WANTS_BODY == 0 {
            return false;
        }
        let Some(cat) = &r.category else {
            return false;
        };
        if r.decision != Decision::Allowed {
            return false;
        }
        let Some(kind) = events::write_kind(&r.method, r.status, cat) else {
            return false;
        };
        self.body_patterns
            .load()
            .iter()
            .any(|p| events::any_matches(p, &kind))
    }
}

/// Could this pattern select a `<category>.<verb>` event?
fn wants_writes(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    if let Some(prefix) = p.strip_suffix(".*") {
        return !matches!(prefix, "key" | "api" | "webhook");
    }
    !events::FIXED_TYPES.contains(&p)
}

/// An observer that feeds `first` and then the webhooks.
pub(crate) struct Tee {
    first: Arc<dyn Observer>,
    webhooks: Arc<Webhooks>,
}

/// Wraps the gateway's extra observer so the webhooks see every finished request.
pub(crate) fn tee(first: Arc<dyn Observer>, webhooks: &Arc<Webhooks>) -> Arc<dyn Observer> {
    Arc::new(Tee {
        first,
        webhooks: webhooks.clone(),
    })
}

impl Observer for Tee {
    fn started(&self) {
        self.first.started();
    }
    fn finished(&self, r: &Record) {
        self.first.finished(r);
        self.webhooks.finished(r);
    }
    fn wants_body(&self, r: &Record) -> bool {
        self.webhooks.wants_body(r) || self.first.wants_body(r)
    }
}

impl Webhooks {
    /// Called by the reloader when a new snapshot replaced `old` (reload, keys
    /// watcher, admin API, cluster sync): whichever way the keys changed, the worker
    /// diffs old and new keys and queues `key.created|updated|deleted` and
    /// `api.enabled|disabled`. Cheap: it only hands both snapshots to the worker.
    pub(crate) fn keys_changed(&self, old: &Arc<Snapshot>, new: &Arc<Snapshot>) {
        // Cluster mode: once for the cluster, from the shared store (not per replica).
        if let Some(sh) = &self.cluster {
            sh.keys_dirty.store(true, Ordering::Release);
            sh.wake.notify_one();
            return;
        }
        if !Arc::ptr_eq(old, new) {
            self.submit(Job::Keys {
                old: old.clone(),
                new: new.clone(),
            });
        }
    }
}
