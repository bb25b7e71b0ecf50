//! Faults that must end in a defined answer: a keys file that could not be read, an
//! empty keys file, stalled bodies both ways, a pooled connection the upstream just
//! closed, a malformed chunked body, a trickling request head, proxy credentials,
//! ambiguous key names. Real listeners, real processes, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::Gateway;
use keygate::record::Decision;
use support::*;

/// An in-process gateway in front of `upstream` with the standard keys.
async fn gateway_at(upstream: SocketAddr, extra: &str) -> (TempDir, Gateway, Arc<Collect>) {
    let (dir, gw, records, _) = start_gateway(upstream, extra).await;
    (dir, gw, records)
}

/// A raw upstream: `serve` gets each accepted connection on its own thread.
fn raw_upstream(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Reads one request head (up to the blank line); false if the peer closed.
fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            _ => return false,
        }
    }
    true
}

/// Reads until the peer closes (or `max` passes); returns what was read and when
/// the close came.
fn read_until_closed(s: &mut TcpStream, max: Duration) -> (Vec<u8>, Option<Instant>) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let end = Instant::now() + max;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (out, Some(Instant::now())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, Some(Instant::now())),
        }
    }
    (out, None)
}

fn prlimit_nofile(pid: u32, n: u32) {
    let ok = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={n}:")) // the soft limit; the hard one stays
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit failed");
}

/// The stalling upstream holds its half-sent body this long (far past the test's
/// `upstream_read: 500ms`).
const STALL: Duration = Duration::from_secs(30);
/// Time for the gateway to accept the idle connections (and run out of fds).
const HOGS_ACCEPTED: Duration = Duration::from_millis(300);
/// How long the trickling client stays silent before its first byte: most of the
/// 1 s header deadline, so a deadline counted from the first byte would be missed.
const SILENT_START: Duration = Duration::from_millis(800);

/// How long the keys file stays unreadable (out of file descriptors) before the
/// pressure ends: long enough for the watcher to see the change and fail at least
/// once, which is the situation under test.
const PRESSURE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_change_read_while_out_of_fds_takes_effect_when_the_pressure_ends() {
    let upstream = Upstream::start().await;
    let up = upstream.addr;
    tokio::task::spawn_blocking(move || out_of_fds(up))
        .await
        .unwrap();
}

fn out_of_fds(up: SocketAddr) {
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &config_yaml(up, ROUTES));
    let kg = keygate::mint().unwrap().expose().to_string();
    dir.write("keys.yaml", &keys_yaml(&kg));
    let gw = Spawned::start(&cfg);
    let get = |secret: &str| {
        Reply::parse(&raw_exchange(
            gw.public,
            format!("GET /api/v1/candidates HTTP/1.1\r\nHost: x\r\nX-API-Key: {secret}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
        .status
    };
    assert_eq!(get(SECRET_READ), 200);
    let new_secret = "added-while-out-of-fds-0123456789abcdef";
    // Out of descriptors: a low limit, then idle connections take the rest.
    prlimit_nofile(gw.pid(), 48);
    let hogs: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(gw.public).ok())
        .collect();
    std::thread::sleep(HOGS_ACCEPTED);
    // Revoke Zapier and add a key, by rename, while no file can be opened.
    let text = keys_yaml(&kg).replace(SECRET_READ, new_secret);
    dir.write("keys.yaml.new", &text);
    std::fs::rename(
        dir.path().join("keys.yaml.new"),
        dir.path().join("keys.yaml"),
    )
    .unwrap();
    std::thread::sleep(PRESSURE);
    assert!(
        gw.log().contains("Too many open files"),
        "the read failed under pressure: {}",
        gw.log()
    );
    drop(hogs);
    prlimit_nofile(gw.pid(), 4096);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if get(SECRET_READ) == 401 && get(new_secret) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change never applied: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Accept failures were counted, and logged at most once per 10 s.
    assert!(
        metric(
            gw.metrics,
            "keygate_connection_errors_total{kind=\"accept\"}"
        ) >= 1.0
    );
    let logged = gw.log().matches("accept failed").count();
    assert!(
        (1..=2).contains(&logged),
        "accept failure logged {logged} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_keys_file_is_refused_and_the_last_keys_stay() {
    let h = Harness::start().await;
    let failures = "keygate_reloads_total{result=\"failure\",what=\"keys\"}";
    let before = metric(h.gateway.metrics_addr, failures);
    std::fs::write(h.dir.path().join("keys.yaml"), "").unwrap();
    let m = h.gateway.metrics_addr;
    assert!(
        eventually(Duration::from_secs(5), || metric(m, failures) > before).await,
        "the empty file was counted as a failed reload"
    );
    assert_eq!(
        h.get("/api/v1/candidates", &[("x-api-key", SECRET_READ)])
            .status,
        200
    );
    // `keygate check` says so, and what to write instead.
    std::fs::write(h.dir.path().join("keys.yaml"), "# nothing\n  \n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "-c",
            h.dir.path().join("config.yaml").to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("empty") && err.contains("keys: []"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stalls_mid_body_is_cut_and_recorded() {
    let up = raw_upstream(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            std::thread::sleep(STALL);
        }
    });
    let (_dir, gw, records) = gateway_at(up, "timeouts:\n  upstream_read: 500ms\n").await;
    let addr = gw.public_addr;
    let (got, closed) = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(
            format!(
                "GET /api/v1/candidates HTTP/1.1\r\nHost: x\r\nX-API-Key: {SECRET_READ}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let t = Instant::now();
        let (got, closed) = read_until_closed(&mut c, Duration::from_secs(5));
        (got, closed.map(|c| c - t))
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "{text}");
    let closed = closed.expect("the connection was closed");
    assert!(
        closed < Duration::from_millis(2000),
        "closed after {closed:?}"
    );
    let recs = records.wait_for(1).await;
    assert_eq!(recs[0].decision, Decision::UpstreamError);
    assert_eq!(recs[0].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_body_gets_408() {
    let h = Harness::start_with(&format!("{ROUTES}timeouts:\n  client_body_read: 500ms\n")).await;
    let addr = h.addr();
    let (got, closed) = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(format!("POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {SECRET_WRITE}\r\nContent-Length: 100\r\n\r\n0123456789").as_bytes()).unwrap();
        let (got, closed) = read_until_closed(&mut c, Duration::from_secs(5));
        (String::from_utf8_lossy(&got).into_owned(), closed.is_some())
    })
    .await
    .unwrap();
    let reply = Reply::parse(&got);
    assert_eq!(reply.status, 408, "{got}");
    assert_eq!(reply.code().as_deref(), Some("client_timeout"));
    assert!(closed, "the connection is closed after a 408");
    let recs = h.records.wait_for(1).await;
    assert_eq!(recs[0].decision, Decision::BadRequest);
    assert_eq!(recs[0].status, 408);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_retried_for_idempotent_requests() {
    // Every upstream connection answers its first request, then reads the next
    // request's head and closes without answering: the keep-alive race, every time.
    let up = raw_upstream(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            read_head(&mut s);
        }
    });
    let (_dir, gw, _records) = gateway_at(up, "").await;
    let addr = gw.public_addr;
    tokio::task::spawn_blocking(move || {
        let req = |method: &str, body: &str| {
            Reply::parse(&raw_exchange(
                addr,
                format!("{method} /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {SECRET_WRITE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
            ))
            .status
        };
        for i in 0..20 {
            assert_eq!(req("GET", ""), 200, "GET #{i}");
        }
        // A POST that reached the upstream is never sent twice.
        assert_eq!(req("GET", ""), 200);
        assert_eq!(req("POST", "{}"), 502);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_upstream_connection_that_fails_is_not_retried() {
    // Every upstream connection reads one request head and closes without
    // answering: not the keep-alive race (the connection was new), so the GET is
    // sent once and answered 502.
    let heads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = heads.clone();
    let up = raw_upstream(move |mut s| {
        if read_head(&mut s) {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (_dir, gw, _records) = gateway_at(up, "").await;
    let addr = gw.public_addr;
    let status = tokio::task::spawn_blocking(move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {SECRET_WRITE}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
        .status
    })
    .await
    .unwrap();
    assert_eq!(status, 502);
    // A retry would have been made before the 502 was sent: count at once.
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let h = Harness::start().await;
    let raw = h.raw(&format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {SECRET_WRITE}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ));
    let reply = Reply::parse(&raw);
    assert_eq!(reply.status, 400, "{raw}");
    assert_eq!(reply.code().as_deref(), Some("bad_request_body"));
    let recs = h.records.wait_for(1).await;
    assert_eq!(recs[0].decision, Decision::BadRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_head_deadline_counts_from_the_connection_start() {
    let h = Harness::start_with(&format!("{ROUTES}timeouts:\n  client_header_read: 1s\n")).await;
    let addr = h.addr();
    let closed_after = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Silent for 0.8 s, then one byte every 100 ms, never finishing the head.
        std::thread::sleep(SILENT_START);
        let head = b"GET /api/v1/candidates HTTP/1.1\r\nHost: x\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if c.write_all(&[*b]).is_err() {
                return start.elapsed();
            }
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Ok(0) => return start.elapsed(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after < Duration::from_millis(1600),
        "a trickling client kept the connection for {closed_after:?} (deadline 1 s from the start)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_never_reach_the_upstream() {
    let h = Harness::start().await;
    let r = h.get(
        "/api/v1/candidates",
        &[
            ("x-api-key", SECRET_READ),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("proxy-authenticate", "Basic"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = h.upstream.last();
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert!(seen.headers.get("proxy-authenticate").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_are_unambiguous_upstream_and_invisible_characters_are_refused() {
    let h = Harness::start().await;
    let text = std::fs::read_to_string(h.dir.path().join("keys.yaml")).unwrap();
    std::fs::write(
        h.dir.path().join("keys.yaml"),
        text.replace("name: Zapier", "name: \"caf%C3%A9 100%\""),
    )
    .unwrap();
    let m = h.gateway.metrics_addr;
    assert!(
        eventually(Duration::from_secs(5), || metrics_text(m)
            .contains("caf%C3%A9 100%"))
        .await,
        "the renamed key loaded"
    );
    assert_eq!(
        h.get("/api/v1/candidates", &[("x-api-key", SECRET_READ)])
            .status,
        200
    );
    let seen = h.upstream.last();
    assert_eq!(seen.headers["x-keygate-key-name"], "caf%25C3%25A9 100%25");
    // A zero-width space in a name is a load error naming the character.
    std::fs::write(
        h.dir.path().join("keys.yaml"),
        text.replace("name: Zapier", "name: \"Zap\u{200B}ier\""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "-c",
            h.dir.path().join("config.yaml").to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("U+200B"), "{err}");
}

/// Issue "memory with 100,000 keys": a reload of a large keys file and three
/// concurrent key-list pages stay within a bound. Before, each page parsed the
/// whole file (hundreds of MB for 100,000 keys) and a reload held the whole YAML
/// event list; now pages come from the snapshot and the file is read in pieces.
/// 20,000 keys here (a debug build); `docs/performance.md` has the 100,000-key
/// figures of the release binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_key_set_reloads_and_lists_within_a_memory_bound() {
    const KEYS: usize = 20_000;
    const TOKEN: &str = "memory-test-admin-token-0123456789abcdef";
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &config_yaml(upstream.addr, ROUTES));
    let mut text = String::from("api_enabled: true\nkeys:\n");
    for i in 0..KEYS {
        let lv = ["read", "write", "none"];
        text.push_str(&format!(
            "- id: k{i:08x}\n  name: Integration number {i}\n  sha256: {}\n  prefix: kg_{:04x}\n  created_at: 2026-11-01T10:00:00Z\n  permissions:\n    candidates: {}\n    jobs: {}\n",
            sha256_hex(&format!("secret-{i}")),
            i % 65536,
            lv[i % 3],
            lv[(i + 1) % 3],
        ));
    }
    dir.write("keys.yaml", &text);
    let gw = Spawned::start_with_env(&cfg, &[("KEYGATE_ADMIN_TOKEN", TOKEN)]);
    let loaded = gw.status_kib("VmRSS");
    // Peak from here on.
    std::fs::write(format!("/proc/{}/clear_refs", gw.pid()), "5").unwrap();
    let admin = gw.admin;
    let page = move |after: usize| {
        raw_exchange(
            admin,
            format!(
                "GET /admin/v1/keys?limit=1000&after=k{after:08x} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    gw.signal("HUP");
    let pages: Vec<_> = (1..=3)
        .map(|n| tokio::task::spawn_blocking(move || page(n * 5000)))
        .collect();
    for p in pages {
        let reply = Reply::parse(&p.await.unwrap());
        assert_eq!(reply.status, 200);
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(v["keys"].as_array().unwrap().len(), 1000);
    }
    gw.wait_log("configuration reloaded", 1).await;
    let peak = gw.status_kib("VmHWM");
    eprintln!("after load {loaded} KiB, peak during reload and pages {peak} KiB");
    // The new set beside the old one, and a little: a reload or a page that parsed
    // the whole file at once would add several times the key set.
    assert!(
        peak < loaded + 40 * 1024,
        "after load {loaded} KiB, peak during reload and pages {peak} KiB"
    );
}
