//! The admin listener (SPEC §7): the web console at `/`, the OpenAPI document, and
//! the JSON admin API under `/admin/v1`. Loopback by default.
//!
//! Order for every request: `Host` must be in `admin.allowed_hosts` (else `421`, a
//! DNS-rebinding guard) → the console and the OpenAPI document need no token → the
//! API needs `Authorization: Bearer <token>`, compared in constant time; failed
//! attempts are limited per client IP (`429`) → the handler in [`api`].
//! Fails closed: with no token configured the API answers `404 admin_api_disabled`.

pub mod api;
mod logs;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ResBody;
use crate::hygiene::bearer_token;
use crate::ratelimit::{IpLimiter, Per, Rate};
use crate::reject::error_response;
use crate::requestid;
use crate::snapshot::Shared;

const CONSOLE: &str = include_str!("admin/console.html");
const OPENAPI: &str = include_str!("admin/openapi.json");

/// Shortest admin token accepted.
const MIN_TOKEN: usize = 16;

/// The admin API's state.
pub struct Admin {
    pub shared: Arc<Shared>,
    /// SHA-256 of the token; `None` = API off.
    token: Option<[u8; 32]>,
    failures: IpLimiter,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("enabled", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads the admin token from `$<token_env>`, else the file `$<token_env>_FILE`.
fn read_token(env: &str) -> Option<String> {
    if let Ok(t) = std::env::var(env)
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let path = std::env::var(format!("{env}_FILE")).ok()?;
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(file = %path, error = %e, "cannot read the admin token file; the admin API is off");
            None
        }
    }
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        let env = shared.snapshot().config.admin.token_env.clone();
        let token = match read_token(&env) {
            Some(t) if t.len() >= MIN_TOKEN => Some(Sha256::digest(t.as_bytes()).into()),
            Some(_) => {
                tracing::warn!(
                    "the admin token is shorter than {MIN_TOKEN} characters; the admin API is off"
                );
                None
            }
            None => None,
        };
        let rate = Rate {
            count: NonZeroU32::MIN.saturating_add(9),
            per: Per::Minute,
            burst: NonZeroU32::MIN.saturating_add(9),
        };
        Self {
            shared,
            token,
            failures: IpLimiter::new(&rate, NonZeroUsize::MIN.saturating_add(9_999)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Constant-time comparison of the presented token's hash with ours.
    fn token_ok(&self, presented: &[u8]) -> bool {
        let Some(want) = &self.token else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(presented).into();
        want.iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn host_allowed(&self, req: &Request<Incoming>) -> bool {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        // Strip the port: "[::1]:9180" → "[::1]", "localhost:9180" → "localhost".
        let name = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        let name = name.to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        self.shared
            .snapshot()
            .config
            .admin
            .allowed_hosts
            .iter()
            .any(|h| h == &name || h == bare)
    }
}

fn static_page(body: &'static str, content_type: &'static str) -> Response<ResBody> {
    let mut r = Response::new(ResBody::full(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; frame-ancestors 'none'"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

async fn handle(admin: Arc<Admin>, peer: IpAddr, req: Request<Incoming>) -> Response<ResBody> {
    let rid = requestid::for_request(req.headers());
    if !admin.host_allowed(&req) {
        return error_response(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this Host is not in admin.allowed_hosts",
            &rid,
        );
    }
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/" && get {
        return static_page(CONSOLE, "text/html; charset=utf-8");
    }
    if path == "/admin/v1/openapi.json" && get {
        return static_page(OPENAPI, "application/json");
    }
    let Some(rest) = path.strip_prefix("/admin/v1/") else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such page: the API is under /admin/v1/",
            &rid,
        );
    };
    if !admin.enabled() {
        return error_response(
            StatusCode::NOT_FOUND,
            "admin_api_disabled",
            "the admin API is off: set the token in the environment variable named by admin.token_env",
            &rid,
        );
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .unwrap_or(b"");
    if !admin.token_ok(presented) {
        if let Err(r) = admin.failures.check(peer, &admin.shared.clock) {
            let mut res = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed admin logins from this address",
                &rid,
            );
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(r.0));
            return res;
        }
        let mut res = error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as Authorization: Bearer <token>",
            &rid,
        );
        res.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keygate-admin\""),
        );
        return res;
    }
    let rest = rest.to_string();
    if rest == "webhooks" || rest.starts_with("webhooks/") {
        // webhooks:
        return crate::webhooks::admin::handle(&admin.shared, peer, &rest, req, &rid).await;
    }
    api::route(&admin, peer, &rest, req, &rid).await
}

/// Serves the admin listener until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        let peer: SocketAddr = peer;
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(admin, peer.ip().to_canonical(), req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
