//! The per-IP limit on failed authentication: a hard bound on the table under 20,000
//! distinct client addresses, flat memory, and a valid key never blocked by it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

async fn request_from(from: Ipv4Addr, to: SocketAddr, key: Option<&str>) -> u16 {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let key = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET /api/v1/jobs HTTP/1.1\r\nHost: a\r\n{key}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    Reply::parse(&String::from_utf8_lossy(&out)).status
}

fn addr(i: u32) -> Ipv4Addr {
    // 127.1.0.0 upwards: every one a distinct loopback address.
    Ipv4Addr::from(0x7f01_0000 + i)
}

fn rss_kib() -> u64 {
    proc_status_kib(std::process::id(), "VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_stays_bounded_under_twenty_thousand_addresses() {
    let h = Harness::start_with(&format!(
        "{ROUTES}rate_limit:\n  unauthenticated_per_ip: {{ per_minute: 60, burst: 20, max_tracked_ips: 1000 }}\n"
    ))
    .await;
    h.records.discard();
    let to = h.addr();
    let run = |range: std::ops::Range<u32>| async move {
        for batch in range.collect::<Vec<_>>().chunks(64) {
            let mut tasks = Vec::new();
            for &i in batch {
                tasks.push(tokio::spawn(request_from(addr(i), to, None)));
            }
            for t in tasks {
                assert_eq!(
                    t.await.unwrap(),
                    401,
                    "a first failure from a new address is a 401"
                );
            }
        }
    };
    run(0..5_000).await;
    let m = h.gateway.metrics_addr;
    let tracked = || support::metric(m, "keygate_ip_limiter_tracked") as u64;
    let evicted = || support::metric(m, "keygate_ip_limiter_evictions_total") as u64;
    assert!(tracked() <= 1000, "{}", tracked());
    let rss_before = rss_kib();
    run(5_000..20_000).await;
    let rss_after = rss_kib();
    assert!(tracked() <= 1000, "tracked {}", tracked());
    assert!(tracked() >= 900, "the table is in use: {}", tracked());
    assert!(evicted() >= 19_000, "evictions counted: {}", evicted());
    eprintln!("RSS {rss_before} KiB -> {rss_after} KiB over 15,000 more addresses");
    assert!(
        rss_after < rss_before + 4 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_gets_429_after_its_burst_but_valid_keys_pass() {
    let h = Harness::start_with(&format!(
        "{ROUTES}rate_limit:\n  unauthenticated_per_ip: {{ per_minute: 60, burst: 5 }}\n"
    ))
    .await;
    let me = Ipv4Addr::new(127, 9, 9, 9);
    for _ in 0..5 {
        assert_eq!(request_from(me, h.addr(), None).await, 401);
    }
    assert_eq!(request_from(me, h.addr(), None).await, 429);
    assert_eq!(
        request_from(me, h.addr(), Some("not-a-real-key-0123456789abcdefghij")).await,
        429
    );
    assert_eq!(
        request_from(me, h.addr(), Some(SECRET_ALL)).await,
        200,
        "a valid key is never blocked"
    );
    // Another address is unaffected.
    assert_eq!(
        request_from(Ipv4Addr::new(127, 9, 9, 10), h.addr(), None).await,
        401
    );
    let recs = h.records.wait_for(9).await;
    assert!(
        recs.iter()
            .any(|r| r.status == 429 && r.decision == keygate::record::Decision::RateLimited)
    );
}
