//! Rate limits (GCRA, by governor).
//!
//! * Per key: one direct limiter per key, held by the key's snapshot entry and carried
//!   over to the next snapshot while the key exists with the same rate, so a reload
//!   keeps the state. Memory is bounded by the number of keys.
//! * Per client IP, for failed authentication only: a sharded LRU table with a hard
//!   bound (`max_tracked_ips`); the least recently used address is evicted (and
//!   counted) when a new one arrives at a full shard. IPv6 addresses are grouped by
//!   /64. Fails open on eviction: an evicted address starts with a fresh burst, which
//!   only ever turns a 429 back into the 401 it would otherwise be.

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use lru::LruCache;

/// The largest burst accepted: governor keeps `period × burst` in u64 nanoseconds.
pub(crate) const MAX_BURST: u32 = 1_000_000;
/// A validated rate: `count` requests per `per`, with `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: NonZeroU32,
    pub(crate) per: Per,
    pub(crate) burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Per {
    Second,
    Minute,
}

impl Rate {
    /// From `{per_second | per_minute, burst}`; `burst` defaults to the count.
    pub(crate) fn from_parts(
        per_second: Option<u32>,
        per_minute: Option<u32>,
        burst: Option<u32>,
    ) -> Result<Self, String> {
        let (n, per) = match (per_second, per_minute) {
            (Some(n), None) => (n, Per::Second),
            (None, Some(n)) => (n, Per::Minute),
            (None, None) => return Err("needs per_second or per_minute".into()),
            (Some(_), Some(_)) => {
                return Err("give per_second or per_minute, not both".into());
            }
        };
        let count = NonZeroU32::new(n).ok_or("the rate must be at least 1")?;
        let burst = match burst {
            None => count,
            Some(b) => NonZeroU32::new(b).ok_or("burst must be at least 1")?,
        };
        // governor multiplies the period by the burst in u64 nanoseconds: a burst
        // of millions at one per minute would overflow (and panic).
        if burst.get() > MAX_BURST {
            return Err(format!("burst must be at most {MAX_BURST}"));
        }
        Ok(Self { count, per, burst })
    }

    pub(crate) fn quota(&self) -> Quota {
        let q = match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
        };
        q.allow_burst(self.burst)
    }
}

/// The GCRA's emission interval and burst tolerance in nanoseconds, as governor
/// computes them (`tau` counts the cells beyond the first).
impl Rate {
    fn gcra(&self) -> (u64, u64) {
        let period: u128 = match self.per {
            Per::Second => 1_000_000_000,
            Per::Minute => 60_000_000_000,
        };
        let t = (period / u128::from(self.count.get())) as u64;
        (t, t * u64::from(self.burst.get() - 1))
    }
}

/// One key's limiter: governor's GCRA on one atomic, the theoretical arrival time
/// in nanoseconds since the process's epoch (0 = no request yet). Eight bytes a
/// key instead of a governor limiter with its own clock (100,000 keys: ~7 MB
/// less per key set); the rate comes from the key's record at each check.
#[derive(Debug, Default)]
pub(crate) struct KeyLimiter(AtomicU64);

/// The instant limiter times count from.
fn epoch() -> Instant {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    *EPOCH
}

/// The one clock the per-IP limiters read. Making a clock is expensive
/// (calibration), so they share this one.
pub(crate) fn clock() -> &'static DefaultClock {
    static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);
    &CLOCK
}

/// Over the limit; retry after this many whole seconds (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub u64);

fn retry_after(wait: Duration) -> RetryAfter {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RetryAfter(secs.max(1))
}

/// Takes one request from a key's limiter at `rate`.
pub(crate) fn check_key(limiter: &KeyLimiter, rate: &Rate) -> Result<(), RetryAfter> {
    let t0 = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
    let (t, tau) = rate.gcra();
    let mut prev = limiter.0.load(Ordering::Acquire);
    loop {
        let tat = if prev == 0 { t0 } else { prev };
        let earliest = tat.saturating_sub(tau);
        if t0 < earliest {
            return Err(retry_after(Duration::from_nanos(earliest - t0)));
        }
        let next = tat.max(t0).saturating_add(t);
        match limiter
            .0
            .compare_exchange_weak(prev, next, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return Ok(()),
            Err(now) => prev = now,
        }
    }
}

/// The per-IP table key: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6Net(u64),
}

impl IpKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }

    fn shard(&self, shards: usize) -> usize {
        let h = match *self {
            Self::V4(a) => u64::from(a).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            Self::V6Net(a) => a.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        (h >> 40) as usize % shards
    }
}

const SHARDS: usize = 16;

/// Bounded per-IP limiter for failed authentication.
pub(crate) struct IpLimiter {
    quota: Quota,
    shards: Box<[Mutex<LruCache<IpKey, DefaultDirectRateLimiter>>]>,
    evicted: AtomicU64,
    capacity: usize,
}

impl std::fmt::Debug for IpLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpLimiter")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl IpLimiter {
    pub(crate) fn new(rate: &Rate, max_tracked: NonZeroUsize) -> Self {
        let shards = SHARDS.min(max_tracked.get());
        let per = max_tracked.get() / shards;
        let shards_vec = (0..shards)
            .map(|_| {
                Mutex::new(LruCache::new(
                    NonZeroUsize::new(per).unwrap_or(NonZeroUsize::MIN),
                ))
            })
            .collect();
        Self {
            quota: rate.quota(),
            shards: shards_vec,
            evicted: AtomicU64::new(0),
            capacity: per.max(1) * shards,
        }
    }

    /// Charges one failed authentication to `ip`.
    pub(crate) fn check(&self, ip: IpAddr, clock: &DefaultClock) -> Result<(), RetryAfter> {
        let key = IpKey::of(ip);
        let shard = &self.shards[key.shard(self.shards.len())];
        // A poisoned shard only means another thread panicked mid-update of a counter;
        // the table is still usable.
        let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
        let result = if let Some(l) = table.get(&key) {
            l.check().map_err(|n| n.wait_time_from(clock.now()))
        } else {
            let l = DefaultDirectRateLimiter::direct_with_clock(self.quota, clock.clone());
            let r = l.check().map_err(|n| n.wait_time_from(clock.now()));
            if let Some((old, _)) = table.push(key, l)
                && old != key
            {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            r
        };
        result.map_err(retry_after)
    }

    /// Addresses tracked now (never above [`IpLimiter::capacity`]).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Entries evicted so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rate_parts() {
        assert!(Rate::from_parts(None, None, None).is_err());
        assert!(Rate::from_parts(Some(1), Some(1), None).is_err());
        assert!(Rate::from_parts(Some(0), None, None).is_err());
        assert!(Rate::from_parts(Some(5), None, Some(0)).is_err());
        let r = Rate::from_parts(Some(5), None, None).unwrap();
        assert_eq!(r.burst.get(), 5);
    }

    #[test]
    fn key_limiter_allows_burst_then_refuses_with_retry_after() {
        let rate = Rate::from_parts(None, Some(1), Some(3)).unwrap();
        let l = KeyLimiter::default();
        for _ in 0..3 {
            assert!(check_key(&l, &rate).is_ok());
        }
        let RetryAfter(secs) = check_key(&l, &rate).unwrap_err();
        assert!((50..=60).contains(&secs), "{secs}");
    }

    #[test]
    fn key_limiter_decides_as_governor_does() {
        // The same sequence through both, at a rate where timing does not
        // matter within the test: the same allowed count and retry-after.
        for (per_second, burst, tries) in [(5, 1, 8), (10, 4, 20), (1000, 50, 200)] {
            let rate = Rate::from_parts(Some(per_second), None, Some(burst)).unwrap();
            let ours = KeyLimiter::default();
            let theirs = governor::RateLimiter::direct_with_clock(rate.quota(), clock().clone());
            let (mut a, mut b) = (0, 0);
            for _ in 0..tries {
                a += usize::from(check_key(&ours, &rate).is_ok());
                b += usize::from(theirs.check().is_ok());
            }
            assert!(
                a.abs_diff(b) <= 1,
                "{per_second}/s burst {burst}: {a} vs {b}"
            );
            assert!(a >= burst as usize, "{a}");
        }
    }

    #[test]
    fn ip_table_is_bounded_and_counts_evictions() {
        let clock = DefaultClock::default();
        let rate = Rate::from_parts(None, Some(60), Some(2)).unwrap();
        let t = IpLimiter::new(&rate, NonZeroUsize::new(64).unwrap());
        for i in 0..10_000u32 {
            let _ = t.check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), &clock);
        }
        assert!(t.len() <= 64);
        assert!(t.evicted() >= 10_000 - 64);
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let clock = DefaultClock::default();
        let rate = Rate::from_parts(None, Some(1), Some(1)).unwrap();
        let t = IpLimiter::new(&rate, NonZeroUsize::new(100).unwrap());
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.check(a.into(), &clock).is_ok());
        assert!(
            t.check(b.into(), &clock).is_err(),
            "same /64 shares the budget"
        );
        assert!(t.check(c.into(), &clock).is_ok());
    }
}
