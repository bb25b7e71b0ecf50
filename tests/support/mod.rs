//! Test fixtures: a real upstream, the real gateway (in-process via [`Harness`] or
//! as the spawned binary via [`Spawned`]), temporary config/keys files and their
//! builders ([`TestConfig`], [`TestKeys`]), clients ([`Client`]: raw, keep-alive,
//! h2; [`AdminClient`]), the CLI runner ([`cli`]), a webhook receiver ([`receiver`]) and waits
//! with a deadline ([`wait_until`], [`Metrics`]).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod client;
mod config;
mod probe;
pub mod receiver;

pub use client::*;
pub use config::*;
pub use probe::*;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::record::{Observer, Record};
use keygate::{Gateway, GatewayOptions};
use tokio::net::TcpListener;

/// How often eventual effects are polled for (not a wait for luck: every wait on an
/// event polls at this period up to a deadline).
pub const POLL: Duration = Duration::from_millis(5);

pub const SECRET_READ: &str = "zapier-read-only-secret-0123456789abcdef";
pub const SECRET_ALL: &str = "reporting-dashboard-secret-0123456789abcdef";
pub const SECRET_EXPIRED: &str = "expired-key-secret-0123456789abcdefghij";
pub const SECRET_SLOW: &str = "slow-rate-key-secret-0123456789abcdefghij";
pub const SECRET_WRITE: &str = "jobs-writer-secret-0123456789abcdefghijk";

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "keygate-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body_bytes: u64,
}

/// A real HTTP/1.1 upstream on 127.0.0.1:0.
///
/// Paths: `/…/status/NNN` answers NNN; `/…/slow/MS` waits MS ms; `/…/download/N`
/// streams N bytes; anything else reads the body and answers 200 with
/// `{"path":…,"bytes":…}`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = s2.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| upstream_handle(seen.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn targets(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.target.clone())
            .collect()
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let wants_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if wants_ws && !req.uri().path().contains("refuse-upgrade") {
        seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            target: req.uri().path().to_string(),
            headers: req.headers().clone(),
            body_bytes: 0,
        });
        // Echo every byte back once the protocol is switched.
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(full(String::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        r.headers_mut().insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        return Ok(r);
    }
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    n += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    seen.lock().unwrap().push(Seen {
        method,
        target: target.clone(),
        headers,
        body_bytes: n,
    });
    let segs: Vec<&str> = path.split('/').collect();
    let arg = |name: &str| -> Option<u64> {
        segs.iter()
            .position(|s| *s == name)
            .and_then(|i| segs.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    if let Some(code) = arg("status") {
        let mut r = Response::new(full(format!("{{\"status\":{code}}}")));
        *r.status_mut() = StatusCode::from_u16(code as u16).unwrap();
        r.headers_mut().insert("x-upstream", "yes".parse().unwrap());
        return Ok(r);
    }
    if let Some(ms) = arg("slow") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(total) = arg("download") {
        return Ok(Response::new(BodyExt::boxed(ChunkStream { left: total })));
    }
    let body = serde_json::json!({"path": path, "target": target, "bytes": n}).to_string();
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("connection", "x-upstream-private".parse().unwrap());
    r.headers_mut()
        .insert("x-upstream-private", "1".parse().unwrap());
    Ok(r)
}

fn full(s: String) -> UpBody {
    BodyExt::boxed(http_body_util::Full::new(Bytes::from(s)))
}

/// A body of `total` bytes in 64 KiB chunks, produced lazily.
pub struct ChunkStream {
    left: u64,
}

impl hyper::body::Body for ChunkStream {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        static CHUNK: [u8; 65536] = [b'x'; 65536];
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..n as usize],
        )))))
    }
}

/// Collects every finished-request record.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Record>>, std::sync::atomic::AtomicBool);

impl Observer for Collect {
    fn finished(&self, r: &Record) {
        if !self.1.load(Ordering::Relaxed) {
            self.0.lock().unwrap().push(r.clone());
        }
    }
}

impl Collect {
    /// Stop keeping records (for tests that measure memory).
    pub fn discard(&self) {
        self.1.store(true, Ordering::Relaxed);
    }

    pub fn records(&self) -> Vec<Record> {
        self.0.lock().unwrap().clone()
    }
    /// Waits (with a deadline) until at least `n` records exist; fails the test if
    /// fewer arrive.
    pub async fn wait_for(&self, n: usize) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.records();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "expected at least {n} records within 5 s, got {}: {r:?}",
                r.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

pub fn sha256_hex(s: &str) -> String {
    keygate::KeyHash::of(s.as_bytes()).to_hex()
}

/// The standard keys file of the tests.
pub fn keys_yaml(kg_key: &str) -> String {
    format!(
        r#"api_enabled: true
keys:
  - id: kzapier
    name: Zapier
    secret: "{SECRET_READ}"
    permissions: {{ candidates: read }}
  - id: kreporting
    name: Reporting Dashboard
    secret: "{SECRET_ALL}"
    permissions: {{ "*": read }}
  - id: kexpired
    name: Old Integration
    secret: "{SECRET_EXPIRED}"
    permissions: {{ "*": write }}
    expires_at: 2020-01-01T00:00:00Z
  - id: kslow
    name: Slow Poke
    secret: "{SECRET_SLOW}"
    permissions: {{ "*": write }}
    rate_limit: {{ per_minute: 1, burst: 2 }}
  - id: kwriter
    name: Jobs Writer ✓
    secret: "{SECRET_WRITE}"
    permissions: {{ jobs: write, candidates: none }}
  - id: kminted
    name: Minted
    sha256: "{}"
    prefix: kg_abcd
    permissions: {{ "*": write }}
"#,
        sha256_hex(kg_key)
    )
}

/// The standard config of the tests; `extra` is appended (YAML).
pub fn config_yaml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
upstream: "http://{upstream}"
metrics:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
keys_file: keys.yaml
state_dir: data
{extra}"#
    )
}

pub const ROUTES: &str = r#"routes:
  public: ["/healthz", "/public/**"]
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
    jobs: ["/api/v1/jobs", "/api/v1/jobs/**"]
"#;

/// An in-process gateway with the standard keys in front of `upstream` (any
/// listener: a test's raw upstream too); `extra` is YAML appended to the config
/// (after the standard routes unless it has its own `routes:`). Returns the temp
/// dir, the gateway, its records and the standard `kg_` key.
pub async fn start_gateway(
    upstream: SocketAddr,
    extra: &str,
) -> (TempDir, Gateway, Arc<Collect>, String) {
    let dir = TempDir::new();
    let kg_key = keygate::mint().unwrap().expose().to_string();
    let mut yaml = String::new();
    if !extra.contains("routes:") {
        yaml.push_str(ROUTES);
    }
    yaml.push_str(extra);
    let cfg = dir.write("config.yaml", &config_yaml(upstream, &yaml));
    dir.write("keys.yaml", &keys_yaml(&kg_key));
    let records = Arc::new(Collect::default());
    let gateway = Gateway::start(
        &cfg,
        GatewayOptions {
            observer: records.clone(),
            ..GatewayOptions::default()
        },
    )
    .await
    .unwrap();
    (dir, gateway, records, kg_key)
}

/// An in-process gateway in front of a real upstream.
pub struct Harness {
    pub dir: TempDir,
    pub upstream: Upstream,
    pub gateway: Gateway,
    pub records: Arc<Collect>,
    pub kg_key: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// `extra` is YAML appended to the config (after the standard routes unless it
    /// has its own `routes:`).
    pub async fn start_with(extra: &str) -> Self {
        let upstream = Upstream::start().await;
        Self::start_at(upstream, extra).await
    }

    /// A gateway on a typed config and options (see [`HarnessBuilder`]).
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder::default()
    }

    pub async fn start_at(upstream: Upstream, extra: &str) -> Self {
        let (dir, gateway, records, kg_key) = start_gateway(upstream.addr, extra).await;
        Self {
            dir,
            upstream,
            gateway,
            records,
            kg_key,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.public_addr
    }

    /// The gateway's metrics page.
    pub fn metrics(&self) -> Metrics {
        Metrics(self.gateway.metrics_addr)
    }

    /// The admin API (the token of [`HarnessBuilder::admin_token`] unless changed).
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.gateway.admin_addr)
    }

    /// A raw async client to the public listener.
    pub fn client(&self) -> Client {
        Client::raw(self.addr())
    }

    /// Sends raw bytes on a new connection and reads until the server closes or
    /// `Connection: close` semantics end it; returns everything read.
    pub fn raw(&self, request: &str) -> String {
        raw_exchange(self.addr(), request.as_bytes())
    }

    /// A simple request with optional headers; returns the parsed response.
    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", target, headers, "")
    }

    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        Reply::parse(&self.raw(&req))
    }
}

/// Builds a [`Harness`] from a [`TestConfig`] (the standard one unless edited), the
/// standard keys, and [`GatewayOptions`] (the harness's observer always added).
#[derive(Default)]
pub struct HarnessBuilder {
    edits: Vec<Box<dyn FnOnce(TestConfig) -> TestConfig>>,
    admin_token: Option<String>,
    seal_key: Option<String>,
}

impl HarnessBuilder {
    /// Changes the config before it is written: `.config(|c| c.limit("max_connections", 5))`.
    pub fn config(mut self, edit: impl FnOnce(TestConfig) -> TestConfig + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    pub fn seal_key(mut self, base64: &str) -> Self {
        self.seal_key = Some(base64.to_string());
        self
    }

    pub async fn start(self) -> Harness {
        let upstream = Upstream::start().await;
        let dir = TempDir::new();
        let kg_key = keygate::mint().unwrap().expose().to_string();
        let mut cfg = TestConfig::new(upstream.addr);
        for edit in self.edits {
            cfg = edit(cfg);
        }
        let path = cfg.write(&dir);
        TestKeys::standard(&kg_key).write(&dir);
        let records = Arc::new(Collect::default());
        let gateway = Gateway::start(
            &path,
            GatewayOptions {
                observer: records.clone(),
                admin_token: self.admin_token,
                seal_key: self.seal_key,
                ..GatewayOptions::default()
            },
        )
        .await
        .unwrap();
        Harness {
            dir,
            upstream,
            gateway,
            records,
            kg_key,
        }
    }
}

pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed HTTP/1.1 response (the first one in a raw exchange).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

impl Reply {
    pub fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_string(),
            raw: raw.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON error code, if this is a keygate error body.
    pub fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.body.trim()).ok()?;
        v["error"]["code"].as_str().map(str::to_string)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.body.trim()).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    f()
}

/// The real `keygate` binary, started on a config; stderr is collected.
pub struct Spawned {
    pub child: std::process::Child,
    pub public: SocketAddr,
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: Arc<Mutex<String>>,
}

impl Spawned {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("-c")
            .arg(config)
            .arg("serve")
            .env_remove("KEYGATE_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .env("KEYGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if line.contains("keygate is serving") {
                    let field = |name: &str| -> Option<SocketAddr> {
                        let i = line.find(name)? + name.len();
                        line[i..].split_whitespace().next()?.parse().ok()
                    };
                    if let (Some(p), Some(m), Some(a), Some(tx)) = (
                        field("public_addr="),
                        field("metrics_addr="),
                        field("admin_addr="),
                        tx.take(),
                    ) {
                        let _ = tx.send((p, m, a));
                    }
                }
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
        let (public, metrics, admin) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                panic!("keygate did not start: {}", stderr.lock().unwrap());
            }
        };
        Self {
            child,
            public,
            metrics,
            admin,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// A field of /proc/PID/status in KiB (`VmHWM`, `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `needle` occurs at least `n` times in stderr; fails the test
    /// (showing the log) after [`DEADLINE`].
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged {n} times within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Runs the `keygate` binary on a config (`keygate -c CONFIG ARGS…`), without the
/// seal key or admin token of the environment the tests run in.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("KEYGATE_SEAL_KEY")
        .env_remove("KEYGATE_SEAL_KEY_FILE")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// The standard output of a command that must have succeeded (else the test fails,
/// showing both outputs).
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The metrics page of a gateway.
pub fn metrics_text(metrics: SocketAddr) -> String {
    Reply::parse(&raw_exchange(
        metrics,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ))
    .body
}

/// One sample's value, by its exact name and labels as exposed (0 when absent).
pub fn metric(metrics: SocketAddr, series: &str) -> f64 {
    metrics_text(metrics)
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
