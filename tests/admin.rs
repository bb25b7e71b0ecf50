//! The admin listener (docs/admin-api.md): Host check, token, the JSON API end to
//! end against an in-process gateway (real listeners, real files), the console and
//! the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

const TOKEN: &str = "admin-token-for-tests-0123456789";

struct Admin {
    gw: keygate::Gateway,
    dir: TempDir,
    _upstream: Upstream,
}

async fn start(token: Option<&str>) -> Admin {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let cfg = dir.write("config.yaml", &config_yaml(upstream.addr, ROUTES));
    let options = keygate::GatewayOptions {
        admin_token: token.map(String::from),
        ..keygate::GatewayOptions::default()
    };
    let gw = keygate::Gateway::start(&cfg, options).await.unwrap();
    Admin {
        gw,
        dir,
        _upstream: upstream,
    }
}

/// One admin request; `host` defaults to "localhost".
fn call(a: &Admin, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    call_host(a, method, path, token, body, "localhost")
}

fn call_host(
    a: &Admin,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    host: &str,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    Reply::parse(&raw_exchange(a.gw.admin_addr, req.as_bytes()))
}

fn data_status(a: &Admin, key: &str, path: &str) -> (u16, Option<String>) {
    let r = Reply::parse(&raw_exchange(
        a.gw.public_addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    ));
    (r.status, r.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_check_token_and_pages() {
    let a = start(Some(TOKEN)).await;
    // DNS rebinding guard.
    let r = call_host(
        &a,
        "GET",
        "/admin/v1/keys",
        Some(TOKEN),
        None,
        "evil.example",
    );
    assert_eq!(r.status, 421, "{}", r.raw);
    assert_eq!(
        call_host(&a, "GET", "/", None, None, "127.0.0.1:9180").status,
        200
    );
    // Console and OpenAPI need no token.
    let console = call(&a, "GET", "/", None, None);
    assert_eq!(console.status, 200);
    assert!(
        console
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(console.body.contains("/console.js"));
    assert!(
        call(&a, "GET", "/console.js", None, None)
            .body
            .contains("/admin/v1")
    );
    let spec = call(&a, "GET", "/admin/v1/openapi.json", None, None);
    assert_eq!(spec.status, 200);
    assert!(spec.json()["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec.json()["paths"]["/keys/{id}/reveal"].is_object());
    // Token: missing or wrong → 401 with the error body; then limited.
    let r = call(&a, "GET", "/admin/v1/keys", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.code().as_deref(), Some("unauthorized"));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            call(
                &a,
                "GET",
                "/admin/v1/keys",
                Some("wrong-token-000000000000"),
                None,
            )
            .status,
        );
    }
    assert!(
        statuses.contains(&429),
        "failed attempts are limited: {statuses:?}"
    );
    assert_eq!(
        call(&a, "GET", "/admin/v1/keys", Some(TOKEN), None).status,
        200,
        "the right token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_off() {
    let a = start(None).await;
    let r = call(
        &a,
        "GET",
        "/admin/v1/keys",
        Some("anything-at-all-000000"),
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.code().as_deref(), Some("admin_api_disabled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_through_the_api() {
    let a = start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    // Create.
    let r = call(
        &a,
        "POST",
        "/admin/v1/keys",
        t,
        Some(
            r#"{"name":"Interview Tool","permissions":{"candidates":"write"},"rate_limit":{"per_second":50,"burst":100}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.raw);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("kg_") && key.len() == 41);
    assert_eq!(
        data_status(&a, &key, "/api/v1/candidates").0,
        200,
        "effective at once"
    );
    // List and get show it masked.
    let list = call(&a, "GET", "/admin/v1/keys", t, None).json();
    let entry = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(entry["key"].as_str().unwrap().ends_with("••••••••"));
    assert!(
        !call(&a, "GET", "/admin/v1/keys", t, None)
            .body
            .contains(&key)
    );
    assert_eq!(
        entry["last_used"].as_str().map(|s| s.ends_with('Z')),
        Some(true)
    );
    let one = call(&a, "GET", &format!("/admin/v1/keys/{id}"), t, None);
    assert_eq!(one.json()["permissions"]["candidates"], "write");
    // Patch: the permission map is replaced.
    let r = call(
        &a,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        t,
        Some(r#"{"permissions":{"jobs":"read"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        data_status(&a, &key, "/api/v1/candidates").1.as_deref(),
        Some("insufficient_permission")
    );
    assert_eq!(data_status(&a, &key, "/api/v1/jobs").0, 200);
    // Bad input names the field.
    let r = call(
        &a,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        t,
        Some(r#"{"permissions":{"jobs":"admin"}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permissions.jobs"),
        "{}",
        r.body
    );
    let r = call(
        &a,
        "POST",
        "/admin/v1/keys",
        t,
        Some(r#"{"name":"X","permisions":{}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permisions"),
        "{}",
        r.body
    );
    // A name in use (ignoring case): 409 name_taken naming the key, no internals.
    let r = call(
        &a,
        "POST",
        "/admin/v1/keys",
        t,
        Some(r#"{"name":"zapier"}"#),
    );
    assert_eq!(r.status, 409, "duplicate name: {}", r.body);
    assert_eq!(r.code().as_deref(), Some("name_taken"));
    assert_eq!(
        r.json()["error"]["message"],
        "a key named Zapier already exists"
    );
    let r = call(
        &a,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        t,
        Some(r#"{"name":"ZAPIER"}"#),
    );
    assert_eq!(r.status, 409, "rename onto a used name: {}", r.body);
    assert_eq!(r.code().as_deref(), Some("name_taken"));
    // Renaming a key to its own name in another case is fine.
    let r = call(
        &a,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        t,
        Some(r#"{"name":"interview tool"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // PATCH: a field left out is kept, `null` clears, an unknown field is named.
    let patch = |body: &str| call(&a, "PATCH", &format!("/admin/v1/keys/{id}"), t, Some(body));
    let r = patch(r#"{"rate_limit":{"per_second":5,"burst":7},"expires_at":"2031-01-01"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rate_limit"]["burst"], 7, "{}", r.body);
    let r = patch(r#"{"name":"interview tool"}"#);
    assert_eq!(
        r.json()["rate_limit"]["burst"],
        7,
        "kept when left out: {}",
        r.body
    );
    assert!(r.json()["expires_at"].is_string(), "{}", r.body);
    let r = patch(r#"{"rate_limit":null,"expires_at":null}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["rate_limit"].is_null(), "cleared: {}", r.body);
    assert!(r.json()["expires_at"].is_null(), "cleared: {}", r.body);
    let r = patch(r#"{"name":null}"#);
    assert_eq!(r.status, 400, "a null name is refused: {}", r.body);
    // Only one JSON object (serde would read a struct from `[]`, schemathesis ST201).
    for body in ["[]", r#"["x"]"#, r#"{"name":"a"} {"name":"b"}"#, "null"] {
        let r = patch(body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let r = patch(r#"{"colour":"red"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("colour"), "names the field: {}", r.body);
    // Reveal of an unknown id: 404, not 500.
    let r = call(&a, "POST", "/admin/v1/keys/knosuchkey/reveal", t, None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.code().as_deref(), Some("key_not_found"));
    // Reveal: operator-supplied yes; made without a seal key: 409.
    let r = call(&a, "POST", "/admin/v1/keys/kzapier/reveal", t, None);
    assert_eq!(r.json()["key"], SECRET_READ);
    let r = call(&a, "POST", &format!("/admin/v1/keys/{id}/reveal"), t, None);
    assert_eq!(r.status, 409);
    assert_eq!(r.code().as_deref(), Some("not_revealable"));
    // Delete.
    let r = call(&a, "DELETE", &format!("/admin/v1/keys/{id}"), t, None);
    assert_eq!(r.status, 204);
    assert_eq!(
        data_status(&a, &key, "/api/v1/jobs").1.as_deref(),
        Some("invalid_api_key")
    );
    assert_eq!(
        call(&a, "GET", &format!("/admin/v1/keys/{id}"), t, None).status,
        404
    );
    // Audit: admin actor, no secrets.
    let audit = std::fs::read_to_string(a.dir.path().join("data/audit.log")).unwrap();
    assert!(audit.contains("\"actor\":\"admin:127.0.0.1\""));
    assert!(!audit.contains(&key) && !audit.contains(SECRET_READ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_categories_logs_and_reload() {
    let a = start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    assert_eq!(
        call(&a, "GET", "/admin/v1/api", t, None).json()["enabled"],
        true
    );
    let r = call(&a, "PUT", "/admin/v1/api", t, Some(r#"{"enabled":false}"#));
    assert_eq!(r.status, 200);
    assert_eq!(
        data_status(&a, SECRET_READ, "/api/v1/candidates")
            .1
            .as_deref(),
        Some("api_disabled")
    );
    call(&a, "PUT", "/admin/v1/api", t, Some(r#"{"enabled":true}"#));
    assert_eq!(data_status(&a, SECRET_READ, "/api/v1/candidates").0, 200);
    let cats = call(&a, "GET", "/admin/v1/categories", t, None).json();
    let names: Vec<&str> = cats
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["candidates", "jobs"]);
    // Logs, newest first, with filters and a cursor.
    for _ in 0..3 {
        data_status(&a, SECRET_READ, "/api/v1/jobs");
    }
    let logs = |q: &str, want: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let v = call(&a, "GET", &format!("/admin/v1/logs{q}"), t, None).json();
            // The log is written in batches: wait for the records asked for.
            if v["records"].as_array().is_some_and(|r| r.len() >= want)
                || std::time::Instant::now() > deadline
            {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // All three written first: paging over a log still being written would see
    // the third as newer than the first page, not older.
    let all = logs("?path=jobs&status=4xx&limit=10", 3);
    assert_eq!(all["records"].as_array().unwrap().len(), 3, "{all}");
    let page = logs("?path=JOBS&status=4xx&limit=2&since=", 2);
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{page}");
    assert!(
        recs.iter()
            .all(|r| r["status"] == 403 && r["path"] == "/api/v1/jobs")
    );
    assert!(
        recs.iter()
            .all(|r| r["reason"] == "insufficient_permission"),
        "each record has its refusal reason: {page}"
    );
    let next = page["next_before"].as_str().unwrap();
    let page2 = logs(&format!("?path=jobs&status=4xx&limit=2&before={next}"), 1);
    assert_eq!(page2["records"].as_array().unwrap().len(), 1, "{page2}");
    let r = call(&a, "GET", "/admin/v1/logs?colour=red", t, None);
    assert_eq!(r.status, 400);
    // Reload: a broken config is refused and named.
    let cfg = a.dir.path().join("config.yaml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, "upstream: [broken\n").unwrap();
    let r = call(&a, "POST", "/admin/v1/reload", t, None);
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config.yaml")
    );
    std::fs::write(&cfg, good).unwrap();
    assert_eq!(call(&a, "POST", "/admin/v1/reload", t, None).status, 200);
    assert_eq!(call(&a, "DELETE", "/admin/v1/api", t, None).status, 405);
}

/// A data-plane request with a chosen `X-Request-Id`.
fn data_with_id(a: &Admin, key: &str, path: &str, rid: &str) -> u16 {
    Reply::parse(&raw_exchange(
        a.gw.public_addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\nX-Request-Id: {rid}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    ))
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_cursor_is_opaque_and_pages_through_reused_request_ids() {
    let a = start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    // A client that sends the same X-Request-Id every time.
    for _ in 0..5 {
        data_with_id(&a, SECRET_READ, "/api/v1/candidates", "same-id-every-time");
    }
    data_with_id(&a, "kg_wrong", "/api/v1/candidates", "same-id-every-time");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = call(&a, "GET", "/admin/v1/logs?limit=1000", t, None).json();
        if v["records"].as_array().is_some_and(|r| r.len() >= 6) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records not written: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    let mut reasons = Vec::new();
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("?limit=2&before={c}"),
            None => "?limit=2".to_string(),
        };
        let page = call(&a, "GET", &format!("/admin/v1/logs{q}"), t, None).json();
        let recs = page["records"].as_array().unwrap();
        seen += recs.len();
        reasons.extend(recs.iter().map(|r| r["reason"].clone()));
        match page["next_before"].as_str() {
            Some(c) => {
                assert!(!c.contains("same-id"), "the cursor is not the request id");
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(seen, 6, "every record exactly once");
    assert_eq!(
        reasons[0], "malformed_api_key",
        "newest first, with its reason"
    );
    assert!(reasons[1..].iter().all(|r| r.is_null()), "forwarded: null");
    let r = call(
        &a,
        "GET",
        "/admin/v1/logs?before=same-id-every-time",
        t,
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_pages_and_searches() {
    let a = start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    for i in 0..5 {
        let body = format!(r#"{{"name":"Paged {i}","permissions":{{"jobs":"read"}}}}"#);
        assert_eq!(
            call(&a, "POST", "/admin/v1/keys", t, Some(&body)).status,
            201
        );
    }
    let all = call(&a, "GET", "/admin/v1/keys", t, None).json();
    let total = all["keys"].as_array().unwrap().len();
    assert!(total >= 5 && all["next_after"].is_null(), "{all}");
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = after
            .as_ref()
            .map_or("?limit=2".to_string(), |c| format!("?limit=2&after={c}"));
        let page = call(&a, "GET", &format!("/admin/v1/keys{q}"), t, None).json();
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 2);
        ids.extend(keys.iter().map(|k| k["id"].as_str().unwrap().to_string()));
        match page["next_after"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "id order, each key once");
    assert_eq!(ids.len(), total);
    let found = call(&a, "GET", "/admin/v1/keys?q=PAGED%203", t, None).json();
    let names: Vec<&str> = found["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Paged 3"]);
    // A burst governor cannot hold is refused, not a panic.
    let r = call(
        &a,
        "POST",
        "/admin/v1/keys",
        t,
        Some(
            r#"{"name":"Huge","permissions":{"jobs":"read"},"rate_limit":{"per_minute":1,"burst":585462134}}"#,
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        call(&a, "GET", "/admin/v1/logs?limit=", t, None).status,
        400
    );
    assert_eq!(
        call(
            &a,
            "GET",
            "/admin/v1/logs?since=9223372036854775807s",
            t,
            None
        )
        .status,
        400
    );
    assert_eq!(
        call(&a, "GET", "/admin/v1/keys?q=&after=", t, None).status,
        200
    );
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=abc",
        "?limit=",
        "?colour=red",
    ] {
        let r = call(&a, "GET", &format!("/admin/v1/keys{bad}"), t, None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_host_is_400_and_every_answer_has_nosniff() {
    let a = start(Some(TOKEN)).await;
    let raw = |req: &str| Reply::parse(&raw_exchange(a.gw.admin_addr, req.as_bytes()));
    for (what, req) in [
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        (
            "userinfo",
            "GET / HTTP/1.1\r\nHost: localhost:80@evil\r\nConnection: close\r\n\r\n",
        ),
        (
            "non-numeric port",
            "GET / HTTP/1.1\r\nHost: localhost:http\r\nConnection: close\r\n\r\n",
        ),
        (
            "port out of range",
            "GET / HTTP/1.1\r\nHost: localhost:65536\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute-form target naming another host",
            "GET http://evil.example/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let r = raw(req);
        assert_eq!(r.status, 400, "{what}: {}", r.raw);
        assert_eq!(r.code().as_deref(), Some("bad_host"), "{what}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let ok = raw(
        "GET http://localhost:9180/ HTTP/1.1\r\nHost: localhost:9180\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.status, 200, "{}", ok.raw);
    for (path, token) in [
        ("/", None),
        ("/console.js", None),
        ("/console.css", None),
        ("/admin/v1/openapi.json", None),
        ("/admin/v1/keys", Some(TOKEN)),
        ("/admin/v1/keys", None),
        ("/nowhere", None),
    ] {
        let r = call(&a, "GET", path, token, None);
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}: {}",
            r.raw
        );
    }
    let page = call(&a, "GET", "/", None, None);
    let csp = page.header("content-security-policy").unwrap();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!page.body.contains("<script>") && page.body.contains("console.js"));
    assert_eq!(
        call(&a, "GET", "/console.js", None, None)
            .header("content-type")
            .map(|c| c.starts_with("text/javascript")),
        Some(true)
    );
}

/// Every documented path and method is answered by a handler (not `404 not_found`
/// or `405`); the other direction (every served endpoint documented) is a unit test
/// in the admin module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let a = start(Some(TOKEN)).await;
    let spec = call(&a, "GET", "/admin/v1/openapi.json", None, None).json();
    let mut n = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let m = method.to_uppercase();
            let concrete = format!("/admin/v1{}", path.replace("{id}", "kzapier"));
            // Read-only answers only: a body that does not parse is refused before
            // anything changes, and DELETE/reload are harmless on a test gateway.
            let body = matches!(m.as_str(), "POST" | "PUT" | "PATCH").then_some("{\"x\":");
            let r = call(&a, &m, &concrete, Some(TOKEN), body);
            assert_ne!(r.code().as_deref(), Some("not_found"), "{m} {concrete}");
            assert_ne!(r.status, 405, "{m} {concrete}");
            assert!(r.status < 500, "{m} {concrete}: {}", r.raw);
            n += 1;
        }
    }
    assert!(n >= 12, "{n} operations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_broken_keys_file() {
    let a = start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    let s = call(&a, "GET", "/admin/v1/status", t, None).json();
    assert_eq!(s["keys_file"]["loads"], true, "{s}");
    assert!(s["keys_file"]["error"].is_null());
    let enforced = s["enforced"]["keys"].as_u64().unwrap();
    std::fs::write(a.dir.path().join("keys.yaml"), "keys: [broken\n").unwrap();
    let s = call(&a, "GET", "/admin/v1/status", t, None).json();
    assert_eq!(s["keys_file"]["loads"], false, "{s}");
    assert!(
        s["keys_file"]["error"]
            .as_str()
            .unwrap()
            .contains("keys.yaml"),
        "{s}"
    );
    assert_eq!(
        s["enforced"]["keys"].as_u64(),
        Some(enforced),
        "the last good keys"
    );
    assert_eq!(data_status(&a, SECRET_READ, "/api/v1/candidates").0, 200);
}
