//! The request pipeline: the ONLY place that knows the order of SPEC §1.
//!
//! hygiene → public paths → API switch (and preflight) → key → rate limit →
//! category → permission → forward → record.
//!
//! Every step either passes a typed value on or returns a [`Reject`]; the one
//! conversion to a response is [`Reject::into_response`]. The [`Finish`] guard is
//! created first and fired exactly once, whatever happens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::USER_AGENT;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::auth::authenticate;
use crate::body::{ReqCounters, ResBody};
use crate::hygiene::{self, HeaderError, Presented};
use crate::policy::{Preflight, Route, Unmatched, required_level};
use crate::proxy::{self, ClientAddr, Forward};
use crate::ratelimit;
use crate::record::{Decision, Finish};
use crate::reject::Reject;
use crate::requestid;
use crate::snapshot::{Shared, Snapshot};
use crate::tunnel;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub http1: bool,
}

/// Serves one request on the public listener. Never fails: refusals are responses.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let snap = shared.snapshot();
    let request_id = requestid::for_request(req.headers());
    let client = proxy::client_addr(conn.peer.ip(), req.headers(), &snap.config.trusted_proxies);
    let user_agent = req.headers().get(USER_AGENT).cloned();
    let is_head = req.method() == Method::HEAD;
    let has_body = has_body(&req);
    let mut fin = Box::new(Finish::new(
        shared.observer.clone(),
        req.method().clone(),
        request_id.clone(),
        client.ip,
        user_agent,
    ));

    let result = run(&shared, &snap, conn, &client, &request_id, req, &mut fin).await;
    let res = match result {
        Ok((upstream, decision)) => {
            fin.upstream_answered();
            let (mut parts, body) = upstream.into_parts();
            parts.headers.insert(requestid::HEADER, request_id.clone());
            fin.record.status = parts.status.as_u16();
            fin.record.decision = decision;
            let bodiless = is_head
                || parts.status == StatusCode::SWITCHING_PROTOCOLS
                || parts.status == StatusCode::NO_CONTENT
                || parts.status == StatusCode::NOT_MODIFIED;
            let mut body = ResBody::stream(body);
            body.attach(fin, bodiless);
            Response::from_parts(parts, body)
        }
        Err(reject) => {
            fin.upstream_answered();
            // An unread request body must never be parsed as the next request.
            let unread = has_body && fin.counters.as_ref().is_none_or(|c| !c.body_fully_read());
            fin.record.decision = reject.decision();
            fin.record.reason = Some(reject.code());
            let mut res = reject.into_response(&request_id, unread);
            fin.record.status = res.status().as_u16();
            res.body_mut().attach(fin, is_head);
            res
        }
    };
    Ok(res)
}

fn has_body(req: &Request<Incoming>) -> bool {
    use http_body::Body;
    !req.body().is_end_stream()
}

/// Steps 1–8. On success, the upstream's response and the decision to record.
async fn run(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    conn: ConnInfo,
    client: &ClientAddr,
    request_id: &HeaderValue,
    req: Request<Incoming>,
    fin: &mut Finish,
) -> Result<(Response<Incoming>, Decision), Reject> {
    let cfg = &*snap.config;
    let policy = &cfg.policy;

    // 1. Hygiene: nothing else is looked at first.
    if req.method() == Method::CONNECT {
        fin.record.path = req.uri().path().to_owned();
        return Err(Reject::Connect);
    }
    let path = match hygiene::normalize_target(req.uri(), policy.allow_non_ascii_paths) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            fin.record.path = req.uri().path().to_owned();
            return Err(Reject::BadPath(e));
        }
    };
    fin.record.path.clone_from(&path);
    let presented = hygiene::check_headers(
        req.headers(),
        &cfg.auth,
        cfg.limits.max_header_bytes,
        conn.http1,
    )
    .map_err(|e| match e {
        HeaderError::AmbiguousKey => Reject::AmbiguousKey,
        HeaderError::MethodOverride => Reject::MethodOverride,
        HeaderError::AmbiguousFraming => Reject::AmbiguousFraming,
        HeaderError::TooLarge => Reject::HeadersTooLarge,
    })?;
    let bearer_key = matches!(presented, Presented::One { bearer: true, .. });

    // Forwarding without a key (public paths, a forwarded preflight).
    let unkeyed = Forward {
        path: &path,
        key: None,
        category: None,
        client,
        tls: conn.tls,
        request_id,
        bearer_key,
        websocket: false,
    };

    // 2. Public paths: no key, any method, even with the API off.
    let route = policy.route(&path);
    if route == Route::Public {
        return forward(shared, snap, unkeyed, req, fin)
            .await
            .map(|r| (r, Decision::Public));
    }

    // 3. The API switch, then CORS preflight.
    if !snap.keys.api_enabled {
        return Err(Reject::ApiDisabled);
    }
    if policy.preflight == Preflight::Forward && presented == Presented::None && is_preflight(&req)
    {
        return forward(shared, snap, unkeyed, req, fin)
            .await
            .map(|r| (r, Decision::Public));
    }

    // 4. The key. Failures are charged to the client IP's budget (5, per IP).
    let key = match authenticate(presented, &snap.keys, OffsetDateTime::now_utc()) {
        Ok(k) => k,
        Err(reject) => {
            if let Err(ratelimit::RetryAfter(retry_after)) =
                snap.ip_limiter.check(client.ip, &shared.clock)
            {
                return Err(Reject::IpRateLimited { retry_after });
            }
            return Err(reject);
        }
    };
    fin.record.key = Some(key.clone());

    // 5. The key's rate limit.
    if let Err(ratelimit::RetryAfter(retry_after)) =
        ratelimit::check_key(&key.limiter, &shared.clock)
    {
        return Err(Reject::KeyRateLimited {
            name: key.name.clone(),
            retry_after,
        });
    }

    // 6. Category (fail closed on unmatched paths unless configured otherwise).
    let category = match route {
        Route::Category(id) => Some(id),
        Route::Unmatched if policy.unmatched == Unmatched::AllowAnyKey => None,
        Route::Unmatched | Route::Public => return Err(Reject::PathNotAllowed),
    };
    let category_name = category.map(|c| policy.category_name(c).clone());
    fin.record.category.clone_from(&category_name);

    // 7. Permission.
    let Some(needed) = required_level(req.method()) else {
        return Err(Reject::MethodNotAllowed(req.method().clone()));
    };
    let has = category.map_or(key.star, |c| key.level(c));
    if !has.allows(needed) {
        return Err(Reject::InsufficientPermission {
            name: key.name.clone(),
            category: category_name,
            method: req.method().clone(),
            needed,
            has,
        });
    }

    // 8. Forward (a WebSocket handshake too: authorised above as the GET it is).
    let fwd = Forward {
        key: Some(&key),
        category: category_name.as_deref(),
        websocket: conn.http1 && proxy::is_websocket_upgrade(&req),
        ..unkeyed
    };
    forward(shared, snap, fwd, req, fin)
        .await
        .map(|r| (r, Decision::Allowed))
}

fn is_preflight(req: &Request<Incoming>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

async fn forward(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    fwd: Forward<'_>,
    mut req: Request<Incoming>,
    fin: &mut Finish,
) -> Result<Response<Incoming>, Reject> {
    let cfg = &*snap.config;
    // A declared length over the limit is refused before anything is sent upstream.
    if let Some(limit) = cfg.limits.max_body_bytes
        && let Some(len) = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(Reject::BodyTooLarge { limit });
    }
    let client_upgrade = fwd.websocket.then(|| hyper::upgrade::on(&mut req));
    let tunnel_key = fwd.key.map(|k| k.id.clone());
    let counters = Arc::new(ReqCounters::default());
    fin.counters = Some(counters.clone());
    let upstream_req = proxy::rewrite_request(cfg, &fwd, req, counters.clone())?;
    fin.upstream_started = Some(Instant::now());
    let mut res = proxy::send(&snap.client, cfg, upstream_req, &counters).await?;
    // The tunnel opens only once the upstream has agreed to switch protocols.
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        match (client_upgrade, tunnel_key) {
            (Some(client), Some(key)) => {
                let upstream = hyper::upgrade::on(&mut res);
                tunnel::spawn(shared.clone(), key, client, upstream);
            }
            // A 101 keygate did not ask for cannot be honoured.
            _ => return Err(Reject::UpstreamUnavailable),
        }
    }
    Ok(res)
}
