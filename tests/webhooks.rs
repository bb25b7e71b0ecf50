//! Webhooks (docs/webhooks.md) end to end: the real `keygate` binary, a real receiver on
//! 127.0.0.1:0, the admin API. Signatures are checked here with ring and base64
//! directly (not keygate's signing code), and by the `standardwebhooks` Python
//! package in the ignored test that `.ci/run` runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// "Nothing more arrives": after the expected deliveries, how long no further one
/// (a duplicate, a storm, a wrong endpoint) may appear. A fixed window by nature.
const QUIET: Duration = Duration::from_millis(1200);
/// How long the receiver stays down after a restart, so that more attempts are made
/// (and must keep the schedule) before it comes back.
const STILL_DOWN: Duration = Duration::from_millis(1500);
/// The worker's housekeeping period (500 ms) plus margin: an endpoint written by the
/// CLI is seen by the running gateway after it.
const WORKER_PICKS_UP: Duration = Duration::from_millis(700);

use serde_json::{Value, json};
use support::receiver::*;
use support::*;

const TOKEN: &str = "admin-token-for-webhook-tests-0123";

// ---------------------------------------------------------------- the gateway

struct Gw {
    gw: Spawned,
    dir: TempDir,
    _upstream: Upstream,
    cfg: std::path::PathBuf,
}

const FAST: &str = r#"timeouts:
  shutdown_delay: 0s
  shutdown: 1s
"#;

async fn start(webhooks: &str) -> Gw {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let cfg = dir.write(
        "config.yaml",
        &config_yaml(upstream.addr, &format!("{ROUTES}{FAST}{webhooks}")),
    );
    let gw = Spawned::start_with_env(&cfg, &[("KEYGATE_ADMIN_TOKEN", TOKEN)]);
    Gw {
        gw,
        dir,
        _upstream: upstream,
        cfg,
    }
}

impl Gw {
    fn restart(&mut self) {
        // SIGKILL: nothing is flushed at exit, so what survives was on disk.
        let _ = self.gw.child.kill();
        let _ = self.gw.child.wait();
        self.gw = Spawned::start_with_env(&self.cfg, &[("KEYGATE_ADMIN_TOKEN", TOKEN)]);
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n"
        );
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        Reply::parse(&raw_exchange(self.gw.admin, req.as_bytes()))
    }

    fn call(&self, method: &str, path: &str, key: &str) -> Reply {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\nX-API-Key: {key}\r\nContent-Length: 0\r\n\r\n"
        );
        Reply::parse(&raw_exchange(self.gw.public, req.as_bytes()))
    }

    /// Creates an endpoint; returns (id, secret).
    fn endpoint(&self, url: &str, events: &[&str]) -> (String, String) {
        let r = self.admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({ "url": url, "events": events, "description": "tests" })),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }

    fn deliveries(&self, id: &str) -> Value {
        let r = self.admin("GET", &format!("/admin/v1/webhooks/{id}/deliveries"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, &mut f).await,
        "timed out waiting for {what}"
    );
}

fn types(hits: &[Hit]) -> BTreeSet<String> {
    hits.iter().map(Hit::kind).collect()
}

/// Every event type of docs/webhooks.md, caused through the public API and the admin
/// API. Returns the types expected.
async fn cause_every_event(g: &Gw, endpoint_id: &str) -> BTreeSet<String> {
    // webhook.test
    let r = g.admin(
        "POST",
        &format!("/admin/v1/webhooks/{endpoint_id}/test"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // key.created
    let r = g.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"name": "Hook Writer", "permissions": {"jobs": "write"}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().unwrap().to_string();
    let kid = r.json()["id"].as_str().unwrap().to_string();
    // <category>.created|updated|deleted: 2xx writes through keygate
    assert_eq!(g.call("POST", "/api/v1/jobs", &key).status, 200);
    assert_eq!(g.call("PUT", "/api/v1/jobs/7", &key).status, 200);
    assert_eq!(g.call("PATCH", "/api/v1/jobs/7", &key).status, 200);
    assert_eq!(g.call("DELETE", "/api/v1/jobs/7", &key).status, 200);
    // a failed write is no event
    assert_eq!(g.call("POST", "/api/v1/jobs/status/500", &key).status, 500);
    // key.failing: the key loses write, the integration keeps posting
    let r = g.admin(
        "PATCH",
        &format!("/admin/v1/keys/{kid}"),
        Some(json!({"permissions": {"jobs": "read"}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..6 {
        assert_eq!(g.call("POST", "/api/v1/jobs", &key).status, 403);
    }
    // key.recovered: write given back (key.updated both times)
    let r = g.admin(
        "PATCH",
        &format!("/admin/v1/keys/{kid}"),
        Some(json!({"permissions": {"jobs": "write"}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(g.call("GET", "/api/v1/jobs", &key).status, 200);
    // api.disabled / api.enabled
    for on in [false, true] {
        let r = g.admin("PUT", "/admin/v1/api", Some(json!({ "enabled": on })));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // key.deleted
    let r = g.admin("DELETE", &format!("/admin/v1/keys/{kid}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    // key.expired: a key that expires in a moment
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = g.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"name": "Short Lived", "permissions": {"*": "read"}, "expires_at": soon})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    [
        "webhook.test",
        "key.created",
        "key.updated",
        "key.deleted",
        "key.expired",
        "api.enabled",
        "api.disabled",
        "key.failing",
        "key.recovered",
        "jobs.created",
        "jobs.updated",
        "jobs.deleted",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

const PRIVATE_OK: &str = "webhooks:\n  allow_private_targets: true\n";

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_delivered_signed() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let (id, secret) = g.endpoint(&rx.url("/hooks"), &["*"]);
    assert!(secret.starts_with("whsec_"));
    let want = cause_every_event(&g, &id).await;
    wait_until("every event type", Duration::from_secs(30), || {
        types(&rx.delivered()).is_superset(&want)
    })
    .await;
    let hits = rx.delivered();
    for h in &hits {
        assert!(verify(&secret, h), "bad signature on {}", h.body);
        assert!(h.id.starts_with("msg_"), "{}", h.id);
        let ts: i64 = h.timestamp.parse().unwrap();
        assert!((ts - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 60);
        let v = h.json();
        assert!(v["timestamp"].is_string() && v["data"].is_object(), "{v}");
        assert!(
            !h.body.contains("kg_"),
            "a key event carries no key: {}",
            h.body
        );
    }
    let of = |t: &str| hits.iter().filter(|h| h.kind() == t).collect::<Vec<_>>();
    // Exactly one failing episode and one recovery.
    assert_eq!(of("key.failing").len(), 1);
    assert_eq!(of("key.recovered").len(), 1);
    let failing = of("key.failing")[0].json();
    assert_eq!(failing["data"]["key"]["name"], "Hook Writer");
    assert!(
        failing["data"]["likely_cause"]
            .as_str()
            .unwrap()
            .contains("missing permission for POST /api/v1/jobs"),
        "{failing}"
    );
    let created = of("key.created")[0].json();
    assert_eq!(created["data"]["key"]["permissions"]["jobs"], "write");
    assert!(
        created["data"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:"),
        "{created}"
    );
    let write = of("jobs.created")[0].json();
    assert_eq!(write["data"]["method"], "POST");
    assert_eq!(write["data"]["path"], "/api/v1/jobs");
    assert_eq!(write["data"]["key"]["name"], "Hook Writer");
    assert!(
        write["data"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(of("jobs.created").len(), 1, "a 500 is no write event");
    // The delivery log and the metrics saw them.
    let log = g.deliveries(&id);
    assert!(log["deliveries"].as_array().unwrap().len() >= want.len());
    assert_eq!(log["deliveries"][0]["result"], "delivered");
    assert!(
        log["deliveries"][0]["body"].is_null(),
        "the log view has no body"
    );
    assert!(
        metric(
            g.gw.metrics,
            "keygate_webhook_deliveries_total{result=\"success\"}"
        ) >= want.len() as f64
    );
    assert!(metrics_text(g.gw.metrics).contains("keygate_webhook_queue_depth 0"));
    // Audited like key changes.
    let audit = std::fs::read_to_string(g.dir.path().join("data/audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"webhook.create\"") && audit.contains(&id));
    assert!(!audit.contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_select_events_and_endpoints_are_managed() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let (keys_only, _) = g.endpoint(&rx.url("/keys"), &["key.created"]);
    let r = g.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(json!({"url": rx.url("/x"), "events": ["nope.thing"]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("events[0]"), "{}", r.body);
    let r = g.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(json!({"url": rx.url("/x"), "events": ["*"], "colour": "red"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // The list never shows a secret.
    let r = g.admin("GET", "/admin/v1/webhooks", None);
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("whsec_"), "{}", r.body);
    // Only key.created reaches that endpoint; api.disabled does not.
    g.admin("PUT", "/admin/v1/api", Some(json!({"enabled": false})));
    g.admin("PUT", "/admin/v1/api", Some(json!({"enabled": true})));
    let r = g.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"name": "Sub", "permissions": {"*": "read"}})),
    );
    assert_eq!(r.status, 201);
    wait_until("key.created", Duration::from_secs(20), || {
        !rx.delivered().is_empty()
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        types(&rx.delivered()),
        BTreeSet::from(["key.created".to_string()])
    );
    // Disabled: nothing more arrives. Deleted: 404.
    let r = g.admin(
        "PATCH",
        &format!("/admin/v1/webhooks/{keys_only}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["enabled"], false);
    g.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"name": "Sub Two", "permissions": {"*": "read"}})),
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(rx.delivered().len(), 1);
    let r = g.admin("DELETE", &format!("/admin/v1/webhooks/{keys_only}"), None);
    assert_eq!(r.status, 204);
    let r = g.admin("GET", &format!("/admin/v1/webhooks/{keys_only}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.code().as_deref(), Some("webhook_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_signs_with_old_and_new() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let (id, old) = g.endpoint(&rx.url("/hooks"), &["webhook.test"]);
    let r = g.admin(
        "POST",
        &format!("/admin/v1/webhooks/{id}/rotate-secret"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(r.json()["previous_secret_until"].is_string());
    g.admin("POST", &format!("/admin/v1/webhooks/{id}/test"), None);
    wait_until("the test event", Duration::from_secs(20), || {
        !rx.delivered().is_empty()
    })
    .await;
    let h = &rx.delivered()[0];
    assert_eq!(h.signature.split(' ').count(), 2, "{}", h.signature);
    assert!(verify(&old, h) && verify(&new, h));
}

/// Acceptance 2: the receiver is down, keygate is killed and restarted meanwhile;
/// when the receiver is back every event arrives, under the id it had from the
/// start, and the attempts follow the (compressed) retry schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_and_gateway_restarted_every_event_arrives_once_per_id() {
    let schedule_ms = [300u64, 600, 1200, 2400, 4800, 9600, 9600, 9600];
    let cfg = format!(
        "webhooks:\n  allow_private_targets: true\n  timeout: 1s\n  retry_schedule: [{}]\n",
        schedule_ms
            .iter()
            .map(|m| format!("{m}ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rx = Receiver::start().await;
    rx.set(Mode::Down);
    let mut g = start(&cfg).await;
    let (id, secret) = g.endpoint(&rx.url("/hooks"), &["key.*"]);
    let names = ["Down One", "Down Two", "Down Three"];
    for n in names {
        let r = g.admin(
            "POST",
            "/admin/v1/keys",
            Some(json!({"name": n, "permissions": {"*": "read"}})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // At least two attempts of each event while the receiver is down.
    wait_until(
        "two attempts of each event",
        Duration::from_secs(30),
        || {
            let hits = rx.hits();
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for h in &hits {
                *per.entry(h.id.clone()).or_default() += 1;
            }
            per.len() == 3 && per.values().all(|n| *n >= 2)
        },
    )
    .await;
    let pending = g.deliveries(&id)["pending"].as_array().unwrap().len();
    assert_eq!(pending, 3);
    assert!(metric(g.gw.metrics, "keygate_webhook_queue_depth") >= 3.0);
    g.restart();
    // Still down for a while after the restart: more attempts, then back up.
    tokio::time::sleep(STILL_DOWN).await;
    rx.set(Mode::Ok);
    wait_until("every event delivered", Duration::from_secs(30), || {
        rx.delivered().len() >= 3
    })
    .await;
    let hits = rx.hits();
    let delivered = rx.delivered();
    let ids: BTreeSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        3,
        "one id per event, kept across retries and the restart"
    );
    let delivered_ids: BTreeSet<&str> = delivered.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(delivered_ids, ids);
    let mut seen_names = BTreeSet::new();
    for event_id in &ids {
        let attempts: Vec<&Hit> = hits.iter().filter(|h| h.id == *event_id).collect();
        // The same bytes on every attempt, each signed.
        assert!(attempts.iter().all(|h| h.body == attempts[0].body));
        assert!(attempts.iter().all(|h| verify(&secret, h)));
        seen_names.insert(
            attempts[0].json()["data"]["key"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Waits between attempts follow the schedule (never early). Across the
        // restart the gap includes the restart, so it is only longer.
        for (i, pair) in attempts.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let want = Duration::from_millis(schedule_ms[i]);
            assert!(
                gap + Duration::from_millis(100) >= want,
                "attempt {} of {event_id} came {gap:?} after the previous one; the schedule says {want:?}",
                i + 2
            );
        }
    }
    assert_eq!(
        seen_names,
        names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    wait_until("the queue drains", Duration::from_secs(5), || {
        g.deliveries(&id)["pending"].as_array().unwrap().is_empty()
    })
    .await;
}

/// A keys file edited while the gateway was stopped: the changes are sent when
/// it starts again, attributed to the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_made_while_stopped_are_sent_at_start() {
    let rx = Receiver::start().await;
    let mut g = start(PRIVATE_OK).await;
    g.endpoint(&rx.url("/keys"), &["key.*"]);
    // Let the worker remember the keys in force before it is stopped.
    wait_until("the keys are remembered", Duration::from_secs(20), || {
        g.dir.path().join("data/webhooks/keys_seen.json").exists()
    })
    .await;
    let _ = g.gw.child.kill();
    let _ = g.gw.child.wait();
    let edited = keys_yaml("kg_x")
        .replace("name: Zapier", "name: Zapier Renamed")
        .replace(
            "keys:\n",
            &format!(
                "keys:\n  - id: knew\n    name: Added Offline\n    secret: \"{}\"\n    permissions: {{ jobs: read }}\n",
                "added-offline-secret-0123456789abcdefgh"
            ),
        );
    g.dir.write("keys.yaml", &edited);
    g.restart();
    wait_until("the offline changes", Duration::from_secs(20), || {
        rx.delivered().len() >= 2
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let hits = rx.delivered();
    let got: BTreeSet<(String, String)> = hits
        .iter()
        .map(|h| {
            let v = h.json();
            (
                h.kind(),
                v["data"]["key"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("key.created".to_string(), "Added Offline".to_string()),
            ("key.updated".to_string(), "Zapier Renamed".to_string()),
        ])
    );
    assert!(
        hits.iter()
            .all(|h| h.json()["data"]["actor"] == "keys_file")
    );
}

/// Acceptance 3: a working key is deleted (by editing the keys file) while the
/// integration keeps calling: one `key.failing`, and one `key.recovered` when the
/// key is back and works. No storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_fails_once_and_recovers_once() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let (_, secret) = g.endpoint(&rx.url("/health"), &["key.failing", "key.recovered"]);
    for _ in 0..3 {
        assert_eq!(g.call("GET", "/api/v1/jobs", SECRET_WRITE).status, 200);
    }
    let full = keys_yaml("kg_x");
    let without: String = {
        // Drop the kwriter entry (4 lines) from the standard keys file.
        let mut out = Vec::new();
        let mut skip = 0;
        for line in full.lines() {
            if line.contains("id: kwriter") {
                skip = 4;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(line);
        }
        out.join("\n") + "\n"
    };
    assert!(!without.contains("kwriter") && without.contains("kminted"));
    g.dir.write("keys.yaml", &without);
    // Watched through the metrics (the snapshot in force), so that no extra
    // successful calls are made.
    wait_until("the key is gone", Duration::from_secs(5), || {
        metric(g.gw.metrics, "keygate_keys_loaded") == 5.0
    })
    .await;
    // Fewer than the per-IP limit of failed authentications (burst 20), which
    // would turn the 401s into 429s.
    for _ in 0..10 {
        assert_eq!(g.call("GET", "/api/v1/jobs", SECRET_WRITE).status, 401);
    }
    wait_until("key.failing", Duration::from_secs(20), || {
        types(&rx.delivered()).contains("key.failing")
    })
    .await;
    g.dir.write("keys.yaml", &full);
    wait_until("the key works again", Duration::from_secs(5), || {
        g.call("GET", "/api/v1/jobs", SECRET_WRITE).status == 200
    })
    .await;
    for _ in 0..5 {
        g.call("GET", "/api/v1/jobs", SECRET_WRITE);
    }
    wait_until("key.recovered", Duration::from_secs(20), || {
        types(&rx.delivered()).contains("key.recovered")
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let hits = rx.delivered();
    let kinds: Vec<String> = hits.iter().map(Hit::kind).collect();
    assert_eq!(kinds, ["key.failing", "key.recovered"], "no storm");
    let f = hits[0].json();
    assert_eq!(f["data"]["key"]["id"], "kwriter");
    assert!(f["data"]["codes"]["401"].as_u64().unwrap() >= 5, "{f}");
    assert!(
        f["data"]["likely_cause"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{f}"
    );
    assert!(hits.iter().all(|h| verify(&secret, h)));
}

/// Acceptance 4: loopback, private and link-local targets are refused without
/// `allow_private_targets` — when the endpoint is made, and again at delivery
/// (after DNS resolution) for an endpoint that got into the store another way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_without_the_setting() {
    let rx = Receiver::start().await;
    let g = start("").await;
    for url in [
        "https://127.0.0.1/hooks".to_string(),
        "https://10.1.2.3/hooks".into(),
        "https://169.254.169.254/latest/meta-data".into(),
        "https://localhost:8443/hooks".into(),
        "https://[::1]/hooks".into(),
    ] {
        let r = g.admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"url": url, "events": ["*"]})),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert_eq!(r.code().as_deref(), Some("target_not_allowed"), "{url}");
    }
    // Plain http needs the setting too.
    let r = g.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(json!({"url": "http://example.com/hooks", "events": ["*"]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // An endpoint written to the store by hand (as an older version or a restore
    // might): the worker refuses it at delivery, after resolving it.
    let store = g.dir.path().join("data/webhooks/endpoints.json");
    let url = format!("https://localhost:{}/hooks", rx.addr.port());
    std::fs::write(
        &store,
        json!({"endpoints": [{
            "id": "wh_manual", "url": url, "events": ["*"], "enabled": true,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "created_at": "2026-01-01T00:00:00Z"
        }]})
        .to_string(),
    )
    .unwrap();
    wait_until("the endpoint is loaded", Duration::from_secs(5), || {
        g.admin("GET", "/admin/v1/webhooks/wh_manual", None).status == 200
    })
    .await;
    tokio::time::sleep(WORKER_PICKS_UP).await;
    let r = g.admin("POST", "/admin/v1/webhooks/wh_manual/test", None);
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until(
        "the refused attempt is logged",
        Duration::from_secs(20),
        || {
            g.deliveries("wh_manual")["deliveries"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
    let log = g.deliveries("wh_manual");
    let e = &log["deliveries"][0];
    assert_eq!(e["result"], "retrying");
    assert!(e["error"].as_str().unwrap().contains("refused"), "{log}");
    assert!(rx.hits().is_empty(), "nothing reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let (id, _) = g.endpoint(&rx.url("/redirect"), &["webhook.test"]);
    g.admin("POST", &format!("/admin/v1/webhooks/{id}/test"), None);
    wait_until("the attempt is logged", Duration::from_secs(20), || {
        g.deliveries(&id)["deliveries"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let log = g.deliveries(&id);
    let e = &log["deliveries"][0];
    assert_eq!(e["status"], 302, "{log}");
    assert_eq!(e["result"], "retrying");
    assert!(e["error"].as_str().unwrap().contains("redirect"), "{log}");
    tokio::time::sleep(QUIET).await;
    assert!(rx.hits().iter().all(|h| h.path != "/landing"));
    assert_eq!(rx.hits().len(), 1);
    // Resend makes it due again at once.
    let ev = e["event_id"].as_str().unwrap();
    let r = g.admin(
        "POST",
        &format!("/admin/v1/webhooks/{id}/deliveries/{ev}/resend"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("the resend", Duration::from_secs(5), || {
        rx.hits().len() == 2
    })
    .await;
    assert!(rx.hits().iter().all(|h| h.id == ev));
}

/// Bounded: beyond `queue_max` pending deliveries new events are dropped and
/// counted; what was queued is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let rx = Receiver::start().await;
    rx.set(Mode::Down);
    let g =
        start("webhooks:\n  allow_private_targets: true\n  queue_max: 2\n  timeout: 30s\n").await;
    let (id, _) = g.endpoint(&rx.url("/hooks"), &["key.created"]);
    for i in 0..5 {
        let r = g.admin(
            "POST",
            "/admin/v1/keys",
            Some(json!({"name": format!("Full {i}"), "permissions": {"*": "read"}})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    wait_until("three drops counted", Duration::from_secs(20), || {
        metric(g.gw.metrics, "keygate_webhook_dropped_total") == 3.0
    })
    .await;
    assert_eq!(metric(g.gw.metrics, "keygate_webhook_queue_depth"), 2.0);
    assert_eq!(g.deliveries(&id)["pending"].as_array().unwrap().len(), 2);
    wait_until("an oldest-pending age", Duration::from_secs(5), || {
        metric(g.gw.metrics, "keygate_webhook_oldest_pending_seconds") > 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled() {
    let rx = Receiver::start().await;
    rx.set(Mode::Fail);
    let g = start(
        "webhooks:\n  allow_private_targets: true\n  retry_schedule: [200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms]\n  disable_after: 1s\n",
    )
    .await;
    let (id, _) = g.endpoint(&rx.url("/hooks"), &["webhook.test"]);
    g.admin("POST", &format!("/admin/v1/webhooks/{id}/test"), None);
    wait_until("the endpoint is disabled", Duration::from_secs(20), || {
        g.admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
            .json()["enabled"]
            == false
    })
    .await;
    let log = g.deliveries(&id);
    assert_eq!(log["deliveries"][0]["result"], "endpoint.disabled", "{log}");
    assert!(log["pending"].as_array().unwrap().is_empty());
    let v = g
        .admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
        .json();
    assert!(v["disabled_reason"].is_string());
    // Enabling it again clears the failure record.
    let r = g.admin(
        "PATCH",
        &format!("/admin/v1/webhooks/{id}"),
        Some(json!({"enabled": true})),
    );
    assert_eq!(r.json()["enabled"], true);
    assert!(r.json()["disabled_reason"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_endpoints_and_the_gateway_follows() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("-c")
            .arg(&g.cfg)
            .arg("webhooks")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = rx.url("/cli");
    let (ok, out, err) = run(&["create", "--url", &url, "--event", "webhook.test"]);
    assert!(ok, "{err}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("wh_"))
        .unwrap()
        .to_string();
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .unwrap()
        .to_string();
    let (ok, out, _) = run(&["list"]);
    assert!(ok && out.contains(&id) && !out.contains("whsec_"), "{out}");
    let (ok, _, err) = run(&["test", &id]);
    assert!(ok, "{err}");
    wait_until("the CLI's test event", Duration::from_secs(20), || {
        !rx.delivered().is_empty()
    })
    .await;
    assert!(verify(&secret, &rx.delivered()[0]));
    wait_until("the log", Duration::from_secs(5), || {
        run(&["deliveries", &id]).1.contains("delivered")
    })
    .await;
    let (ok, _, err) = run(&["create", "--url", "https://10.0.0.1/x", "--event", "*"]);
    // allowed here (allow_private_targets) — but an unknown event is not
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["create", "--url", &url, "--event", "bogus"]);
    assert!(!ok && err.contains("events[0]"), "{err}");
    let (ok, _, err) = run(&["delete", &id]);
    assert!(ok, "{err}");
    wait_until(
        "the gateway follows the delete",
        Duration::from_secs(5),
        || {
            g.admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
                .status
                == 404
        },
    )
    .await;
}

/// `include_body`: write events to an endpoint that asked for it carry the
/// response body (text, or base64 when it is not UTF-8), cut at 64 KiB with
/// `body_truncated: true`; other endpoints get the same event without it, and the
/// client gets the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_body_puts_the_response_body_in_write_events() {
    let rx = Receiver::start().await;
    let g = start(PRIVATE_OK).await;
    let r = g.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(json!({"url": rx.url("/with"), "events": ["jobs.*"], "include_body": true})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["include_body"], true);
    g.endpoint(&rx.url("/plain"), &["jobs.created"]);
    let k = g.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"name": "Body Writer", "permissions": {"jobs": "write"}})),
    );
    assert_eq!(k.status, 201, "{}", k.body);
    let key = k.json()["key"].as_str().unwrap().to_string();
    // A small JSON answer: the upstream's body as text.
    let small = g.call("POST", "/api/v1/jobs", &key);
    assert_eq!(small.status, 200);
    // A large one (100 000 bytes, streamed): cut at 64 KiB for the event only.
    let big = g.call("POST", "/api/v1/jobs/download/100000", &key);
    assert_eq!(big.status, 200);
    let xs = big.body.bytes().filter(|c| *c == b'x').count();
    assert_eq!(xs, 100_000, "the client gets the whole body");
    // A read is no event, a failed write neither.
    assert_eq!(g.call("GET", "/api/v1/jobs", &key).status, 200);
    assert_eq!(g.call("POST", "/api/v1/jobs/status/500", &key).status, 500);
    wait_until("three write deliveries", Duration::from_secs(20), || {
        rx.delivered().len() >= 3
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let hits = rx.delivered();
    let with: Vec<&Hit> = hits.iter().filter(|h| h.path == "/with").collect();
    let plain: Vec<&Hit> = hits.iter().filter(|h| h.path == "/plain").collect();
    assert_eq!(with.len(), 2, "{:?}", types(&hits));
    assert_eq!(plain.len(), 2, "{:?}", types(&hits));
    let of = |path: &str| {
        with.iter()
            .map(|h| h.json())
            .find(|v| v["data"]["path"] == path)
            .unwrap_or_else(|| panic!("no event for {path}"))
    };
    let s = of("/api/v1/jobs");
    assert_eq!(s["type"], "jobs.created");
    assert_eq!(s["data"]["body_encoding"], "utf8", "{s}");
    let echoed: Value = serde_json::from_str(s["data"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, serde_json::from_str::<Value>(&small.body).unwrap());
    assert!(s["data"].get("body_truncated").is_none(), "{s}");
    let b = of("/api/v1/jobs/download/100000");
    let text = b["data"]["body"].as_str().unwrap();
    assert_eq!(text.len(), 64 * 1024);
    assert!(text.bytes().all(|c| c == b'x'));
    assert_eq!(b["data"]["body_truncated"], true);
    // The endpoint without include_body got the same events (same ids), no body.
    for p in &plain {
        assert!(
            p.json()["data"].get("body").is_none(),
            "{}",
            p.json()["data"]["path"]
        );
        assert!(with.iter().any(|w| w.id == p.id), "one event, one id");
    }
    // Switched off: the next write event has no body.
    let r = g.admin(
        "PATCH",
        &format!("/admin/v1/webhooks/{}", with_id(&g, &rx)),
        Some(json!({"include_body": false})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(g.call("PUT", "/api/v1/jobs/9", &key).status, 200);
    wait_until("the update event", Duration::from_secs(20), || {
        rx.delivered().iter().any(|h| h.kind() == "jobs.updated")
    })
    .await;
    let u = rx
        .delivered()
        .into_iter()
        .find(|h| h.kind() == "jobs.updated")
        .unwrap()
        .json();
    assert!(u["data"].get("body").is_none(), "{u}");
}

/// The id of the endpoint whose URL ends in `/with`.
fn with_id(g: &Gw, rx: &Receiver) -> String {
    let list = g.admin("GET", "/admin/v1/webhooks", None).json();
    list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == rx.url("/with"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Acceptance 1: an independent implementation — the `standardwebhooks` Python
/// package — verifies every event type. `.ci/run` installs it and runs this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python standardwebhooks"]
async fn python_standardwebhooks_verifies_every_event_type() {
    use std::io::BufRead;
    let work = TempDir::new();
    let secret_file = work.path().join("secret");
    let out_file = work.path().join("received.jsonl");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(&secret_file)
        .arg(&out_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the receiver prints its port");
    let g = start(PRIVATE_OK).await;
    let (id, secret) = g.endpoint(&format!("http://127.0.0.1:{port}/hooks"), &["*"]);
    std::fs::write(&secret_file, &secret).unwrap();
    let want = cause_every_event(&g, &id).await;
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&out_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let ok = eventually(Duration::from_secs(20), || {
        let got: BTreeSet<String> = read()
            .iter()
            .filter(|v| v["verified"] == true)
            .map(|v| v["type"].as_str().unwrap_or("").to_string())
            .collect();
        got.is_superset(&want)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let got = read();
    assert!(ok, "standardwebhooks did not verify every type: {got:?}");
    assert!(
        got.iter().all(|v| v["verified"] == true),
        "a delivery failed verification: {got:?}"
    );
}
