//! SIGHUP reloads config and keys on the real binary without dropping requests; a
//! broken config keeps the old snapshot and is logged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::*;

/// How long a drained gateway may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// A "not yet" window: after one SIGTERM, a gateway with a long shutdown delay
/// must still be running this long after the signal.
const STILL_DRAINING: Duration = Duration::from_millis(300);
/// Answers the load must have seen before and after the reloads (so it overlaps
/// them).
const LOAD_OVERLAP: u64 = 50;

/// Waits until `ok` has grown by `by` (the side load is running).
async fn load_moves(ok: &AtomicU64, by: u64) {
    let want = ok.load(Ordering::Relaxed) + by;
    wait_until("the side load to make progress", DEADLINE, || {
        (ok.load(Ordering::Relaxed) >= want).then_some(())
    })
    .await;
}

fn config(upstream: std::net::SocketAddr, routes: Routes) -> String {
    TestConfig::new(upstream)
        .unlimited_keys()
        .routes(routes)
        .yaml()
}

/// The standard routes plus a `reports` category.
fn with_reports() -> Routes {
    Routes::standard().category("reports", &["/api/v1/reports/**"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_route_without_dropping_requests() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    let kg = keygate::mint().unwrap().expose().to_string();
    dir.write("keys.yaml", &keys_yaml(&kg));
    let cfg = dir.write("config.yaml", &config(upstream.addr, Routes::standard()));
    let gw = Spawned::start(&cfg);
    let addr = gw.public;
    let reports = move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/reports/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    };
    let r = tokio::task::spawn_blocking(reports).await.unwrap();
    assert_eq!(r.code().as_deref(), Some("path_not_allowed"));

    // Load on the side: keep-alive and fresh connections, every answer must be 200.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut hammers = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        hammers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let one = format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\n\r\n");
                let req = format!("{one}{one}{one}GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n");
                let raw = raw_exchange(addr, req.as_bytes());
                let n = raw.matches("HTTP/1.1 200").count();
                ok.fetch_add(n as u64, Ordering::Relaxed);
                if n != 4 {
                    failures.lock().unwrap().push(raw);
                }
            }
        }));
    }
    load_moves(&ok, LOAD_OVERLAP).await;

    dir.write("config.yaml", &config(upstream.addr, with_reports()));
    gw.signal("HUP");
    let applied = eventually(Duration::from_secs(2), || reports().status == 200).await;
    assert!(applied, "the new route applies after SIGHUP");

    // A broken config: the old snapshot stays, the error is logged.
    dir.write("config.yaml", "upstream: [this is not\n");
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(2), || gw
            .log()
            .contains("reload failed"))
        .await,
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("config.yaml:"),
        "the error names the file and line"
    );
    assert_eq!(reports().status, 200, "the old snapshot stays in force");

    // A config that would make the current keys invalid is refused as a whole.
    let mut without_candidates = with_reports();
    without_candidates.categories.remove("candidates").unwrap();
    dir.write("config.yaml", &config(upstream.addr, without_candidates));
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(2), || gw
            .log()
            .matches("reload failed")
            .count()
            >= 2)
        .await
    );
    assert!(gw.log().contains("unknown category"), "{}", gw.log());
    let r = tokio::task::spawn_blocking(move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/candidates HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_READ}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    })
    .await
    .unwrap();
    assert_eq!(
        r.status, 200,
        "candidates still served from the old snapshot"
    );

    load_moves(&ok, LOAD_OVERLAP).await;
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} dropped exchanges, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "load ran: {}",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_traffic_to_a_new_upstream() {
    let first = Upstream::start().await;
    let second = Upstream::start().await;
    let dir = TempDir::new();
    let kg = keygate::mint().unwrap().expose().to_string();
    dir.write("keys.yaml", &keys_yaml(&kg));
    let cfg = dir.write("config.yaml", &config(first.addr, Routes::standard()));
    let gw = Spawned::start(&cfg);
    let addr = gw.public;
    // Keep-alive: the first upstream's connection is pooled when the reload comes.
    let get = move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    };
    assert_eq!(tokio::task::spawn_blocking(get).await.unwrap().status, 200);
    assert_eq!(first.seen.lock().unwrap().len(), 1);

    dir.write("config.yaml", &config(second.addr, Routes::standard()));
    gw.signal("HUP");
    let moved = eventually(Duration::from_secs(2), || {
        get();
        !second.seen.lock().unwrap().is_empty()
    })
    .await;
    assert!(moved, "requests reach the new upstream after SIGHUP");
    let before = first.seen.lock().unwrap().len();
    for _ in 0..5 {
        assert_eq!(tokio::task::spawn_blocking(get).await.unwrap().status, 200);
    }
    assert_eq!(
        first.seen.lock().unwrap().len(),
        before,
        "nothing goes to the old upstream once the new config is in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    TestKeys::standard("kg_x").write(&dir);
    let cfg = TestConfig::new(upstream.addr)
        .timeout("shutdown_delay", "0s")
        .timeout("shutdown", "2s")
        .write(&dir);
    let mut gw = Spawned::start(&cfg);
    gw.signal("TERM");
    let status = gw.wait_exit(EXIT_WITHIN).await;
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", gw.log());
}

fn readyz(metrics: std::net::SocketAddr) -> u16 {
    Reply::parse(&raw_exchange(
        metrics,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ))
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    TestKeys::standard("kg_x").write(&dir);
    let cfg = TestConfig::new(upstream.addr)
        .timeout("shutdown_delay", "500ms")
        .timeout("shutdown", "10s")
        .write(&dir);
    let mut gw = Spawned::start(&cfg);
    let (addr, metrics) = (gw.public, gw.metrics);
    assert_eq!(readyz(metrics), 200);
    let slow = std::thread::spawn(move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/jobs/slow/2000 HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    });
    // The request has reached the upstream (which then takes 2 s to answer).
    assert!(eventually(Duration::from_secs(2), || upstream.count() == 1).await);
    gw.signal("TERM");
    let t = std::time::Instant::now();
    assert!(
        eventually(Duration::from_millis(300), || readyz(metrics) == 503).await,
        "readyz fails at once"
    );
    assert!(t.elapsed() < Duration::from_millis(400));
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed: {}", r.raw);
    let status = gw.wait_exit(EXIT_WITHIN).await;
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    TestKeys::standard("kg_x").write(&dir);
    let cfg = TestConfig::new(upstream.addr)
        .timeout("shutdown_delay", "10s")
        .timeout("shutdown", "20s")
        .write(&dir);
    let mut gw = Spawned::start(&cfg);
    let addr = gw.public;
    let _slow = std::thread::spawn(move || {
        raw_exchange(
            addr,
            format!("GET /api/v1/jobs/slow/15000 HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    });
    // The slow request has reached the upstream (which then takes 15 s).
    wait_until("the slow request upstream", DEADLINE, || {
        (upstream.count() == 1).then_some(())
    })
    .await;
    gw.signal("TERM");
    assert!(
        gw.wait_exit(STILL_DRAINING).await.is_none(),
        "still draining after one signal"
    );
    let t = std::time::Instant::now();
    gw.signal("TERM");
    let exited = gw.wait_exit(Duration::from_secs(1)).await;
    assert!(exited.is_some(), "exits at once on the second signal");
    assert!(t.elapsed() < Duration::from_secs(1));
}
