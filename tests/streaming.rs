//! Bodies stream both ways: a 100 MB upload and a 100 MB download through the real
//! gateway binary keep its peak RSS (VmHWM) under 60 MiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const SIZE: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_in_bounded_memory() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    let kg = keygate::mint().unwrap().expose().to_string();
    dir.write("keys.yaml", &keys_yaml(&kg));
    let cfg = dir.write(
        "config.yaml",
        &config_yaml(
            upstream.addr,
            &format!("{ROUTES}limits:\n  max_body_bytes: 0\n"),
        ),
    );
    let gw = Spawned::start(&cfg);
    let addr = gw.public;

    // Upload: the upstream counts what it received.
    let up = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /api/v1/jobs/upload HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_WRITE}\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b'u'; 256 * 1024];
        let mut left = SIZE;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        Reply::parse(&out)
    })
    .await
    .unwrap();
    assert_eq!(up.status, 200, "{}", up.raw);
    assert_eq!(up.json()["bytes"], SIZE);

    // Download: count the bytes without keeping them.
    let got = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /api/v1/jobs/download/{SIZE} HTTP/1.1\r\nHost: a\r\nX-API-Key: {SECRET_WRITE}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    })
    .await
    .unwrap();
    // Head + chunked framing overhead on top of the body.
    assert!(got > SIZE && got < SIZE + SIZE / 100, "received {got}");

    let hwm = gw.status_kib("VmHWM");
    eprintln!("keygate peak RSS (VmHWM): {} KiB", hwm);
    assert!(hwm < 60 * 1024, "peak RSS {hwm} KiB");
}
