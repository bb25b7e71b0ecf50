//! Cluster test fixtures: a real `redis-server` on a free loopback port, three
//! keygate processes on one upstream, a keep-alive HTTP/1.1 client, admin calls.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Reply, Spawned, TempDir, Upstream, raw_exchange};

pub const TOKEN: &str = "cluster-admin-token-0123456789";
pub const LIMITED: &str = "limited-key-secret-0123456789abcdefghijk";

/// A `redis-server` of its own: no persistence, a temp dir, a free port.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// TLS only (`--port 0 --tls-port`): the PEM of the CA that signed its certificate.
    tls_ca: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub fn start() -> Self {
        let dir = TempDir::new();
        let mut r = Self {
            port: free_port(),
            child: None,
            dir,
            tls_ca: None,
        };
        r.spawn();
        r
    }

    /// A server that speaks TLS only, with `cert`/`key` (PEM) signed by `ca` (PEM);
    /// clients are not asked for a certificate.
    pub fn start_tls(ca: &str, cert: &str, key: &str) -> Self {
        let dir = TempDir::new();
        dir.write("redis-ca.pem", ca);
        dir.write("redis-cert.pem", cert);
        dir.write("redis-key.pem", key);
        let mut r = Self {
            port: free_port(),
            child: None,
            dir,
            tls_ca: Some(ca.to_string()),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        match self.tls_ca {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(_) => {
                let f = |n: &str| self.dir.path().join(n);
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(f("redis-cert.pem"))
                    .arg("--tls-key-file")
                    .arg(f("redis-key.pem"))
                    .arg("--tls-ca-cert-file")
                    .arg(f("redis-ca.pem"))
                    .args(["--tls-auth-clients", "no"])
            }
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn client(&self) -> redis::Client {
        match &self.tls_ca {
            None => redis::Client::open(self.url()).unwrap(),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.as_bytes().to_vec()),
                },
            )
            .unwrap(),
        }
    }

    pub fn con(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// SIGKILL: the store is gone at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a server that hangs (connections open, no answers).
    pub fn pause(&self, on: bool) {
        let pid = self.child.as_ref().unwrap().id();
        let sig = if on { "-STOP" } else { "-CONT" };
        assert!(
            Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .unwrap()
                .success()
        );
    }

    /// A new, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.pause(false);
        }
        self.kill();
    }
}

/// The keys file of the cluster tests (the standard one plus a key at 100/s).
pub fn keys_yaml() -> String {
    let mut k = support::keys_yaml("kg_unused");
    k.push_str(&format!(
        "  - id: klimited\n    name: Limited\n    secret: \"{LIMITED}\"\n    permissions: {{ \"*\": write }}\n    rate_limit: {{ per_second: 100, burst: 50 }}\n"
    ));
    k
}

/// High default limits: probes every 5 ms must not be rate limited.
const RATES: &str = "rate_limit:\n  per_key: { per_second: 100000, burst: 100000 }\n  unauthenticated_per_ip: { per_second: 100000, burst: 100000 }\n";

/// Three replicas (a, b, c) on one Redis and one upstream.
pub struct Replicas {
    pub nodes: Vec<Spawned>,
    pub dirs: Vec<TempDir>,
}

pub fn cluster_section(redis: &Redis, node: &str, extra: &str) -> String {
    format!(
        "cluster:\n  redis_url: \"{}\"\n  name: t\n  node_name: {node}\n{extra}",
        redis.url()
    )
}

pub fn start_node(
    upstream: SocketAddr,
    redis: &Redis,
    node: &str,
    extra: &str,
) -> (Spawned, TempDir) {
    start_node_in(TempDir::new(), upstream, redis, node, extra)
}

/// [`start_node`] in a folder prepared by the caller (files the config names).
pub fn start_node_in(
    dir: TempDir,
    upstream: SocketAddr,
    redis: &Redis,
    node: &str,
    extra: &str,
) -> (Spawned, TempDir) {
    dir.write("keys.yaml", &keys_yaml());
    let cfg = format!(
        "{}{}",
        support::config_yaml(upstream, &format!("{}{RATES}", support::ROUTES)),
        cluster_section(redis, node, extra)
    );
    let path = dir.write("config.yaml", &cfg);
    let s = Spawned::start_with_env(&path, &[("KEYGATE_ADMIN_TOKEN", TOKEN)]);
    (s, dir)
}

/// A replica without a `cluster:` section (for comparison).
pub fn start_standalone(upstream: SocketAddr) -> (Spawned, TempDir) {
    let dir = TempDir::new();
    dir.write("keys.yaml", &keys_yaml());
    let cfg = support::config_yaml(upstream, &format!("{}{RATES}", support::ROUTES));
    let path = dir.write("config.yaml", &cfg);
    (
        Spawned::start_with_env(&path, &[("KEYGATE_ADMIN_TOKEN", TOKEN)]),
        dir,
    )
}

impl Replicas {
    pub fn start(upstream: &Upstream, redis: &Redis, extra: &str) -> Self {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for n in ["a", "b", "c"] {
            let (s, d) = start_node(upstream.addr, redis, n, extra);
            nodes.push(s);
            dirs.push(d);
        }
        let r = Self { nodes, dirs };
        // Synced: the limited key works everywhere.
        for n in &r.nodes {
            let ok = wait_until(Duration::from_secs(10), || {
                get(n.public, "/api/v1/jobs", LIMITED).status == 200
            });
            assert!(ok, "replica did not sync: {}", n.log());
        }
        r
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn get(addr: SocketAddr, path: &str, key: &str) -> Reply {
    Reply::parse(&raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    ))
}

/// An admin API call with the token; `headers` are extra lines.
pub fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!(
        "{method} /admin/v1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    Reply::parse(&raw_exchange(addr, req.as_bytes()))
}

/// A keep-alive HTTP/1.1 client (reconnects after an error).
pub struct Client {
    addr: SocketAddr,
    s: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            s: None,
            buf: Vec::new(),
        }
    }

    /// GET with a key; the status, or 0 on a transport error.
    pub fn get(&mut self, path: &str, key: &str) -> u16 {
        match self.try_get(path, key) {
            Some(s) => s,
            None => {
                self.s = None;
                0
            }
        }
    }

    fn try_get(&mut self, path: &str, key: &str) -> Option<u16> {
        if self.s.is_none() {
            let s = TcpStream::connect(self.addr).ok()?;
            s.set_nodelay(true).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            self.s = Some(s);
            self.buf.clear();
        }
        let s = self.s.as_mut()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut tmp = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut tmp).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let close = head.contains("connection: close");
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while self.buf.len() < head_end + len {
                let n = s.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&tmp[..n]);
            }
            self.buf.drain(..head_end + len);
        } else if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(i) = find(&self.buf[head_end..], b"0\r\n\r\n") {
                    self.buf.drain(..head_end + i + 5);
                    break;
                }
                let n = s.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&tmp[..n]);
            }
        } else {
            self.buf.drain(..head_end);
        }
        if close {
            self.s = None;
        }
        Some(status)
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Percentile of sorted durations in ms.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn trials() -> usize {
    std::env::var("KEYGATE_CLUSTER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

pub fn state_dir(d: &TempDir) -> PathBuf {
    d.path().join("data")
}
