//! The control plane: SIGHUP, `POST /admin/v1/reload` and `Gateway::reload` run the
//! same reload (the access log is reopened, restart-required fields are reported
//! and keep their running values); reveal of an unknown key is 404; the admin and
//! metrics listeners have a connection bound and are drained on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The relative access-log path of these tests (relative to config.yaml).
const LOG: &str = "logs/access.log";
/// Where logrotate would move it.
const MOVED: &str = "logs/access.log.1";
/// The connection bounds of `src/control/admin.rs` and `src/control/health.rs`.
const ADMIN_BOUND: usize = 64;
const METRICS_BOUND: usize = 256;
/// A "not yet" window: a connection beyond the bound must get no answer for this
/// long (nothing to wait for — the point is that nothing happens).
const NOT_YET: Duration = Duration::from_millis(500);
/// Logged by the reloader when a changed field only applies at restart.
const MAX_CONN_NOTE: &str = "restart required to apply: limits.max_connections";
/// Logged after every successful reload.
const RELOADED: &str = "configuration reloaded";
const CONFIG_RELOADS: &str = "keygate_reloads_total{result=\"success\",what=\"config\"}";
/// 32 zero bytes, base64: a seal key for tests.
const SEAL_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn file_has(path: &Path, request_id: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|t| t.contains(&format!("\"{request_id}\"")))
        .unwrap_or(false)
}

async fn read_request(public: SocketAddr, request_id: &str) {
    let r = Client::raw(public)
        .get(
            "/api/v1/candidates",
            &[("X-API-Key", SECRET_READ), ("X-Request-Id", request_id)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// The two in-process ways to reload.
enum Via {
    AdminApi,
    /// `Gateway::reload`, what the binary's SIGHUP handler calls.
    GatewayReload,
}

async fn a_moved_access_log_is_reopened_by(via: Via) {
    let h = Harness::builder()
        .config(|c| c.access_log(LOG))
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    let (log, moved) = (h.dir.path().join(LOG), h.dir.path().join(MOVED));
    read_request(h.addr(), "before-move").await;
    h.records.wait_for(1).await;
    h.gateway.flush_access_log(DEADLINE);
    assert!(file_has(&log, "before-move"), "the first record is written");

    std::fs::rename(&log, &moved).unwrap();
    // Both ways run the one counted reload.
    h.metrics()
        .expect_increase(CONFIG_RELOADS, 1.0, async {
            match via {
                Via::AdminApi => {
                    let r = h.admin().post("/admin/v1/reload", "").await;
                    assert_eq!(r.status, 200, "{}", r.raw);
                    assert_eq!(r.json()["reloaded"], true);
                }
                Via::GatewayReload => h.gateway.reload().unwrap(),
            }
        })
        .await;

    read_request(h.addr(), "after-reload").await;
    h.records.wait_for(2).await;
    h.gateway.flush_access_log(DEADLINE);
    assert!(
        file_has(&log, "after-reload"),
        "the next record is in a new file at the configured path"
    );
    assert!(!file_has(&log, "before-move"), "the new file is new");
    assert!(file_has(&moved, "before-move"));
    assert!(
        !file_has(&moved, "after-reload"),
        "nothing more is appended to the moved file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_reload_reopens_a_moved_access_log() {
    a_moved_access_log_is_reopened_by(Via::AdminApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_reload_reopens_a_moved_access_log() {
    a_moved_access_log_is_reopened_by(Via::GatewayReload).await;
}

/// A spawned binary on the standard keys and `config`, with the admin token set.
fn spawn(config: TestConfig) -> (Spawned, TempDir) {
    let dir = TempDir::new();
    TestKeys::standard("kg_unused").write(&dir);
    let path = config.write(&dir);
    let gw = Spawned::start_with_env(&path, &[("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    (gw, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_a_moved_access_log_on_the_binary() {
    let upstream = Upstream::start().await;
    let (gw, dir) = spawn(TestConfig::new(upstream.addr).access_log(LOG));
    let (log, moved) = (dir.path().join(LOG), dir.path().join(MOVED));
    read_request(gw.public, "before-move").await;
    wait_until("the first record in the log", DEADLINE, || {
        file_has(&log, "before-move").then_some(())
    })
    .await;

    std::fs::rename(&log, &moved).unwrap();
    gw.signal("HUP");
    gw.wait_log(RELOADED, 1).await;

    read_request(gw.public, "after-reload").await;
    wait_until("the next record in a new file", DEADLINE, || {
        file_has(&log, "after-reload").then_some(())
    })
    .await;
    assert!(!file_has(&log, "before-move"), "the new file is new");
    assert!(file_has(&moved, "before-move"));
    assert!(!file_has(&moved, "after-reload"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_connections_change_needs_a_restart_in_both_reload_paths() {
    let upstream = Upstream::start().await;
    let config = |n: u32| TestConfig::new(upstream.addr).limit("max_connections", n);
    let (gw, dir) = spawn(config(100));
    assert!(!gw.log().contains(MAX_CONN_NOTE), "{}", gw.log());

    config(200).write(&dir);
    gw.signal("HUP");
    gw.wait_log(RELOADED, 1).await;
    gw.wait_log(MAX_CONN_NOTE, 1).await;

    config(300).write(&dir);
    let r = AdminClient::new(gw.admin)
        .post("/admin/v1/reload", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    gw.wait_log(RELOADED, 2).await;
    gw.wait_log(MAX_CONN_NOTE, 2).await;
    // And the gateway still serves.
    read_request(gw.public, "after-both").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reveal_and_get_of_an_unknown_key_are_404() {
    let h = Harness::builder()
        .admin_token(ADMIN_TOKEN)
        .seal_key(SEAL_KEY)
        .start()
        .await;
    let admin = h.admin();
    let r = admin.post("/admin/v1/keys/knosuchkey/reveal", "").await;
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(r.code().as_deref(), Some("key_not_found"), "{}", r.raw);
    let r = admin.get("/admin/v1/keys/knosuchkey").await;
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(r.code().as_deref(), Some("key_not_found"), "{}", r.raw);
    // A known operator key still reveals: the 404 is about the id.
    let r = admin.post("/admin/v1/keys/kzapier/reveal", "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json()["key"], SECRET_READ);
}

/// Opens `bound` keep-alive connections that each got an answer to `target` (so
/// each holds a slot), then shows that one more is accepted by the kernel but not
/// served until one of them closes.
async fn bound_holds(addr: SocketAddr, bound: usize, target: &str, authorization: &str) {
    let headers = [("Authorization", authorization)];
    let mut held = Vec::with_capacity(bound);
    for i in 0..bound {
        let mut c = Client::keep_alive(addr).await.host("127.0.0.1");
        let r = c.get(target, &headers).await;
        assert_eq!(r.status, 200, "connection {i}: {}", r.raw);
        held.push(c);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(NOT_YET, extra.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "connection {} was served while {bound} were open: {early:?}",
        bound + 1
    );
    // One closes: the waiting connection is accepted and answered.
    drop(held.pop());
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, extra.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    let r = Reply::parse(&String::from_utf8_lossy(&answer));
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_listener_has_a_connection_bound() {
    let h = Harness::builder().admin_token(ADMIN_TOKEN).start().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    bound_holds(h.gateway.admin_addr, ADMIN_BOUND, "/admin/v1/api", &auth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_listener_has_a_connection_bound() {
    let h = Harness::start().await;
    bound_holds(h.gateway.metrics_addr, METRICS_BOUND, "/healthz", "none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reloaded_max_connections_keeps_the_running_bound_until_restart() {
    let h = Harness::builder()
        .config(|c| c.limit("max_connections", 2))
        .start()
        .await;
    TestConfig::new(h.upstream.addr)
        .limit("max_connections", 100)
        .write(&h.dir);
    h.gateway.reload().unwrap();
    let key = format!("Bearer {SECRET_ALL}");
    bound_holds(h.addr(), 2, "/api/v1/jobs", &key).await;
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_admin_listener_then_exits_zero() {
    let upstream = Upstream::start().await;
    let (mut gw, _dir) = spawn(
        TestConfig::new(upstream.addr)
            .timeout("shutdown_delay", "0s")
            .timeout("shutdown", "10s"),
    );
    // An admin request in flight: its handler is reading the body (hyper's
    // `100 Continue` says so) when SIGTERM comes.
    let body = r#"{"enabled": true}"#;
    let mut s = TcpStream::connect(gw.admin).await.unwrap();
    s.write_all(
        format!(
            "PUT /admin/v1/api HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
        .await
        .expect("100 Continue")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");

    gw.signal("TERM");
    // New connections are refused once the listeners are drained, on both
    // operations listeners, while the admin request is still open.
    let (admin, metrics) = (gw.admin, gw.metrics);
    let deadline = std::time::Instant::now() + DEADLINE;
    while !(refused(admin).await && refused(metrics).await) {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM: {}",
            gw.log()
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "waits for the admin request"
    );

    // The in-flight request completes.
    s.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("the in-flight admin request is answered, then the connection closed")
        .unwrap();
    let r = Reply::parse(&String::from_utf8_lossy(&rest));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json()["enabled"], true);

    let status = gw.wait_exit(DEADLINE).await;
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", gw.log());
}
