//! The upstream side: the connection pool to the upstream (https with the system
//! roots or `upstream_ca_file`), sending a request (and its one retry), and upstream failures turned into
//! refusals (`502`, `504`, `413`).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use crate::config::Config;
use crate::observe::record::ReqCounters;
use crate::observe::request_body::ReqBody;
use crate::pool::{self, Pool, Target};
use crate::proxy::forward::strip_hop_by_hop;
use crate::proxy::reject::Reject;

/// The upstream connection pool of a config.
pub(crate) type UpstreamClient = Pool<ReqBody>;

/// A response's hold on its upstream connection (given back when its body ended).
pub(crate) type Lease = pool::Lease<ReqBody>;

/// Idle upstream connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle upstream connections are kept.
const MAX_IDLE: usize = 1024;

/// Builds the connection pool for a config (https with the system roots or
/// `upstream_ca_file` when the upstream is https).
pub(crate) fn client(config: &Config) -> Result<UpstreamClient, String> {
    let authority = &config.upstream.authority;
    let https = config.upstream.scheme == http::uri::Scheme::HTTPS;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        let config = crate::server::tls::upstream_client_config(config.upstream_ca_file.as_ref())?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| format!("upstream: {host} is not a TLS server name: {e}"))?;
        Some((Arc::new(config), name))
    } else {
        None
    };
    Ok(Pool::new(Target {
        host,
        port,
        tls,
        connect_timeout: config.timeouts.upstream_connect,
        idle_timeout: IDLE_TIMEOUT,
        max_idle: MAX_IDLE,
    }))
}

/// Sends the request and waits for the upstream's response head.
///
/// `timeouts.upstream_response` starts when the request body has been sent.
pub(crate) async fn send(
    client: &UpstreamClient,
    config: &Config,
    req: Request<ReqBody>,
    counters: &ReqCounters,
) -> Result<(Response<Incoming>, Lease), Reject> {
    // A bodiless idempotent request can be sent again if a pooled connection the
    // upstream had just closed fails it before any response byte (as nginx does
    // for cached connections). A non-idempotent one is retried only when it
    // provably never left: the pool does that itself (hyper hands it back unsent).
    let replay = (is_idempotent(req.method()) && req.body().is_end_stream()).then(|| {
        let mut r = Request::new(req.body().empty_like());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        r
    });
    let result = match (exchange(client, config, req, counters, true).await, replay) {
        (Err(Exchange::Failed(e @ pool::Error::Exchange { reused: true, .. })), Some(r)) => {
            tracing::debug!(error = %e, "pooled upstream connection failed before answering; retrying once on a fresh connection");
            exchange(client, config, r, counters, false).await
        }
        (other, _) => other,
    };
    match result {
        Ok((mut res, lease)) => {
            let switching = res.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            strip_hop_by_hop(res.headers_mut(), switching);
            Ok((res, lease))
        }
        Err(Exchange::Timeout) => Err(Reject::UpstreamTimeout),
        Err(Exchange::Failed(e)) => {
            use std::sync::atomic::Ordering::Relaxed;
            // The request body's own failures come first: they are the client's.
            if counters.over_limit.load(Relaxed) {
                return Err(Reject::BodyTooLarge {
                    limit: config.limits.max_body_bytes.unwrap_or(0),
                });
            }
            if counters.client_timeout.load(Relaxed) {
                return Err(Reject::ClientTimeout);
            }
            if counters.client_error.load(Relaxed) {
                return Err(Reject::BadRequestBody);
            }
            tracing::debug!(error = %e, "upstream request failed");
            Err(Reject::UpstreamUnavailable)
        }
    }
}

fn is_idempotent(m: &http::Method) -> bool {
    use http::Method as M;
    [M::GET, M::HEAD, M::OPTIONS, M::PUT, M::DELETE, M::TRACE].contains(m)
}

enum Exchange {
    Timeout,
    Failed(pool::Error),
}

/// One attempt: send, then wait for the response head (`timeouts.upstream_response`
/// counts from when the request body has been sent).
async fn exchange(
    client: &UpstreamClient,
    config: &Config,
    req: Request<ReqBody>,
    counters: &ReqCounters,
    pooled: bool,
) -> Result<(Response<Incoming>, Lease), Exchange> {
    let fut = client.send(req, pooled);
    tokio::pin!(fut);
    tokio::select! {
        biased;
        r = &mut fut => r.map_err(Exchange::Failed),
        () = counters.body_sent() => {
            match tokio::time::timeout(config.timeouts.upstream_response, &mut fut).await {
                Ok(r) => r.map_err(Exchange::Failed),
                Err(_) => Err(Exchange::Timeout),
            }
        }
    }
}
