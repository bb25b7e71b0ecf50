//! The shared per-key rate limit: one `EVALSHA` of the GCRA script per request,
//! with the Redis server's clock, so every replica draws from one budget.
//!
//! * Per key, the `EVALSHA` command (script hash, the key's Redis key, its interval
//!   and tolerance) is encoded once (RESP bytes) and reused while the key's rate
//!   stays the same; the request path builds no command and no key name. It goes
//!   over keygate's own pipelined connection ([`super::fast`]); a full queue there
//!   counts as a slow Redis.
//! * A denial is cached locally ("denied until"): a key over its limit costs no
//!   round trip until its next token is due.
//! * A circuit breaker: a failed or slow call opens it for [`OPEN_FOR`]; while open,
//!   requests use the fallback at once, and one request at a time probes Redis
//!   afterwards (the heartbeat closes it as soon as Redis answers). A dead Redis
//!   costs one short timeout for the first few requests, not every request.
//! * Fallback (`on_redis_down.rate_limit`): `local_share` enforces the key's rate
//!   and burst divided by the replicas last seen alive (a local governor limiter per
//!   key, bounded by the keys of the snapshot); `open` lets requests pass (fails
//!   open); `closed` refuses them with 429 (fails closed).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use redis::Script;

use super::fast::Failure;
use super::{Cluster, REQUEST_TIMEOUT, RedisDown};
use crate::keys::KeyId;
use crate::keys::store::KeyRecord;
use crate::ratelimit::{KeyLimiter, Per, Rate, RetryAfter, check_key};

/// How long the breaker stays open before a probe.
pub(crate) const OPEN_FOR: Duration = Duration::from_millis(500);

/// One key's shared-limit state.
struct PerKey {
    /// The rate `cmd` was built for.
    rate: Rate,
    /// `EVALSHA <gcra> 1 <kg:{name}:rl:id> <interval> <tolerance>`, encoded once.
    cmd: Bytes,
    /// Denied until this many µs after [`Limiter::base`] (0 = not denied).
    denied_until: AtomicU64,
}

pub(crate) struct Limiter {
    script: Script,
    keys: DashMap<KeyId, Arc<PerKey>>,
    local: DashMap<KeyId, (Rate, Arc<KeyLimiter>)>,
    /// Breaker: open until this many ms after `base` (0 = closed).
    open_until: AtomicU64,
    probing: AtomicBool,
    base: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            script: super::store::gcra(),
            keys: DashMap::new(),
            local: DashMap::new(),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            base: Instant::now(),
        }
    }
}

fn retry_after(wait: Duration) -> RetryAfter {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RetryAfter(secs.max(1))
}

/// Emission interval and tolerance of `rate`, in µs.
fn gcra_args(rate: &Rate) -> (u64, u64) {
    let per_us: u64 = match rate.per {
        Per::Second => 1_000_000,
        Per::Minute => 60_000_000,
    };
    let interval = (per_us / u64::from(rate.count.get())).max(1);
    (interval, interval * u64::from(rate.burst.get() - 1))
}

/// `rate` divided among `n` replicas (at least 1 of each).
fn share(rate: &Rate, n: u64) -> Rate {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let part = |v: NonZeroU32| NonZeroU32::new(v.get() / n).unwrap_or(NonZeroU32::MIN);
    Rate {
        count: part(rate.count),
        per: rate.per,
        burst: part(rate.burst),
    }
}

impl Limiter {
    fn ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn breaker_open(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if self.ms() < until {
            return true;
        }
        // Half open: one request probes, the others keep using the fallback.
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    }

    fn trip(&self) {
        self.open_until
            .store(self.ms() + OPEN_FOR.as_millis() as u64, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// Closes the breaker (Redis answered).
    pub(crate) fn close(&self) {
        self.open_until.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Drops the state of keys no longer in the snapshot.
    pub(crate) fn retain(&self, keep: impl Fn(&KeyId) -> bool) {
        self.keys.retain(|k, _| keep(k));
        self.local.retain(|k, _| keep(k));
    }

    /// `key`'s state, its command built for its current rate (a changed rate gets
    /// a new command and keeps the denial).
    fn per_key(&self, c: &Cluster, key: &KeyRecord) -> Arc<PerKey> {
        if let Some(k) = self.keys.get(&key.id)
            && k.rate == key.rate
        {
            return k.clone();
        }
        let (interval, tolerance) = gcra_args(&key.rate);
        let cmd = super::resp::encode(&[
            b"EVALSHA",
            self.script.get_hash().as_bytes(),
            b"1",
            c.layout.rate(key.id.as_str()).as_bytes(),
            interval.to_string().as_bytes(),
            tolerance.to_string().as_bytes(),
        ]);
        let denied = self
            .keys
            .get(&key.id)
            .map_or(0, |k| k.denied_until.load(Ordering::Relaxed));
        let k = Arc::new(PerKey {
            rate: key.rate,
            cmd,
            denied_until: AtomicU64::new(denied),
        });
        self.keys.insert(key.id.clone(), k.clone());
        k
    }

    fn us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    fn fallback(&self, c: &Cluster, key: &KeyRecord) -> Result<(), RetryAfter> {
        match c.cfg.on_down {
            RedisDown::Open => Ok(()),
            RedisDown::Closed => Err(RetryAfter(1)),
            RedisDown::LocalShare => {
                let rate = share(&key.rate, c.live_replicas.load(Ordering::Acquire));
                let limiter = {
                    let mut e = self
                        .local
                        .entry(key.id.clone())
                        .or_insert_with(|| (rate, Arc::new(KeyLimiter::default())));
                    if e.0 != rate {
                        *e = (rate, Arc::new(KeyLimiter::default()));
                    }
                    e.1.clone()
                };
                check_key(&limiter, &rate)
            }
        }
    }
}

/// Takes one request from `key`'s shared budget.
pub(crate) async fn check(c: &Cluster, key: &Arc<KeyRecord>) -> Result<(), RetryAfter> {
    let l = &c.limiter;
    let now = Instant::now();
    let k = l.per_key(c, key);
    let until = k.denied_until.load(Ordering::Relaxed);
    if until != 0 {
        let left = until.saturating_sub(l.us(now));
        if left > 0 {
            return Err(retry_after(Duration::from_micros(left)));
        }
        k.denied_until.store(0, Ordering::Relaxed);
    }
    let Some(con) = c.fast.load_full() else {
        return l.fallback(c, key);
    };
    if l.breaker_open() {
        return l.fallback(c, key);
    }
    let answer = tokio::time::timeout(
        REQUEST_TIMEOUT,
        con.evalsha_pair(&l.script, &k.cmd, || c.bulk_connection()),
    )
    .await;
    let fallback_gauge = &c.metrics.fallback_rate_limit;
    match answer {
        Ok(Ok((allowed, wait_us))) => {
            if l.is_open() {
                l.close();
            }
            fallback_gauge.set(0);
            if allowed == 1 {
                Ok(())
            } else {
                let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                // At least 1 µs, so a denial is never read as "not denied".
                let until = l.us(now + wait).max(1);
                k.denied_until.store(until, Ordering::Relaxed);
                Err(retry_after(wait))
            }
        }
        Ok(Err(Failure::Full)) => {
            // As slow as a timeout, and no sign that Redis is down; but a
            // connection with that many unanswered commands has stopped answering:
            // closed, so that a new one is made.
            c.metrics.rate_limit_queue_full.inc();
            con.close();
            l.trip();
            fallback_gauge.set(1);
            l.fallback(c, key)
        }
        Ok(Err(e)) => {
            l.trip();
            c.mark_down(&e);
            fallback_gauge.set(1);
            l.fallback(c, key)
        }
        Err(_) => {
            l.trip();
            fallback_gauge.set(1);
            l.fallback(c, key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_args() {
        let r = Rate::from_parts(Some(100), None, Some(50)).unwrap();
        assert_eq!(gcra_args(&r), (10_000, 490_000));
        let s = share(&r, 3);
        assert_eq!((s.count.get(), s.burst.get()), (33, 16));
        let tiny = Rate::from_parts(Some(1), None, None).unwrap();
        assert_eq!(share(&tiny, 5).count.get(), 1);
    }
}
