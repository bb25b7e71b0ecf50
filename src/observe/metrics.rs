//! Prometheus metrics (docs/metrics.md): a [`Metrics`] struct owning its registry, with typed
//! fields and bounded labels — methods from a fixed set (else `other`), categories
//! from the config, decisions from an enum, key ids only for keys in the snapshot
//! (a deleted key's series are removed at the next scrape).

use std::sync::{Arc, OnceLock, RwLock};

use http::Method;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::keys::store::KeySet;
use crate::observe::record::{Decision, Record};

/// Buckets suited to a proxy: 100 µs … 30 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

const DECISIONS: [Decision; 9] = [
    Decision::Allowed,
    Decision::Public,
    Decision::BadRequest,
    Decision::ApiDisabled,
    Decision::Unauthenticated,
    Decision::Forbidden,
    Decision::RateLimited,
    Decision::UpstreamError,
    Decision::ClientClosed,
];

/// The method labels (the standard methods, else `other`), in [`method_index`]
/// order.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// The status-class labels, in [`class_index`] order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(s: u16) -> usize {
    match s {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One category's `requests_total` handles, by decision, method and status class.
type RequestHandles = [OnceLock<IntCounter>; DECISIONS.len() * METHODS.len() * CLASSES.len()];

fn request_handles() -> Arc<RequestHandles> {
    Arc::new(std::array::from_fn(|_| OnceLock::new()))
}

/// Handles on the per-request series, each made by a label lookup the first time
/// it is used (so exactly the series that were used exist, as before) and then
/// kept: a finished request costs no label hashing.
struct Handles {
    /// `requests_total` with `category="none"`.
    uncategorised: Arc<RequestHandles>,
    /// The same for each category name seen (a handful, from the config).
    by_category: RwLock<Vec<(Arc<str>, Arc<RequestHandles>)>>,
    /// `request_duration_seconds`, by decision.
    duration: [OnceLock<Histogram>; DECISIONS.len()],
}

impl Handles {
    fn new() -> Self {
        Self {
            uncategorised: request_handles(),
            by_category: RwLock::new(Vec::new()),
            duration: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn category(&self, name: &Arc<str>) -> Arc<RequestHandles> {
        let find = |v: &[(Arc<str>, Arc<RequestHandles>)]| {
            v.iter()
                .find(|(n, _)| Arc::ptr_eq(n, name) || **n == **name)
                .map(|(_, h)| h.clone())
        };
        if let Some(h) = find(&self.by_category.read().unwrap_or_else(|p| p.into_inner())) {
            return h;
        }
        let mut w = self.by_category.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = find(&w) {
            return h;
        }
        let h = request_handles();
        w.push((name.clone(), h.clone()));
        h
    }
}

/// What a reload re-read (`reloads_total{what}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadWhat {
    Config,
    Keys,
    Tls,
}

impl ReloadWhat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Keys => "keys",
            Self::Tls => "tls",
        }
    }
}

/// Why a connection ended badly, for `connection_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnError {
    /// Unparsable request line or headers.
    Parse,
    /// Headers over the limit (refused by the HTTP library).
    HeadersTooLarge,
    /// The client did not finish a request head in time.
    HeaderTimeout,
    /// HTTP/2 protocol error.
    Http2,
    /// TLS handshake failed.
    Tls,
    /// `accept()` failed (out of file descriptors and the like).
    Accept,
    /// Any other I/O or protocol failure.
    Other,
}

impl ConnError {
    fn label(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::HeadersTooLarge => "headers_too_large",
            Self::HeaderTimeout => "header_timeout",
            Self::Http2 => "http2",
            Self::Tls => "tls",
            Self::Accept => "accept",
            Self::Other => "other",
        }
    }

    /// Classifies a connection error; `http2` says the connection spoke HTTP/2
    /// (hyper does not expose h2's error type).
    pub(crate) fn classify(e: &hyper::Error, http2: bool) -> Self {
        if e.is_parse_too_large() {
            Self::HeadersTooLarge
        } else if e.is_parse() || e.is_parse_status() {
            Self::Parse
        } else if e.is_timeout() {
            Self::HeaderTimeout
        } else if http2 {
            Self::Http2
        } else {
            Self::Other
        }
    }
}

pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: Histogram,
    rate_limited: IntCounterVec,
    keys_loaded: IntGauge,
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    api_enabled: IntGauge,
    inflight: IntGauge,
    pub(crate) connections_open: IntGauge,
    connection_errors: IntCounterVec,
    pub(crate) access_log_records: IntCounter,
    pub(crate) access_log_dropped: IntCounter,
    pub(crate) tls_cert_expiry: Gauge,
    ip_tracked: IntGauge,
    ip_evictions: IntCounter,
    /// The per-IP table's eviction count at the last scrape (the counter grows by
    /// the difference; a new table after a reload starts from 0).
    ip_evicted_seen: std::sync::atomic::AtomicU64,
    handles: Handles,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("keygate")
}

impl Metrics {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            opts("build_info", "keygate build information (always 1)"),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Self {
            requests: IntCounterVec::new(
                opts(
                    "requests_total",
                    "Requests by decision, method, category and status class",
                ),
                &["decision", "method", "category", "status_class"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from request head to response complete, by decision",
                )
                .namespace("keygate")
                .buckets(BUCKETS.to_vec()),
                &["decision"],
            )?,
            upstream_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "upstream_duration_seconds",
                    "Time from forwarding to the upstream's response head",
                )
                .namespace("keygate")
                .buckets(BUCKETS.to_vec()),
            )?,
            rate_limited: IntCounterVec::new(
                opts(
                    "rate_limited_total",
                    "Requests answered 429, by scope (key or ip)",
                ),
                &["scope"],
            )?,
            keys_loaded: IntGauge::with_opts(opts("keys_loaded", "Keys in the snapshot in force"))?,
            reloads: IntCounterVec::new(
                opts(
                    "reloads_total",
                    "Reloads by what (config, keys, tls) and result (success, failure)",
                ),
                &["what", "result"],
            )?,
            last_reload_success: Gauge::with_opts(opts(
                "last_reload_success_timestamp_seconds",
                "Unix time of the last successful load of config or keys",
            ))?,
            api_enabled: IntGauge::with_opts(opts("api_enabled", "1 when the API switch is on"))?,
            inflight: IntGauge::with_opts(opts("inflight_requests", "Requests being served"))?,
            connections_open: IntGauge::with_opts(opts(
                "connections_open",
                "Open client connections",
            ))?,
            connection_errors: IntCounterVec::new(
                opts(
                    "connection_errors_total",
                    "Connections ended by an error before or outside keygate's request handling",
                ),
                &["kind"],
            )?,
            access_log_records: IntCounter::with_opts(opts(
                "access_log_records_total",
                "Access-log records written",
            ))?,
            access_log_dropped: IntCounter::with_opts(opts(
                "access_log_dropped_total",
                "Access-log records dropped (queue full or write failed)",
            ))?,
            tls_cert_expiry: Gauge::with_opts(opts(
                "tls_cert_expiry_timestamp_seconds",
                "Unix time the listener's certificate expires (0 without TLS)",
            ))?,
            ip_tracked: IntGauge::with_opts(opts(
                "ip_limiter_tracked",
                "Client addresses in the per-IP table for failed authentication",
            ))?,
            ip_evictions: IntCounter::with_opts(opts(
                "ip_limiter_evictions_total",
                "Addresses evicted from the per-IP table (least recently used) at its size bound",
            ))?,
            ip_evicted_seen: std::sync::atomic::AtomicU64::new(0),
            handles: Handles::new(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(build))?;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.request_duration.clone()))?;
        r.register(Box::new(m.upstream_duration.clone()))?;
        r.register(Box::new(m.rate_limited.clone()))?;
        r.register(Box::new(m.keys_loaded.clone()))?;
        r.register(Box::new(m.reloads.clone()))?;
        r.register(Box::new(m.last_reload_success.clone()))?;
        r.register(Box::new(m.api_enabled.clone()))?;
        r.register(Box::new(m.inflight.clone()))?;
        r.register(Box::new(m.connections_open.clone()))?;
        r.register(Box::new(m.ip_tracked.clone()))?;
        r.register(Box::new(m.ip_evictions.clone()))?;
        r.register(Box::new(m.connection_errors.clone()))?;
        r.register(Box::new(m.access_log_records.clone()))?;
        r.register(Box::new(m.access_log_dropped.clone()))?;
        r.register(Box::new(m.tls_cert_expiry.clone()))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for scope in ["key", "ip"] {
            m.rate_limited.with_label_values(&[scope]);
        }
        for kind in [
            ConnError::Parse,
            ConnError::HeadersTooLarge,
            ConnError::HeaderTimeout,
            ConnError::Http2,
            ConnError::Tls,
            ConnError::Accept,
            ConnError::Other,
        ] {
            m.connection_errors.with_label_values(&[kind.label()]);
        }
        for what in ["config", "keys", "tls"] {
            for result in ["success", "failure"] {
                m.reloads.with_label_values(&[what, result]);
            }
        }
        Ok(m)
    }

    pub(crate) fn request_started(&self) {
        self.inflight.inc();
    }

    /// Counts a finished request.
    pub(crate) fn request_finished(&self, r: &Record) {
        self.inflight.dec();
        let decision = r.decision.as_str();
        let (d, m, c) = (
            r.decision as usize,
            method_index(&r.method),
            class_index(r.status),
        );
        let table = match &r.category {
            Some(name) => self.handles.category(name),
            None => self.handles.uncategorised.clone(),
        };
        table[(d * METHODS.len() + m) * CLASSES.len() + c]
            .get_or_init(|| {
                self.requests.with_label_values(&[
                    decision,
                    METHODS[m],
                    // No category (unmatched, refused before routing): an empty
                    // value, which no category name can be.
                    r.category.as_deref().unwrap_or(""),
                    CLASSES[c],
                ])
            })
            .inc();
        self.handles.duration[d]
            .get_or_init(|| self.request_duration.with_label_values(&[decision]))
            .observe(r.duration.as_secs_f64());
        if let Some(u) = r.upstream {
            self.upstream_duration.observe(u.as_secs_f64());
        }
        if let Some(k) = &r.key {
            // Kept with the key (no label lookup); rendered by `render`.
            k.state.count(d, DECISIONS.len());
        }
        if r.decision == Decision::RateLimited {
            let scope = if r.key.is_some() { "key" } else { "ip" };
            self.rate_limited.with_label_values(&[scope]).inc();
        }
    }

    pub(crate) fn connection_error(&self, kind: ConnError) {
        self.connection_errors
            .with_label_values(&[kind.label()])
            .inc();
    }

    /// `what`: `config`, `keys` or `tls`.
    pub(crate) fn reload(&self, what: ReloadWhat, ok: bool) {
        self.reloads
            .with_label_values(&[what.as_str(), if ok { "success" } else { "failure" }])
            .inc();
        if ok && what != ReloadWhat::Tls {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_reload_success.set(now);
        }
    }

    /// The gauges that follow the keys in force.
    pub(crate) fn sync_keys(&self, keys: &KeySet) {
        self.keys_loaded.set(keys.len() as i64);
        self.api_enabled.set(i64::from(keys.api_enabled));
    }

    /// The text exposition.
    pub(crate) fn render(
        &self,
        keys: &KeySet,
        per_key: bool,
        ip_tracked: usize,
        ip_evicted: u64,
    ) -> Vec<u8> {
        use prometheus::Encoder;
        use std::sync::atomic::Ordering;
        self.sync_keys(keys);
        self.ip_tracked
            .set(i64::try_from(ip_tracked).unwrap_or(i64::MAX));
        let seen = self.ip_evicted_seen.swap(ip_evicted, Ordering::Relaxed);
        self.ip_evictions.inc_by(if ip_evicted >= seen {
            ip_evicted - seen
        } else {
            ip_evicted
        });
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        if per_key {
            render_per_key(&mut out, keys);
        }
        out
    }
}

/// `keygate_key_info` and `keygate_key_requests_total`, written from the keys in
/// force rather than kept as registry series: 100,000 keys cost no per-series
/// objects, a deleted key's series go with it, and counting a request is one
/// atomic add on the key.
fn render_per_key(out: &mut Vec<u8>, keys: &KeySet) {
    use std::io::Write;
    out.reserve(keys.len() * 64);
    if keys.len() > 0 {
        out.extend_from_slice(
            b"# HELP keygate_key_info Keys loaded (always 1), by id and name\n\
              # TYPE keygate_key_info gauge\n",
        );
    }
    for k in keys.iter() {
        out.extend_from_slice(b"keygate_key_info{key_id=\"");
        label_value(out, k.id.as_str());
        out.extend_from_slice(b"\",key_name=\"");
        label_value(out, &k.name);
        out.extend_from_slice(b"\"} 1\n");
    }
    let mut header = false;
    for k in keys.iter() {
        for (d, n) in k.state.counts() {
            if n == 0 {
                continue;
            }
            if !header {
                header = true;
                out.extend_from_slice(
                    b"# HELP keygate_key_requests_total Requests by key and decision\n\
                      # TYPE keygate_key_requests_total counter\n",
                );
            }
            // Label names in order, as the registry writes them.
            let _ = write!(
                out,
                "keygate_key_requests_total{{decision=\"{}\",key_id=\"",
                DECISIONS[d].as_str()
            );
            label_value(out, k.id.as_str());
            let _ = writeln!(out, "\"}} {n}");
        }
    }
}

/// A label value in the text format: `\`, `"` and line feeds escaped.
fn label_value(out: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}
