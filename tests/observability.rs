//! The access log, `keygate logs`, and the metrics, against the real gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::*;

fn read_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{f:?}: {e}: {line}")));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_valid_record_per_request_without_secrets() {
    let h = Harness::start_with(&format!("{ROUTES}timeouts:\n  upstream_response: 300ms\n")).await;
    // (target, headers, decision, status)
    type Sent<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, u16);
    let sent: Vec<Sent> = vec![
        (
            "/api/v1/candidates?token=QUERYSECRET",
            vec![("X-API-Key", SECRET_READ.into())],
            "allowed",
            200,
        ),
        ("/healthz?x=QUERYSECRET", vec![], "public", 200),
        ("/a/../b", vec![], "bad_request", 400),
        ("/api/v1/candidates", vec![], "unauthenticated", 401),
        (
            "/api/v1/candidates",
            vec![(
                "Authorization",
                format!("Bearer {}", h.kg_key.replace("kg_", "kg_X")),
            )],
            "unauthenticated",
            401,
        ),
        (
            "/api/v1/jobs",
            vec![("X-API-Key", SECRET_READ.into())],
            "forbidden",
            403,
        ),
        (
            "/api/v1/jobs",
            vec![("X-API-Key", SECRET_SLOW.into())],
            "allowed",
            200,
        ),
        (
            "/api/v1/jobs",
            vec![("X-API-Key", SECRET_SLOW.into())],
            "allowed",
            200,
        ),
        (
            "/api/v1/jobs",
            vec![("X-API-Key", SECRET_SLOW.into())],
            "rate_limited",
            429,
        ),
        (
            "/api/v1/candidates/slow/2000",
            vec![("X-API-Key", SECRET_ALL.into())],
            "upstream_error",
            504,
        ),
        (
            "/api/v1/jobs",
            vec![
                ("X-API-Key", h.kg_key.clone()),
                ("User-Agent", format!("evil\\\"}}\t{}", "u".repeat(400))),
            ],
            "allowed",
            200,
        ),
    ];
    for (i, (path, headers, _, status)) in sent.iter().enumerate() {
        let mut hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let id = format!("req-{i}");
        hs.push(("X-Request-Id", &id));
        let r = h.get(path, &hs);
        assert_eq!(r.status, *status, "{path}: {}", r.raw);
    }
    h.gateway.flush_access_log(Duration::from_secs(5));
    let recs = read_records(h.dir.path());
    assert_eq!(recs.len(), sent.len(), "exactly one record per request");
    let text = std::fs::read_to_string(h.dir.path().join("logs/access.log")).unwrap();
    for secret in [
        SECRET_READ,
        SECRET_SLOW,
        SECRET_ALL,
        h.kg_key.as_str(),
        &sha256_hex(SECRET_READ),
        "QUERYSECRET",
    ] {
        assert!(
            !text.contains(secret),
            "the log contains a secret or a query string"
        );
    }
    for (i, (path, _, decision, status)) in sent.iter().enumerate() {
        let r = recs
            .iter()
            .find(|r| r["request_id"] == format!("req-{i}"))
            .unwrap_or_else(|| panic!("no record for req-{i}"));
        assert_eq!(r["decision"], *decision, "req-{i}");
        assert_eq!(r["status"], *status, "req-{i}");
        assert_eq!(r["path"], path.split('?').next().unwrap(), "req-{i}");
        assert_eq!(r["method"], "GET");
        assert_eq!(r["ip"], "127.0.0.1");
        assert!(r["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(r["ts"].as_str().unwrap().ends_with('Z'));
        for field in [
            "ts",
            "request_id",
            "method",
            "path",
            "status",
            "decision",
            "key_id",
            "key_name",
            "category",
            "ip",
            "duration_ms",
            "upstream_ms",
            "bytes_in",
            "bytes_out",
            "user_agent",
        ] {
            assert!(r.get(field).is_some(), "req-{i} lacks {field}");
        }
    }
    let allowed = &recs[0];
    assert_eq!(allowed["key_id"], "kzapier");
    assert_eq!(allowed["key_name"], "Zapier");
    assert_eq!(allowed["category"], "candidates");
    assert!(allowed["upstream_ms"].as_f64().is_some());
    assert!(allowed["bytes_out"].as_u64().unwrap() > 0);
    assert!(recs[3]["key_id"].is_null());
    let ua = recs[10]["user_agent"].as_str().unwrap();
    assert_eq!(ua.chars().count(), 256, "user agent truncated");
    assert_eq!(
        text.lines().count(),
        sent.len(),
        "no record spans two lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_closed_is_recorded() {
    let h = Harness::start().await;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(format!("GET /api/v1/candidates/slow/1500 HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_READ}\r\n\r\n").as_bytes()).await.unwrap();
    // The client goes away once the request is upstream (which takes 1.5 s).
    wait_until("the request upstream", DEADLINE, || {
        (h.upstream.count() == 1).then_some(())
    })
    .await;
    drop(s);
    let recs = h.records.wait_for(1).await;
    assert_eq!(recs[0].decision, keygate::record::Decision::ClientClosed);
    assert_eq!(recs[0].key_id().unwrap(), "kzapier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_drops_records_but_not_requests() {
    let h = Harness::builder()
        .config(|c| c.unlimited_keys().access_log("/dev/full"))
        .start()
        .await;
    let dropped = "keygate_access_log_dropped_total";
    let before = h.metrics().value(dropped).await;
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(
            h.get("/api/v1/candidates", &[("X-API-Key", SECRET_ALL)])
                .status,
            200
        );
    }
    let took = t.elapsed();
    h.gateway.flush_access_log(Duration::from_secs(5));
    h.metrics().wait_at_least(dropped, before + 200.0).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A keep-alive client sending `n` GETs.
async fn send_many(addr: std::net::SocketAddr, n: usize) -> usize {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ok = 0;
    for _ in 0..n {
        let req = http::Request::builder()
            .uri("/api/v1/candidates")
            .header("host", "a")
            .header("x-api-key", SECRET_ALL)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        if res.status() == 200 {
            ok += 1;
        }
        let _ = http_body_util::BodyExt::collect(res.into_body()).await;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_and_reopen_lose_nothing() {
    let h = Harness::start_with(&format!(
        "rate_limit:\n  per_key: {{ per_second: 1000000, burst: 1000000 }}\n{ROUTES}access_log:\n  path: logs/access.log\n  max_size: 1MiB\n  max_files: 100\n"
    ))
    .await;
    let addr = h.addr();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(send_many(addr, 5_000)));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 20_000);
    h.gateway.flush_access_log(Duration::from_secs(10));
    let recs = read_records(h.dir.path());
    assert_eq!(recs.len(), 20_000, "every record, across rotations");
    let files = std::fs::read_dir(h.dir.path().join("logs"))
        .unwrap()
        .count();
    assert!(files >= 5, "rotated into {files} files");
    for f in std::fs::read_dir(h.dir.path().join("logs")).unwrap() {
        assert!(f.unwrap().metadata().unwrap().len() <= 1024 * 1024 + 256 * 400);
    }
    // logrotate-style: move the file away, SIGHUP (reload), keep writing.
    std::fs::rename(
        h.dir.path().join("logs/access.log"),
        h.dir.path().join("moved.log"),
    )
    .unwrap();
    h.gateway.reload().unwrap();
    assert_eq!(send_many(addr, 10).await, 10);
    h.gateway.flush_access_log(Duration::from_secs(5));
    let fresh = std::fs::read_to_string(h.dir.path().join("logs/access.log")).unwrap();
    assert_eq!(fresh.lines().count(), 10, "records go to the reopened file");
}

fn logs_cli(cfg: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(cfg)
        .arg("logs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ids(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_command_filters() {
    let h = Harness::start().await;
    let reqs: [(&str, &str, &str, Option<&str>); 6] = [
        ("a", "GET", "/api/v1/candidates", Some(SECRET_READ)),
        ("b", "POST", "/api/v1/candidates", Some(SECRET_READ)),
        ("c", "GET", "/api/v1/jobs/7", Some(SECRET_ALL)),
        ("d", "GET", "/api/v1/jobs/slow/2100", Some(SECRET_ALL)),
        ("e", "DELETE", "/api/v1/jobs/7", Some(SECRET_WRITE)),
        ("f", "GET", "/api/v1/candidates/status/404", None),
    ];
    for (id, method, path, key) in reqs {
        let mut hs = vec![("X-Request-Id", id)];
        if let Some(k) = key {
            hs.push(("X-API-Key", k));
        }
        h.request(method, path, &hs, "");
    }
    h.gateway.flush_access_log(Duration::from_secs(5));
    let cfg = h.dir.path().join("config.yaml");
    let q = |args: &[&str]| ids(&logs_cli(&cfg, &[args, &["--json"]].concat()));
    assert_eq!(q(&[]), ["f", "e", "d", "c", "b", "a"], "newest first");
    assert_eq!(q(&["--limit", "2"]), ["f", "e"]);
    assert_eq!(q(&["--path", "jobs"]), ["e", "d", "c"]);
    assert_eq!(q(&["--method", "post"]), ["b"]);
    assert_eq!(q(&["--status", "4xx"]), ["f", "b"]);
    assert_eq!(q(&["--status", "401"]), ["f"]);
    assert_eq!(q(&["--key", "zapier"]), ["b", "a"]);
    assert_eq!(q(&["--key", "kreporting"]), ["d", "c"]);
    assert_eq!(q(&["--slower-than", "2s"]), ["d"]);
    assert_eq!(q(&["--since", "1h"]).len(), 6);
    assert_eq!(
        q(&[
            "--since",
            "2020-01-01T00:00:00Z",
            "--path",
            "candidates",
            "--method",
            "GET",
            "--status",
            "2xx"
        ]),
        ["a"]
    );
    assert!(q(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    // The table: the seed's columns, slow requests marked.
    let table = logs_cli(&cfg, &[]);
    let header = table.lines().next().unwrap();
    for col in [
        "PATH",
        "CREATED AT",
        "METHOD",
        "RESPONSE",
        "API KEY",
        "IP ADDRESS",
        "DURATION",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains("/api/v1/jobs/slow/2100") && l.contains("(slow)")),
        "{table}"
    );
    assert!(table.contains("Reporting Dashboard"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(
    clippy::zombie_processes,
    reason = "killed and waited for below; only a failed assertion in between leaves it to the test's exit"
)]
async fn logs_follow_shows_new_records_within_a_second() {
    use std::io::BufRead;
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(&cfg)
        .args(["logs", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send((line.unwrap(), Instant::now()));
        }
    });
    // The follower says nothing when it has started: send warm-up records until it
    // shows one (polling), then measure the next.
    let deadline = Instant::now() + DEADLINE;
    for n in 0.. {
        let id = format!("warm-up-{n}");
        h.get(
            "/api/v1/candidates",
            &[("X-API-Key", SECRET_READ), ("X-Request-Id", &id)],
        );
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "logs --follow showed nothing");
    }
    let sent = Instant::now();
    h.get(
        "/api/v1/candidates",
        &[("X-API-Key", SECRET_READ), ("X-Request-Id", "followed")],
    );
    let (line, at) = loop {
        let (line, at) = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("a record was shown");
        if !line.contains("\"warm-up-") {
            break (line, at);
        }
    };
    let _ = child.kill();
    assert!(line.contains("\"followed\""), "{line}");
    assert!(
        at.duration_since(sent) < Duration::from_secs(1),
        "{:?}",
        at.duration_since(sent)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_and_deleted_keys_leave() {
    let h = Harness::start().await;
    let m = h.gateway.metrics_addr;
    for _ in 0..3 {
        h.get("/api/v1/candidates", &[("X-API-Key", SECRET_READ)]);
    }
    for _ in 0..3 {
        h.get("/api/v1/jobs", &[("X-API-Key", SECRET_SLOW)]);
    }
    h.get("/api/v1/jobs", &[]);
    let text = metrics_text(m);
    for family in [
        "keygate_requests_total",
        "keygate_request_duration_seconds_bucket",
        "keygate_upstream_duration_seconds_bucket",
        "keygate_key_requests_total",
        "keygate_key_info",
        "keygate_rate_limited_total",
        "keygate_keys_loaded",
        "keygate_reloads_total",
        "keygate_last_reload_success_timestamp_seconds",
        "keygate_api_enabled",
        "keygate_inflight_requests",
        "keygate_connections_open",
        "keygate_access_log_records_total",
        "keygate_access_log_dropped_total",
        "keygate_tls_cert_expiry_timestamp_seconds",
        "keygate_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    assert_eq!(
        metric(
            m,
            "keygate_requests_total{category=\"candidates\",decision=\"allowed\",method=\"GET\",status_class=\"2xx\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            m,
            "keygate_key_requests_total{decision=\"allowed\",key_id=\"kzapier\"}"
        ),
        3.0
    );
    assert_eq!(metric(m, "keygate_rate_limited_total{scope=\"key\"}"), 1.0);
    assert_eq!(metric(m, "keygate_keys_loaded"), 6.0);
    assert_eq!(
        metric(
            m,
            "keygate_key_info{key_id=\"kzapier\",key_name=\"Zapier\"}"
        ),
        1.0
    );
    assert!(!text.contains(SECRET_READ) && !text.contains(&sha256_hex(SECRET_READ)));
    // Delete Zapier: its series go away.
    TestKeys::standard(&h.kg_key)
        .without("kzapier")
        .write(&h.dir);
    // The reload is counted once (the counter is already 1 from the start).
    h.metrics()
        .expect_increase(
            "keygate_reloads_total{result=\"success\",what=\"config\"}",
            1.0,
            async { h.gateway.reload().unwrap() },
        )
        .await;
    let text = metrics_text(m);
    assert!(!text.contains("kzapier"), "deleted key's series removed");
    assert_eq!(metric(m, "keygate_keys_loaded"), 5.0);
}

/// `keygate logs --limit 50` on a 1 GB log. Run explicitly:
/// `cargo test --release --test observability -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: writes a 1 GB file"]
fn logs_on_a_gigabyte() {
    use std::io::Write;
    let dir = TempDir::new();
    dir.write("keys.yaml", "keys: []\n");
    let cfg = dir.write(
        "config.yaml",
        &config_yaml("127.0.0.1:1".parse().unwrap(), ""),
    );
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("logs/access.log")).unwrap());
    let line = r#"{"ts":"2026-11-26T03:00:00.123Z","request_id":"01JD3XXXXXXXXXXXXXXXXXXXXX","method":"GET","path":"/api/v1/candidates/12345","status":200,"decision":"allowed","key_id":"k7f3a9c1e","key_name":"Zapier","category":"candidates","ip":"203.0.113.7","duration_ms":12.4,"upstream_ms":11.9,"bytes_in":0,"bytes_out":5120,"user_agent":"Zapier"}"#;
    let mut written = 0u64;
    while written < 1 << 30 {
        writeln!(f, "{line}").unwrap();
        written += line.len() as u64 + 1;
    }
    drop(f);
    let t = Instant::now();
    let out = logs_cli(&cfg, &["--limit", "50"]);
    let took = t.elapsed();
    eprintln!("keygate logs --limit 50 on {written} bytes: {took:?}");
    assert_eq!(out.lines().count(), 51);
    assert!(took < Duration::from_secs(1));
}
