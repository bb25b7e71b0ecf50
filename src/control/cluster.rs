//! Cluster mode (README, "Running several replicas"): several replicas behave as one gateway, with Redis as
//! the shared store.
//!
//! * Keys and the API switch live in Redis ([`store`]); each replica keeps its
//!   in-memory snapshot, synced by [`sync`] (a blocking read of the change stream
//!   plus a version poll every 250 ms, so a lost notification still converges), and
//!   a last-good copy in `state_dir` ([`source`]) to start from without Redis.
//! * Per-key rate limits are one GCRA script per request ([`limit`]), sent over
//!   keygate's own pipelined RESP connection ([`fast`]), with a local
//!   "denied until" cache, a circuit breaker and the `on_redis_down` fallback.
//! * Last-used times, recent-request logs ([`logs`]) and heartbeats ([`status`])
//!   are batched by background tasks; the request path never waits on them.
//! * Admin and CLI writes go through [`write`]: one atomic script with
//!   compare-and-set on the key's revision.
//!
//! Missing data is never read as "deleted": when the epoch marker changes or
//! vanishes, replicas keep their last snapshot and refuse writes.

pub(crate) mod fast;
mod lastused;
pub(crate) mod limit;
pub(crate) mod logs;
mod metrics;
mod resp;
mod seed;
pub(crate) mod source;
pub(crate) mod status;
pub(crate) mod store;
mod sync;
pub(crate) mod write;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use crate::config::Config;
use crate::control::reload::Reloader;
use crate::keys::store::KeyRecord;
use crate::proxy::reject::Reject;
use crate::ratelimit::RetryAfter;

pub(crate) use crate::config::cluster::{ClusterConfig, RedisDown};

/// How long a request waits for Redis at most.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(150);
/// How often the version is polled (besides the change stream).
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// One replica's view of the cluster.
pub(crate) struct Cluster {
    cfg: ClusterConfig,
    /// Seals operator secrets of a seeding keys file, when a seal key is set.
    seal: Option<Arc<crate::keys::seal::SealKey>>,
    layout: store::Layout,
    client: redis::Client,
    /// Request path: keygate's own pipelined connection ([`fast`]), kept
    /// connected by [`sync::keep_fast`].
    fast: ArcSwapOption<fast::Fast>,
    /// Flushes, polls, heartbeats.
    bulk: ArcSwapOption<ConnectionManager>,
    /// The snapshot version in force (0 = not synced yet).
    version: AtomicU64,
    /// A version whose keys did not fit the config (not retried until it moves).
    failed_version: AtomicU64,
    /// The epoch of the data in force.
    epoch: Mutex<Option<String>>,
    /// The epoch vanished or changed: writes are refused.
    epoch_lost: AtomicBool,
    redis_up: AtomicBool,
    /// Milliseconds since `started` of the last successful poll.
    last_ok_ms: AtomicU64,
    /// Replicas seen alive at the last heartbeat (≥ 1).
    live_replicas: AtomicU64,
    started: Instant,
    changed: Notify,
    limiter: limit::Limiter,
    logs: logs::Queue,
    metrics: metrics::ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.cfg.name)
            .field("node", &self.cfg.node_name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// The cluster of `config`, if it has a `cluster:` section. Connects later.
    /// `seal` is the seal key the embedder handed in (for seeding from the file).
    pub(crate) fn new(
        config: &Config,
        metrics: &crate::observe::metrics::Metrics,
        seal: Option<Arc<crate::keys::seal::SealKey>>,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(cfg) = config.cluster.clone() else {
            return Ok(None);
        };
        let client = cfg.client().map_err(|_| {
            "cluster.redis_url: cannot be used (the value is not shown)".to_string()
        })?;
        let metrics = metrics::ClusterMetrics::register(&metrics.registry)
            .map_err(|e| format!("cluster metrics: {e}"))?;
        let known = source::read(&config.state_dir, &cfg.name);
        let c = Self {
            layout: store::Layout::new(&cfg.name),
            logs: logs::Queue::new(cfg.sample_success, &cfg.node_name),
            client,
            fast: ArcSwapOption::empty(),
            bulk: ArcSwapOption::empty(),
            version: AtomicU64::new(known.as_ref().map_or(0, |k| k.version)),
            failed_version: AtomicU64::new(0),
            epoch: Mutex::new(known.map(|k| k.epoch)),
            epoch_lost: AtomicBool::new(false),
            redis_up: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            live_replicas: AtomicU64::new(1),
            started: Instant::now(),
            changed: Notify::new(),
            limiter: limit::Limiter::default(),
            metrics,
            seal,
            cfg,
        };
        Ok(Some(Arc::new(c)))
    }

    /// Spawns the background tasks: connect, seed, sync, heartbeats, flushes.
    pub(crate) fn start(self: &Arc<Self>, shared: Arc<Reloader>) {
        tokio::spawn(sync::run(self.clone(), shared.clone()));
        tokio::spawn(sync::read_changes(self.clone()));
        tokio::spawn(sync::keep_fast(self.clone()));
        tokio::spawn(status::heartbeat(self.clone(), shared.clone()));
        tokio::spawn(lastused::run(self.clone(), shared.clone()));
        tokio::spawn(seed::follow_file(self.clone(), shared));
        tokio::spawn(logs::flush(self.clone()));
    }

    /// Asks for a full sync now (after a SIGHUP or a local write).
    pub(crate) fn resync(&self) {
        self.version.store(0, Ordering::Release);
        self.failed_version.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Seconds since the last successful contact with Redis.
    pub(crate) fn stale_seconds(&self) -> f64 {
        let last = self.last_ok_ms.load(Ordering::Acquire);
        self.now_ms().saturating_sub(last) as f64 / 1000.0
    }

    fn mark_ok(&self) {
        self.last_ok_ms.store(self.now_ms(), Ordering::Release);
        if !self.redis_up.swap(true, Ordering::AcqRel) {
            tracing::info!(cluster = %self.cfg.name, "cluster store reachable");
        }
        self.metrics.redis_up.set(1);
    }

    fn mark_down(&self, e: &dyn std::fmt::Display) {
        if self.redis_up.swap(false, Ordering::AcqRel) {
            tracing::error!(cluster = %self.cfg.name, error = %e, "cluster store unreachable; serving the last snapshot");
        }
        self.metrics.redis_up.set(0);
    }

    /// Step 5 in cluster mode: the shared limit. The outer error is a refusal
    /// (`max_staleness` passed: fails closed).
    pub(crate) async fn check_rate(
        &self,
        key: &Arc<KeyRecord>,
    ) -> Result<Result<(), RetryAfter>, Reject> {
        if let Some(max) = self.cfg.max_staleness
            && self.stale_seconds() > max.as_secs_f64()
        {
            return Err(Reject::ClusterStale);
        }
        Ok(limit::check(self, key).await)
    }

    /// The request-finished hook: queues `r` (`line`, its access-log line) for the
    /// shared stream.
    pub(crate) fn record(&self, r: &crate::observe::record::Record, line: &str) {
        self.logs.push(r, line, &self.metrics);
    }
}

impl Cluster {
    /// The bulk connection (flushes, polls, heartbeats), once connected.
    pub(crate) fn bulk_connection(&self) -> Option<ConnectionManager> {
        self.bulk.load_full().map(|m| (*m).clone())
    }
}

impl crate::proxy::snapshot::SharedLimit for Cluster {
    fn check<'a>(&'a self, key: &'a Arc<KeyRecord>) -> crate::proxy::snapshot::LimitFuture<'a> {
        Box::pin(self.check_rate(key))
    }
}

/// `GET /admin/v1/cluster`; an error when cluster mode is off.
pub(crate) async fn admin_route(
    cluster: Option<&Arc<Cluster>>,
) -> Result<serde_json::Value, String> {
    match cluster {
        Some(c) => Ok(status::admin_status(c).await),
        None => Err("cluster mode is off: config.yaml has no cluster: section".into()),
    }
}
