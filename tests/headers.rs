//! The header rules and request framing of docs/http.md, against a real upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_never_receives_the_key() {
    let h = Harness::start().await;
    for headers in [
        vec![("X-API-Key", SECRET_ALL.to_string())],
        vec![("Authorization", format!("Bearer {SECRET_ALL}"))],
        vec![("authorization", format!("bearer {SECRET_ALL}"))],
    ] {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = h.get("/api/v1/jobs", &hs);
        assert_eq!(r.status, 200, "{}", r.raw);
        let seen = h.upstream.last();
        for (name, value) in &seen.headers {
            let v = value.to_str().unwrap_or("");
            assert!(!v.contains(SECRET_ALL), "{name} carries the key");
        }
        assert!(!seen.headers.contains_key("x-api-key"));
        assert!(!seen.headers.contains_key("authorization"));
        assert_eq!(seen.headers["x-keygate-key-id"], "kreporting");
        assert_eq!(seen.headers["x-keygate-key-name"], "Reporting Dashboard");
        assert_eq!(seen.headers["x-keygate-category"], "jobs");
    }
    // Basic auth is not a key: forwarded untouched beside the real key.
    let r = h.get(
        "/api/v1/jobs",
        &[
            ("X-API-Key", SECRET_ALL),
            ("Authorization", "Basic dXNlcjpwYXNz"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        h.upstream.last().headers["authorization"],
        "Basic dXNlcjpwYXNz"
    );
    // Non-ASCII names are percent-encoded.
    let r = h.get("/api/v1/jobs", &[("X-API-Key", SECRET_WRITE)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        h.upstream.last().headers["x-keygate-key-name"],
        "Jobs Writer %E2%9C%93"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_key_option_keeps_it() {
    let h = Harness::start_with(&format!("{ROUTES}auth:\n  forward_key: true\n")).await;
    let r = h.get("/api/v1/jobs", &[("X-API-Key", SECRET_ALL)]);
    assert_eq!(r.status, 200);
    assert_eq!(h.upstream.last().headers["x-api-key"], SECRET_ALL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_paths_drop_key_headers_too() {
    let h = Harness::start().await;
    let r = h.get("/public/docs", &[("X-API-Key", SECRET_ALL)]);
    assert_eq!(r.status, 200);
    let seen = h.upstream.last();
    assert!(!seen.headers.contains_key("x-api-key"));
    assert!(!seen.headers.contains_key("x-keygate-key-id"));
    let r = h.request("DELETE", "/public/x", &[], "");
    assert_eq!(r.status, 200, "any method on a public path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_headers_are_gone_and_added_ones_cannot_be_forged() {
    let h = Harness::start().await;
    let sent = [
        ("X-API-Key", SECRET_ALL),
        (
            "Connection",
            "close, X-Custom-Hop, X-Forwarded-For, X-Request-Id, X-Keygate-Key-Name, X-Forwarded-Proto",
        ),
        ("X-Custom-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-T"),
        ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ("Proxy-Connection", "keep-alive"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("Remote_Addr", "6.6.6.6"),
        ("X-Keygate-Key-Id", "forged"),
        ("X-Keygate-Key-Name", "forged"),
        ("X-Keygate-Category", "forged"),
        ("X-Keygate-Anything", "forged"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("True-Client-IP", "6.6.6.6"),
        ("Client-IP", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Request-Id", "client-id-1"),
        ("X-Kept", "yes"),
    ];
    let r = h.get("/api/v1/candidates/5", &sent);
    assert_eq!(r.status, 200, "{}", r.raw);
    let seen = h.upstream.last();
    let hd = &seen.headers;
    for gone in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "http2-settings",
        "proxy-connection",
        "x_forwarded_for",
        "remote_addr",
        "x-keygate-anything",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "client-ip",
        "x-forwarded-host",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
        "x-api-key",
    ] {
        assert!(!hd.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(hd["x-kept"], "yes");
    assert_eq!(hd["x-keygate-key-id"], "kreporting");
    assert_eq!(hd.get_all("x-keygate-key-id").iter().count(), 1);
    assert_eq!(hd["x-keygate-key-name"], "Reporting Dashboard");
    assert_eq!(hd["x-keygate-category"], "candidates");
    assert_eq!(
        hd["x-forwarded-for"], "127.0.0.1",
        "the peer, not the client's claim"
    );
    assert_eq!(hd["x-forwarded-proto"], "http");
    assert_eq!(hd["x-request-id"], "client-id-1");
    // Upstream's own hop-by-hop response headers do not reach the client.
    assert!(r.header("x-upstream-private").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trusted_proxy_chain() {
    let h = Harness::start_with(&format!("{ROUTES}trusted_proxies: [\"127.0.0.0/8\"]\n")).await;
    let r = h.get(
        "/api/v1/jobs",
        &[
            ("X-API-Key", SECRET_ALL),
            ("X-Forwarded-For", "203.0.113.7, 127.0.0.5"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        h.upstream.last().headers["x-forwarded-for"],
        "203.0.113.7, 127.0.0.5, 127.0.0.1"
    );
    let recs = h.records.wait_for(1).await;
    assert_eq!(recs[0].ip.to_string(), "203.0.113.7");
}

/// Reads responses off one keep-alive connection until it closes.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<Reply> {
    let raw = raw_exchange(addr, bytes);
    raw.split("HTTP/1.1 ")
        .filter(|s| !s.is_empty())
        .map(|s| Reply::parse(&format!("HTTP/1.1 {s}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_body_is_never_a_next_request() {
    let h = Harness::start().await;
    let smuggled = format!(
        "GET /api/v1/candidates/smuggled HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\n\r\n"
    );
    let req = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let addr = h.addr();
    let replies = tokio::task::spawn_blocking(move || exchange(addr, req.as_bytes()))
        .await
        .unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].status, 401);
    assert_eq!(
        h.upstream.count(),
        0,
        "the body was never parsed as a request"
    );
    // Same with a refusal for the path.
    let req2 = format!(
        "POST /a/../b HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let replies = tokio::task::spawn_blocking(move || exchange(addr, req2.as_bytes()))
        .await
        .unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let h = Harness::start().await;
    // The CL says the body is 4 bytes; the chunked framing says it ends at once.
    // Whatever follows must never be read as a request.
    let req = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_WRITE}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/jobs/smuggled HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_WRITE}\r\n\r\n"
    );
    let addr = h.addr();
    let replies = tokio::task::spawn_blocking(move || exchange(addr, req.as_bytes()))
        .await
        .unwrap();
    // One answer, then the connection is closed (raw_exchange reads to EOF).
    assert_eq!(replies.len(), 1, "{replies:?}");
    let targets = h.upstream.targets();
    assert!(
        !targets.iter().any(|t| t.contains("smuggled")),
        "{targets:?}"
    );
    match replies[0].status {
        // Read as chunked (hyper's choice) and forwarded without Content-Length.
        200 => {
            let seen = h.upstream.last();
            assert_eq!(seen.target, "/api/v1/jobs");
            assert!(!seen.headers.contains_key("content-length"));
            assert_eq!(seen.body_bytes, 0, "the chunked framing ended the body");
            assert_eq!(h.upstream.count(), 1);
        }
        // Or refused outright.
        400 => assert_eq!(h.upstream.count(), 0),
        s => panic!("unexpected status {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_serves_several_requests() {
    let h = Harness::start().await;
    let one = format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\n\r\n");
    let req = format!(
        "{one}{one}GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n"
    );
    let addr = h.addr();
    let replies = tokio::task::spawn_blocking(move || exchange(addr, req.as_bytes()))
        .await
        .unwrap();
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|r| r.status == 200));
}
