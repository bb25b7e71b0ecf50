//! The public listener: accept loop, connection limit, TLS handshake or protocol
//! detection (HTTP/2 prior knowledge by its preface, else HTTP/1.1), all under
//! `timeouts.client_header_read`; then [`crate::conn::serve`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::conn::{self, Proto};
use crate::metrics::ConnError;
use crate::pipeline::ConnInfo;
use crate::snapshot::Shared;
use crate::tls::ListenerTls;

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

/// Runs the accept loop until `shutdown` turns true, then waits for open
/// connections to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    tls: Option<ListenerTls>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = shared.snapshot().config.limits.max_connections.get() as usize;
    let slots = Arc::new(Semaphore::new(max));
    let acceptor = tls.map(|t| TlsAcceptor::from(t.config));
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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            shared.metrics.connections_open.inc();
            accept_conn(stream, peer, acceptor, shared.clone(), shutdown).await;
            shared.metrics.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Wait for every connection to give its slot back.
    let _ = slots.acquire_many(max as u32).await;
}

async fn accept_conn(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let accepted = std::time::Instant::now();
    let _ = stream.set_nodelay(true);
    let header_read = shared.snapshot().config.timeouts.client_header_read;
    match acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(header_read, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    shared.metrics.connection_error(ConnError::Tls);
                    return;
                }
                Err(_) => {
                    shared.metrics.connection_error(ConnError::HeaderTimeout);
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
            conn::serve(tls, Bytes::new(), accepted, proto, info, shared, shutdown).await;
        }
        None => {
            let (proto, prefix) = match tokio::time::timeout(header_read, sniff(&mut stream)).await
            {
                Ok(Ok(Some(x))) => x,
                Ok(Ok(None)) => return,
                Ok(Err(_)) => {
                    shared.metrics.connection_error(ConnError::Other);
                    return;
                }
                Err(_) => {
                    shared.metrics.connection_error(ConnError::HeaderTimeout);
                    return;
                }
            };
            let info = ConnInfo {
                peer,
                tls: false,
                http1: proto == Proto::Http1,
            };
            conn::serve(stream, prefix, accepted, proto, info, shared, shutdown).await;
        }
    }
}
