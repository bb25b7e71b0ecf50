//! Heartbeats and the cluster's status (`GET /admin/v1/cluster`, `keygate cluster
//! status`): `{name, redis: {up, rtt_ms}, version, replicas: [{node, version,
//! last_seen, stale_seconds}]}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Cluster;
use crate::control::reload::Reloader;
use crate::control::state_dir::format_ms;

pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is not counted alive.
pub(crate) const ALIVE: Duration = Duration::from_secs(10);
/// A replica not heard from for this long is forgotten.
const FORGET: Duration = Duration::from_secs(3600);

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Heartbeat JSON stored in `:nodes`.
fn beat(version: u64) -> String {
    json!({ "version": version, "last_seen_ms": now_ms() }).to_string()
}

/// The replicas of `nodes` (raw hash), with the ones to forget.
fn replicas(nodes: HashMap<String, String>) -> (Vec<Value>, Vec<String>, u64) {
    let now = now_ms();
    let mut list = Vec::new();
    let mut forget = Vec::new();
    let mut alive = 0;
    for (node, raw) in nodes {
        let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        let seen = v["last_seen_ms"].as_i64().unwrap_or(0);
        let stale = (now - seen).max(0) as f64 / 1000.0;
        if stale > FORGET.as_secs_f64() {
            forget.push(node);
            continue;
        }
        if stale <= ALIVE.as_secs_f64() {
            alive += 1;
        }
        list.push(json!({
            "node": node,
            "version": v["version"].as_u64().unwrap_or(0),
            "last_seen": format_ms(seen),
            "stale_seconds": stale,
        }));
    }
    list.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    (list, forget, alive)
}

/// Every [`EVERY`]: writes this replica's heartbeat, measures the round trip,
/// counts the replicas alive (the `local_share` divisor) and closes the rate-limit
/// breaker once Redis answers again.
pub(crate) async fn heartbeat(c: Arc<Cluster>, _shared: Arc<Reloader>) {
    loop {
        tokio::time::sleep(EVERY).await;
        c.metrics.stale_seconds.set(c.stale_seconds());
        let Some(mut con) = c.bulk_connection() else {
            continue;
        };
        let t = Instant::now();
        let version = c.version.load(Ordering::Acquire);
        let r: redis::RedisResult<((), HashMap<String, String>)> = redis::pipe()
            .hset(&c.layout.nodes, &c.cfg.node_name, beat(version))
            .ignore()
            .cmd("PING")
            .hgetall(&c.layout.nodes)
            .query_async(&mut con)
            .await;
        match r {
            Ok((_, nodes)) => {
                c.metrics.rtt.observe(t.elapsed().as_secs_f64());
                c.mark_ok();
                // The request path's own connection must answer too; one that
                // does not is closed and made anew (ping_fast).
                if ping_fast(&c).await {
                    c.limiter.close();
                    c.metrics.fallback.with_label_values(&["rate_limit"]).set(0);
                }
                let (_, forget, alive) = replicas(nodes);
                c.live_replicas.store(alive.max(1), Ordering::Release);
                c.metrics.replicas.set(i64::try_from(alive).unwrap_or(0));
                if !forget.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("HDEL")
                        .arg(&c.layout.nodes)
                        .arg(&forget)
                        .query_async(&mut con)
                        .await;
                }
            }
            Err(e) => c.mark_down(&e),
        }
    }
}

async fn ping_fast(c: &Cluster) -> bool {
    let Some(con) = c.fast.load_full() else {
        return false;
    };
    let ok = matches!(
        tokio::time::timeout(super::REQUEST_TIMEOUT, con.ping()).await,
        Ok(true)
    );
    if !ok {
        // Redis answered the bulk connection, not this one: half open (a lost
        // peer without a reset) or stuck. Closed, the background task reconnects.
        con.close();
    }
    ok
}

/// `GET /admin/v1/cluster`.
pub(crate) async fn admin_status(c: &Cluster) -> Value {
    let t = Instant::now();
    let nodes: Option<HashMap<String, String>> = match c.bulk_connection() {
        Some(mut con) => redis::cmd("HGETALL")
            .arg(&c.layout.nodes)
            .query_async(&mut con)
            .await
            .ok(),
        None => None,
    };
    let rtt = t.elapsed().as_secs_f64() * 1000.0;
    let up = nodes.is_some();
    let (list, _, _) = replicas(nodes.unwrap_or_default());
    json!({
        "name": c.cfg.name,
        "node": c.cfg.node_name,
        "redis": { "up": up, "rtt_ms": up.then_some(rtt) },
        "version": c.version.load(Ordering::Acquire),
        "epoch_lost": c.epoch_lost.load(Ordering::Acquire),
        "stale_seconds": c.stale_seconds(),
        "replicas": list,
    })
}

/// `keygate cluster status`: the same from a plain connection.
pub(crate) fn status_blocking(cfg: &super::ClusterConfig) -> Value {
    let t = Instant::now();
    let layout = super::store::Layout::new(&cfg.name);
    let got: Option<(Option<u64>, HashMap<String, String>)> = cfg
        .client()
        .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut con| {
            redis::pipe()
                .get(&layout.version)
                .hgetall(&layout.nodes)
                .query(&mut con)
        })
        .ok();
    let rtt = t.elapsed().as_secs_f64() * 1000.0;
    let up = got.is_some();
    let (version, nodes) = got.unwrap_or_default();
    let (list, _, _) = replicas(nodes);
    json!({
        "name": cfg.name,
        "redis": { "up": up, "rtt_ms": up.then_some(rtt) },
        "version": version.unwrap_or(0),
        "replicas": list,
    })
}
