//! Every status and error code of docs/http.md, against a real upstream and the real
//! gateway on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use keygate::record::Decision;
use support::*;

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.code().as_deref(), Some(code), "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let rid = r.header("x-request-id").expect("x-request-id");
    assert_eq!(r.json()["error"]["request_id"], rid);
    assert_eq!(r.json()["error"]["status"], status);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    if status == 401 {
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"keygate\"")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_requests_pass_upstream_statuses_through() {
    let h = Harness::start().await;
    let k = [("X-API-Key", SECRET_READ)];
    let r = h.get("/api/v1/candidates", &k);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.header("x-request-id").is_some());
    assert_eq!(r.json()["path"], "/api/v1/candidates");
    for code in [200u16, 201, 404, 500] {
        let r = h.get(&format!("/api/v1/candidates/status/{code}"), &k);
        assert_eq!(r.status, code);
        assert_eq!(r.header("x-upstream"), Some("yes"), "upstream's own answer");
        assert_eq!(r.body, format!("{{\"status\":{code}}}"), "body untouched");
    }
    // Bearer works too, and a kg_ key.
    let r = h.get(
        "/api/v1/jobs",
        &[("Authorization", &format!("Bearer {}", h.kg_key))],
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    // The record names the key and category.
    let recs = h.records.wait_for(6).await;
    assert_eq!(recs.len(), 6, "one record per request");
    let last = recs.last().unwrap();
    assert_eq!(last.decision, Decision::Allowed);
    assert_eq!(last.key_id().unwrap(), "kminted");
    assert_eq!(last.category.as_deref(), Some("jobs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hygiene_refusals() {
    let h = Harness::start().await;
    let k = ("X-API-Key", SECRET_READ);
    assert_error(&h.get("/api/v1/candidates/../jobs", &[k]), 400, "bad_path");
    assert_error(
        &h.get("/api/v1/candidates", &[k, ("X-API-Key", SECRET_READ)]),
        400,
        "ambiguous_api_key",
    );
    assert_error(
        &h.get(
            "/api/v1/candidates",
            &[k, ("Authorization", &format!("Bearer {SECRET_READ}"))],
        ),
        400,
        "ambiguous_api_key",
    );
    assert_error(
        &h.get(
            "/api/v1/candidates",
            &[k, ("X-HTTP-Method-Override", "DELETE")],
        ),
        400,
        "method_override_not_allowed",
    );
    // Hygiene comes first: a bad path without any key is still bad_path.
    assert_error(&h.get("/a/%2e%2e/b", &[]), 400, "bad_path");
    let r = h.request("CONNECT", "app.example:443", &[], "");
    assert_eq!(r.status, 405, "{}", r.raw);
    assert!(r.header("allow").is_some());
    assert_eq!(h.upstream.count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_refusals() {
    let h = Harness::start().await;
    assert_error(&h.get("/api/v1/candidates", &[]), 401, "missing_api_key");
    let r = h.get(
        "/api/v1/candidates",
        &[("Authorization", &format!("Bearer  {SECRET_READ}"))],
    );
    assert_error(&r, 401, "malformed_api_key");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("white space")
    );
    let r = h.get(
        "/api/v1/candidates",
        &[("X-API-Key", "abc def-0123456789abcdef0123456789")],
    );
    assert_error(&r, 401, "malformed_api_key");
    // A kg_ key with a broken checksum is caught without a lookup.
    let mut damaged = h.kg_key.clone().into_bytes();
    let i = 10;
    damaged[i] = if damaged[i] == b'A' { b'B' } else { b'A' };
    let damaged = String::from_utf8(damaged).unwrap();
    let r = h.get("/api/v1/candidates", &[("X-API-Key", &damaged)]);
    assert_error(&r, 401, "malformed_api_key");
    assert!(
        !r.raw.contains(&damaged[3..15]),
        "the presented value is not echoed"
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("copied whole")
    );
    let truncated = &h.kg_key[..h.kg_key.len() - 3];
    assert_error(
        &h.get("/api/v1/candidates", &[("X-API-Key", truncated)]),
        401,
        "malformed_api_key",
    );
    // A well-formed kg_ key that is not in the file.
    let unknown = keygate::mint().unwrap();
    assert_error(
        &h.get("/api/v1/candidates", &[("X-API-Key", unknown.expose())]),
        401,
        "invalid_api_key",
    );
    assert_error(
        &h.get(
            "/api/v1/candidates",
            &[("X-API-Key", "no-such-operator-secret-0123456789abcdef")],
        ),
        401,
        "invalid_api_key",
    );
    let r = h.get("/api/v1/candidates", &[("X-API-Key", SECRET_EXPIRED)]);
    assert_error(&r, 401, "expired_api_key");
    // Basic auth is not a key: still missing.
    assert_error(
        &h.get(
            "/api/v1/candidates",
            &[("Authorization", "Basic dXNlcjpwYXNz")],
        ),
        401,
        "missing_api_key",
    );
    // Every one was recorded as a failed authentication.
    let recs = h.records.wait_for(9).await;
    assert_eq!(recs.len(), 9, "one record per request");
    for rec in recs {
        assert_eq!(rec.status, 401);
        assert_eq!(rec.decision, Decision::Unauthenticated);
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_switch_off_refuses_everything_but_public_paths() {
    let h = Harness::start().await;
    TestKeys::standard(&h.kg_key)
        .api_enabled(false)
        .write(&h.dir);
    h.gateway.reload().unwrap();
    let r = h.get("/api/v1/candidates", &[("X-API-Key", SECRET_READ)]);
    assert_error(&r, 401, "api_disabled");
    // Even without a key: the switch comes before the key.
    assert_error(&h.get("/api/v1/candidates", &[]), 401, "api_disabled");
    let r = h.get("/healthz", &[]);
    assert_eq!(r.status, 200, "public paths stay open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permission_refusals() {
    let h = Harness::start().await;
    let r = h.request(
        "POST",
        "/api/v1/candidates",
        &[("X-API-Key", SECRET_READ)],
        "{}",
    );
    assert_error(&r, 403, "insufficient_permission");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(
        msg,
        "key 'Zapier' has read access to 'candidates'; POST needs write"
    );
    let r = h.get("/api/v1/jobs", &[("X-API-Key", SECRET_READ)]);
    assert_error(&r, 403, "insufficient_permission");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no access")
    );
    let r = h.get("/api/v1/other", &[("X-API-Key", SECRET_ALL)]);
    assert_error(&r, 403, "path_not_allowed");
    let r = h.request(
        "TRACE",
        "/api/v1/candidates",
        &[("X-API-Key", SECRET_READ)],
        "",
    );
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(
        r.header("allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    );
    // Write includes read; DELETE needs write.
    let w = ("X-API-Key", SECRET_WRITE);
    assert_eq!(h.get("/api/v1/jobs/7", &[w]).status, 200);
    assert_eq!(h.request("DELETE", "/api/v1/jobs/7", &[w], "").status, 200);
    assert_error(
        &h.get("/api/v1/candidates", &[w]),
        403,
        "insufficient_permission",
    );
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmatched_allow_any_key_uses_star_level() {
    let h = Harness::start_with(&format!("{ROUTES}  unmatched: allow_any_key\n")).await;
    // Reporting has "*": read.
    assert_eq!(
        h.get("/anything/else", &[("X-API-Key", SECRET_ALL)]).status,
        200
    );
    let r = h.request("POST", "/anything/else", &[("X-API-Key", SECRET_ALL)], "x");
    assert_error(&r, 403, "insufficient_permission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_429_with_retry_after() {
    let h = Harness::start().await;
    let k = [("X-API-Key", SECRET_SLOW)];
    assert_eq!(h.get("/api/v1/jobs", &k).status, 200);
    assert_eq!(h.get("/api/v1/jobs", &k).status, 200);
    let r = h.get("/api/v1/jobs", &k);
    assert_error(&r, 429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other keys are not affected.
    assert_eq!(
        h.get("/api/v1/jobs", &[("X-API-Key", SECRET_ALL)]).status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn body_over_limit_is_413() {
    let h = Harness::start_with("limits:\n  max_body_bytes: 1KiB\n").await;
    let k = ("X-API-Key", SECRET_WRITE);
    let big = "x".repeat(2048);
    // Declared length over the limit: refused before anything is sent upstream.
    let r = h.request("POST", "/api/v1/jobs", &[k], &big);
    assert_error(&r, 413, "body_too_large");
    assert_eq!(h.upstream.count(), 0);
    // Chunked body that grows past the limit.
    let mut req = String::from(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n",
    );
    req.push_str(&format!("X-API-Key: {SECRET_WRITE}\r\n\r\n"));
    for _ in 0..4 {
        req.push_str(&format!("200\r\n{}\r\n", "y".repeat(512)));
    }
    req.push_str("0\r\n\r\n");
    let r = Reply::parse(&h.raw(&req));
    assert_error(&r, 413, "body_too_large");
    // At the limit is fine.
    let ok = "z".repeat(1024);
    let r = h.request("POST", "/api/v1/jobs", &[k], &ok);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json()["bytes"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_down_is_502() {
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let up = Upstream {
        addr,
        seen: Default::default(),
    };
    let h = Harness::start_at(up, "").await;
    let r = h.get("/api/v1/candidates", &[("X-API-Key", SECRET_READ)]);
    assert_error(&r, 502, "upstream_unavailable");
    let rec = h.records.wait_for(1).await;
    assert_eq!(rec[0].decision, Decision::UpstreamError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_upstream_is_504() {
    let h = Harness::start_with("timeouts:\n  upstream_response: 300ms\n").await;
    let started = std::time::Instant::now();
    let r = h.get(
        "/api/v1/candidates/slow/3000",
        &[("X-API-Key", SECRET_READ)],
    );
    assert_error(&r, 504, "upstream_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // A fast one on the same gateway is fine.
    let r = h.get("/api/v1/candidates/slow/10", &[("X-API-Key", SECRET_READ)]);
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids() {
    let h = Harness::start().await;
    let r = h.get(
        "/api/v1/candidates",
        &[("X-API-Key", SECRET_READ), ("X-Request-Id", "trace-42.a_b")],
    );
    assert_eq!(r.header("x-request-id"), Some("trace-42.a_b"));
    assert_eq!(h.upstream.last().headers["x-request-id"], "trace-42.a_b");
    let r = h.get(
        "/api/v1/candidates",
        &[("X-API-Key", SECRET_READ), ("X-Request-Id", "bad id!")],
    );
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 26, "a new ULID");
    assert_eq!(h.upstream.last().headers["x-request-id"], id);
    let r = h.get("/nowhere", &[("X-Request-Id", "err-1")]);
    assert_eq!(r.json()["error"]["request_id"], "err-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_setting() {
    let pre = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let h = Harness::start().await;
    let r = h.request("OPTIONS", "/api/v1/jobs", &pre, "");
    assert_error(&r, 401, "missing_api_key");
    let h = Harness::start_with(&format!("{ROUTES}  preflight: forward\n")).await;
    let r = h.request("OPTIONS", "/api/v1/jobs", &pre, "");
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(h.upstream.last().method, "OPTIONS");
    // OPTIONS with a key needs read.
    let r = h.request("OPTIONS", "/api/v1/jobs", &[("X-API-Key", SECRET_READ)], "");
    assert_error(&r, 403, "insufficient_permission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_prior_knowledge() {
    let h = Harness::start().await;
    let mut c = h2_client(h.addr()).await;
    let req = http::Request::builder()
        .uri("http://app.example:8080/api/v1/candidates//7")
        .header("x-api-key", SECRET_READ)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = c.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let seen = h.upstream.last();
    assert_eq!(seen.target, "/api/v1/candidates/7");
    assert_eq!(
        seen.headers["host"], "app.example:8080",
        ":authority becomes Host"
    );
    let req = http::Request::builder()
        .uri("http://app.example/api/v1/jobs")
        .header("x-api-key", SECRET_READ)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = c.send_request(req).await.unwrap();
    assert_eq!(res.status(), 403);
}
