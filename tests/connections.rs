//! Connection handling: slow or silent clients are cut off at
//! `timeouts.client_header_read`, idle keep-alive connections close after
//! `timeouts.idle` (and not before), stalled connections do not starve others, and
//! oversized headers get 431.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

const TIMEOUTS: &str = "timeouts:\n  client_header_read: 500ms\n  idle: 1s\n";
/// A gap between requests shorter than `idle` (1 s above): the time itself is what
/// is tested, so it is a fixed wait, not a wait for an event.
const UNDER_IDLE: Duration = Duration::from_millis(600);

/// Sends `bytes`, then waits for the server to close; returns how long that took
/// (None if it did not close within `limit`).
fn time_to_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    if !bytes.is_empty() {
        s.write_all(bytes).unwrap();
    }
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => continue, // an error response (408/400) before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_slow_clients_are_disconnected() {
    let h = Harness::start_with(&format!("{ROUTES}{TIMEOUTS}")).await;
    let addr = h.addr();
    let cases: [(&str, &[u8]); 4] = [
        ("nothing", b""),
        (
            "half a head",
            b"GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-Slow: ",
        ),
        ("part of the h2 preface", b"PRI * HTTP/2.0\r\n"),
        (
            "the whole h2 preface, then nothing",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let took =
            tokio::task::spawn_blocking(move || time_to_close(addr, bytes, Duration::from_secs(3)))
                .await
                .unwrap();
        let took = took.unwrap_or_else(|| panic!("{what}: not disconnected within 3 s"));
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
            "{what}: closed after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_http1_connection_closes_after_idle_and_not_before() {
    let h = Harness::start_with(&format!("{ROUTES}{TIMEOUTS}")).await;
    let addr = h.addr();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req =
            format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\n\r\n");
        let mut buf = vec![0u8; 65536];
        let mut statuses = Vec::new();
        // Three requests 600 ms apart: each gap is under `idle` (1 s), so the
        // connection must stay open, even though the total is well over it.
        for _ in 0..3 {
            s.write_all(req.as_bytes()).unwrap();
            let n = s.read(&mut buf).unwrap();
            statuses.push(String::from_utf8_lossy(&buf[..12]).to_string());
            assert!(n > 0);
            std::thread::sleep(UNDER_IDLE);
        }
        let t = Instant::now();
        let n = s.read(&mut buf).unwrap_or(0);
        (statuses, n, t.elapsed())
    })
    .await
    .unwrap();
    let (statuses, n, waited) = result;
    assert!(statuses.iter().all(|s| s.contains("200")), "{statuses:?}");
    assert_eq!(n, 0, "closed");
    // 600 ms of idleness already passed; the close comes about 400 ms later.
    assert!(
        waited < Duration::from_millis(1200),
        "closed after {waited:?} more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_http2_connection_closes_after_idle() {
    let h = Harness::start_with(&format!("{ROUTES}{TIMEOUTS}")).await;
    let stream = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let t = Instant::now();
    let req = http::Request::builder()
        .uri("http://a/api/v1/jobs")
        .header("x-api-key", SECRET_ALL)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    // A "not yet" window: still open after less than `idle`.
    tokio::time::sleep(UNDER_IDLE).await;
    assert!(!conn.is_finished(), "open before idle passed");
    let r = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(r.is_ok(), "the server closed the idle HTTP/2 connection");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

/// Raises this process's open-file limit to its hard limit (many sockets below).
fn raise_nofile() {
    let _ = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=unlimited:",
        ])
        .status();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard: String = line.split_whitespace().nth(4).unwrap().to_string();
    let _ = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_stalled_connections_do_not_stop_normal_clients() {
    raise_nofile();
    let h = Harness::start().await;
    let addr = h.addr();
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            s.write_all(b"GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\n")
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    let t = Instant::now();
    for _ in 0..20 {
        let r = tokio::task::spawn_blocking(move || {
            Reply::parse(&raw_exchange(
                addr,
                format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
            ))
        })
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_headers_get_431() {
    let h = Harness::start_with(&format!("{ROUTES}limits:\n  max_header_bytes: 4KiB\n")).await;
    let k = ("X-API-Key", SECRET_ALL);
    let ok = "a".repeat(2000);
    assert_eq!(h.get("/api/v1/jobs", &[k, ("X-Pad", &ok)]).status, 200);
    // Over the limit but within what the HTTP library buffers: keygate's JSON 431.
    let big = "b".repeat(6000);
    let r = h.get("/api/v1/jobs", &[k, ("X-Pad", &big)]);
    assert_eq!(r.status, 431, "{}", r.raw);
    assert_eq!(r.code().as_deref(), Some("headers_too_large"));
    // Far over: the HTTP library refuses it itself, also with 431.
    let huge = "c".repeat(40_000);
    let r = h.get("/api/v1/jobs", &[k, ("X-Pad", &huge)]);
    assert_eq!(r.status, 431, "{}", r.raw);
    assert_eq!(h.upstream.count(), 1);
}
