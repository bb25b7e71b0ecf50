//! Serving one accepted connection: HTTP/1.1 or HTTP/2 with hyper's connection
//! builders directly, under keygate's own deadlines.
//!
//! * The first request head must be complete within `timeouts.client_header_read`
//!   of the connection's start (TLS handshake included; slowloris; an HTTP/2
//!   preface followed by nothing). A later HTTP/1 head gets the same time from its
//!   first byte. hyper's own header timer is off: it would also cut idle keep-alive.
//! * Between requests: `timeouts.idle`, measured from the end of the last request.
//! * At either deadline nothing is in flight: HTTP/1 connections, and any that never
//!   carried a request, are closed at once; HTTP/2 ones get a GOAWAY and are dropped
//!   1 s later if the peer lingers.
//! * Shutdown: a graceful close when the server stops accepting.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use bytes::Bytes as Data;
use http_body::{Body, Frame, SizeHint};

use super::{ConnInfo, ConnSettings, Service};
use crate::observe::body::ResBody;
use crate::observe::metrics::{ConnError, Metrics};
use crate::observe::request_body::BoxError;

/// Activity of one connection: requests in flight, when the last one ended, and
/// when the bytes of a next HTTP/1 request head began to arrive.
#[derive(Debug)]
pub(crate) struct ConnState {
    start: Instant,
    /// Milliseconds after `start` of the last request start or end.
    last_ms: AtomicU64,
    /// Milliseconds after `start` (+1; 0 = none) of the first byte read while no
    /// request was in flight: a request head is arriving.
    head_ms: AtomicU64,
    inflight: AtomicUsize,
    requests: AtomicU64,
}

impl ConnState {
    fn new(start: Instant) -> Arc<Self> {
        Arc::new(Self {
            start,
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Bytes arrived: if no request is in flight, a request head has begun.
    fn bytes_read(&self) {
        if self.inflight.load(Ordering::Acquire) == 0 && self.head_ms.load(Ordering::Relaxed) == 0 {
            self.head_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn head_started(&self) -> Option<Instant> {
        match self.head_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1)),
        }
    }

    fn request_started(self: &Arc<Self>) -> InflightGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.head_ms.store(0, Ordering::Relaxed);
        self.touch();
        InflightGuard(self.clone())
    }

    fn request_ended(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
    }
}

/// The connection as hyper sees it: first replays the bytes read while detecting
/// the protocol, then reads the stream; notes when bytes of a new HTTP/1 request
/// head arrive.
#[derive(Debug)]
pub(crate) struct ConnIo<T> {
    prefix: Bytes,
    inner: T,
    state: Option<Arc<ConnState>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            if let Some(s) = &self.state {
                s.bytes_read();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && let Some(s) = &self.state
        {
            s.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

/// When the connection should be closed for inactivity, if nothing happens first.
fn deadline(state: &ConnState, header_read: Duration, idle: Duration) -> Option<Instant> {
    if state.inflight.load(Ordering::Acquire) > 0 {
        return None;
    }
    // The first head counts from the connection's start, not from its first byte:
    // a trickling client gets `header_read`, not twice that.
    if state.requests.load(Ordering::Relaxed) == 0 {
        return Some(state.start + header_read);
    }
    if let Some(t) = state.head_started() {
        return Some(t + header_read);
    }
    Some(state.last_activity() + idle)
}

/// How long a peer gets to finish a graceful close we started for inactivity.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An accepted connection, as far as the transport knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    pub(crate) accepted: Instant,
    pub(crate) proto: Proto,
    pub(crate) info: ConnInfo,
    pub(crate) settings: ConnSettings,
}

/// Serves HTTP on an established (and, for TLS, handshaken) connection; `prefix`
/// holds the bytes already read to detect the protocol.
pub(crate) async fn serve<T, S>(
    io: T,
    prefix: Bytes,
    c: Conn,
    service: S,
    metrics: Option<&Metrics>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service,
{
    let Conn {
        accepted,
        proto,
        info,
        settings,
    } = c;
    let header_read = settings.header_read;
    let idle = settings.idle;
    let count = |e: ConnError| {
        if let Some(m) = metrics {
            m.connection_error(e);
        }
    };
    let state = ConnState::new(accepted);
    let io = TokioIo::new(ConnIo {
        prefix,
        inner: io,
        // HTTP/2 frames (pings, window updates) arrive between requests: only
        // HTTP/1 uses bytes to spot a request head.
        state: (proto == Proto::Http1).then(|| state.clone()),
    });
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        let guard = svc_state.request_started();
        let fut = service.call(info, req);
        async move {
            let body = fut.await;
            Ok::<_, std::convert::Infallible>(body.map(|b| Guarded {
                body: b,
                _inflight: guard,
            }))
        }
    });

    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            let mut closing = false;
            // Set when we closed for inactivity: past it, the connection is dropped.
            let mut hard_stop: Option<Instant> = None;
            loop {
                let wake = match hard_stop {
                    Some(t) => Some(t),
                    None if closing => None,
                    None => deadline(&state, header_read, idle),
                };
                let sleep = async {
                    match wake {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        // Re-check while requests are in flight.
                        None => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                };
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, peer = %info.peer, "connection error");
                            count(ConnError::classify(&e, proto == Proto::Http2));
                        }
                        break;
                    }
                    _ = shutdown.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = sleep => {
                        let now = Instant::now();
                        if hard_stop.is_some_and(|t| t <= now) {
                            break;
                        }
                        if !closing
                            && deadline(&state, header_read, idle).is_some_and(|d| d <= now)
                        {
                            // Nothing is in flight. HTTP/1, or a client that never
                            // sent a request: just close. HTTP/2: say GOAWAY first.
                            let head_pending = state.head_started().is_some()
                                || state.requests.load(Ordering::Relaxed) == 0;
                            if head_pending {
                                // The client did not finish a request head in time.
                                count(ConnError::HeaderTimeout);
                            }
                            if proto == Proto::Http1 || state.requests.load(Ordering::Relaxed) == 0 {
                                break;
                            }
                            closing = true;
                            hard_stop = Some(now + CLOSE_GRACE);
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        }};
    }

    match proto {
        Proto::Http1 => drive!(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_buf_size((settings.max_header_bytes + 1024).max(8192))
                .serve_connection(io, svc)
                .with_upgrades()
        ),
        Proto::Http2 => drive!(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(io, svc)
        ),
    }
}

/// Counts a request as in flight on its connection until dropped (it travels with
/// the response body), so the idle timer never closes a busy connection.
#[derive(Debug)]
struct InflightGuard(Arc<ConnState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request in flight until it is done or dropped.
#[derive(Debug)]
struct Guarded {
    body: ResBody,
    _inflight: InflightGuard,
}

impl Body for Guarded {
    type Data = Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Data>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
