//! The cluster's Prometheus series (README, "Running several replicas"), registered in the gateway's registry.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
};

pub(crate) struct ClusterMetrics {
    pub(crate) redis_up: IntGauge,
    pub(crate) rtt: Histogram,
    pub(crate) snapshot_version: IntGauge,
    pub(crate) stale_seconds: Gauge,
    pub(crate) fallback: IntGaugeVec,
    /// `fallback{what="rate_limit"}`, looked up once (set on every shared check).
    pub(crate) fallback_rate_limit: IntGauge,
    pub(crate) replicas: IntGauge,
    pub(crate) log_dropped: IntCounter,
    /// Shared checks that found the request-path connection's queue full.
    pub(crate) rate_limit_queue_full: IntCounter,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("keygate")
}

impl ClusterMetrics {
    pub(crate) fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let fallback = IntGaugeVec::new(
            opts(
                "cluster_fallback_active",
                "1 while a fallback is in force (what: rate_limit, keys)",
            ),
            &["what"],
        )?;
        let m = Self {
            redis_up: IntGauge::with_opts(opts(
                "cluster_redis_up",
                "1 when the cluster store answers",
            ))?,
            rtt: Histogram::with_opts(
                HistogramOpts::new(
                    "cluster_redis_rtt_seconds",
                    "Round trip of the cluster store's health check",
                )
                .namespace("keygate")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ]),
            )?,
            snapshot_version: IntGauge::with_opts(opts(
                "cluster_snapshot_version",
                "The cluster version of the snapshot in force",
            ))?,
            stale_seconds: Gauge::with_opts(opts(
                "cluster_stale_seconds",
                "Seconds since the cluster store last answered",
            ))?,
            fallback_rate_limit: fallback.with_label_values(&["rate_limit"]),
            fallback,
            replicas: IntGauge::with_opts(opts(
                "cluster_replicas",
                "Replicas seen alive in the last 10 s",
            ))?,
            log_dropped: IntCounter::with_opts(opts(
                "cluster_log_dropped_total",
                "Records not sent to the shared log stream (full buffer or store down)",
            ))?,
            rate_limit_queue_full: IntCounter::with_opts(opts(
                "cluster_rate_limit_queue_full_total",
                "Shared rate-limit checks that used the fallback because the request-path connection had too many commands in flight",
            ))?,
        };
        r.register(Box::new(m.redis_up.clone()))?;
        r.register(Box::new(m.rate_limit_queue_full.clone()))?;
        r.register(Box::new(m.rtt.clone()))?;
        r.register(Box::new(m.snapshot_version.clone()))?;
        r.register(Box::new(m.stale_seconds.clone()))?;
        r.register(Box::new(m.fallback.clone()))?;
        r.register(Box::new(m.replicas.clone()))?;
        r.register(Box::new(m.log_dropped.clone()))?;
        m.fallback.with_label_values(&["rate_limit"]).set(0);
        m.fallback.with_label_values(&["keys"]).set(0);
        Ok(m)
    }
}
