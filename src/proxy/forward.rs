//! The header rewrite of docs/http.md ("Headers"), both ways: what is removed from and added to a
//! request before it goes upstream, hop-by-hop headers of the response, and the
//! client address keygate believes.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use hyper::body::Incoming;
use ipnet::IpNet;

use crate::config::{Config, KeyHeader};
use crate::keys::store::KeyRecord;
use crate::observe::record::{ReqCounters, ip_text};
use crate::observe::request_body::ReqBody;
use crate::proxy::reject::Reject;
use crate::proxy::requestid;

/// Headers that never cross the gateway (besides those named in `Connection`).
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    // The client's credentials for a proxy, and a proxy's challenge: never the
    // upstream's business (RFC 9110 §11.7).
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Client-supplied headers that could make the upstream believe the wrong thing
/// about who sent the request or which resource it names.
const SPOOFABLE: [HeaderName; 8] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("client-ip"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

// Headers keygate adds, as ready-made names (no parsing per request).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_KEYGATE_KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
const X_KEYGATE_KEY_NAME: HeaderName = HeaderName::from_static("x-keygate-key-name");
const X_KEYGATE_CATEGORY: HeaderName = HeaderName::from_static("x-keygate-category");

/// Removes hop-by-hop headers and those named in `Connection`; `keep_upgrade` leaves
/// `Connection: upgrade` and `Upgrade` in place (a WebSocket handshake, a `101`).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Which of the listed names are present: one pass over the few names the map
    // holds, instead of a hashed lookup for each of the ten.
    let present = present_of(h, &HOP_BY_HOP);
    if present == 0 {
        // No `Connection` either (it is listed): nothing is named, nothing to keep.
        return;
    }
    let upgrade = keep_upgrade
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten();
    let mut connection = h.get_all(header::CONNECTION).iter();
    let several = connection.next().is_some() && connection.next().is_some();
    let mut present = present;
    if several {
        // Rare: more than one `Connection` line. Copy the names out first.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    } else {
        // One line (the usual case): remove each named header by its text, which
        // looks the name up without making a `HeaderName` (no allocation). A
        // listed name (`keep-alive`, the usual token) costs no lookup: it is
        // removed below if present.
        if let Some(v) = h.remove(header::CONNECTION)
            && let Ok(v) = v.to_str()
        {
            for n in v.split(',') {
                let n = n.trim();
                if !HOP_BY_HOP
                    .iter()
                    .any(|l| n.eq_ignore_ascii_case(l.as_str()))
                {
                    h.remove(n);
                }
            }
        }
        // `Connection` itself is gone already (bit 0: it is listed first).
        present &= !1;
    }
    remove_present(h, &HOP_BY_HOP, present);
    if let Some(u) = upgrade {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A bit for each name of `list` that `h` holds.
fn present_of(h: &HeaderMap, list: &[HeaderName]) -> u32 {
    h.keys()
        .filter_map(|k| list.iter().position(|n| n == k))
        .fold(0, |bits, i| bits | 1 << i)
}

/// Removes the names of `list` whose bit is set in `present`.
fn remove_present(h: &mut HeaderMap, list: &[HeaderName], present: u32) {
    for (i, n) in list.iter().enumerate() {
        if present & 1 << i != 0 {
            h.remove(n);
        }
    }
}

/// A WebSocket handshake: `GET` with `Connection: upgrade` and `Upgrade: websocket`.
pub(crate) fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    req.method() == http::Method::GET
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Who is asking, for `X-Forwarded-For` and the per-IP limit.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr {
    /// The client IP keygate believes (the peer, or the rightmost untrusted address).
    pub(crate) ip: IpAddr,
    /// The `X-Forwarded-For` value when the peer is a trusted proxy (its list, then
    /// the peer); `None`: the peer alone, which is `ip`, written out only when a
    /// request is forwarded.
    chain: Option<HeaderValue>,
}

impl ClientAddr {
    /// The `X-Forwarded-For` value to send upstream.
    pub(crate) fn forwarded_for(&self) -> HeaderValue {
        match &self.chain {
            Some(v) => v.clone(),
            None => ip_value(self.ip),
        }
    }
}

/// An address as a header value, written on the stack (no `String`). The last
/// one made on this thread is kept: a sidecar's requests come from few addresses,
/// and a repeat costs a reference count, not an allocation.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((a, v)) = last
            && *a == ip
        {
            return v.clone();
        }
        let mut buf = [0u8; 48];
        let v = HeaderValue::from_str(ip_text(ip, &mut buf))
            .unwrap_or(HeaderValue::from_static("unknown"));
        *last = Some((ip, v.clone()));
        v
    })
}

/// The category as a header value; the last one made on this thread is kept (a
/// repeat costs a reference count, not an allocation).
fn category_value(c: &str) -> Option<HeaderValue> {
    thread_local! {
        static LAST: RefCell<Option<HeaderValue>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some(v) = last
            && v.as_bytes() == c.as_bytes()
        {
            return Some(v.clone());
        }
        let v = HeaderValue::from_str(c).ok()?;
        *last = Some(v.clone());
        Some(v)
    })
}

/// Works out the client address: the peer, unless the peer is a trusted proxy, then
/// the rightmost address in `X-Forwarded-For` that is not trusted.
pub(crate) fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&peer)) {
        return ClientAddr {
            ip: peer,
            chain: None,
        };
    }
    let mut list: Vec<&str> = Vec::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else { continue };
        list.extend(s.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    let mut ip = peer;
    for entry in list.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(a) => {
                ip = a.to_canonical();
                if !trusted.iter().any(|n| n.contains(&ip)) {
                    break;
                }
            }
            // Garbage in the chain: stop believing it here.
            Err(_) => break,
        }
    }
    let mut joined = list.join(", ");
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str(&peer.to_string());
    ClientAddr {
        ip,
        chain: Some(HeaderValue::from_str(&joined).unwrap_or_else(|_| ip_value(peer))),
    }
}

/// What the pipeline decided, for the headers added upstream.
pub(crate) struct Forward<'a> {
    pub(crate) key: Option<&'a KeyRecord>,
    pub(crate) category: Option<&'a str>,
    pub(crate) client: &'a ClientAddr,
    pub(crate) tls: bool,
    pub(crate) request_id: &'a HeaderValue,
    /// The Authorization header carried the key (so it is removed).
    pub(crate) bearer_key: bool,
    /// A WebSocket handshake: `Upgrade` and `Connection: upgrade` are kept.
    pub(crate) websocket: bool,
}

/// Rewrites the request for the upstream (the header rules of docs/http.md); `path`
/// is the normalised path.
pub(crate) fn rewrite_request(
    config: &Config,
    fwd: &Forward<'_>,
    path: &str,
    req: Request<Incoming>,
    counters: Arc<ReqCounters>,
) -> Result<Request<ReqBody>, Reject> {
    let (mut parts, body) = req.into_parts();
    // The path unchanged by normalisation: the client's own path and query are
    // reused as they are (shared bytes, no copy).
    let path_and_query = match (parts.uri.path_and_query(), parts.uri.query()) {
        (Some(pq), _) if path == parts.uri.path() => Ok(pq.clone()),
        (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")),
        (_, None) => PathAndQuery::try_from(path),
    }
    .map_err(|_| Reject::BadPath(crate::proxy::hygiene::PathError::TargetForm))?;
    // HTTP/2 has no Host header: the upstream gets the client's :authority as Host.
    if !parts.headers.contains_key(header::HOST)
        && let Some(auth) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(auth.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    // Origin-form: the pool's connection already goes to `upstream`.
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;

    let h = &mut parts.headers;
    strip_hop_by_hop(h, fwd.websocket);
    let odd = |n: &HeaderName| {
        let s = n.as_str();
        s.contains('_') || s.starts_with("x-keygate-")
    };
    // Usually there is none: look before copying names out.
    if h.keys().any(odd) {
        let names: Vec<HeaderName> = h.keys().filter(|n| odd(n)).cloned().collect();
        for n in names {
            h.remove(n);
        }
    }
    remove_present(h, &SPOOFABLE, present_of(h, &SPOOFABLE));
    if !config.auth.forward_key {
        for kh in &config.auth.headers {
            match kh {
                KeyHeader::Plain(n) => {
                    h.remove(n);
                }
                KeyHeader::Bearer if fwd.bearer_key => {
                    h.remove(header::AUTHORIZATION);
                }
                KeyHeader::Bearer => {}
            }
        }
    }
    if let Some(k) = fwd.key {
        h.insert(X_KEYGATE_KEY_ID, k.id_header.clone());
        h.insert(X_KEYGATE_KEY_NAME, k.name_header.clone());
    }
    if let Some(c) = fwd.category
        && let Some(v) = category_value(c)
    {
        h.insert(X_KEYGATE_CATEGORY, v);
    }
    h.insert(X_FORWARDED_FOR, fwd.client.forwarded_for());
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if fwd.tls { "https" } else { "http" }),
    );
    h.insert(requestid::HEADER, fwd.request_id.clone());

    let body = ReqBody::new(
        body,
        config.limits.max_body_bytes,
        config.timeouts.client_body_read,
        counters,
    );
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_untrusted_peer_ignores_client_list() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let a = client_addr("10.0.0.9".parse().unwrap(), &h, &[]);
        assert_eq!(a.ip.to_string(), "10.0.0.9");
        assert_eq!(a.forwarded_for(), "10.0.0.9");
    }

    #[test]
    fn forwarded_for_trusted_peer_appends_and_picks_rightmost_untrusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.1.1.1"),
        );
        let a = client_addr("10.0.0.9".parse().unwrap(), &h, &trusted);
        assert_eq!(a.ip.to_string(), "203.0.113.7");
        assert_eq!(
            a.forwarded_for(),
            "6.6.6.6, 203.0.113.7, 10.1.1.1, 10.0.0.9"
        );
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn a_listed_token_in_connection_is_still_removed() {
        // `Keep-Alive` and `Upgrade` are named by token and listed: the one-line
        // path skips their lookup, the listed-name pass must still remove them.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, Upgrade, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-other"]
        );

        // Kept for a WebSocket handshake, with `Connection: upgrade` put back.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrade"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn the_kept_header_values_follow_their_input() {
        // The per-thread last value must never answer for another input.
        for ip in ["10.0.0.9", "203.0.113.7", "10.0.0.9", "::1", "10.0.0.9"] {
            let a = client_addr(ip.parse().unwrap(), &HeaderMap::new(), &[]);
            assert_eq!(a.forwarded_for(), ip);
        }
        for c in ["candidates", "jobs", "candidates", "jobs"] {
            assert_eq!(category_value(c).unwrap(), c);
        }
        assert!(category_value("bad\u{1}value").is_none());
        assert_eq!(category_value("jobs").unwrap(), "jobs");
    }
}
