//! WebSocket handshakes are authorised like the GET they are and tunnelled only after
//! the upstream answers 101.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

fn handshake(target: &str, key: Option<&str>) -> String {
    let key = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {target} HTTP/1.1\r\nHost: app.example\r\n{key}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Reads one response head (up to the blank line).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn echo_through_the_gateway_with_a_read_key() {
    let h = Harness::start().await;
    let addr = h.addr();
    let (head, echoed) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(handshake("/api/v1/candidates/live", Some(SECRET_READ)).as_bytes())
            .unwrap();
        let head = read_head(&mut s);
        // A masked text frame would do as well: the tunnel copies bytes, whatever they are.
        let msg = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        s.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        (head, back == msg)
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert!(echoed, "bytes come back through the tunnel");
    let seen = h.upstream.last();
    assert!(!seen.headers.contains_key("x-api-key"));
    assert_eq!(seen.headers["x-keygate-key-id"], "kzapier");
    let recs = h.records.wait_for(1).await;
    assert_eq!(recs[0].status, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_without_a_key_or_permission() {
    let h = Harness::start().await;
    let r = h.raw(
        &handshake("/api/v1/candidates/live", None)
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = h.raw(
        &handshake("/api/v1/jobs/live", Some(SECRET_READ))
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert_eq!(h.upstream.count(), 0, "no handshake reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_request_behind_a_refused_upgrade_is_authorised_on_its_own() {
    let h = Harness::start().await;
    let req = format!(
        "{}GET /api/v1/candidates/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        handshake("/api/v1/candidates/refuse-upgrade", Some(SECRET_READ))
    );
    let raw = h.raw(&req);
    let statuses: Vec<&str> = raw
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &raw[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "401"], "{raw}");
    assert_eq!(h.upstream.targets(), ["/api/v1/candidates/refuse-upgrade"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_key_closes_its_tunnel() {
    let h = Harness::start().await;
    let addr = h.addr();
    let mut s = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(handshake("/api/v1/candidates/live", Some(SECRET_READ)).as_bytes())
            .unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s
    })
    .await
    .unwrap();
    // Remove the Zapier key and reload.
    let keys = keys_yaml(&h.kg_key);
    let start = keys.find("  - id: kzapier").unwrap();
    let end = keys.find("  - id: kreporting").unwrap();
    h.dir
        .write("keys.yaml", &format!("{}{}", &keys[..start], &keys[end..]));
    h.gateway.reload().unwrap();
    let t = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Ok(0))
    })
    .await
    .unwrap();
    assert!(closed, "the tunnel was closed");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
