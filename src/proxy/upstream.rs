//! The upstream side: the pooled hyper-util client (https with the system roots or
//! `upstream_ca_file`), sending a request, and upstream failures turned into
//! refusals (`502`, `504`, `413`).

use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Config;
use crate::observe::record::ReqCounters;
use crate::proxy::forward::strip_hop_by_hop;
use crate::proxy::reject::Reject;
use crate::proxy::request_body::ReqBody;

pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, ReqBody>;

/// Builds the pooled client for a config (https with the system roots or
/// `upstream_ca_file` when the upstream is https).
pub(crate) fn client(config: &Config) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.timeouts.upstream_connect));
    http.set_nodelay(true);
    http.enforce_http(false);
    let tls = if config.upstream.scheme == http::uri::Scheme::HTTPS {
        crate::server::tls::upstream_client_config(config.upstream_ca_file.as_ref())?
    } else {
        // Never used for an http upstream; no need to read the system roots.
        crate::server::tls::upstream_client_config_empty()?
    };
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .set_host(false)
        .build(connector))
}

/// Sends the request and waits for the upstream's response head.
///
/// `timeouts.upstream_response` starts when the request body has been sent.
pub(crate) async fn send(
    client: &UpstreamClient,
    config: &Config,
    req: Request<ReqBody>,
    counters: &ReqCounters,
) -> Result<Response<Incoming>, Reject> {
    let started = Instant::now();
    // A bodiless idempotent request can be sent again if a pooled connection the
    // upstream had just closed fails it before any response byte (as nginx does
    // for cached connections). A non-idempotent one is retried only when it
    // provably never left: hyper's pool does that itself (a canceled request).
    let replay = (is_idempotent(req.method()) && req.body().is_end_stream()).then(|| {
        let mut r = Request::new(req.body().empty_like());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        r
    });
    let result = match exchange(client, config, req, counters).await {
        Err(Exchange::Failed(e)) if !e.is_connect() && replay.is_some() => {
            tracing::debug!(error = %e, "upstream connection failed before answering; retrying once on a fresh connection");
            match replay {
                Some(r) => exchange(client, config, r, counters).await,
                None => Err(Exchange::Failed(e)),
            }
        }
        other => other,
    };
    match result {
        Ok(mut res) => {
            let switching = res.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            strip_hop_by_hop(res.headers_mut(), switching);
            Ok(res)
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
            tracing::debug!(error = %e, elapsed_ms = started.elapsed().as_millis() as u64, "upstream request failed");
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
    Failed(hyper_util::client::legacy::Error),
}

/// One attempt: send, then wait for the response head (`timeouts.upstream_response`
/// counts from when the request body has been sent).
async fn exchange(
    client: &UpstreamClient,
    config: &Config,
    req: Request<ReqBody>,
    counters: &ReqCounters,
) -> Result<Response<Incoming>, Exchange> {
    let fut = client.request(req);
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
