//! The metrics listener: `GET /metrics`, `/healthz` (process alive) and `/readyz`
//! (snapshot loaded, listener up, not shutting down). No authentication; nothing
//! secret is served here. It holds handles: the snapshots (read) and readiness.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::observe::body::ResBody;
use crate::proxy::snapshot::Snapshots;
use crate::server::{ConnInfo, ConnSettings, Service};

/// Connections the metrics listener serves at once (scrapers and probes).
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// Whether the gateway is shutting down (`/readyz` answers 503 from then on).
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub(crate) fn begin_shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The metrics listener's service.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    pub(crate) snapshots: Snapshots,
    pub(crate) readiness: Readiness,
    /// The cached upstream check of `/readyz` (`metrics.readyz_checks_upstream`).
    pub(crate) upstream: Arc<UpstreamProbe>,
}

/// How long a `/readyz` upstream check is reused.
pub(crate) const UPSTREAM_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Whether the upstream accepts a TCP connection, checked at most every
/// [`UPSTREAM_PROBE_EVERY`] however often `/readyz` is asked.
#[derive(Debug)]
pub(crate) struct UpstreamProbe {
    /// When the cached answer was made and what it was.
    last: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl Default for UpstreamProbe {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl UpstreamProbe {
    /// The cached answer, or a fresh connect when it is older than 2 s (probes that
    /// arrive meanwhile wait for that one connect instead of making their own).
    pub(crate) async fn reachable(
        &self,
        upstream: &crate::config::Upstream,
        timeout: Duration,
    ) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < UPSTREAM_PROBE_EVERY
        {
            return ok;
        }
        let ok = connects(upstream, timeout).await.is_ok();
        *last = Some((std::time::Instant::now(), ok));
        ok
    }
}

/// One TCP connect to the upstream (no request is sent).
pub(crate) async fn connects(
    upstream: &crate::config::Upstream,
    timeout: Duration,
) -> Result<(), String> {
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port =
        upstream
            .authority
            .port_u16()
            .unwrap_or(if upstream.scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ResBody> {
    let mut r = Response::new(ResBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Health {
    fn answer(&self, req: &Request<Incoming>) -> Response<ResBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.readiness.is_shutting_down() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
            "/readyz" => text(StatusCode::OK, "ready\n"),
            "/metrics" => {
                let snap = self.snapshots.load();
                let body = self.snapshots.metrics().render(
                    &snap.keys,
                    snap.config.per_key_series,
                    snap.ip_limiter.len(),
                    snap.ip_limiter.evicted(),
                );
                let mut r = Response::new(ResBody::full(Bytes::from(body)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

impl Service for Health {
    fn settings(&self) -> ConnSettings {
        ConnSettings {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        }
    }

    fn call(
        &self,
        _conn: ConnInfo,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ResBody>> + Send + use<> {
        let snap = self.snapshots.load();
        let probe = (req.uri().path() == "/readyz"
            && !self.readiness.is_shutting_down()
            && snap.config.readyz_checks_upstream
            && (req.method() == Method::GET || req.method() == Method::HEAD))
            .then(|| self.upstream.clone());
        let res = self.answer(&req);
        async move {
            match probe {
                Some(p)
                    if !p
                        .reachable(&snap.config.upstream, snap.config.timeouts.upstream_connect)
                        .await =>
                {
                    text(StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
                }
                _ => res,
            }
        }
    }
}
