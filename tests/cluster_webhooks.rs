//! Webhooks in cluster mode (docs/webhooks.md, "Cluster mode"): three real keygate
//! processes on one real `redis-server` and a real receiver. Needs `redis-server`
//! on PATH, hence ignored by default:
//! `cargo test --test cluster_webhooks -- --ignored --test-threads=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[path = "cluster/replicas.rs"]
mod replicas;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use replicas::*;
use serde_json::{Value, json};
use support::metric;
use support::receiver::{Hit, Mode, Receiver, verify};

/// "Nothing more arrives": longer than a lease renewal, a retry promotion and a
/// sync on every replica, so a duplicate (another replica sending the same event)
/// would have been sent by then. A fixed window by nature.
const QUIET: Duration = Duration::from_secs(3);

fn webhooks_cfg(extra: &str) -> String {
    format!("webhooks:\n  allow_private_targets: true\n{extra}")
}

/// Creates an endpoint through `addr`'s admin API; returns (id, secret).
fn endpoint(addr: std::net::SocketAddr, url: &str, events: &[&str]) -> (String, String) {
    let r = admin(
        addr,
        "POST",
        "webhooks",
        &json!({ "url": url, "events": events }).to_string(),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

fn per_id(hits: &[Hit]) -> BTreeMap<String, Vec<Hit>> {
    let mut m: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    for h in hits {
        m.entry(h.id.clone()).or_default().push(h.clone());
    }
    m
}

fn successes(r: &Replicas) -> f64 {
    r.nodes
        .iter()
        .map(|n| {
            metric(
                n.metrics,
                "keygate_webhook_deliveries_total{result=\"success\"}",
            )
        })
        .sum()
}

/// Acceptance 5, first half: an endpoint made on one replica is the cluster's;
/// a key change made on replica A — synced by all three — is delivered once (one
/// `webhook-id`, one delivery), and so are an API switch change and a keys-file
/// revision applied by every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_change_synced_by_three_replicas_is_delivered_once() {
    let up = support::Upstream::start().await;
    let redis = Redis::start();
    let rx = Receiver::start().await;
    let r = Replicas::start(&up, &redis, &webhooks_cfg(""));
    let [a, b, c] = [r.nodes[0].admin, r.nodes[1].admin, r.nodes[2].admin];
    wait_for_key_events(&redis);
    let (id, secret) = endpoint(a, &rx.url("/hooks"), &["key.*", "api.*"]);
    // Every replica's admin API sees it (the same endpoints everywhere).
    for n in [b, c] {
        let list = admin(n, "GET", "webhooks", "", &[]);
        assert_eq!(list.status, 200, "{}", list.body);
        assert!(list.body.contains(&id), "{}", list.body);
        assert!(!list.body.contains("whsec_"), "no secret in a list");
    }

    // A key made on A.
    let made = admin(
        a,
        "POST",
        "keys",
        r#"{"name":"Once","permissions":{"*":"read"}}"#,
        &[],
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let key = made.json()["key"].as_str().unwrap().to_string();
    // Every replica has synced it …
    for n in &r.nodes {
        assert!(wait_until(Duration::from_secs(5), || get(
            n.public,
            "/api/v1/candidates",
            &key
        )
        .status
            == 200));
    }
    // … and the event arrives once.
    assert!(wait_until(Duration::from_secs(15), || !rx
        .delivered()
        .is_empty()));
    std::thread::sleep(QUIET);
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "one delivery: {:?}", kinds(&hits));
    let h = &hits[0];
    assert_eq!(h.kind(), "key.created");
    assert_eq!(h.json()["data"]["key"]["name"], "Once");
    assert!(
        h.json()["data"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:"),
        "{}",
        h.body
    );
    assert!(verify(&secret, h));
    assert_eq!(successes(&r), 1.0, "one replica delivered it, once");

    // The API switch, off and on again through B: one event each.
    for on in [false, true] {
        let res = admin(b, "PUT", "api", &json!({ "enabled": on }).to_string(), &[]);
        assert_eq!(res.status, 200, "{}", res.body);
        // Let the replicas sync it before the next change.
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(wait_until(Duration::from_secs(15), || rx.delivered().len() >= 3));

    // A keys file with a higher revision, on every replica (each one follows its
    // own file; one applies it): one key.created.
    let mut keys = keys_yaml();
    keys.insert_str(0, "revision: 5\n");
    keys.push_str("  - id: kfromfile\n    name: From File\n    secret: \"from-file-secret-0123456789abcdefghijk\"\n    permissions: { \"*\": read }\n");
    for d in &r.dirs {
        d.write("keys.yaml", &keys);
    }
    assert!(wait_until(Duration::from_secs(20), || rx
        .delivered()
        .iter()
        .any(|h| h.json()["data"]["key"]["name"] == "From File")));
    std::thread::sleep(QUIET);
    let hits = rx.hits();
    let by_id = per_id(&hits);
    assert!(
        by_id.values().all(|v| v.len() == 1),
        "one delivery per webhook-id: {:?}",
        by_id
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect::<Vec<_>>()
    );
    let got: Vec<String> = hits.iter().map(Hit::kind).collect();
    assert_eq!(
        got.iter().filter(|k| *k == "api.disabled").count(),
        1,
        "{got:?}"
    );
    assert_eq!(
        got.iter().filter(|k| *k == "api.enabled").count(),
        1,
        "{got:?}"
    );
    let from_file: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.json()["data"]["key"]["name"] == "From File")
        .collect();
    assert_eq!(from_file.len(), 1, "{got:?}");
    assert_eq!(from_file[0].kind(), "key.created");
    assert_eq!(from_file[0].json()["data"]["actor"], "keys_file");
    assert_eq!(hits.len(), 4, "{got:?}");
    assert_eq!(successes(&r), 4.0);

    // The cluster's delivery log, read on C: every attempt, with the replica.
    let log = admin(c, "GET", &format!("webhooks/{id}/deliveries"), "", &[]);
    assert_eq!(log.status, 200, "{}", log.body);
    let entries = log.json()["deliveries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 4, "{}", log.body);
    for e in &entries {
        assert_eq!(e["result"], "delivered");
        assert!(
            ["a", "b", "c"].contains(&e["node"].as_str().unwrap()),
            "{e}"
        );
        assert!(e["body"].is_null(), "the log view has no body");
    }
    for n in &r.nodes {
        assert!(wait_until(Duration::from_secs(5), || metric(
            n.metrics,
            "keygate_webhook_queue_depth"
        ) == 0.0));
    }

    // The CLI with C's config works on the same endpoints, log and queue.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("-c")
            .arg(r.dirs[2].path().join("config.yaml"))
            .arg("webhooks")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&["list"]);
    assert!(
        listed.contains(&id) && !listed.contains("whsec_"),
        "{listed}"
    );
    assert!(cli(&["deliveries", &id]).contains("delivered"));
    cli(&["test", &id]);
    assert!(wait_until(Duration::from_secs(10), || rx
        .delivered()
        .iter()
        .any(|h| h.kind() == "webhook.test")));
    std::thread::sleep(QUIET);
    assert_eq!(
        rx.hits()
            .iter()
            .filter(|h| h.kind() == "webhook.test")
            .count(),
        1
    );
}

/// Acceptance 5, second half: the receiver fails at first; the replica making
/// an attempt is killed (SIGKILL) in the middle of it; another replica takes the
/// delivery over and delivers it later, under the same `webhook-id`, keeping the
/// retry schedule. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_replica_killed_mid_retry_loses_nothing() {
    let schedule_ms = [400u64, 400, 800, 800, 1600, 1600, 3200, 3200, 3200];
    let up = support::Upstream::start().await;
    let redis = Redis::start();
    let rx = Receiver::start().await;
    rx.set(Mode::Down);
    let cfg = webhooks_cfg(&format!(
        "  timeout: 3s\n  retry_schedule: [{}]\n",
        schedule_ms
            .iter()
            .map(|m| format!("{m}ms"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut r = Replicas::start(&up, &redis, &cfg);
    let a = r.nodes[0].admin;
    wait_for_key_events(&redis);
    let (id, secret) = endpoint(a, &rx.url("/hooks"), &["key.created"]);
    let names = ["Kill One", "Kill Two", "Kill Three"];
    for n in names {
        let res = admin(
            a,
            "POST",
            "keys",
            &json!({"name": n, "permissions": {"*": "read"}}).to_string(),
            &[],
        );
        assert_eq!(res.status, 201, "{}", res.body);
    }
    // Each event is being tried (the receiver takes it and does not answer).
    let tried = wait_until(Duration::from_secs(20), || per_id(&rx.hits()).len() == 3);
    if !tried {
        let res = admin(a, "GET", &format!("webhooks/{id}/deliveries"), "", &[]);
        for n in &r.nodes {
            eprintln!("--- {}", n.log());
        }
        panic!(
            "three events tried: {:?}; {}",
            per_id(&rx.hits()).keys().collect::<Vec<_>>(),
            res.body
        );
    }
    // Find a replica in the middle of an attempt, and kill it there.
    let mut victim = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let res = admin(a, "GET", &format!("webhooks/{id}/deliveries"), "", &[]);
            let pending = res.json()["pending"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(pending.len(), 3, "{}", res.body);
            // Any replica in the middle of an attempt (b or c when there is one:
            // the consumer group may give all three to a, which is fine to kill
            // too, as nothing after the kill asks a).
            let in_flight: Vec<(String, String)> = pending
                .iter()
                .filter_map(|p| {
                    Some((
                        p["node"].as_str()?.to_string(),
                        p["event_id"].as_str()?.to_string(),
                    ))
                })
                .collect();
            victim = in_flight
                .iter()
                .find(|(n, _)| n != "a")
                .or(in_flight.first())
                .cloned();
            victim.is_some()
        }),
        "no attempt in flight on any replica"
    );
    let (node, event_id) = victim.unwrap();
    let i = ["a", "b", "c"].iter().position(|n| *n == node).unwrap();
    let _ = r.nodes[i].child.kill();
    let _ = r.nodes[i].child.wait();
    let before_kill = rx.hits().iter().filter(|h| h.id == event_id).count();
    eprintln!("killed {node} while it was sending {event_id} (attempt {before_kill})");
    // Still failing for a while, then the receiver is back.
    std::thread::sleep(Duration::from_secs(2));
    rx.set(Mode::Ok);
    assert!(
        wait_until(Duration::from_secs(40), || {
            let d: BTreeSet<String> = rx.delivered().into_iter().map(|h| h.id).collect();
            d.len() == 3
        }),
        "every event delivered after the kill"
    );
    std::thread::sleep(QUIET);
    let hits = rx.hits();
    let by_id = per_id(&hits);
    assert_eq!(by_id.len(), 3, "one id per event, kept across the takeover");
    let mut seen_names = BTreeSet::new();
    for (ev, attempts) in &by_id {
        let delivered = attempts.iter().filter(|h| h.answered == 204).count();
        assert_eq!(delivered, 1, "{ev} delivered once");
        assert!(attempts.iter().all(|h| h.body == attempts[0].body));
        assert!(attempts.iter().all(|h| verify(&secret, h)));
        seen_names.insert(
            attempts[0].json()["data"]["key"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Never earlier than the schedule (across the takeover the gap is longer).
        for (k, pair) in attempts.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let want = Duration::from_millis(schedule_ms[k]);
            assert!(
                gap + Duration::from_millis(100) >= want,
                "attempt {} of {ev} came {gap:?} after the previous one; the schedule says {want:?}",
                k + 2
            );
        }
    }
    assert_eq!(
        seen_names,
        names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    // The killed replica's delivery was made by another one, later.
    let survivor = r.nodes[(i + 1) % 3].admin;
    let log = admin(
        survivor,
        "GET",
        &format!("webhooks/{id}/deliveries"),
        "",
        &[],
    );
    let entries: Vec<Value> = log.json()["deliveries"].as_array().unwrap().clone();
    let done: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event_id"] == event_id.as_str() && e["result"] == "delivered")
        .collect();
    assert_eq!(done.len(), 1, "{}", log.body);
    assert_ne!(done[0]["node"], node.as_str(), "{}", log.body);
    assert!(
        by_id[&event_id].len() > before_kill,
        "attempted again after the kill"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        admin(
            survivor,
            "GET",
            &format!("webhooks/{id}/deliveries"),
            "",
            &[],
        )
        .json()["pending"]
            .as_array()
            .is_some_and(|p| p.is_empty())
    }));
    assert!(wait_until(Duration::from_secs(5), || metric(
        r.nodes[(i + 1) % 3].metrics,
        "keygate_webhook_queue_depth"
    ) == 0.0));
}

/// Redis down: request events are kept in the replica's local buffer (the
/// request does not wait for them) and sent when Redis answers again, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn events_made_while_redis_is_down_are_sent_when_it_is_back() {
    let up = support::Upstream::start().await;
    let redis = Redis::start();
    let rx = Receiver::start().await;
    let r = Replicas::start(&up, &redis, &webhooks_cfg(""));
    let b = &r.nodes[1];
    endpoint(r.nodes[0].admin, &rx.url("/hooks"), &["jobs.created"]);
    let post = |path: &str| {
        support::Reply::parse(&support::raw_exchange(
            b.public,
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {LIMITED}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ))
    };
    // B follows the endpoint made on A: its write events arrive.
    assert!(
        wait_until(Duration::from_secs(10), || {
            assert_eq!(post("/api/v1/jobs/warmup").status, 200);
            rx.delivered()
                .iter()
                .any(|h| h.json()["data"]["path"] == "/api/v1/jobs/warmup")
        }),
        "B never sent a write event"
    );
    std::thread::sleep(QUIET);
    let before = rx.hits().len();
    // A Redis that hangs (connections open, no answers).
    redis.pause(true);
    for i in 0..3 {
        let t = std::time::Instant::now();
        assert_eq!(post(&format!("/api/v1/jobs/down-{i}")).status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a request waited {:?} with Redis down",
            t.elapsed()
        );
    }
    // Endpoint writes are refused (never local-only); a list shows the ones in force.
    let refused = admin(
        b.admin,
        "POST",
        "webhooks",
        &json!({"url": rx.url("/other"), "events": ["*"]}).to_string(),
        &[],
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.code().as_deref(), Some("cluster_unavailable"));
    let listed = admin(b.admin, "GET", "webhooks", "", &[]);
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains("/hooks"), "{}", listed.body);
    assert_eq!(
        rx.hits().len(),
        before,
        "nothing is sent while Redis is down"
    );
    redis.pause(false);
    assert!(
        wait_until(Duration::from_secs(20), || rx.delivered().len()
            >= before + 3),
        "the buffered events were not sent after Redis came back: {}",
        b.log()
    );
    std::thread::sleep(QUIET);
    let late: Vec<String> = rx.hits()[before..]
        .iter()
        .map(|h| h.json()["data"]["path"].as_str().unwrap_or("").to_string())
        .collect();
    let want: BTreeSet<String> = (0..3).map(|i| format!("/api/v1/jobs/down-{i}")).collect();
    assert_eq!(late.len(), 3, "{late:?}");
    assert_eq!(late.into_iter().collect::<BTreeSet<_>>(), want);
}

/// Key events have started: the cluster's keys at seeding are remembered (the
/// first look sends nothing, as a first start does), so later changes are sent.
fn wait_for_key_events(redis: &Redis) {
    let mut con = redis.con();
    assert!(
        wait_until(Duration::from_secs(10), || {
            redis::cmd("EXISTS")
                .arg("kg:{t}:wh:keys_version")
                .query::<bool>(&mut con)
                .unwrap_or(false)
        }),
        "key events did not start"
    );
}

fn kinds(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(Hit::kind).collect()
}
