//! Last used, cluster-wide: each replica pushes its newest use per key every
//! [`EVERY`] (`ZADD GT`, so values only move forward) and pulls the cluster's, so
//! the console shows the newest time any replica saw (within 6 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Cluster;
use crate::control::reload::Reloader;

/// How often last-used times are pushed and pulled.
pub(super) const EVERY: Duration = Duration::from_secs(2);

/// Pushes this replica's newest use per key (`ZADD GT`: values only move forward)
/// and pulls the cluster's, so the console shows the newest time any replica saw.
pub(crate) async fn run(c: Arc<Cluster>, shared: Arc<Reloader>) {
    let mut pushed: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(mut con) = c.bulk_connection() else {
            continue;
        };
        let snap = shared.current();
        let fresh: Vec<(i64, String)> = snap
            .keys
            .iter()
            .filter_map(|k| {
                let ms = k.state.last_used.load(Ordering::Relaxed);
                (ms > 0 && pushed.get(k.id.as_str()).is_none_or(|p| *p < ms))
                    .then(|| (ms, k.id.as_str().to_string()))
            })
            .collect();
        if !fresh.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&c.layout.last_used).arg("GT");
            for (ms, id) in &fresh {
                cmd.arg(*ms).arg(id);
            }
            match cmd.query_async::<i64>(&mut con).await {
                Ok(_) => {
                    for (ms, id) in fresh {
                        pushed.insert(id, ms);
                    }
                }
                Err(e) => {
                    c.mark_down(&e);
                    continue;
                }
            }
        }
        pushed.retain(|id, _| snap.keys.get_str(id).is_some());
        let all: redis::RedisResult<Vec<(String, i64)>> = redis::cmd("ZRANGE")
            .arg(&c.layout.last_used)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await;
        if let Ok(all) = all {
            for (id, ms) in all {
                if let Some(k) = snap.keys.get_str(&id) {
                    k.state.last_used.fetch_max(ms, Ordering::Relaxed);
                }
            }
        }
    }
}
