//! A webhook receiver on 127.0.0.1:0 for the webhook tests: it records every
//! delivery (headers, body, when) and answers as told ([`Mode`]); [`verify`]
//! checks a Standard Webhooks signature with ring directly (not keygate's code).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 204 to every delivery.
    Ok,
    /// Accept the connection and close it without an answer (a receiver that is down).
    Down,
    /// 503.
    Fail,
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub answered: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or("").to_string()
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    pub mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Self {
            addr,
            hits: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
        };
        let r2 = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let r = r2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| r.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        r
    }

    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (id, timestamp, signature) = (
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mode = *self.mode.lock().unwrap();
        let (status, location) = if path.ends_with("/redirect") {
            (302, Some("/landing"))
        } else {
            match mode {
                Mode::Ok => (204, None),
                Mode::Fail => (503, None),
                Mode::Down => (0, None),
            }
        };
        self.hits.lock().unwrap().push(Hit {
            at: Instant::now(),
            path,
            id,
            timestamp,
            signature,
            body: String::from_utf8_lossy(&body).into_owned(),
            answered: status,
        });
        if status == 0 {
            // A receiver that is down: no answer at all (the connection is dropped).
            std::future::pending::<()>().await;
        }
        let mut r = Response::new(Full::new(Bytes::from_static(b"thanks")));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(l) = location {
            r.headers_mut().insert("location", l.parse().unwrap());
        }
        Ok(r)
    }

    pub fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.answered == 204)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Checks a Standard Webhooks signature with ring directly.
pub fn verify(secret: &str, hit: &Hit) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let msg = format!("{}.{}.{}", hit.id, hit.timestamp, hit.body);
    hit.signature.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b| STANDARD.decode(b).ok())
            .is_some_and(|tag| ring::hmac::verify(&key, msg.as_bytes(), &tag).is_ok())
    })
}
