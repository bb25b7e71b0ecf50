//! The request pipeline: the ONLY place that knows the order of the checks
//! (docs/http.md, "The pipeline").
//!
//! hygiene → public paths → API switch (and preflight) → key → rate limit →
//! category → permission → forward → record.
//!
//! Every step either passes a typed value on or returns a [`Reject`]; the one
//! conversion to a response is [`Reject::into_response`]. The [`Finish`] guard is
//! created first and fired exactly once, whatever happens.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use governor::clock::DefaultClock;
use http::header::USER_AGENT;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::keys::store::KeyRecord;
use crate::observe::body::ResBody;
use crate::observe::record::ReqCounters;
use crate::observe::record::{Decision, Finish};
use crate::policy::{Preflight, Route, Unmatched, required_level};
use crate::proxy::auth::authenticate;
use crate::proxy::forward::{self, ClientAddr, Forward};
use crate::proxy::hygiene::{self, HeaderError, Presented};
use crate::proxy::reject::Reject;
use crate::proxy::requestid;
use crate::proxy::snapshot::{Snapshot, Snapshots};
use crate::proxy::tunnel;
use crate::proxy::upstream;
use crate::ratelimit;
use crate::server::{ConnInfo, ConnSettings, Service};

/// The public listener's service: the pipeline over the snapshot in force.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) snapshots: Snapshots,
}

impl Service for Pipeline {
    fn settings(&self) -> ConnSettings {
        let cfg = &self.snapshots.load().config;
        ConnSettings {
            header_read: cfg.timeouts.client_header_read,
            idle: cfg.timeouts.idle,
            max_header_bytes: cfg.limits.max_header_bytes,
        }
    }

    fn call(
        &self,
        conn: ConnInfo,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ResBody>> + Send + use<> {
        // Boxed: the request's state is large, and hyper moves the future it is
        // given; a box moves as one pointer.
        Box::pin(handle(self.snapshots.clone(), conn, req))
    }
}

/// Serves one request on the public listener. Never fails: refusals are responses.
pub(crate) async fn handle(
    snapshots: Snapshots,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ResBody> {
    let snap = snapshots.load();
    // The one reading of the wall clock: the record's time, the key's expiry, the
    // request id's time part.
    let now = OffsetDateTime::now_utc();
    let unix_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let request_id = requestid::for_request_at(req.headers(), unix_ms);
    let client = forward::client_addr(conn.peer.ip(), req.headers(), &snap.config.trusted_proxies);
    let user_agent = req.headers().get(USER_AGENT).cloned();
    let is_head = req.method() == Method::HEAD;
    let has_body = has_body(&req);
    let mut fin = Box::new(Finish::new(
        snapshots.observer().clone(),
        now,
        req.method().clone(),
        request_id.clone(),
        client.ip,
        user_agent,
    ));

    let result = run(&snapshots, &snap, conn, &client, &request_id, req, &mut fin).await;
    match result {
        Ok(((upstream, lease), decision)) => {
            fin.upstream_answered();
            let (mut parts, body) = upstream.into_parts();
            parts.headers.insert(requestid::HEADER, request_id.clone());
            fin.record.status = parts.status.as_u16();
            fin.record.decision = decision;
            let bodiless = is_head
                || parts.status == StatusCode::SWITCHING_PROTOCOLS
                || parts.status == StatusCode::NO_CONTENT
                || parts.status == StatusCode::NOT_MODIFIED;
            let mut body = ResBody::stream(body, lease, snap.config.timeouts.upstream_read);
            // A copy of the body's start only when an observer wants this one
            // (webhooks with include_body): one atomic load otherwise.
            if snapshots.observer().wants_body(&fin.record) {
                body.capture();
            }
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
    }
}

fn has_body(req: &Request<Incoming>) -> bool {
    use http_body::Body;
    !req.body().is_end_stream()
}

/// What steps 1–7 found out, also when they refused: the record needs the path,
/// the key and the category as far as they were known.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// The normalised path (the raw one when it was refused as a bad path).
    pub(crate) path: String,
    pub(crate) key: Option<Arc<KeyRecord>>,
    pub(crate) category: Option<Arc<str>>,
    /// The key came in `Authorization: Bearer` (so that header is removed).
    pub(crate) bearer_key: bool,
}

/// Where an admitted request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// A public path, or a forwarded CORS preflight: no key.
    Unkeyed,
    /// A keyed request that passed every check; `websocket` if it is a handshake.
    Keyed { websocket: bool },
}

/// What steps 1–4 admitted.
#[derive(Debug)]
pub(crate) enum Admit {
    /// A public path, or a forwarded CORS preflight: no key, no further checks.
    Unkeyed,
    /// A valid key (in `facts.key`), and the route its path matched.
    Keyed(Route),
}

/// Steps 1–4: hygiene, public paths, the API switch (and preflight), the key. A
/// pure function of the request head, the snapshot and the client address (the
/// per-IP limiter for failed authentication is the only state it touches).
pub(crate) fn admit<B>(
    snap: &Snapshot,
    clock: &DefaultClock,
    req: &Request<B>,
    conn: ConnInfo,
    client_ip: IpAddr,
    now: OffsetDateTime,
    facts: &mut Facts,
) -> Result<Admit, Reject> {
    let cfg = &*snap.config;
    let policy = &cfg.policy;

    // 1. Hygiene: nothing else is looked at first.
    if req.method() == Method::CONNECT {
        req.uri().path().clone_into(&mut facts.path);
        return Err(Reject::Connect);
    }
    match hygiene::normalize_target(
        req.uri(),
        policy.allow_non_ascii_paths,
        policy.allow_trailing_dots,
    ) {
        Ok(p) => facts.path = p.into_owned(),
        Err(e) => {
            req.uri().path().clone_into(&mut facts.path);
            return Err(Reject::BadPath(e));
        }
    }
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
    facts.bearer_key = matches!(presented, Presented::One { bearer: true, .. });

    // 2. Public paths: no key, any method, even with the API off.
    let route = policy.route(&facts.path);
    if route == Route::Public {
        return Ok(Admit::Unkeyed);
    }

    // 3. The API switch, then CORS preflight.
    if !snap.keys.api_enabled {
        return Err(Reject::ApiDisabled);
    }
    if policy.preflight == Preflight::Forward && presented == Presented::None && is_preflight(req) {
        return Ok(Admit::Unkeyed);
    }

    // 4. The key. Failures are charged to the client IP's budget (5, per IP).
    match authenticate(presented, &snap.keys, now) {
        Ok(k) => {
            facts.key = Some(k);
            Ok(Admit::Keyed(route))
        }
        Err(reject) => {
            if let Err(ratelimit::RetryAfter(retry_after)) = snap.ip_limiter.check(client_ip, clock)
            {
                return Err(Reject::IpRateLimited { retry_after });
            }
            Err(reject)
        }
    }
}

/// Step 5's answer for `key`: over its limit → `429`.
fn over_limit(key: &KeyRecord, limited: Result<(), ratelimit::RetryAfter>) -> Result<(), Reject> {
    match limited {
        Ok(()) => Ok(()),
        Err(ratelimit::RetryAfter(retry_after)) => Err(Reject::KeyRateLimited {
            name: key.name.clone(),
            retry_after,
        }),
    }
}

/// Steps 6–7 for an admitted key: the category, then the permission.
pub(crate) fn authorize<B>(
    snap: &Snapshot,
    req: &Request<B>,
    conn: ConnInfo,
    key: &KeyRecord,
    route: Route,
    facts: &mut Facts,
) -> Result<Pass, Reject> {
    let policy = &snap.config.policy;
    // 6. Category (fail closed on unmatched paths unless configured otherwise).
    let category = match route {
        Route::Category(id) => Some(id),
        Route::Unmatched if policy.unmatched == Unmatched::AllowAnyKey => None,
        Route::Unmatched | Route::Public => return Err(Reject::PathNotAllowed),
    };
    facts.category = category.map(|c| policy.category_name(c).clone());

    // 7. Permission.
    let Some(needed) = required_level(req.method()) else {
        return Err(Reject::MethodNotAllowed(req.method().clone()));
    };
    let has = category.map_or(key.star, |c| key.level(c));
    if !has.allows(needed) {
        return Err(Reject::InsufficientPermission {
            name: key.name.clone(),
            category: facts.category.clone(),
            method: req.method().clone(),
            needed,
            has,
        });
    }
    // A WebSocket handshake is authorised above as the GET it is.
    Ok(Pass::Keyed {
        websocket: conn.http1 && forward::is_websocket_upgrade(req),
    })
}

/// Steps 1–7 with the key's own (local) limiter: what [`run`] does without a
/// shared limit, as one pure call for tests.
#[cfg(test)]
pub(crate) fn decide<B>(
    snap: &Snapshot,
    clock: &DefaultClock,
    req: &Request<B>,
    conn: ConnInfo,
    client_ip: IpAddr,
    now: OffsetDateTime,
    facts: &mut Facts,
) -> Result<Pass, Reject> {
    let Admit::Keyed(route) = admit(snap, clock, req, conn, client_ip, now, facts)? else {
        return Ok(Pass::Unkeyed);
    };
    let key = facts.key.clone().ok_or(Reject::InvalidKey)?;
    over_limit(&key, ratelimit::check_key(key.limiter(), &key.rate))?;
    authorize(snap, req, conn, &key, route, facts)
}

/// Steps 1–7 in their order; step 5 uses the shared limit in cluster mode.
async fn steps_1_to_7<B>(
    snapshots: &Snapshots,
    snap: &Snapshot,
    req: &Request<B>,
    conn: ConnInfo,
    client_ip: IpAddr,
    now: OffsetDateTime,
    facts: &mut Facts,
) -> Result<Pass, Reject> {
    let clock = snapshots.clock();
    let Admit::Keyed(route) = admit(snap, clock, req, conn, client_ip, now, facts)? else {
        return Ok(Pass::Unkeyed);
    };
    let Some(key) = facts.key.clone() else {
        return Err(Reject::InvalidKey);
    };
    // 5. The key's rate limit: shared by the replicas in cluster mode.
    let limited = match snapshots.shared_limit() {
        Some(shared) => shared.check(&key).await?,
        None => ratelimit::check_key(key.limiter(), &key.rate),
    };
    over_limit(&key, limited)?;
    authorize(snap, req, conn, &key, route, facts)
}

/// The upstream's response, and the lease on its connection (none for a tunnel).
type Upstream = (Response<Incoming>, Option<upstream::Lease>);

/// Steps 1–8. On success, the upstream's response and the decision to record.
async fn run(
    snapshots: &Snapshots,
    snap: &Snapshot,
    conn: ConnInfo,
    client: &ClientAddr,
    request_id: &HeaderValue,
    req: Request<Incoming>,
    fin: &mut Finish,
) -> Result<(Upstream, Decision), Reject> {
    let mut facts = Facts::default();
    let arrived = fin.record.ts;
    let pass = steps_1_to_7(snapshots, snap, &req, conn, client.ip, arrived, &mut facts).await;
    let Facts {
        path,
        key,
        category,
        bearer_key,
    } = facts;
    // The one copy of the path: the record owns it, the rewrite borrows it.
    fin.record.path = path;
    fin.record.key.clone_from(&key);
    fin.record.category.clone_from(&category);
    let (websocket, decision) = match pass? {
        Pass::Unkeyed => (false, Decision::Public),
        Pass::Keyed { websocket } => (websocket, Decision::Allowed),
    };
    // 8. Forward.
    let fwd = Forward {
        key: key.as_deref(),
        category: category.as_deref(),
        client,
        tls: conn.tls,
        request_id,
        bearer_key,
        websocket,
    };
    send_upstream(snapshots, snap, fwd, req, fin)
        .await
        .map(|r| (r, decision))
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

async fn send_upstream(
    snapshots: &Snapshots,
    snap: &Snapshot,
    fwd: Forward<'_>,
    mut req: Request<Incoming>,
    fin: &mut Finish,
) -> Result<Upstream, Reject> {
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
    let upstream_req =
        forward::rewrite_request(cfg, &fwd, &fin.record.path, req, counters.clone())?;
    fin.counters = Some(counters.clone());
    fin.upstream_started = Some(Instant::now());
    let (mut res, lease) = match upstream::send(&snap.client, cfg, upstream_req, &counters).await {
        Ok(res) => res,
        Err(r @ (Reject::UpstreamUnavailable | Reject::UpstreamTimeout)) => {
            // Off the success path: one atomic decides whether to say so again.
            if snapshots.upstream_warning_due() {
                tracing::warn!(
                    upstream = %cfg.upstream.authority,
                    refusal = if matches!(r, Reject::UpstreamTimeout) { "504 upstream_timeout" } else { "502 upstream_unavailable" },
                    "the upstream is not answering; requests are refused until it does (this warning repeats at most every 30 s while it stays down; details at debug level)"
                );
            }
            return Err(r);
        }
        Err(r) => return Err(r),
    };
    // The tunnel opens only once the upstream has agreed to switch protocols.
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        match (client_upgrade, tunnel_key) {
            (Some(client), Some(key)) => {
                let upstream = hyper::upgrade::on(&mut res);
                tunnel::spawn(snapshots.clone(), key, client, upstream);
            }
            // A 101 keygate did not ask for cannot be honoured.
            _ => return Err(Reject::UpstreamUnavailable),
        }
        // The connection is the tunnel's now: it never goes back to the pool.
        return Ok((res, None));
    }
    Ok((res, Some(lease)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::keys::file::KeysFile;
    use crate::keys::store::KeySet;
    use crate::proxy::reject::Reject as R;
    use crate::ratelimit::IpLimiter;

    const CONFIG: &str = r#"
upstream: "http://127.0.0.1:9"
routes:
  public: ["/healthz", "/public/**"]
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
    jobs: ["/api/v1/jobs", "/api/v1/jobs/**"]
"#;
    const READ: &str = "zapier-read-only-secret-0123456789abcdef";
    const WRITE: &str = "jobs-writer-secret-0123456789abcdefghijk";
    const LIMITED: &str = "slow-rate-key-secret-0123456789abcdefghij";
    const OLD: &str = "expired-key-secret-0123456789abcdefghij";

    fn keys(api: bool) -> String {
        format!(
            r#"api_enabled: {api}
keys:
  - {{ id: kread, name: Zapier, secret: "{READ}", permissions: {{ candidates: read }} }}
  - {{ id: kwrite, name: Writer, secret: "{WRITE}", permissions: {{ jobs: write }} }}
  - {{ id: kslow, name: Slow, secret: "{LIMITED}", permissions: {{ "*": read }}, rate_limit: {{ per_minute: 1, burst: 1 }} }}
  - {{ id: kold, name: Old, secret: "{OLD}", permissions: {{ "*": write }}, expires_at: 2020-01-01T00:00:00Z }}
"#
        )
    }

    /// A snapshot in memory, built as the reloader builds one.
    fn snapshot(extra: &str, api: bool) -> Snapshot {
        let path = Path::new("config.yaml");
        let config = Arc::new(Config::from_text(path, &format!("{CONFIG}{extra}")).unwrap());
        let file = KeysFile::parse(Path::new("keys.yaml"), &keys(api)).unwrap();
        let keys = KeySet::build(
            &config.keys_file,
            &file,
            &config.policy,
            &config.rate_limit.per_key,
            None,
        )
        .unwrap();
        let rl = &config.rate_limit;
        Snapshot {
            ip_limiter: Arc::new(IpLimiter::new(&rl.per_ip, rl.max_tracked_ips)),
            client: upstream::client(&config).unwrap(),
            config,
            keys,
            keys_identity: None,
            keys_digest: None,
        }
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const CONN: ConnInfo = ConnInfo {
        peer: std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1),
        tls: false,
        http1: true,
    };

    /// The outcome as a short string: `unkeyed`, `keyed`, `websocket` or the code.
    fn outcome(snap: &Snapshot, req: &Request<()>) -> (String, Facts) {
        let mut facts = Facts::default();
        let clock = crate::ratelimit::clock().clone();
        let r = decide(
            snap,
            &clock,
            req,
            CONN,
            CONN.peer.ip(),
            OffsetDateTime::now_utc(),
            &mut facts,
        );
        let s = match r {
            Ok(Pass::Unkeyed) => "unkeyed".to_string(),
            Ok(Pass::Keyed { websocket: false }) => "keyed".to_string(),
            Ok(Pass::Keyed { websocket: true }) => "websocket".to_string(),
            Err(e) => code(&e).to_string(),
        };
        (s, facts)
    }

    fn code(r: &R) -> &'static str {
        r.code()
    }

    /// Method, target, headers, the expected outcome.
    type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn steps_one_to_seven_in_order() {
        let snap = snapshot("", true);
        let k = |s: &'static str| ("x-api-key", s);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // 1. hygiene first: even with a valid key, before anything else
            ("CONNECT", "/api/v1/jobs", &[k(WRITE)], "method_not_allowed"),
            ("GET", "/api/v1/../jobs", &[k(WRITE)], "bad_path"),
            ("GET", "/api/v1/jobs", &[k(WRITE), ("authorization", "Bearer x")], "ambiguous_api_key"),
            ("POST", "/api/v1/jobs", &[k(WRITE), ("x-http-method-override", "DELETE")], "method_override_not_allowed"),
            // 2. public paths need no key
            ("GET", "/healthz", &[], "unkeyed"),
            ("DELETE", "/public/x", &[], "unkeyed"),
            // 4. the key
            ("GET", "/api/v1/candidates", &[], "missing_api_key"),
            ("GET", "/api/v1/candidates", &[k("not-a-key-at-all-but-long-enough-12345")], "invalid_api_key"),
            ("GET", "/api/v1/candidates", &[k("kg_3Xb8u2KQw0pV9sLrT4mZcY1nE6fH7jAd0ukXzz")], "malformed_api_key"),
            ("GET", "/api/v1/candidates", &[k(OLD)], "expired_api_key"),
            // 6. category: unmatched paths fail closed
            ("GET", "/api/v2/other", &[k(READ)], "path_not_allowed"),
            // 7. permission
            ("GET", "/api/v1/candidates/7", &[k(READ)], "keyed"),
            ("POST", "/api/v1/candidates", &[k(READ)], "insufficient_permission"),
            ("GET", "/api/v1/jobs", &[k(READ)], "insufficient_permission"),
            ("DELETE", "/api/v1/jobs/3", &[k(WRITE)], "keyed"),
            ("GET", "/api/v1/jobs", &[("authorization", &*format!("Bearer {WRITE}").leak())], "keyed"),
            ("TRACE", "/api/v1/jobs", &[k(WRITE)], "method_not_allowed"),
            ("OPTIONS", "/api/v1/jobs", &[k(WRITE)], "keyed"),
            ("GET", "/api/v1/jobs", &[k(WRITE), ("connection", "upgrade"), ("upgrade", "websocket")], "websocket"),
        ];
        for (method, target, headers, want) in rows {
            let (got, _) = outcome(&snap, &request(method, target, headers));
            assert_eq!(&got, want, "{method} {target} {headers:?}");
        }
    }

    #[test]
    fn the_switch_comes_after_public_paths_and_before_the_key() {
        let off = snapshot("", false);
        let k = ("x-api-key", WRITE);
        assert_eq!(outcome(&off, &request("GET", "/healthz", &[])).0, "unkeyed");
        assert_eq!(
            outcome(&off, &request("GET", "/api/v1/jobs", &[k])).0,
            "api_disabled"
        );
        assert_eq!(
            outcome(&off, &request("GET", "/api/v1/jobs", &[])).0,
            "api_disabled"
        );
        assert_eq!(
            outcome(&off, &request("GET", "/api/../x", &[])).0,
            "bad_path"
        );
    }

    #[test]
    fn preflight_is_forwarded_only_when_configured_and_keyless() {
        let pre = [
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ];
        let deny = snapshot("", true);
        assert_eq!(
            outcome(&deny, &request("OPTIONS", "/api/v1/jobs", &pre)).0,
            "missing_api_key"
        );
        let fwd = snapshot("  preflight: forward\n", true);
        assert_eq!(
            outcome(&fwd, &request("OPTIONS", "/api/v1/jobs", &pre)).0,
            "unkeyed"
        );
        let with_key = [pre[0], pre[1], ("x-api-key", READ)];
        assert_eq!(
            outcome(&fwd, &request("OPTIONS", "/api/v1/jobs", &with_key)).0,
            "insufficient_permission",
            "a preflight with a key is an OPTIONS like any other"
        );
    }

    #[test]
    fn limits_key_first_then_ip_for_failures_only() {
        let snap = snapshot(
            "rate_limit:\n  unauthenticated_per_ip: { per_minute: 1, burst: 1 }\n",
            true,
        );
        let slow = request("GET", "/api/v1/jobs", &[("x-api-key", LIMITED)]);
        assert_eq!(outcome(&snap, &slow).0, "keyed");
        assert_eq!(outcome(&snap, &slow).0, "rate_limited");
        let bad = request("GET", "/api/v1/jobs", &[]);
        assert_eq!(outcome(&snap, &bad).0, "missing_api_key");
        assert_eq!(
            outcome(&snap, &bad).0,
            "rate_limited",
            "the IP's failure budget is spent"
        );
        let good = request("GET", "/api/v1/jobs", &[("x-api-key", WRITE)]);
        assert_eq!(
            outcome(&snap, &good).0,
            "keyed",
            "a valid key is never blocked by it"
        );
    }

    #[test]
    fn facts_carry_what_was_known_when_refused() {
        let snap = snapshot("", true);
        let (code, f) = outcome(
            &snap,
            &request("POST", "//api/v1/%63andidates", &[("x-api-key", READ)]),
        );
        assert_eq!(code, "insufficient_permission");
        assert_eq!(f.path, "/api/v1/candidates");
        assert_eq!(f.key.as_ref().map(|k| k.id.as_str()), Some("kread"));
        assert_eq!(f.category.as_deref(), Some("candidates"));
        let (_, f) = outcome(&snap, &request("GET", "/a/%2e%2e/b", &[]));
        assert_eq!(f.path, "/a/%2e%2e/b", "a refused path is recorded raw");
        assert!(f.key.is_none());
    }
}
