//! Webhooks in cluster mode (docs/webhooks.md, "Cluster mode"): the endpoints, the
//! delivery queue and the delivery logs live in Redis, under the cluster's
//! `kg:{<name>}:wh:` prefix, so every replica sees the same endpoints and each
//! event is delivered by one replica.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `:wh:endpoints` · `:wh:endpoints_version` | hash · integer | endpoint id → JSON (with its secrets); bumped by every change |
//! | `:wh:lock` | string | held (5 s at most) by the one writer of the endpoints |
//! | `:wh:pending` | hash | `<endpoint>/<event>` → the delivery (attempts, next attempt, body) |
//! | `:wh:created` | sorted set | pending delivery → when it was queued (depth, oldest, `queue_max`) |
//! | `:wh:retry` | sorted set | delivery waiting for a retry → when it is due |
//! | `:wh:queue` | stream, group `deliver` | deliveries due now; each replica is a consumer (its node name) |
//! | `:wh:log:<endpoint>` | list | the endpoint's last 100 attempts, newest first, each with `node` |
//! | `:wh:once:<delivery>` | string (1 day) | a delivery several replicas may make (`key.expired`): the first wins |
//! | `:wh:keys_seen` · `:wh:keys_version` | string · integer | the keys key events last described, and the cluster version they had |
//!
//! The parts: [`endpoints`] — the endpoints and everything the admin API and the
//! CLI read or write synchronously; [`queue`] — the worker's [`super::queue::DeliveryQueue`]
//! in cluster mode (a local view, changes buffered for the pump); [`pump`] — the
//! task that talks to Redis: writes the buffered changes, reads the stream, takes
//! over deliveries a dead replica left, moves due retries back into the stream,
//! follows the endpoints; [`keyevents`] — key and account events, once per
//! change for the whole cluster; [`scripts`] — the Lua scripts.

pub(crate) mod endpoints;
pub(crate) mod keyevents;
pub(crate) mod pump;
pub(crate) mod queue;
pub(crate) mod scripts;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::cluster::ClusterConfig;

/// The consumer group every replica reads the queue stream in.
pub(crate) const GROUP: &str = "deliver";
/// A delivery a replica holds (read from the stream, not settled) is taken over
/// by another replica once it has not been renewed for this long.
pub(crate) const LEASE: Duration = Duration::from_secs(5);
/// How often a replica renews the deliveries it holds.
pub(crate) const RENEW: Duration = Duration::from_secs(1);
/// How long a `:wh:once:` marker is kept.
pub(crate) const ONCE_TTL_SECS: u64 = 24 * 3600;

/// The Redis key names of one cluster's webhooks.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    pub(crate) epoch: String,
    pub(crate) version: String,
    pub(crate) audit: String,
    pub(crate) endpoints: String,
    pub(crate) endpoints_version: String,
    pub(crate) lock: String,
    pub(crate) pending: String,
    pub(crate) created: String,
    pub(crate) retry: String,
    pub(crate) queue: String,
    pub(crate) keys_seen: String,
    pub(crate) keys_version: String,
}

impl Keys {
    pub(crate) fn new(cfg: &ClusterConfig) -> Self {
        let p = cfg.key_prefix();
        let k = |s: &str| format!("{p}:{s}");
        Self {
            epoch: k("epoch"),
            version: k("version"),
            audit: k("audit"),
            endpoints: k("wh:endpoints"),
            endpoints_version: k("wh:endpoints_version"),
            lock: k("wh:lock"),
            pending: k("wh:pending"),
            created: k("wh:created"),
            retry: k("wh:retry"),
            queue: k("wh:queue"),
            keys_seen: k("wh:keys_seen"),
            keys_version: k("wh:keys_version"),
            prefix: p,
        }
    }

    pub(crate) fn log(&self, endpoint_id: &str) -> String {
        format!("{}:wh:log:{endpoint_id}", self.prefix)
    }

    pub(crate) fn once(&self, delivery_key: &str) -> String {
        format!("{}:wh:once:{delivery_key}", self.prefix)
    }
}

/// One replica's part in the cluster's webhooks.
pub(crate) struct Shared {
    pub(crate) cfg: ClusterConfig,
    pub(crate) keys: Keys,
    pub(crate) client: redis::Client,
    /// The endpoints, logs and direct enqueues (synchronous: admin API, CLI).
    pub(crate) store: Arc<endpoints::RedisStore>,
    /// The worker's view of the queue and the changes waiting for the pump.
    pub(crate) state: Arc<Mutex<queue::QState>>,
    /// Wakes the pump (a change to send).
    pub(crate) wake: Arc<Notify>,
    /// A snapshot changed: look for key events to send.
    pub(crate) keys_dirty: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.cfg.node_name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(cfg: &ClusterConfig, queue_max: usize) -> Result<Self, String> {
        let client = cfg.client().map_err(|_| {
            "cluster.redis_url: cannot be used (the value is not shown)".to_string()
        })?;
        Ok(Self {
            keys: Keys::new(cfg),
            store: Arc::new(endpoints::RedisStore::open(cfg)?),
            client,
            state: Arc::new(Mutex::new(queue::QState::new(queue_max))),
            wake: Arc::new(Notify::new()),
            keys_dirty: AtomicBool::new(true),
            cfg: cfg.clone(),
        })
    }

    pub(crate) fn node(&self) -> &str {
        &self.cfg.node_name
    }

    /// Leaves a log entry for the pump to write.
    pub(crate) fn log(&self, endpoint_id: &str, json: String) {
        lock(&self.state).push_log(queue::Op::Log {
            endpoint_id: endpoint_id.to_string(),
            json,
        });
        self.wake.notify_one();
    }

    /// The worker's queue: a view of this state.
    pub(crate) fn queue(&self) -> queue::RedisQueue {
        queue::RedisQueue::new(self.state.clone(), self.wake.clone(), self.node().into())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
