//! `/admin/v1/webhooks…` (docs/webhooks.md): list, create (the secret shown once), get,
//! change, delete, rotate the secret (the old one keeps signing for 24 h), send a
//! test event, the delivery log, and resend. The admin listener has already
//! checked the Host and the token; changes are audited as `admin:<ip>`.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::manage::{
    apply_patch, check_description, check_events, check_url, rotate_in, test_event,
};
use super::sign::SigningSecret;
use super::store::{Endpoint, StoreError, audit, created_now, new_endpoint_id};
use super::{Webhooks, worker};
use crate::observe::body::ResBody;
use crate::proxy::reject::error_response;
use crate::proxy::snapshot::Snapshots;

/// A refusal: status, code, message.
struct Refusal(StatusCode, &'static str, String, Option<&'static str>);

type Answer = Result<Response<ResBody>, Refusal>;

fn bad(m: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, "invalid_request", m.into(), None)
}

fn not_allowed(allow: &'static str) -> Answer {
    Err(Refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint takes {allow}"),
        Some(allow),
    ))
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Refusal(
                StatusCode::NOT_FOUND,
                "webhook_not_found",
                e.to_string(),
                None,
            ),
            StoreError::Io(m) => Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "webhooks_store_error",
                m,
                None,
            ),
            StoreError::Unavailable(m) => Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                m,
                None,
            ),
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<ResBody> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(ResBody::full(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refusal> {
    let bytes = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| bad("the body is larger than 64 KiB or was cut off"))?
        .to_bytes();
    // A JSON object, nothing before or after it (serde would also read a struct
    // from an array, and stop at the end of the first value).
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad("body: must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            bad(format!("body: {inner}"))
        } else {
            bad(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| bad(format!("body: {e} (one JSON object only)")))?;
    Ok(value)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Refusal::from),
        Err(_) => Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the operation did not complete".into(),
            None,
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    include_body: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<Option<String>>,
    #[serde(default)]
    include_body: Option<bool>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Routes `rest` (the path after `/admin/v1/`, starting with `webhooks`).
pub(crate) async fn handle(
    webhooks: Option<&Arc<Webhooks>>,
    shared: &Snapshots,
    peer: IpAddr,
    rest: &str,
    req: Request<Incoming>,
    rid: &HeaderValue,
) -> Response<ResBody> {
    let result = match webhooks {
        Some(w) => route(w, shared, peer, rest, req).await,
        None => Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_unavailable",
            "webhooks are not running on this gateway".into(),
            None,
        )),
    };
    let mut r = match result {
        Ok(r) => r,
        Err(Refusal(status, code, message, allow)) => {
            let mut r = error_response(status, code, &message, rid);
            if let Some(a) = allow {
                r.headers_mut().insert(ALLOW, HeaderValue::from_static(a));
            }
            r
        }
    };
    let h = r.headers_mut();
    h.insert(crate::proxy::requestid::HEADER, rid.clone());
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn route(
    w: &Arc<Webhooks>,
    shared: &Snapshots,
    peer: IpAddr,
    rest: &str,
    req: Request<Incoming>,
) -> Answer {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let actor = format!("admin:{peer}");
    let method = req.method().clone();
    match (segs.as_slice(), &method) {
        (["webhooks"], &Method::GET) => list(w).await,
        (["webhooks"], &Method::POST) => create(w, shared, &actor, req).await,
        (["webhooks"], _) => not_allowed("GET, POST"),
        (["webhooks", id], &Method::GET) => get(w, id).await,
        (["webhooks", id], &Method::PATCH) => patch(w, shared, &actor, id, req).await,
        (["webhooks", id], &Method::DELETE) => delete(w, &actor, id).await,
        (["webhooks", _], _) => not_allowed("GET, PATCH, DELETE"),
        (["webhooks", id, "rotate-secret"], &Method::POST) => rotate(w, &actor, id).await,
        (["webhooks", _, "rotate-secret"], _) => not_allowed("POST"),
        (["webhooks", id, "test"], &Method::POST) => test(w, id).await,
        (["webhooks", _, "test"], _) => not_allowed("POST"),
        (["webhooks", id, "deliveries"], &Method::GET) => deliveries(w, id).await,
        (["webhooks", _, "deliveries"], _) => not_allowed("GET"),
        (["webhooks", id, "deliveries", ev, "resend"], &Method::POST) => {
            resend(w, &actor, id, ev).await
        }
        (["webhooks", _, "deliveries", _, "resend"], _) => not_allowed("POST"),
        _ => Err(Refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: /admin/v1/{rest} (see /admin/v1/openapi.json)"),
            None,
        )),
    }
}

/// Every endpoint; in cluster mode, when Redis cannot answer, the ones this
/// replica has in force (a read never fails for that; writes do).
async fn load(w: &Arc<Webhooks>) -> Result<Vec<Endpoint>, Refusal> {
    let store = w.store.clone();
    match tokio::task::spawn_blocking(move || store.load()).await {
        Ok(Ok(all)) => Ok(all),
        Ok(Err(StoreError::Unavailable(_))) if w.cluster.is_some() => Ok(w.endpoints_now()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the operation did not complete".into(),
            None,
        )),
    }
}

async fn list(w: &Arc<Webhooks>) -> Answer {
    let all = load(w).await?;
    let v: Vec<Value> = all.iter().map(Endpoint::view).collect();
    Ok(json_response(StatusCode::OK, &json!({ "webhooks": v })))
}

async fn get(w: &Arc<Webhooks>, id: &str) -> Answer {
    let e = find(w, id).await?;
    Ok(json_response(StatusCode::OK, &e.view()))
}

async fn find(w: &Arc<Webhooks>, id: &str) -> Result<Endpoint, Refusal> {
    load(w)
        .await?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| StoreError::NotFound(id.to_string()).into())
}

async fn create(
    w: &Arc<Webhooks>,
    shared: &Snapshots,
    actor: &str,
    req: Request<Incoming>,
) -> Answer {
    let b: CreateBody = body(req).await?;
    let snap = shared.load();
    let allow_private = snap.config.webhooks.allow_private_targets;
    check_url(&b.url, allow_private)
        .await
        .map_err(|m| Refusal(StatusCode::BAD_REQUEST, "target_not_allowed", m, None))?;
    check_events(&b.events, &snap.config.policy).map_err(bad)?;
    check_description(b.description.as_deref()).map_err(bad)?;
    let secret = SigningSecret::generate()
        .map_err(|m| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None))?;
    let e = Endpoint {
        id: new_endpoint_id(),
        url: b.url,
        events: b.events,
        description: b.description,
        include_body: b.include_body,
        enabled: b.enabled,
        secret: secret.expose().to_string(),
        previous_secret: None,
        created_at: created_now(),
        failing_since: None,
        disabled_reason: None,
    };
    let store = w.store.clone();
    let saved = e.clone();
    blocking(move || {
        store.modify(|all| {
            all.push(saved);
            Ok(())
        })
    })
    .await?;
    audit(
        &w.state_dir,
        actor,
        "webhook.create",
        &e.id,
        &["url", "events", "description", "include_body", "enabled"],
    );
    w.refresh().await;
    let mut v = e.view();
    v["secret"] = json!(secret.expose());
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn patch(
    w: &Arc<Webhooks>,
    shared: &Snapshots,
    actor: &str,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let b: PatchBody = body(req).await?;
    let snap = shared.load();
    if let Some(u) = &b.url {
        check_url(u, snap.config.webhooks.allow_private_targets)
            .await
            .map_err(|m| Refusal(StatusCode::BAD_REQUEST, "target_not_allowed", m, None))?;
    }
    if let Some(ev) = &b.events {
        check_events(ev, &snap.config.policy).map_err(bad)?;
    }
    if let Some(d) = &b.description {
        check_description(d.as_deref()).map_err(bad)?;
    }
    let mut fields = Vec::new();
    if b.url.is_some() {
        fields.push("url");
    }
    if b.events.is_some() {
        fields.push("events");
    }
    if b.description.is_some() {
        fields.push("description");
    }
    if b.include_body.is_some() {
        fields.push("include_body");
    }
    if b.enabled.is_some() {
        fields.push("enabled");
    }
    let store = w.store.clone();
    let id2 = id.to_string();
    let e = blocking(move || {
        store.update(&id2, |e| {
            apply_patch(e, b.url, b.events, b.description, b.include_body, b.enabled);
            Ok(())
        })
    })
    .await?;
    audit(&w.state_dir, actor, "webhook.edit", id, &fields);
    w.refresh().await;
    Ok(json_response(StatusCode::OK, &e.view()))
}

async fn delete(w: &Arc<Webhooks>, actor: &str, id: &str) -> Answer {
    let store = w.store.clone();
    let id2 = id.to_string();
    blocking(move || {
        store.modify(|all| {
            let n = all.len();
            all.retain(|e| e.id != id2);
            if all.len() == n {
                return Err(StoreError::NotFound(id2));
            }
            Ok(())
        })
    })
    .await?;
    audit(&w.state_dir, actor, "webhook.delete", id, &[]);
    w.refresh().await;
    worker::forget(w, id);
    if let Some(r) = w.store.redis().cloned() {
        let id2 = id.to_string();
        // The endpoint is gone already; a log left behind is only untidy.
        let _ = blocking(move || r.drop_log(&id2)).await;
    }
    let mut r = Response::new(ResBody::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn rotate(w: &Arc<Webhooks>, actor: &str, id: &str) -> Answer {
    let secret = SigningSecret::generate()
        .map_err(|m| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None))?;
    let store = w.store.clone();
    let id2 = id.to_string();
    let s2 = secret.clone();
    let e = blocking(move || {
        store.update(&id2, |e| {
            rotate_in(e, &s2, crate::control::webhooks::now_ms() / 1000);
            Ok(())
        })
    })
    .await?;
    audit(
        &w.state_dir,
        actor,
        "webhook.rotate_secret",
        id,
        &["secret"],
    );
    w.refresh().await;
    let mut v = e.view();
    v["secret"] = json!(secret.expose());
    Ok(json_response(StatusCode::OK, &v))
}

async fn test(w: &Arc<Webhooks>, id: &str) -> Answer {
    find(w, id).await?;
    let event = test_event(id);
    let event_id = event.id.clone();
    if w.fan_out(&event, Some(id)) == 0 {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_queue_full",
            "the webhook queue is full (webhooks.queue_max); the test event was dropped".into(),
            None,
        ));
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "event_id": event_id, "type": "webhook.test" }),
    ))
}

async fn deliveries(w: &Arc<Webhooks>, id: &str) -> Answer {
    find(w, id).await?;
    // Cluster mode: the cluster's log and pending deliveries, from Redis.
    if let Some(r) = w.store.redis().cloned() {
        let id2 = id.to_string();
        let (log, pending) = blocking(move || Ok((r.log(&id2)?, r.pending(&id2)?))).await?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "deliveries": log.iter().map(entry_view).collect::<Vec<_>>(),
                "pending": pending.iter().map(pending_view).collect::<Vec<_>>(),
            }),
        ));
    }
    let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    let log: Vec<Value> = match inner.logs.get(id) {
        Some(l) => l.iter().rev().map(entry_view).collect(),
        None => {
            drop(inner);
            let l = super::log::read_log(w.store.dir(), id);
            return Ok(json_response(
                StatusCode::OK,
                &json!({ "deliveries": l.iter().rev().map(entry_view).collect::<Vec<_>>(), "pending": pending(w, id) }),
            ));
        }
    };
    drop(inner);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "deliveries": log, "pending": pending(w, id) }),
    ))
}

fn entry_view(e: &super::log::LogEntry) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("body");
    }
    v
}

fn pending(w: &Webhooks, id: &str) -> Vec<Value> {
    let inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    inner
        .queue
        .keys_for(id)
        .iter()
        .filter_map(|k| inner.queue.get(k))
        .map(|d| pending_view(&d))
        .collect()
}

/// One pending delivery as the admin API shows it (`node`: the replica making
/// the attempt now, cluster mode).
fn pending_view(d: &super::queue::Delivery) -> Value {
    let mut v = json!({
        "event_id": d.event_id,
        "type": d.kind,
        "attempts": d.attempt,
        "next_retry": crate::control::state_dir::format_ms(d.next_at),
    });
    if let Some(n) = &d.node {
        v["node"] = json!(n);
    }
    v
}

async fn resend(w: &Arc<Webhooks>, actor: &str, id: &str, event_id: &str) -> Answer {
    find(w, id).await?;
    let found = match w.store.redis().cloned() {
        Some(r) => {
            let (id2, ev2) = (id.to_string(), event_id.to_string());
            let max = w.config().queue_max;
            blocking(move || r.resend(&id2, &ev2, max, crate::control::webhooks::now_ms())).await?
        }
        None => worker::resend(w, id, event_id),
    };
    if !found {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "delivery_not_found",
            format!("no recent delivery of event {event_id:?} to this endpoint"),
            None,
        ));
    }
    audit(&w.state_dir, actor, "webhook.resend", id, &["event_id"]);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "event_id": event_id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        // The admin API's one document holds these routes too.
        let v: Value = serde_json::from_str(include_str!("../admin/openapi.json")).unwrap();
        for p in [
            "/webhooks",
            "/webhooks/{id}",
            "/webhooks/{id}/rotate-secret",
            "/webhooks/{id}/test",
            "/webhooks/{id}/deliveries",
            "/webhooks/{id}/deliveries/{event_id}/resend",
        ] {
            assert!(v["paths"][p].is_object(), "{p}");
        }
        assert!(v["components"]["schemas"]["WebhookWithSecret"].is_object());
    }
}
