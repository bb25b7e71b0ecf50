//! One async client with three modes: `raw` (a new HTTP/1.1 connection per request,
//! the bytes written as given, `Connection: close`), `keep_alive` (one HTTP/1.1
//! connection reused) and `h2` (one HTTP/2 prior-knowledge connection). Every mode
//! answers a [`Reply`]. Plus [`AdminClient`] for the admin API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Reply;

/// How long any one exchange may take before the test fails.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `request` on a new connection and reads until the server closes it.
pub async fn raw_exchange_async(addr: SocketAddr, request: &[u8]) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} within {EXCHANGE_TIMEOUT:?}"))
}

enum Mode {
    Raw,
    KeepAlive(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// See the module docs.
pub struct Client {
    addr: SocketAddr,
    host: String,
    mode: Mode,
}

impl Client {
    pub fn raw(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: "app.example".into(),
            mode: Mode::Raw,
        }
    }

    pub async fn keep_alive(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        Self {
            addr,
            host: "app.example".into(),
            mode: Mode::KeepAlive(send),
        }
    }

    pub async fn h2(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: "app.example".into(),
            mode: Mode::H2(super::h2_client(addr).await),
        }
    }

    /// The `Host` (or `:authority`) sent; `app.example` unless set.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    pub async fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", target, headers, "").await
    }

    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let with_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
        match &mut self.mode {
            Mode::Raw => {
                let mut req = format!(
                    "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                    self.host
                );
                for (k, v) in headers {
                    req.push_str(&format!("{k}: {v}\r\n"));
                }
                if with_length {
                    req.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                req.push_str("\r\n");
                req.push_str(body);
                Reply::parse(&raw_exchange_async(self.addr, req.as_bytes()).await)
            }
            Mode::KeepAlive(send) => {
                let mut b = http::Request::builder()
                    .method(method)
                    .uri(target)
                    .header("host", &self.host);
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
                send.ready().await.unwrap();
                from_response(send.send_request(req)).await
            }
            Mode::H2(send) => {
                let mut b = http::Request::builder()
                    .method(method)
                    .uri(format!("http://{}{target}", self.host));
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
                send.ready().await.unwrap();
                from_response(send.send_request(req)).await
            }
        }
    }
}

async fn from_response(
    res: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> Reply {
    let exchange = async {
        let res = res.await.unwrap();
        let status = res.status().as_u16();
        let headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut raw = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in &headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(&body);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("an answer within the exchange timeout")
}

/// The tests' admin token (the API wants at least 16 characters).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The admin API on `addr`: `Host: 127.0.0.1`, `Authorization: Bearer <token>`.
pub struct AdminClient {
    pub addr: SocketAddr,
    pub token: String,
}

impl AdminClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: ADMIN_TOKEN.into(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, "").await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.send("POST", path, body).await
    }

    pub async fn send(&self, method: &str, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        Client::raw(self.addr)
            .host("127.0.0.1")
            .send(method, path, &headers, body)
            .await
    }
}
