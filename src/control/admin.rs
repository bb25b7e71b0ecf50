//! The admin listener (docs/admin-api.md): the web console at `/`, the OpenAPI document, and
//! the JSON admin API under `/admin/v1`. Loopback by default.
//!
//! Order for every request: `Host` must be well formed (one header, no userinfo, a
//! numeric port, the same authority as an absolute-form target; else `400`, RFC 9112
//! §3.2) and in `admin.allowed_hosts` (else `421`, a DNS-rebinding guard) → the
//! console's files and the OpenAPI document need no token → the
//! API needs `Authorization: Bearer <token>`, compared in constant time; failed
//! attempts are limited per client IP (`429`) → the handler in [`api`].
//! Fails closed: with no token configured the API answers `404 admin_api_disabled`.
//! Every answer carries `X-Content-Type-Options: nosniff`; the console's pages carry
//! a CSP without `'unsafe-inline'` (its script and style are files of their own).

pub(crate) mod api;
mod logs;
mod reply;

use std::future::Future;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ring::hmac;

use crate::control::reload::Reloader;
use crate::keys::seal::SealKey;
use crate::observe::body::ResBody;
use crate::proxy::hygiene::bearer_token;
use crate::proxy::reject::error_response;
use crate::proxy::requestid;
use crate::proxy::snapshot::Snapshots;
use crate::ratelimit::{IpLimiter, Per, Rate};
use crate::server::{ConnInfo, ConnSettings, Service};

const CONSOLE: &str = include_str!("admin/console.html");
const CONSOLE_JS: &str = include_str!("admin/console.js");
const CONSOLE_CSS: &str = include_str!("admin/console.css");
const OPENAPI: &str = include_str!("admin/openapi.json");

/// The console's files (no token needed: they hold no data).
const STATIC: &[(&str, &str, &str)] = &[
    ("/", CONSOLE, "text/html; charset=utf-8"),
    ("/console.js", CONSOLE_JS, "text/javascript; charset=utf-8"),
    ("/console.css", CONSOLE_CSS, "text/css; charset=utf-8"),
    (
        "/webhooks.js",
        crate::control::webhooks::CONSOLE_JS,
        "text/javascript; charset=utf-8",
    ),
    ("/admin/v1/openapi.json", OPENAPI, "application/json"),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Shortest admin token accepted.
pub(crate) const MIN_TOKEN: usize = 16;

/// The admin API's state: handles, not the proxy.
pub(crate) struct Admin {
    pub(crate) snapshots: Snapshots,
    /// The one writer: admin key writes and `POST /reload` go through it.
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) seal: Option<Arc<SealKey>>,
    /// The shared store in cluster mode.
    pub(crate) cluster: Option<Arc<crate::control::cluster::Cluster>>,
    /// Webhook endpoints and deliveries.
    pub(crate) webhooks: Option<Arc<crate::control::webhooks::Webhooks>>,
    /// Key-list requests parse the keys file one at a time (a memory bound).
    pub(crate) list_parse: tokio::sync::Semaphore,
    /// An HMAC of the token under a key made at start; `None` = API off. Presented
    /// tokens are checked with `hmac::verify`, a constant-time comparison.
    token: Option<(hmac::Key, hmac::Tag)>,
    failures: IpLimiter,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("enabled", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// `token` is the admin token the binary read (`None` = API off).
    pub(crate) fn new(
        snapshots: Snapshots,
        reloader: Arc<Reloader>,
        token: Option<&str>,
        seal: Option<Arc<SealKey>>,
        cluster: Option<Arc<crate::control::cluster::Cluster>>,
        webhooks: Option<Arc<crate::control::webhooks::Webhooks>>,
    ) -> Self {
        // A short token is refused here; the gateway logs why (one line).
        let token = token
            .map(str::trim)
            .filter(|t| t.len() >= MIN_TOKEN)
            .and_then(|t| {
                let rng = ring::rand::SystemRandom::new();
                match hmac::Key::generate(hmac::HMAC_SHA256, &rng) {
                    Ok(key) => {
                        let tag = hmac::sign(&key, t.as_bytes());
                        Some((key, tag))
                    }
                    Err(_) => {
                        tracing::error!(
                            "no randomness for the admin token check; the admin API is off"
                        );
                        None
                    }
                }
            });
        let rate = Rate {
            count: NonZeroU32::MIN.saturating_add(9),
            per: Per::Minute,
            burst: NonZeroU32::MIN.saturating_add(9),
        };
        Self {
            snapshots,
            reloader,
            seal,
            cluster,
            webhooks,
            list_parse: tokio::sync::Semaphore::new(1),
            token,
            failures: IpLimiter::new(&rate, NonZeroUsize::MIN.saturating_add(9_999)),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the token (ring's constant-time HMAC verification).
    fn token_ok(&self, presented: &[u8]) -> bool {
        let Some((key, tag)) = &self.token else {
            return false;
        };
        hmac::verify(key, presented, tag.as_ref()).is_ok()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).unwrap_or("").to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        self.snapshots
            .load()
            .config
            .admin
            .allowed_hosts
            .iter()
            .any(|h| h == &name || h == bare)
    }
}

/// The name part of a `Host` value (`[::1]:9180` → `[::1]`, `localhost:9180` →
/// `localhost`), or `None` when the value is malformed: userinfo, a port that is not
/// a number from 1 to 65535, an empty name, characters no host name has.
fn host_name(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        (
            &host[..=end],
            (!rest.is_empty()).then_some(rest.strip_prefix(':')?),
        )
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    (name_ok && port_ok).then_some(name)
}

/// The request's `Host`, or why it is malformed (RFC 9112 §3.2: `400`).
fn request_host(req: &Request<Incoming>) -> Result<String, &'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    let header = header
        .map(|h| h.to_str().map_err(|_| "the Host header is not text"))
        .transpose()?;
    let target = req.uri().authority().map(|a| a.as_str());
    let host = match (header, target) {
        (Some(h), Some(t)) if !h.eq_ignore_ascii_case(t) => {
            return Err("the request target names another host than the Host header");
        }
        (Some(h), _) => h,
        (None, Some(t)) => t,
        (None, None) => "",
    };
    if !host.is_empty() && host_name(host).is_none() {
        return Err("the Host header is malformed (userinfo, or a port that is not 1-65535)");
    }
    Ok(host.to_string())
}

fn static_page(body: &'static str, content_type: &'static str) -> Response<ResBody> {
    let mut r = Response::new(ResBody::full(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

async fn handle(admin: Arc<Admin>, peer: IpAddr, req: Request<Incoming>) -> Response<ResBody> {
    let mut res = answer(admin, peer, req).await;
    res.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

async fn answer(admin: Arc<Admin>, peer: IpAddr, req: Request<Incoming>) -> Response<ResBody> {
    let rid = requestid::for_request(req.headers());
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(why) => {
            let mut res = error_response(StatusCode::BAD_REQUEST, "bad_host", why, &rid);
            res.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    if !admin.host_allowed(&host) {
        return error_response(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this Host is not in admin.allowed_hosts",
            &rid,
        );
    }
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if get && let Some((_, body, ctype)) = STATIC.iter().find(|(p, _, _)| *p == path) {
        return static_page(body, ctype);
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
        if let Err(r) = admin.failures.check(peer, admin.snapshots.clock()) {
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
        return crate::control::webhooks::admin::handle(
            admin.webhooks.as_ref(),
            &admin.snapshots,
            peer,
            &rest,
            req,
            &rid,
        )
        .await;
    }
    api::route(&admin, peer, &rest, req, &rid).await
}

/// The admin listener's service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService(pub(crate) Arc<Admin>);

/// Connections the admin listener serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

impl Service for AdminService {
    fn settings(&self) -> ConnSettings {
        ConnSettings {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        }
    }

    fn call(
        &self,
        conn: ConnInfo,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ResBody>> + Send + use<> {
        handle(self.0.clone(), conn.peer.ip().to_canonical(), req)
    }
}
