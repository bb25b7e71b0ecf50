//! Transport only: ONE accept loop for every listener (public, admin, metrics) —
//! a connection bound, backoff on accept errors, drain on shutdown — then the TLS
//! handshake or protocol detection (HTTP/2 prior knowledge by its preface, else
//! HTTP/1.1) under the header deadline, then [`conn::serve`].
//!
//! The server knows hyper, not keygate's rules: what a request means is the
//! [`Service`] it is given. May import `observe` (connection metrics, the response
//! body type) and `config`; nothing above.

pub(crate) mod conn;
pub(crate) mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::observe::body::ResBody;
use crate::observe::metrics::{ConnError, Metrics};
use conn::Proto;
use tls::ListenerTls;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) http1: bool,
}

/// Deadlines and limits of one connection, read when it is accepted (so a reload
/// applies to new connections).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) max_header_bytes: usize,
}

/// What a listener serves.
pub(crate) trait Service: Clone + Send + Sync + 'static {
    /// The settings for a connection accepted now.
    fn settings(&self) -> ConnSettings;
    /// Answers one request. Never fails: refusals are responses.
    fn call(
        &self,
        conn: ConnInfo,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ResBody>> + Send + use<Self>;
}

/// One listener: its socket, its connection bound and optional TLS.
pub(crate) struct Listener {
    pub(crate) socket: TcpListener,
    pub(crate) max_connections: usize,
    pub(crate) tls: Option<ListenerTls>,
    /// Counted in `connections_open` and `connection_errors_total`: the public
    /// listener's connections. Admin and metrics connections are not.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// For the rate-limited accept-failure log line.
    pub(crate) name: &'static str,
}

/// An accept failure is logged at most this often (out of file descriptors, it
/// would otherwise be logged ten times a second).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long the loop waits after an accept failure before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Runs the accept loop until `shutdown` turns true, then waits for open
/// connections to finish (the caller bounds that wait).
pub(crate) async fn serve<S: Service>(
    listener: Listener,
    service: S,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = listener.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let acceptor = listener.tls.map(|t| TlsAcceptor::from(t.config));
    let metrics = listener.metrics;
    let mut failures = AcceptFailures::default();
    loop {
        // Connections above the limit wait here, in the kernel's accept queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(m) = &metrics {
                        m.connection_error(ConnError::Accept);
                    }
                    failures.log(listener.name, &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let service = service.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Some(m) = &metrics {
                m.connections_open.inc();
            }
            accept_conn(
                stream,
                peer,
                acceptor,
                service,
                metrics.as_deref(),
                shutdown,
            )
            .await;
            if let Some(m) = &metrics {
                m.connections_open.dec();
            }
            drop(permit);
        });
    }
    drop(listener.socket);
    // Wait for every connection to give its slot back.
    let _ = slots.acquire_many(max as u32).await;
}

/// Accept failures since the last log line.
#[derive(Default)]
struct AcceptFailures {
    last_log: Option<Instant>,
    since: AtomicU64,
}

impl AcceptFailures {
    fn log(&mut self, listener: &str, e: &io::Error) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY)
        {
            tracing::warn!(listener, error = %e, failures = n, "accept failed; backing off (logged at most every 10 s)");
            self.last_log = Some(Instant::now());
            self.since.store(0, Ordering::Relaxed);
        }
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes can no longer be the HTTP/2 preface (or are all of it).
async fn sniff(stream: &mut TcpStream) -> io::Result<Option<(Proto, Bytes)>> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    loop {
        let r = stream.read(&mut buf[n..]).await?;
        if r == 0 {
            return Ok(None);
        }
        n += r;
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some((Proto::Http1, Bytes::copy_from_slice(&buf[..n]))));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((Proto::Http2, Bytes::copy_from_slice(&buf[..n]))));
        }
    }
}

async fn accept_conn<S: Service>(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    service: S,
    metrics: Option<&Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let settings = service.settings();
    let count = |e: ConnError| {
        if let Some(m) = metrics {
            m.connection_error(e);
        }
    };
    // The header deadline runs from the connection's start, handshake included.
    let deadline = tokio::time::Instant::from_std(accepted + settings.header_read);
    match acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    count(ConnError::Tls);
                    return;
                }
                Err(_) => {
                    count(ConnError::HeaderTimeout);
                    return;
                }
            };
            let proto = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Proto::Http2,
                _ => Proto::Http1,
            };
            let info = ConnInfo {
                peer,
                tls: true,
                http1: proto == Proto::Http1,
            };
            let c = conn::Conn {
                accepted,
                proto,
                info,
                settings,
            };
            conn::serve(tls, Bytes::new(), c, service, metrics, shutdown).await;
        }
        None => {
            let (proto, prefix) = match tokio::time::timeout_at(deadline, sniff(&mut stream)).await
            {
                Ok(Ok(Some(x))) => x,
                Ok(Ok(None)) => return,
                Ok(Err(_)) => {
                    count(ConnError::Other);
                    return;
                }
                Err(_) => {
                    count(ConnError::HeaderTimeout);
                    return;
                }
            };
            let info = ConnInfo {
                peer,
                tls: false,
                http1: proto == Proto::Http1,
            };
            let c = conn::Conn {
                accepted,
                proto,
                info,
                settings,
            };
            conn::serve(stream, prefix, c, service, metrics, shutdown).await;
        }
    }
}
