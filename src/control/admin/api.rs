//! The JSON admin API's handlers (`/admin/v1/...`). Key changes go through
//! [`Manager`] (the one keys-file writer, validation, audit as `admin:<ip>`) and are
//! applied to the running snapshot at once. Bad input is `400` naming the field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::ALLOW;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use super::logs::{percent_decode, query_map};
use super::reply::{ApiError, ApiResult, bad, blocking, json_response};
use crate::control::manage::{
    KeyEdit, Manager, NewKey, RevealError, key_view, parse_expiry, record_view,
};
use crate::keys::Level;
use crate::keys::file::{KeyEntry, KeyRateFile};
use crate::observe::body::ResBody;
use crate::proxy::reject::error_response;
use crate::ratelimit::Rate;

/// Reads a JSON body (64 KiB at most) into `T`, naming the field on error.
async fn body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
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

fn levels(m: &BTreeMap<String, String>) -> Result<BTreeMap<String, Level>, ApiError> {
    m.iter()
        .map(|(c, l)| {
            l.parse::<Level>()
                .map(|lv| (c.clone(), lv))
                .map_err(|e| bad(format!("permissions.{c}: {e}")))
        })
        .collect()
}

fn check_rate(r: &KeyRateFile) -> Result<(), ApiError> {
    Rate::from_parts(r.per_second, r.per_minute, r.burst)
        .map(|_| ())
        .map_err(|e| bad(format!("rate_limit: {e}")))
}

/// A key's view, with its last-used time from the snapshot in force.
fn key_json(admin: &Admin, e: &KeyEntry) -> Value {
    let last_used = admin
        .snapshots
        .load()
        .keys
        .get_str(&e.id)
        .map(|k| k.state.last_used.load(std::sync::atomic::Ordering::Relaxed));
    key_view(e, last_used)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
    #[serde(default)]
    rate_limit: Option<KeyRateFile>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// `PATCH /keys/{id}`: a field left out is kept; `null` clears the rate limit or
/// the expiry (hence `Option<Option<_>>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    // `null` is not a name or a map: refused, not read as "left out".
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    permissions: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<KeyRateFile>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
}

/// A field that is present (possibly `null`) becomes `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSwitch {
    enabled: bool,
}

fn manager(admin: &Admin, peer: IpAddr) -> Result<Manager, ApiError> {
    Ok(Manager::open(
        admin.snapshots.load().config.clone(),
        format!("admin:{peer}"),
        admin.seal.clone(),
    ))
}

/// Applies a change to the running gateway now (not waiting for the watcher).
fn apply_now(admin: &Admin) {
    // In cluster mode the change is in the shared store: sync from it now.
    if let Some(c) = &admin.cluster {
        c.resync();
        return;
    }
    if let Err(e) = admin.reloader.reload_keys() {
        tracing::error!(error = %e, "keys written by the admin API did not load");
    }
}

/// Every endpoint of the API: the one list the router, the `405`'s `Allow` and the
/// OpenAPI test read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Keys,
    Key,
    Reveal,
    Api,
    Categories,
    Logs,
    Reload,
    Status,
    Cluster,
}

impl Endpoint {
    #[cfg(test)]
    pub(super) const ALL: [Self; 9] = [
        Self::Keys,
        Self::Key,
        Self::Reveal,
        Self::Api,
        Self::Categories,
        Self::Logs,
        Self::Reload,
        Self::Status,
        Self::Cluster,
    ];

    /// The path under `/admin/v1` as the OpenAPI document writes it.
    #[cfg(test)]
    pub(super) fn template(self) -> &'static str {
        match self {
            Self::Keys => "/keys",
            Self::Key => "/keys/{id}",
            Self::Reveal => "/keys/{id}/reveal",
            Self::Api => "/api",
            Self::Categories => "/categories",
            Self::Logs => "/logs",
            Self::Reload => "/reload",
            Self::Status => "/status",
            Self::Cluster => "/cluster",
        }
    }

    /// The methods it answers (the `Allow` of a `405`).
    pub(super) fn allow(self) -> &'static str {
        match self {
            Self::Keys => "GET, POST",
            Self::Key => "GET, PATCH, DELETE",
            Self::Reveal | Self::Reload => "POST",
            Self::Api => "GET, PUT",
            Self::Categories | Self::Logs | Self::Status | Self::Cluster => "GET",
        }
    }

    /// The endpoint and its `{id}` for a path under `/admin/v1/`.
    pub(super) fn parse(rest: &str) -> Option<(Self, &str)> {
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        Some(match segs.as_slice() {
            ["keys"] => (Self::Keys, ""),
            ["keys", id] if !id.is_empty() => (Self::Key, id),
            ["keys", id, "reveal"] if !id.is_empty() => (Self::Reveal, id),
            ["api"] => (Self::Api, ""),
            ["categories"] => (Self::Categories, ""),
            ["logs"] => (Self::Logs, ""),
            ["reload"] => (Self::Reload, ""),
            ["status"] => (Self::Status, ""),
            ["cluster"] => (Self::Cluster, ""),
            _ => return None,
        })
    }
}

pub(super) async fn route(
    admin: &Arc<Admin>,
    peer: IpAddr,
    rest: &str,
    req: Request<Incoming>,
    rid: &HeaderValue,
) -> Response<ResBody> {
    let method = req.method().clone();
    let result = match Endpoint::parse(rest) {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: /admin/v1/{rest} (see /admin/v1/openapi.json)"),
        )),
        Some((ep, id)) => {
            let id = percent_decode(id);
            dispatch(admin, peer, ep, &id, method, req).await
        }
    };
    match result {
        Ok(mut r) => {
            r.headers_mut()
                .insert(crate::proxy::requestid::HEADER, rid.clone());
            r
        }
        Err(e) => {
            let mut r = error_response(e.status, e.code, &e.message, rid);
            if let Some(a) = e.allow {
                r.headers_mut().insert(ALLOW, HeaderValue::from_static(a));
            }
            r
        }
    }
}

async fn dispatch(
    admin: &Arc<Admin>,
    peer: IpAddr,
    ep: Endpoint,
    id: &str,
    method: Method,
    req: Request<Incoming>,
) -> ApiResult {
    use Endpoint as E;
    match (ep, method) {
        (E::Keys, Method::GET) => match query_map(&req) {
            Ok(q) => list_keys(admin, peer, &q).await,
            Err(e) => Err(e),
        },
        (E::Keys, Method::POST) => create_key(admin, peer, req).await,
        (E::Key, Method::GET) => get_key(admin, peer, id).await,
        (E::Key, Method::PATCH) => patch_key(admin, peer, id, req).await,
        (E::Key, Method::DELETE) => match crate::control::cluster::write::if_match(req.headers()) {
            Ok(m) => delete_key(admin, peer, id, m).await,
            Err(e) => Err(bad(e)),
        },
        (E::Reveal, Method::POST) => reveal_key(admin, peer, id).await,
        (E::Api, Method::GET) => {
            let on = admin.snapshots.load().keys.api_enabled;
            Ok(json_response(StatusCode::OK, &json!({ "enabled": on })))
        }
        (E::Api, Method::PUT) => put_api(admin, peer, req).await,
        (E::Categories, Method::GET) => {
            let snap = admin.snapshots.load();
            let cats: Vec<Value> = snap
                .config
                .policy
                .categories()
                .map(|(name, patterns)| json!({ "name": name, "patterns": patterns }))
                .collect();
            Ok(json_response(StatusCode::OK, &json!(cats)))
        }
        (E::Logs, Method::GET) => super::logs::get_logs(admin, &req).await,
        (E::Reload, Method::POST) => reload(admin).await,
        (E::Status, Method::GET) => status(admin, peer).await,
        (E::Cluster, Method::GET) => crate::control::cluster::admin_route(admin.cluster.as_ref())
            .await
            .map(|v| json_response(StatusCode::OK, &v))
            .map_err(|m| ApiError::new(StatusCode::NOT_FOUND, "cluster_off", m)),
        (
            E::Keys
            | E::Key
            | E::Reveal
            | E::Api
            | E::Categories
            | E::Logs
            | E::Reload
            | E::Status
            | E::Cluster,
            _,
        ) => not_allowed(ep.allow()),
    }
}

fn not_allowed(allow: &'static str) -> ApiResult {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint takes {allow}"),
    );
    e.allow = Some(allow);
    Err(e)
}

/// Keys on one page at most (`limit`'s default and maximum).
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// `GET /keys?limit=&after=&q=`: keys in id order, after the cursor `after` (the last
/// id of the previous page), whose name contains `q` ignoring case. Only one page is
/// turned into JSON, so the answer's size does not grow with the number of keys.
async fn list_keys(admin: &Arc<Admin>, peer: IpAddr, q: &BTreeMap<String, String>) -> ApiResult {
    for k in q.keys() {
        if !matches!(k.as_str(), "limit" | "after" | "q") {
            return Err(bad(format!("{k}: unknown parameter (limit, after or q)")));
        }
    }
    let limit = match q.get("limit") {
        None => PAGE_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| bad(format!("limit: a number from 1 to {PAGE_MAX}")))?,
    };
    let after = q.get("after").cloned();
    let needle = q.get("q").map(|s| s.to_lowercase());
    let matches = |name: &str| {
        needle
            .as_deref()
            .is_none_or(|n| name.to_lowercase().contains(n))
    };
    // Single-node: the page comes from the snapshot in force (admin writes are in
    // it before they are answered), so listing reads and parses no file and its
    // memory is one page's.
    if admin.cluster.is_none() {
        let snap = admin.snapshots.load();
        let mut page = snap
            .keys
            .iter_after(after.as_deref())
            .filter(|k| matches(&k.name));
        let keys: Vec<Value> = page
            .by_ref()
            .take(limit)
            .map(|k| record_view(k, &snap.config.policy))
            .collect();
        let next_after = if page.next().is_some() {
            keys.last()
                .and_then(|k| k["id"].as_str())
                .map(str::to_string)
        } else {
            None
        };
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "keys": keys, "next_after": next_after }),
        ));
    }
    let m = manager(admin, peer)?;
    // Cluster mode: the cluster's keys. One read at a time, so concurrent page
    // loads do not multiply its memory.
    let _one = admin.list_parse.acquire().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the admin API is stopping",
        )
    })?;
    let file = blocking(move || m.read().map_err(ApiError::from)).await?;
    let mut page: Vec<&KeyEntry> = file
        .keys
        .iter()
        .filter(|k| after.as_deref().is_none_or(|a| k.id.as_str() > a))
        .filter(|k| matches(&k.name))
        .collect();
    page.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let more = page.len() > limit;
    page.truncate(limit);
    let next_after = if more {
        page.last().map(|k| k.id.clone())
    } else {
        None
    };
    let keys: Vec<Value> = page.iter().map(|e| key_json(admin, e)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "keys": keys, "next_after": next_after }),
    ))
}

/// `GET /status`: whether the keys file on disk loads, and what is in force.
async fn status(admin: &Arc<Admin>, peer: IpAddr) -> ApiResult {
    let m = manager(admin, peer)?;
    let path = m.keys_file().display().to_string();
    let error = blocking(move || Ok(m.load_error())).await?;
    let snap = admin.snapshots.load();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "keys_file": { "path": path, "loads": error.is_none(), "error": error },
            "enforced": { "keys": snap.keys.len(), "api_enabled": snap.keys.api_enabled },
        }),
    ))
}

async fn get_key(admin: &Arc<Admin>, peer: IpAddr, id: &str) -> ApiResult {
    if admin.cluster.is_none() {
        let snap = admin.snapshots.load();
        // By id, else by name ignoring case (as the CLI's selectors).
        let key = snap.keys.get_str(id).or_else(|| {
            let lower = id.to_lowercase();
            snap.keys.iter().find(|k| k.name.to_lowercase() == lower)
        });
        return match key {
            Some(k) => Ok(json_response(
                StatusCode::OK,
                &record_view(k, &snap.config.policy),
            )),
            None => Err(ApiError::from(crate::keys::write::WriteError::NotFound(
                id.to_string(),
            ))),
        };
    }
    let m = manager(admin, peer)?;
    let id = id.to_string();
    let e = blocking(move || m.get(&id).map_err(ApiError::from)).await?;
    Ok(json_response(StatusCode::OK, &key_json(admin, &e)))
}

async fn create_key(admin: &Arc<Admin>, peer: IpAddr, req: Request<Incoming>) -> ApiResult {
    let b: CreateBody = body(req).await?;
    let permissions = levels(&b.permissions)?;
    if let Some(r) = &b.rate_limit {
        check_rate(r)?;
    }
    let expires_at = b
        .expires_at
        .as_deref()
        .map(|e| parse_expiry(e).map_err(|x| bad(format!("expires_at: {x}"))))
        .transpose()?;
    let m = manager(admin, peer)?;
    let new = NewKey {
        name: b.name,
        permissions,
        rate_limit: b.rate_limit,
        expires_at,
    };
    let created = blocking(move || m.create(new).map_err(ApiError::from)).await?;
    apply_now(admin);
    let mut v = key_json(admin, &created.entry);
    v["masked_key"] = v["key"].clone();
    v["key"] = json!(created.secret.expose());
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn patch_key(
    admin: &Arc<Admin>,
    peer: IpAddr,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult {
    // cluster: If-Match carries the key's revision (compare-and-set).
    let if_match = crate::control::cluster::write::if_match(req.headers()).map_err(bad)?;
    let b: PatchBody = body(req).await?;
    if let Some(r) = b.rate_limit.as_ref().and_then(Option::as_ref) {
        check_rate(r)?;
    }
    let edit = KeyEdit {
        if_match,
        name: b.name,
        replace_permissions: b.permissions.as_ref().map(levels).transpose()?,
        rate_limit: b.rate_limit,
        expires_at: b
            .expires_at
            .map(|e| {
                e.map(|s| parse_expiry(&s).map_err(|x| bad(format!("expires_at: {x}"))))
                    .transpose()
            })
            .transpose()?,
        ..KeyEdit::default()
    };
    let m = manager(admin, peer)?;
    let id = id.to_string();
    let e = blocking(move || m.edit(&id, edit).map_err(ApiError::from)).await?;
    apply_now(admin);
    Ok(json_response(StatusCode::OK, &key_json(admin, &e)))
}

async fn delete_key(
    admin: &Arc<Admin>,
    peer: IpAddr,
    id: &str,
    if_match: Option<u64>,
) -> ApiResult {
    let m = manager(admin, peer)?;
    let id = id.to_string();
    blocking(move || m.delete_if_match(&id, if_match).map_err(ApiError::from)).await?;
    apply_now(admin);
    let mut r = Response::new(ResBody::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn reveal_key(admin: &Arc<Admin>, peer: IpAddr, id: &str) -> ApiResult {
    let m = manager(admin, peer)?;
    let id_owned = id.to_string();
    let secret = blocking(move || {
        m.reveal(&id_owned).map_err(|e| match e {
            RevealError::NotRevealable { .. }
            | RevealError::NoSealKey { .. }
            | RevealError::WrongSealKey { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_revealable", e.to_string())
            }
            RevealError::NotFound(msg) => {
                ApiError::new(StatusCode::NOT_FOUND, "key_not_found", msg)
            }
            RevealError::Other(msg) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reveal_failed", msg)
            }
        })
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": id, "key": secret.expose() }),
    ))
}

async fn put_api(admin: &Arc<Admin>, peer: IpAddr, req: Request<Incoming>) -> ApiResult {
    let b: ApiSwitch = body(req).await?;
    let m = manager(admin, peer)?;
    blocking(move || m.set_api(b.enabled).map_err(ApiError::from)).await?;
    apply_now(admin);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "enabled": b.enabled }),
    ))
}

async fn reload(admin: &Arc<Admin>) -> ApiResult {
    let a = admin.clone();
    blocking(move || {
        a.reloader
            .reload()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "reload_failed", e.to_string()))
    })
    .await?;
    if let Some(c) = &admin.cluster {
        c.resync();
    }
    Ok(json_response(StatusCode::OK, &json!({ "reloaded": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every endpoint served is documented with exactly its methods, and every
    /// documented path is served (`{id}` filled in).
    #[test]
    fn routes_and_openapi_agree() {
        let doc: Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for ep in Endpoint::ALL {
            let item = paths
                .get(ep.template())
                .unwrap_or_else(|| panic!("{} is served but not documented", ep.template()));
            let mut documented: Vec<String> = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(|k| k.to_uppercase())
                .collect();
            documented.sort();
            let mut served: Vec<String> = ep.allow().split(", ").map(String::from).collect();
            served.sort();
            assert_eq!(documented, served, "methods of {}", ep.template());
        }
        // Webhook endpoints are routed by control/webhooks/admin.rs (and served
        // and tested in tests/webhooks.rs); the rest by the table here.
        let webhooks = paths.keys().filter(|p| p.starts_with("/webhooks")).count();
        assert!(webhooks >= 6, "the webhook endpoints are documented");
        for path in paths.keys().filter(|p| !p.starts_with("/webhooks")) {
            let concrete = path.replace("{id}", "k123");
            let (ep, _) = Endpoint::parse(concrete.trim_start_matches('/'))
                .unwrap_or_else(|| panic!("{path} is documented but not served"));
            assert_eq!(ep.template(), path);
        }
        assert_eq!(paths.len() - webhooks, Endpoint::ALL.len());
    }
}
