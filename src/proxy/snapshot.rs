//! One immutable snapshot of config + keys (+ the state built from them), and the
//! read-only [`Snapshots`] handle the data plane, tunnels, the admin API and the
//! metrics listener hold. A request sees the old snapshot or the new one, never a mix.
//!
//! Only the control plane's reloader can publish a new snapshot: it holds the one
//! [`Publisher`], made together with the handle by [`Snapshots::new`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use governor::clock::DefaultClock;

use crate::config::Config;
use crate::config::identity::Identity;
use crate::keys::store::{KeyRecord, KeySet};
use crate::observe::metrics::Metrics;
use crate::observe::record::Observer;
use crate::proxy::reject::Reject;
use crate::proxy::upstream::UpstreamClient;
use crate::ratelimit::{IpLimiter, RetryAfter};

/// Everything one request decides with.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) keys: KeySet,
    /// The keys file version this snapshot was read from (taken before reading).
    pub(crate) keys_identity: Option<Identity>,
    /// SHA-256 of the keys content this snapshot was built from.
    pub(crate) keys_digest: Option<[u8; 32]>,
    pub(crate) ip_limiter: Arc<IpLimiter>,
    pub(crate) client: UpstreamClient,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    clock: DefaultClock,
    observer: Arc<dyn Observer>,
    metrics: Arc<Metrics>,
    shared_limit: OnceLock<Arc<dyn SharedLimit>>,
    /// When the last "upstream unreachable" warning was logged (ms since `started`;
    /// 0 = never). Touched only on the failure path.
    upstream_warned_ms: AtomicU64,
    started: std::time::Instant,
}

/// An unreachable upstream is logged at most this often while it stays down.
pub(crate) const UPSTREAM_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// What a shared-limit check answers: the key's verdict, or a refusal when the
/// shared state cannot be trusted (too stale).
pub(crate) type LimitFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Result<(), RetryAfter>, Reject>> + Send + 'a>>;

/// A per-key rate limit shared by several replicas (cluster mode); when set, it
/// is checked instead of the key's own limiter.
pub(crate) trait SharedLimit: Send + Sync + 'static {
    fn check<'a>(&'a self, key: &'a Arc<KeyRecord>) -> LimitFuture<'a>;
}

/// The read-only handle: the snapshot in force, and what every request feeds.
#[derive(Clone)]
pub(crate) struct Snapshots(Arc<Shared>);

/// The one write handle (owned by the control plane's reloader).
pub(crate) struct Publisher(Arc<Shared>);

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Snapshots {
    /// The handle and its one publisher, starting from `initial`.
    pub(crate) fn new(
        initial: Snapshot,
        observer: Arc<dyn Observer>,
        metrics: Arc<Metrics>,
    ) -> (Self, Publisher) {
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(initial),
            clock: crate::ratelimit::clock().clone(),
            observer,
            metrics,
            shared_limit: OnceLock::new(),
            upstream_warned_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        (Self(shared.clone()), Publisher(shared))
    }

    /// Whether an "upstream unreachable" warning is due: the first failure, then at
    /// most one every [`UPSTREAM_WARN_EVERY`] (one atomic; called only on failure).
    pub(crate) fn upstream_warning_due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // +1 so that a failure in the very first millisecond is not "never".
        let now = self.0.started.elapsed().as_millis() as u64 + 1;
        let last = self.0.upstream_warned_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < UPSTREAM_WARN_EVERY.as_millis() as u64 {
            return false;
        }
        self.0
            .upstream_warned_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    }

    /// The snapshot in force now.
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.0.current.load_full()
    }

    /// Sees every request (metrics, access log, embedders' observers).
    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.0.observer
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The shared per-key limit, in cluster mode.
    pub(crate) fn shared_limit(&self) -> Option<&Arc<dyn SharedLimit>> {
        self.0.shared_limit.get()
    }

    /// Sets the shared per-key limit (once, at start).
    pub(crate) fn set_shared_limit(&self, limit: Arc<dyn SharedLimit>) {
        let _ = self.0.shared_limit.set(limit);
    }

    /// The clock every rate limiter counts with.
    pub(crate) fn clock(&self) -> &DefaultClock {
        &self.0.clock
    }
}

impl Publisher {
    /// The snapshot in force now (what the next one is built on).
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.0.current.load_full()
    }

    /// Puts `snapshot` in force for every request that starts from now on.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.0.current.store(Arc::new(snapshot));
    }
}
