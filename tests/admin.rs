//! The admin listener (SPEC §7): Host check, token, the JSON API end to end against
//! the real binary, the console and the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

const TOKEN: &str = "admin-token-for-tests-0123456789";

struct Admin {
    gw: Spawned,
    dir: TempDir,
    _upstream: Upstream,
}

async fn start(token: Option<&str>) -> Admin {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let cfg = dir.write("config.yaml", &config_yaml(upstream.addr, ROUTES));
    let env: Vec<(&str, &str)> = token
        .map(|t| vec![("KEYGATE_ADMIN_TOKEN", t)])
        .unwrap_or_default();
    let gw = Spawned::start_with_env(&cfg, &env);
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
    Reply::parse(&raw_exchange(a.gw.admin, req.as_bytes()))
}

fn data_status(a: &Admin, key: &str, path: &str) -> (u16, Option<String>) {
    let r = Reply::parse(&raw_exchange(
        a.gw.public,
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
    assert!(console.body.contains("/admin/v1/"));
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
    let entry = list
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
    let r = call(
        &a,
        "POST",
        "/admin/v1/keys",
        t,
        Some(r#"{"name":"zapier"}"#),
    );
    assert_eq!(r.status, 400, "duplicate name: {}", r.body);
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
    let logs = |q: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let v = call(&a, "GET", &format!("/admin/v1/logs{q}"), t, None).json();
            if v["records"].as_array().is_some_and(|r| !r.is_empty())
                || std::time::Instant::now() > deadline
            {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let page = logs("?path=jobs&status=4xx&limit=2");
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{page}");
    assert!(
        recs.iter()
            .all(|r| r["status"] == 403 && r["path"] == "/api/v1/jobs")
    );
    let next = page["next_before"].as_str().unwrap();
    let page2 = logs(&format!("?path=jobs&status=4xx&limit=2&before={next}"));
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
