//! The public listener: accept loop, connection limit, protocol detection (HTTP/2
//! prior knowledge by its preface, else HTTP/1.1) under `timeouts.client_header_read`,
//! and graceful shutdown of every connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::pipeline::{self, ConnInfo};
use crate::snapshot::Shared;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads replay `prefix` first, then the stream.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
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
enum Proto {
    Http1,
    Http2,
}

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

/// Runs the accept loop until `shutdown` turns true, then waits for open
/// connections to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = shared.snapshot().config.limits.max_connections.get() as usize;
    let slots = Arc::new(Semaphore::new(max));
    loop {
        // Connections above the limit wait here, in the kernel's accept queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_conn(stream, peer, shared, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    // Wait for every connection to give its slot back.
    let _ = slots.acquire_many(max as u32).await;
}

async fn serve_conn(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let cfg = shared.snapshot().config.clone();
    let header_timeout = cfg.timeouts.client_header_read;
    let (proto, prefix) = match tokio::time::timeout(header_timeout, sniff(&mut stream)).await {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
    };
    let info = ConnInfo {
        peer,
        tls: false,
        http1: proto == Proto::Http1,
    };
    let io = TokioIo::new(Rewind::new(prefix, stream));
    let svc = service_fn(move |req| pipeline::handle(shared.clone(), info, req));
    match proto {
        Proto::Http1 => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size((cfg.limits.max_header_bytes + 1024).max(8192))
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { log_conn_error(r.err()); }
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_conn_error(conn.await.err());
                }
            }
        }
        Proto::Http2 => {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .max_header_list_size(cfg.limits.max_header_bytes as u32)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { log_conn_error(r.err()); }
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_conn_error(conn.await.err());
                }
            }
        }
    }
}

fn log_conn_error(e: Option<hyper::Error>) {
    if let Some(e) = e {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
