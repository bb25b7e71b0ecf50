//! `GET /admin/v1/logs`: the request log through the admin API, newest first, with
//! the filters of `keygate logs` and an opaque cursor (`before` = the `next_before`
//! of the previous page: where that page's last record starts in the log, never
//! anything the client chose, such as its `X-Request-Id`).
//!
//! An empty text filter (`since=`) is the same as leaving it out; an empty `limit=`
//! is not a number (`400`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Admin;
use super::reply::{ApiError, ApiResult, bad, blocking, json_response};
use crate::observe::logs::{self, Filter};

/// The query string as a map (`form_urlencoded`: `+` is a space, `%XX` a byte, a
/// malformed escape stays as written); empty text values are left out, an empty
/// `limit` stays (and is refused: it is not a number). A parameter given twice is
/// refused (`400`) rather than one of the values silently winning.
pub(super) fn query_map(req: &Request<Incoming>) -> Result<BTreeMap<String, String>, ApiError> {
    parse_query(req.uri().query().unwrap_or(""))
}

fn parse_query(query: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut m = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !seen.insert(k.clone().into_owned()) {
            return Err(bad(format!("{k}: repeated parameter (give it once)")));
        }
        if !v.is_empty() || k == "limit" {
            m.insert(k.into_owned(), v.into_owned());
        }
    }
    Ok(m)
}

/// A path segment, percent-decoded (`+` stays a plus: it is a path, not a form).
pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) async fn get_logs(admin: &Arc<Admin>, req: &Request<Incoming>) -> ApiResult {
    let q = query_map(req)?;
    for k in q.keys() {
        if !matches!(
            k.as_str(),
            "path" | "method" | "status" | "key" | "since" | "slower_than" | "limit" | "before"
        ) {
            return Err(bad(format!("{k}: unknown filter")));
        }
    }
    let now = OffsetDateTime::now_utc();
    let filter = Filter {
        path: q.get("path").cloned(),
        method: q.get("method").cloned(),
        status: q
            .get("status")
            .map(|s| logs::parse_status(s))
            .transpose()
            .map_err(|e| bad(e.replace("--status", "status")))?,
        key: q.get("key").cloned(),
        since: q
            .get("since")
            .map(|s| logs::parse_since(s, now))
            .transpose()
            .map_err(|e| bad(e.replace("--since", "since")))?,
        slower_than_ms: q
            .get("slower_than")
            .map(|s| logs::parse_slower_than(s))
            .transpose()
            .map_err(|e| bad(e.replace("--slower-than", "slower_than")))?,
    };
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad("limit: a number from 1 to 1000"))?,
    };
    let raw_before = q.get("before").cloned();
    // cluster: the recent requests of every replica.
    if let Some(c) = &admin.cluster {
        let (records, next) =
            crate::control::cluster::logs::query(c, &filter, limit, raw_before.as_deref())
                .await
                .map_err(|m| {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", m)
                })?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "records": records, "next_before": next }),
        ));
    }
    let before = raw_before
        .as_ref()
        .map(|c| {
            logs::Cursor::decode(c)
                .ok_or_else(|| bad("before: not a cursor (use the next_before of a page)"))
        })
        .transpose()?;
    let crate::config::LogTarget::File(path) =
        admin.snapshots.load().config.access_log.target.clone()
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_log_file",
            "access_log.path is \"-\" (standard output): there is no file to read",
        ));
    };
    let found = blocking(move || {
        logs::newest(&path, &filter, limit, before).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "log_read_failed",
                e.to_string(),
            )
        })
    })
    .await?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|f| f.at.encode()))
        .flatten();
    let records: Vec<Value> = found
        .iter()
        .filter_map(|f| serde_json::from_str(&f.raw).ok())
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "records": records, "next_before": next }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn query_strings() {
        let q = parse_query("path=%2Fv1+x&method=GET&since=&limit=").unwrap();
        assert_eq!(q.get("path").map(String::as_str), Some("/v1 x"));
        assert_eq!(q.get("method").map(String::as_str), Some("GET"));
        assert!(!q.contains_key("since"));
        assert_eq!(q.get("limit").map(String::as_str), Some(""));
        // A malformed escape is not decoded (once `%+1` became byte 1).
        let q = parse_query("path=%+1").unwrap();
        assert_eq!(q.get("path").map(String::as_str), Some("% 1"));
        let e = parse_query("limit=1&limit=2").err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("repeated parameter"), "{}", e.message);
        assert_eq!(percent_decode("C%2B%2B+x"), "C+++x");
    }
}
