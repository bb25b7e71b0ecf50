//! The demo's upstream: a small in-memory applicant-tracking API standing in for
//! "your app". `/api/v1/{candidates,jobs,applications}[/{id}]` with GET, POST (201),
//! PUT, PATCH and DELETE (204), JSON bodies, and 404 for unknown ids.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const COLLECTIONS: [&str; 3] = ["candidates", "jobs", "applications"];

#[derive(Debug, Default)]
struct Store {
    items: HashMap<&'static str, BTreeMap<u64, Value>>,
    next_id: u64,
}

impl Store {
    fn seeded() -> Self {
        let mut s = Store {
            items: HashMap::new(),
            next_id: 1,
        };
        for c in COLLECTIONS {
            s.items.insert(c, BTreeMap::new());
        }
        let seed = [
            (
                "candidates",
                json!({"name": "Ada Lovelace", "email": "ada@example.com", "stage": "interview"}),
            ),
            (
                "candidates",
                json!({"name": "Grace Hopper", "email": "grace@example.com", "stage": "offer"}),
            ),
            (
                "jobs",
                json!({"title": "Backend Engineer", "location": "Remote", "open": true}),
            ),
            (
                "jobs",
                json!({"title": "Data Analyst", "location": "Berlin", "open": true}),
            ),
            (
                "applications",
                json!({"candidate_id": 1, "job_id": 3, "status": "interview"}),
            ),
        ];
        for (c, v) in seed {
            s.insert(c, v);
        }
        s
    }

    fn insert(&mut self, collection: &'static str, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        if let Value::Object(m) = &mut v {
            m.insert("id".into(), json!(id));
        }
        if let Some(c) = self.items.get_mut(collection) {
            c.insert(id, v.clone());
        }
        v
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_FOUND,
        json!({"error": format!("{what} not found")}),
    )
}

async fn handle(
    store: Arc<Mutex<Store>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/healthz" {
        return Ok(reply(StatusCode::OK, json!({"ok": true})));
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (collection, id) = match segs.as_slice() {
        ["api", "v1", c] => (*c, None),
        ["api", "v1", c, id] => (*c, Some(*id)),
        _ => return Ok(not_found("path")),
    };
    let Some(&collection) = COLLECTIONS.iter().find(|c| **c == collection) else {
        return Ok(not_found("collection"));
    };
    let id = match id.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Ok(not_found("item")),
    };
    // Read the body (small JSON only) before touching the store.
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body too large"}),
            ));
        }
    };
    let parsed = || -> Option<Value> {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(Value::is_object)
    };
    let bad_json = || {
        reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "send a JSON object"}),
        )
    };
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    let res = match (method, id) {
        (Method::GET | Method::HEAD, None) => {
            let items: Vec<&Value> = s
                .items
                .get(collection)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            reply(StatusCode::OK, json!({ collection: items }))
        }
        (Method::GET | Method::HEAD, Some(id)) => {
            match s.items.get(collection).and_then(|m| m.get(&id)) {
                Some(v) => reply(StatusCode::OK, v.clone()),
                None => not_found("item"),
            }
        }
        (Method::POST, None) => match parsed() {
            Some(v) => reply(StatusCode::CREATED, s.insert(collection, v)),
            None => bad_json(),
        },
        (Method::PUT | Method::PATCH, Some(id)) => {
            let Some(new) = parsed() else {
                return Ok(bad_json());
            };
            match s.items.get_mut(collection).and_then(|m| m.get_mut(&id)) {
                Some(old) => {
                    if let (Value::Object(o), Value::Object(n)) = (&mut *old, new) {
                        n.into_iter().for_each(|(k, v)| {
                            o.insert(k, v);
                        });
                        o.insert("id".into(), json!(id));
                    }
                    reply(StatusCode::OK, old.clone())
                }
                None => not_found("item"),
            }
        }
        (Method::DELETE, Some(id)) => match s.items.get_mut(collection).and_then(|m| m.remove(&id))
        {
            Some(_) => {
                let mut r = reply(StatusCode::NO_CONTENT, Value::Null);
                *r.body_mut() = Full::new(Bytes::new());
                r
            }
            None => not_found("item"),
        },
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed here"}),
        ),
    };
    Ok(res)
}

/// Starts the sample API on 127.0.0.1 (a free port); returns its address.
pub(crate) async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let store = Arc::new(Mutex::new(Store::seeded()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(store.clone(), req));
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
