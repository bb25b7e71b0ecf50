//! The request path's own Redis connection: one pipelined TCP (or TLS for
//! `rediss://`) connection to the cluster's Redis, for the one hot command (the
//! GCRA `EVALSHA` of [`super::limit`]) and the heartbeat's `PING`.
//!
//! * A call appends its pre-encoded command to the outgoing buffer and its
//!   `oneshot` to the FIFO of waiters, both under one short lock (never held
//!   across an await), so the order of the bytes is the order of the waiters. The
//!   writer sends whatever queued up since its last write in one write.
//! * The reader parses only the replies the request path uses ([`super::resp`])
//!   and answers the waiters in order. A protocol surprise, a read or write error
//!   or a closed socket closes the connection: every waiter fails at once, and so
//!   does every later call, until [`super::sync::keep_fast`] has connected anew in
//!   the background.
//! * Bounded: at most [`MAX_PENDING`] commands in flight; beyond it a call fails
//!   at once with [`Failure::Full`] (the caller treats it as a slow Redis).
//! * The same address, user, password and database as the redis crate's
//!   connections of [`super::Cluster`] (read from its connection info); no key name
//!   or secret is ever logged (the commands carry key ids only).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

use super::resp::{self, Reply, Unexpected};

/// Commands in flight (sent or queued) on one connection at most.
pub(crate) const MAX_PENDING: usize = 4096;
/// Connecting, TLS and the AUTH/SELECT exchange, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call got no usable reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection is closed (or closed while the call waited).
    Closed,
    /// [`MAX_PENDING`] commands already in flight.
    Full,
    /// A reply other than the one the command has (a server error, say).
    Answer(Reply),
    /// Loading the script over the bulk connection failed.
    Load(redis::RedisError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Closed => f.write_str("the request-path connection is closed"),
            Failure::Full => {
                f.write_str("the request-path connection has too many commands in flight")
            }
            Failure::Answer(Reply::Error(e)) => write!(f, "Redis answered an error: {e}"),
            Failure::Answer(other) => write!(f, "Redis answered {other:?}"),
            Failure::Load(e) => write!(f, "loading the script: {e}"),
        }
    }
}

struct Queue {
    /// Encoded commands not written yet.
    out: Vec<u8>,
    /// One per command written or in `out`, in order.
    waiting: VecDeque<oneshot::Sender<Reply>>,
    open: bool,
}

/// One connection's handle (shared by the request path and its driver).
pub(crate) struct Fast {
    queue: Mutex<Queue>,
    /// Wakes the writer: `out` went from empty to not empty, or the connection closed.
    wake: Notify,
}

impl Fast {
    fn new() -> Self {
        Self {
            queue: Mutex::new(Queue {
                out: Vec::with_capacity(4096),
                waiting: VecDeque::with_capacity(64),
                open: true,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `cmd` (one encoded command) and waits for its reply. The caller bounds
    /// the wait (a dropped call leaves its slot to be answered into the void).
    pub(crate) async fn call(&self, cmd: &[u8]) -> Result<Reply, Failure> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = self.lock();
            if !q.open {
                return Err(Failure::Closed);
            }
            if q.waiting.len() >= MAX_PENDING {
                return Err(Failure::Full);
            }
            let first = q.out.is_empty();
            q.out.extend_from_slice(cmd);
            q.waiting.push_back(tx);
            first
        };
        if first {
            self.wake.notify_one();
        }
        rx.await.map_err(|_| Failure::Closed)
    }

    /// `EVALSHA` of `script` (`cmd`) expecting `{a, b}`. A server that lost the
    /// script (restarted, `SCRIPT FLUSH`) gets it loaded over `bulk` and the same
    /// call once more (nothing ran the first time: `NOSCRIPT` is answered before
    /// the script starts).
    pub(crate) async fn evalsha_pair(
        &self,
        script: &redis::Script,
        cmd: &[u8],
        bulk: impl FnOnce() -> Option<redis::aio::ConnectionManager>,
    ) -> Result<(i64, i64), Failure> {
        match self.call(cmd).await? {
            Reply::Pair(a, b) => Ok((a, b)),
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                let mut con = bulk().ok_or(Failure::Closed)?;
                script.load_async(&mut con).await.map_err(Failure::Load)?;
                match self.call(cmd).await? {
                    Reply::Pair(a, b) => Ok((a, b)),
                    other => Err(Failure::Answer(other)),
                }
            }
            other => Err(Failure::Answer(other)),
        }
    }

    /// `PING` answered `PONG`.
    pub(crate) async fn ping(&self) -> bool {
        matches!(self.call(resp::PING).await, Ok(Reply::Status(s)) if s == "PONG")
    }

    /// Closes: every waiter and every later call fails, and the driver ends (the
    /// background task then connects anew). Also for a connection that stopped
    /// answering while Redis itself answers (half open, or a full queue).
    pub(crate) fn close(&self) {
        let waiting = {
            let mut q = self.lock();
            q.open = false;
            q.out.clear();
            std::mem::take(&mut q.waiting)
        };
        drop(waiting);
        self.wake.notify_one();
    }
}

/// Where and how to connect: read once from the redis crate's connection info.
pub(crate) struct Target {
    addr: Addr,
    /// `AUTH` (when a password is set), `SELECT` (db ≠ 0), `CLIENT SETNAME`.
    hello: Vec<Bytes>,
}

enum Addr {
    Tcp(String, u16),
    Tls(String, u16, tokio_rustls::TlsConnector),
    Unix(std::path::PathBuf),
}

impl Target {
    /// `ca_pem`: `cluster.redis_ca_file` (else the system roots verify a `rediss://`
    /// server). `name`: the connection's `CLIENT SETNAME`.
    pub(crate) fn new(
        info: &ConnectionInfo,
        ca_pem: Option<&[u8]>,
        name: &str,
    ) -> Result<Self, String> {
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => {
                let cfg = crate::server::tls::redis_client_config(ca_pem)?;
                Addr::Tls(host.clone(), *port, Arc::new(cfg).into())
            }
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            other => {
                return Err(format!(
                    "the request-path client does not support this Redis address ({}); rate limits use the on_redis_down fallback",
                    match other {
                        ConnectionAddr::TcpTls { .. } => "rediss:// with #insecure",
                        _ => "an unknown kind",
                    }
                ));
            }
        };
        let s = info.redis_settings();
        let mut hello = Vec::new();
        match (s.username(), s.password()) {
            (Some(u), Some(p)) => hello.push(resp::encode(&[b"AUTH", u.as_bytes(), p.as_bytes()])),
            (None, Some(p)) => hello.push(resp::encode(&[b"AUTH", p.as_bytes()])),
            (Some(_) | None, None) => {}
        }
        if s.db() != 0 {
            hello.push(resp::encode(&[b"SELECT", s.db().to_string().as_bytes()]));
        }
        hello.push(resp::encode(&[b"CLIENT", b"SETNAME", name.as_bytes()]));
        Ok(Self { addr, hello })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connected, authenticated connection and the future that drives it (it ends
/// when the connection closes, with why).
pub(crate) async fn connect(
    t: &Target,
) -> Result<(Arc<Fast>, impl Future<Output = String> + use<>), String> {
    let io = tokio::time::timeout(CONNECT_TIMEOUT, open(t))
        .await
        .map_err(|_| "connecting timed out".to_string())??;
    let fast = Arc::new(Fast::new());
    let driver = drive(fast.clone(), io);
    Ok((fast, driver))
}

async fn open(t: &Target) -> Result<Box<dyn Io>, String> {
    let io_err = |e: std::io::Error| e.to_string();
    let mut io: Box<dyn Io> = match &t.addr {
        Addr::Tcp(host, port) => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(io_err)?;
            s.set_nodelay(true).map_err(io_err)?;
            Box::new(s)
        }
        Addr::Tls(host, port, tls) => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(io_err)?;
            s.set_nodelay(true).map_err(io_err)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name: {e}"))?;
            Box::new(tls.connect(name, s).await.map_err(io_err)?)
        }
        Addr::Unix(path) => Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(io_err)?,
        ),
    };
    // The hello commands in one write, then one `+OK` each.
    let hello: Vec<u8> = t.hello.iter().flat_map(|c| c.iter().copied()).collect();
    io.write_all(&hello).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    let mut buf = BytesMut::with_capacity(512);
    for cmd in &t.hello {
        let reply = loop {
            if let Some((r, used)) = resp::parse(&buf).map_err(|e| e.to_string())? {
                buf.advance(used);
                break r;
            }
            if io.read_buf(&mut buf).await.map_err(io_err)? == 0 {
                return Err("the connection closed during AUTH/SELECT".into());
            }
        };
        // `CLIENT SETNAME` (always last) only names the connection for
        // `CLIENT LIST`: an ACL user without it still gets a working connection.
        let setname = std::ptr::eq(cmd, t.hello.last().unwrap_or(cmd));
        if let Reply::Error(e) = reply
            && !setname
        {
            // The command's name only: AUTH carries the password.
            let what = cmd.split(|b| *b == b'\n').nth(2).unwrap_or_default();
            return Err(format!(
                "{} refused: {e}",
                String::from_utf8_lossy(what).trim_end()
            ));
        }
    }
    if !buf.is_empty() {
        return Err("unexpected bytes after AUTH/SELECT".into());
    }
    Ok(io)
}

/// Runs the writer and the reader until either stops; then closes `fast`.
async fn drive(fast: Arc<Fast>, io: Box<dyn Io>) -> String {
    let (r, w) = tokio::io::split(io);
    let why = tokio::select! {
        why = write(&fast, w) => why,
        why = read(&fast, r) => why,
    };
    fast.close();
    why
}

async fn write(fast: &Fast, mut w: impl AsyncWrite + Unpin) -> String {
    let mut batch = Vec::with_capacity(4096);
    loop {
        fast.wake.notified().await;
        {
            let mut q = fast.lock();
            if !q.open {
                return "closed".into();
            }
            std::mem::swap(&mut q.out, &mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        // Flushed: over TLS the encrypted records may otherwise wait in the
        // session's buffer until the next batch.
        if let Err(e) = async {
            w.write_all(&batch).await?;
            w.flush().await
        }
        .await
        {
            return format!("write: {e}");
        }
        batch.clear();
    }
}

async fn read(fast: &Fast, mut r: impl AsyncRead + Unpin) -> String {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match r.read_buf(&mut buf).await {
            Ok(0) => return "closed by Redis".into(),
            Ok(_) => {}
            Err(e) => return format!("read: {e}"),
        }
        let mut at = 0;
        loop {
            match resp::parse(&buf[at..]) {
                Ok(Some((reply, used))) => {
                    at += used;
                    let Some(tx) = fast.lock().waiting.pop_front() else {
                        return Unexpected("a reply nobody waits for").to_string();
                    };
                    // A caller that gave up (timeout) dropped its receiver.
                    let _ = tx.send(reply);
                }
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        buf.advance(at);
    }
}
