//! Cluster mode (SPEC §10): several replicas behave as one gateway, with Redis as
//! the shared store.
//!
//! * Keys and the API switch live in Redis ([`store`]); each replica keeps its
//!   in-memory snapshot, synced by [`sync`] (a blocking read of the change stream
//!   plus a version poll every 250 ms, so a lost notification still converges), and
//!   a last-good copy in `state_dir` ([`source`]) to start from without Redis.
//! * Per-key rate limits are one GCRA script per request ([`limit`]), with a local
//!   "denied until" cache, a circuit breaker and the `on_redis_down` fallback.
//! * Last-used times, recent-request logs ([`logs`]) and heartbeats ([`status`])
//!   are batched by background tasks; the request path never waits on them.
//! * Admin and CLI writes go through [`write`]: one atomic script with
//!   compare-and-set on the key's revision.
//!
//! Missing data is never read as "deleted": when the epoch marker changes or
//! vanishes, replicas keep their last snapshot and refuse writes.

mod lastused;
pub mod limit;
pub mod logs;
mod metrics;
mod seed;
pub mod settings;
pub mod source;
pub mod status;
mod store;
mod sync;
pub mod write;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use crate::config::Config;
use crate::keys::store::KeyRecord;
use crate::ratelimit::RetryAfter;
use crate::reject::Reject;
use crate::snapshot::Shared;

pub use settings::{ClusterConfig, RedisDown};

/// How long a request waits for Redis at most.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(150);
/// How often the version is polled (besides the change stream).
pub const POLL: Duration = Duration::from_millis(250);

/// One replica's view of the cluster.
pub struct Cluster {
    cfg: ClusterConfig,
    layout: store::Layout,
    client: redis::Client,
    /// Request path: short timeout.
    fast: ArcSwapOption<ConnectionManager>,
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
    pub fn new(
        config: &Config,
        metrics: &crate::metrics::Metrics,
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
            logs: logs::Queue::new(cfg.sample_success),
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
            cfg,
        };
        Ok(Some(Arc::new(c)))
    }

    /// Spawns the background tasks: connect, seed, sync, heartbeats, flushes.
    pub fn start(self: &Arc<Self>, shared: Arc<Shared>) {
        tokio::spawn(sync::run(self.clone(), shared.clone()));
        tokio::spawn(sync::read_changes(self.clone()));
        tokio::spawn(status::heartbeat(self.clone(), shared.clone()));
        tokio::spawn(lastused::run(self.clone(), shared.clone()));
        tokio::spawn(seed::follow_file(self.clone(), shared));
        tokio::spawn(logs::flush(self.clone()));
    }

    pub fn node(&self) -> &str {
        &self.cfg.node_name
    }

    /// Asks for a full sync now (after a SIGHUP or a local write).
    pub fn resync(&self) {
        self.version.store(0, Ordering::Release);
        self.failed_version.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Seconds since the last successful contact with Redis.
    pub fn stale_seconds(&self) -> f64 {
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

    fn mark_down(&self, e: &redis::RedisError) {
        if self.redis_up.swap(false, Ordering::AcqRel) {
            tracing::error!(cluster = %self.cfg.name, error = %e, "cluster store unreachable; serving the last snapshot");
        }
        self.metrics.redis_up.set(0);
    }

    /// Step 5 in cluster mode: the shared limit. The outer error is a refusal
    /// (`max_staleness` passed: fails closed).
    pub async fn check_rate(&self, key: &Arc<KeyRecord>) -> Result<Result<(), RetryAfter>, Reject> {
        if let Some(max) = self.cfg.max_staleness
            && self.stale_seconds() > max.as_secs_f64()
        {
            return Err(Reject::ClusterStale);
        }
        Ok(limit::check(self, key).await)
    }

    /// The request-finished hook: queues a compact record for the shared stream.
    pub fn record(&self, r: &crate::record::Record) {
        self.logs.push(r, &self.cfg.node_name, &self.metrics);
    }
}

/// `GET /admin/v1/cluster`; an error when cluster mode is off.
pub async fn admin_route(shared: &Shared) -> Result<serde_json::Value, String> {
    match shared.cluster.get() {
        Some(c) => Ok(status::admin_status(c).await),
        None => Err("cluster mode is off: config.yaml has no cluster: section".into()),
    }
}

/// `keygate logs` in cluster mode (newest first; `--follow` is not supported).
pub fn cli_logs(
    cfg: &ClusterConfig,
    filter: &crate::logs::Filter,
    limit: usize,
    json: bool,
) -> Result<(), String> {
    let records = logs::query_blocking(cfg, filter, limit)?;
    for r in records {
        if json {
            crate::output::line(&r.to_string());
        } else {
            crate::output::line(&format!(
                "{}  {:<8} {:<7} {} {}  {}  {}",
                r["ts"].as_str().unwrap_or(""),
                r["node"].as_str().unwrap_or(""),
                r["method"].as_str().unwrap_or(""),
                r["status"],
                r["path"].as_str().unwrap_or(""),
                r["key_name"].as_str().unwrap_or("-"),
                r["reason"]
                    .as_str()
                    .or(r["decision"].as_str())
                    .unwrap_or(""),
            ));
        }
    }
    Ok(())
}

/// `keygate cluster status` and `keygate keys export`.
pub fn cli(config: &Config, cmd: crate::cli::ClusterCommand) -> Result<(), String> {
    let Some(cfg) = &config.cluster else {
        return Err("this config has no cluster: section".into());
    };
    match cmd {
        crate::cli::ClusterCommand::Status { json } => {
            let v = status::status_blocking(cfg);
            if json {
                crate::output::line(&v.to_string());
                return Ok(());
            }
            crate::output::line(&format!(
                "cluster {}: redis {}, version {}",
                cfg.name,
                if v["redis"]["up"].as_bool() == Some(true) {
                    format!(
                        "up ({:.1} ms)",
                        v["redis"]["rtt_ms"].as_f64().unwrap_or(0.0)
                    )
                } else {
                    "DOWN".to_string()
                },
                v["version"]
            ));
            let mut rows = vec![vec![
                "NODE".into(),
                "VERSION".into(),
                "LAST SEEN".into(),
                "STALE".into(),
            ]];
            for r in v["replicas"].as_array().into_iter().flatten() {
                rows.push(vec![
                    r["node"].as_str().unwrap_or("").to_string(),
                    r["version"].to_string(),
                    r["last_seen"].as_str().unwrap_or("").to_string(),
                    format!("{:.1}s", r["stale_seconds"].as_f64().unwrap_or(0.0)),
                ]);
            }
            crate::output::table(&rows);
            Ok(())
        }
        crate::cli::ClusterCommand::Export { output } => {
            let text = write::export(config)?;
            match output {
                None => {
                    crate::output::line(text.trim_end());
                    Ok(())
                }
                Some(p) => crate::keys::write::write_atomic(&p, &text).map_err(|e| e.to_string()),
            }
        }
    }
}
