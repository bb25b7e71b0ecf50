//! The upstream connection pool: HTTP/1.1 connections made with hyper's
//! `client::conn`, each carrying one request at a time, kept idle newest first.
//!
//! A request takes the newest idle connection that is still open (waiting until it
//! is ready, if it has only just finished a response), or opens a new one. Every
//! response comes with a [`Lease`] on its connection; the response body holds it and
//! gives it back ([`Lease::release`]) when it has been read to its end. A lease
//! dropped instead (the client left mid-body, an upgrade) lets the connection close:
//! hyper cannot reuse a connection with an unread response. Idle connections are
//! closed after `idle_timeout` by a sweep once a second, and at most `max_idle` are
//! kept.
//!
//! A request that could not be written because its pooled connection had just
//! closed comes back from hyper unsent and goes out on the next connection (as
//! hyper-util's pool does for a canceled request); every other retry decision is the
//! caller's.
//!
//! May import nothing of keygate's: it is generic over the request body.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How often idle connections are looked at (and the age unit of `idle_timeout`).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Where the pool connects, and how.
pub(crate) struct Target {
    /// Host name or IP literal (IPv6 without brackets), and port.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Some` for an https upstream: the client config and the name to verify.
    pub(crate) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("connect to the upstream: {0}")]
    Connect(String),
    /// The exchange failed; `reused`: on a connection that had served a request
    /// before (the keep-alive race is possible), not a fresh one.
    #[error("upstream exchange: {error}")]
    Exchange { error: hyper::Error, reused: bool },
}

/// A pool of connections to one upstream. Cloning shares it.
pub(crate) struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.inner.target.host)
            .field("port", &self.inner.target.port)
            .finish()
    }
}

struct Inner<B> {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Newest last.
    idle: Mutex<Vec<Idle<B>>>,
    /// Advanced by the sweep every [`SWEEP_EVERY`]: an idle connection's age.
    tick: AtomicU32,
    sweeping: AtomicBool,
}

struct Idle<B> {
    tx: http1::SendRequest<B>,
    since: u32,
}

/// One response's hold on its connection; see [`Lease::release`].
pub(crate) struct Lease<B> {
    pool: Arc<Inner<B>>,
    tx: http1::SendRequest<B>,
}

impl<B> std::fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl<B> Lease<B> {
    /// The response was read to its end (and the request sent whole): the
    /// connection can carry the next request.
    pub(crate) fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let since = self.pool.tick.load(Ordering::Relaxed);
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.pool.target.max_idle {
            idle.push(Idle { tx: self.tx, since });
        }
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new(mut target: Target) -> Self {
        let tls = target.tls.take().map(|(mut config, name)| {
            // HTTP/1.1 only; say so, so that an h2-preferring server does not pick h2.
            let c = Arc::make_mut(&mut config);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            (TlsConnector::from(config), name)
        });
        Self {
            inner: Arc::new(Inner {
                target,
                tls,
                idle: Mutex::new(Vec::new()),
                tick: AtomicU32::new(0),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (origin-form URI, Host set) and waits for the response head: on
    /// the newest idle connection when `pooled`, else on a new one (the retry after
    /// a pooled connection failed).
    pub(crate) async fn send(
        &self,
        mut req: Request<B>,
        pooled: bool,
    ) -> Result<(Response<Incoming>, Lease<B>), Error> {
        loop {
            let idle = if pooled { self.inner.take_idle() } else { None };
            let (mut tx, reused) = match idle {
                Some(tx) => (tx, true),
                // Boxed: connecting (TCP, TLS, the handshake) is a large future
                // and rare; inline it would be part of every request's state.
                None => (Box::pin(self.connect()).await?, false),
            };
            if reused && tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        pool: self.inner.clone(),
                        tx,
                    };
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the pooled connection had closed. Next one.
                    Some(r) if reused => req = r,
                    _ => {
                        return Err(Error::Exchange {
                            error: e.into_error(),
                            reused,
                        });
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<B>, Error> {
        let t = &self.inner.target;
        let opened = tokio::time::timeout(t.connect_timeout, async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| Error::Connect(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::Connect(e.to_string()))?;
            let tx = match &self.inner.tls {
                None => handshake(tcp).await?,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| Error::Connect(format!("tls: {e}")))?;
                    handshake(tls).await?
                }
            };
            Ok::<_, Error>(tx)
        })
        .await;
        let tx = opened.map_err(|_| {
            Error::Connect(format!(
                "no connection within timeouts.upstream_connect ({:?})",
                t.connect_timeout
            ))
        })??;
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
        Ok(tx)
    }
}

impl<B> Inner<B> {
    /// The newest idle connection still open.
    fn take_idle(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop() {
            if !i.tx.is_closed() {
                return Some(i.tx);
            }
        }
        None
    }
}

async fn handshake<T, B>(io: T) -> Result<http1::SendRequest<B>, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}

/// Closes connections idle longer than `idle_timeout`, and ends with the pool.
async fn sweep<B>(pool: Weak<Inner<B>>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(p) = pool.upgrade() else { return };
        let now = p.tick.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let max_age = u32::try_from(p.target.idle_timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        let mut idle = p.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|i| !i.tx.is_closed() && now.wrapping_sub(i.since) < max_age);
    }
}
