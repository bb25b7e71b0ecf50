//! The path rules of docs/http.md ("Request hygiene"), table-driven through the real gateway, and a property test:
//! for any target the gateway forwards, the upstream's path equals the matched path
//! recorded by the request-finished hook.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

/// What happens to a request target.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The HTTP library refuses it before keygate runs (no hook record, no JSON).
    Library,
    /// keygate answers `400 bad_path`.
    BadPath,
    /// Forwarded; the upstream receives exactly this target.
    Forward(&'static str),
}
use Want::*;

const ALL_PATHS: &str = "rate_limit:\n  per_key: { per_second: 100000, burst: 100000 }\nroutes:\n  public: []\n  categories:\n    everything: [\"/**\"]\n    candidates: [\"/api/v1/candidates/**\"]\n    jobs: [\"/api/v1/jobs/**\"]\n";

fn rows() -> Vec<(&'static str, &'static str, Want)> {
    vec![
        // (method, target, outcome)
        ("GET", "/api/v1/x", Forward("/api/v1/x")),
        ("GET", "//api//v1///x", Forward("/api/v1/x")),
        ("GET", "/api/v1/x/", Forward("/api/v1/x/")),
        ("GET", "/API/V1/X", Forward("/API/V1/X")),
        ("GET", "/a/./b", BadPath),
        ("GET", "/a/../b", BadPath),
        ("GET", "/a/..", BadPath),
        ("GET", "/a/.", BadPath),
        ("GET", "/a/%2e/b", BadPath),
        ("GET", "/a/%2E%2E/b", BadPath),
        ("GET", "/a/.%2e/b", BadPath),
        ("GET", "/a/%2e.", BadPath),
        // Segments of only dots, or ending in a dot: IIS strips trailing dots.
        ("GET", "/a/.../b", BadPath),
        ("GET", "/a/%2E%2e%2E", BadPath),
        ("GET", "/a/.b./c", BadPath),
        ("GET", "/a/.b.c/d", Forward("/a/.b.c/d")),
        ("GET", "/a%2fb", BadPath),
        ("GET", "/a%2Fb", BadPath),
        ("GET", "/a%5cb", BadPath),
        ("GET", "/a%5Cb", BadPath),
        ("GET", "/a%25b", BadPath),
        ("GET", "/a%253b", BadPath),
        ("GET", "/a%3bb", BadPath),
        ("GET", "/a%3Bb", BadPath),
        ("GET", "/a%3fb", BadPath),
        ("GET", "/a%3Fb", BadPath),
        ("GET", "/a%23b", BadPath),
        ("GET", "/a\\b", BadPath),
        ("GET", "/a;b", BadPath),
        ("GET", "/a;jsessionid=1", BadPath),
        ("GET", "/a%00b", BadPath),
        ("GET", "/a%0d%0ab", BadPath),
        ("GET", "/a%09b", BadPath),
        ("GET", "/a%20b", BadPath),
        ("GET", "/a%7f", BadPath),
        ("GET", "/a%1fb", BadPath),
        ("GET", "/caf%C3%A9", BadPath),
        ("GET", "/%C0%AF", BadPath),
        ("GET", "/a%ff", BadPath),
        ("GET", "/a%", BadPath),
        ("GET", "/a%1", BadPath),
        ("GET", "/a%zz", BadPath),
        ("GET", "/a%g1/b", BadPath),
        ("GET", "/%61%62%63", Forward("/abc")),
        ("GET", "/a%7e%2D%5f%2e", BadPath), // decodes to "/a~-_." (a trailing dot)
        ("GET", "/a%7e%2D%5f%2ex", Forward("/a~-_.x")),
        ("GET", "/a%3a", Forward("/a%3A")),
        ("GET", "/a%40b%21", Forward("/a%40b%21")),
        ("GET", "/a%2b", Forward("/a%2B")),
        ("GET", "/a/b?q=%2f..%2F&x=1", Forward("/a/b?q=%2f..%2F&x=1")),
        ("GET", "//a/b?x", Forward("/a/b?x")),
        ("GET", "/a/b#frag", Forward("/a/b")),
        ("GET", "/a/b?x=1#frag", Forward("/a/b?x=1")),
        ("GET", "http://evil.example/a/b", Forward("/a/b")),
        ("GET", "http://evil.example//a//b?x=1", Forward("/a/b?x=1")),
        ("GET", "http://evil.example/a/../b", BadPath),
        ("OPTIONS", "*", BadPath),
        ("GET", "example.com:443", BadPath),
        // Raw bytes the HTTP/1 parser itself refuses.
        ("GET", "/a b", Library),
        // Raw UTF-8 reaches keygate (the parser takes it) and is refused there.
        ("GET", "/caf\u{e9}", BadPath),
        ("GET", "/a\u{7f}", Library),
    ]
}

/// Sends one request with a unique request id; returns the reply and whether the
/// hook produced a record for it.
async fn send(
    h: &Harness,
    method: &str,
    target: &str,
    id: &str,
) -> (Reply, Option<keygate::record::Record>) {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {SECRET_ALL}\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
    );
    let addr = h.addr();
    let raw = tokio::task::spawn_blocking(move || raw_exchange(addr, req.as_bytes()))
        .await
        .unwrap();
    let reply = Reply::parse(&raw);
    // The hook fires when the response is done: poll for the record with a
    // deadline. A refusal by the HTTP library (400 without keygate's JSON body)
    // never gets one, so there is nothing to wait for.
    let find = || {
        h.records
            .records()
            .into_iter()
            .find(|r| r.request_id.to_str().unwrap_or("") == id)
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut rec = find();
    while rec.is_none()
        && !(reply.status == 0 || reply.code().is_none() && reply.status == 400)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(POLL).await;
        rec = find();
    }
    (reply, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_table() {
    let h = Harness::start_with(ALL_PATHS).await;
    let rows = rows();
    assert!(rows.len() >= 40);
    for (i, (method, target, want)) in rows.into_iter().enumerate() {
        let id = format!("row-{i}");
        let before = h.upstream.count();
        let (reply, rec) = send(&h, method, target, &id).await;
        // First: did the HTTP library let it through to keygate at all?
        match want {
            Library => {
                assert_eq!(reply.status, 400, "row {i} {target:?}: {}", reply.raw);
                assert!(
                    rec.is_none(),
                    "row {i} {target:?}: the library refuses it, keygate never sees it"
                );
                assert_eq!(reply.code(), None, "row {i}: not a keygate body");
                assert_eq!(h.upstream.count(), before);
                continue;
            }
            BadPath | Forward(_) => {
                assert!(
                    rec.is_some(),
                    "row {i} {target:?}: reached keygate (got {})",
                    reply.raw
                );
            }
        }
        match want {
            BadPath => {
                assert_eq!(reply.status, 400, "row {i} {target:?}: {}", reply.raw);
                assert_eq!(
                    reply.code().as_deref(),
                    Some("bad_path"),
                    "row {i} {target:?}"
                );
                assert_eq!(h.upstream.count(), before, "row {i}: nothing forwarded");
            }
            Forward(expected) => {
                assert_eq!(reply.status, 200, "row {i} {target:?}: {}", reply.raw);
                let seen = h.upstream.last();
                assert_eq!(seen.target, expected, "row {i} {target:?}");
                assert_eq!(
                    seen.headers["host"], "app.example",
                    "row {i}: authority never chooses"
                );
                let rec = rec.unwrap();
                assert_eq!(
                    format!("{}", rec.path),
                    expected.split('?').next().unwrap(),
                    "row {i}: logged path"
                );
            }
            Library => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailing_dots_when_allowed() {
    let h = Harness::start_with(&format!("{ALL_PATHS}  allow_trailing_dots: true\n")).await;
    let (reply, _) = send(&h, "GET", "/a/b./c.", "td-1").await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(h.upstream.last().target, "/a/b./c.");
    let (reply, _) = send(&h, "GET", "/a/.../c", "td-2").await;
    assert_eq!(
        reply.code().as_deref(),
        Some("bad_path"),
        "dots-only stays refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_ascii_paths_when_allowed() {
    let h = Harness::start_with(&format!("{ALL_PATHS}  allow_non_ascii_paths: true\n")).await;
    let cases: [(&str, Option<&str>); 9] = [
        ("/caf%c3%a9", Some("/caf%C3%A9")),
        ("/%E2%9C%93/x", Some("/%E2%9C%93/x")),
        ("/%C0%AF", None),
        ("/%E0%80%AF", None),
        ("/%C3", None),
        // Fullwidth "．．" and "／": NFKC or "best fit" mapping turns them into
        // ".." and "/" behind some back ends.
        ("/api/v1/jobs/%EF%BC%8E%EF%BC%8E/candidates", None),
        ("/api/v1/jobs%EF%BC%8Fx", None),
        // A segment ending in a no-break space (stripped by some back ends).
        ("/a/b%C2%A0", None),
        ("/a/b%C2%A0c", Some("/a/b%C2%A0c")),
    ];
    for (i, (target, want)) in cases.into_iter().enumerate() {
        let (reply, _) = send(&h, "GET", target, &format!("na-{i}")).await;
        match want {
            Some(p) => {
                assert_eq!(reply.status, 200, "{target}: {}", reply.raw);
                assert_eq!(h.upstream.last().target, p);
            }
            None => assert_eq!(reply.code().as_deref(), Some("bad_path"), "{target}"),
        }
    }
}

/// xorshift64*: a seeded generator, so a failure names the seed and reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_path_equals_recorded_path() {
    let h = Harness::start_with(ALL_PATHS).await;
    // Mostly pieces that survive hygiene, some that do not.
    let safe = [
        "/", "/", "/x", "/y/", "a", "B", "api", "v1", "%41", "%7e", "%7E", "%3a", "%3A", "//", "~",
        "-", "_", "%5F", "?x=1", "%40", "=", "+", "!", "$", "&", "'", "(", ")", "*", ",", ":", "@",
        "%2B", "%2b",
    ];
    let risky = [
        ".", "..", "...", "%2e", "%2E", "%2f", "%C3%A9", ";", "%", "%2", "%25", "%20", "\\",
    ];
    let seed = 0x5eed_1234_abcd_u64;
    let mut rng = Rng(seed);
    let mut forwarded = 0;
    for n in 0..300 {
        let mut target = String::from("/");
        for _ in 0..(1 + rng.next() % 8) {
            let piece = if rng.next().is_multiple_of(8) {
                rng.pick(&risky)
            } else {
                rng.pick(&safe)
            };
            target.push_str(piece);
        }
        let id = format!("prop-{n}");
        let (reply, rec) = send(&h, "GET", &target, &id).await;
        if reply.status != 200 {
            assert_eq!(
                reply.status, 400,
                "seed {seed:#x} target {target:?}: {}",
                reply.raw
            );
            continue;
        }
        forwarded += 1;
        let rec = rec.unwrap_or_else(|| panic!("seed {seed:#x} target {target:?}: no record"));
        let seen = h
            .upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.headers["x-request-id"] == id.as_str())
            .cloned()
            .unwrap();
        let upstream_path = seen.target.split('?').next().unwrap().to_string();
        assert_eq!(upstream_path, rec.path, "seed {seed:#x} target {target:?}");
        // And the normalised path is a fixed point: normalising it again changes nothing.
        assert_eq!(
            keygate::normalize_path(&rec.path, false).unwrap(),
            rec.path,
            "seed {seed:#x} target {target:?}"
        );
    }
    assert!(
        forwarded > 50,
        "the generator must produce forwardable targets ({forwarded})"
    );
}
