//! The webhook metric families (docs/metrics.md), registered in the gateway's registry.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub(crate) struct WebhookMetrics {
    /// Attempts by result: `success`, `failure` (will be retried), `gave_up`.
    pub(crate) deliveries: IntCounterVec,
    pub(crate) queue_depth: IntGauge,
    /// Events dropped: the queue at `queue_max`, or the hand-off channel full.
    pub(crate) dropped: IntCounter,
    pub(crate) oldest_pending: Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("keygate")
}

impl WebhookMetrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            deliveries: IntCounterVec::new(
                opts(
                    "webhook_deliveries_total",
                    "Webhook delivery attempts by result (success, failure, gave_up)",
                ),
                &["result"],
            )?,
            queue_depth: IntGauge::with_opts(opts(
                "webhook_queue_depth",
                "Webhook deliveries pending (queued or waiting for a retry)",
            ))?,
            dropped: IntCounter::with_opts(opts(
                "webhook_dropped_total",
                "Webhook events dropped because the queue was full",
            ))?,
            oldest_pending: Gauge::with_opts(opts(
                "webhook_oldest_pending_seconds",
                "Age of the oldest pending webhook delivery (0 when none)",
            ))?,
        };
        for r in ["success", "failure", "gave_up"] {
            m.deliveries.with_label_values(&[r]);
        }
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.oldest_pending.clone()))?;
        Ok(m)
    }
}
