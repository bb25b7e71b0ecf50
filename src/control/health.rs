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
        let res = self.answer(&req);
        async move { res }
    }
}
