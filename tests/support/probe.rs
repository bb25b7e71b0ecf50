//! Polling with a deadline: for eventual effects (a metric, a log line, a file)
//! instead of sleeping for luck. Metric assertions compare before and after, so they
//! hold whatever else the gateway counted before the test's action (the reload
//! counter, for one, is 1 at start).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{POLL, metric};

/// How long an eventual effect gets before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Polls `f` every [`POLL`] until it answers `Some`, or fails the test after
/// `timeout` naming `what`.
pub async fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}, in vain"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The metrics page of one gateway, read through its metrics listener.
#[derive(Debug, Clone, Copy)]
pub struct Metrics(pub SocketAddr);

impl Metrics {
    /// The sample's value now (0 when absent). Runs off the async workers.
    pub async fn value(&self, series: &str) -> f64 {
        let (addr, series) = (self.0, series.to_string());
        tokio::task::spawn_blocking(move || metric(addr, &series))
            .await
            .unwrap()
    }

    /// Waits until the sample is at least `want`; returns the value seen.
    pub async fn wait_at_least(&self, series: &str, want: f64) -> f64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.value(series).await;
            if v >= want {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {v} for {DEADLINE:?}, want at least {want}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the sample, runs `action`, then waits until the sample has grown by
    /// exactly `by` (more fails the test). Returns what `action` returned.
    pub async fn expect_increase<F: Future>(&self, series: &str, by: f64, action: F) -> F::Output {
        let before = self.value(series).await;
        let out = action.await;
        let after = self.wait_at_least(series, before + by).await;
        assert_eq!(after, before + by, "{series}: {before} -> {after}");
        out
    }
}

/// Waits until the sample on `addr` is at least `want` (see [`Metrics::wait_at_least`]).
pub async fn wait_metric_at_least(addr: SocketAddr, series: &str, want: f64) -> f64 {
    Metrics(addr).wait_at_least(series, want).await
}
