//! Keeping the replica's snapshot in step with Redis.
//!
//! [`run`] connects (retrying), seeds an empty cluster once ([`super::seed`]),
//! then polls the version and the epoch every [`POLL`] and whenever
//! [`read_changes`] sees a change record. A version change means one atomic read of the whole set and one snapshot swap;
//! the last-good copy in `state_dir` follows. An epoch that vanished or changed is
//! never applied: the last snapshot stays and writes are refused.
//!
//! [`keep_fast`] keeps the request path's own connection ([`super::fast`])
//! connected, in the background.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::store::{self};
use super::{Cluster, POLL, fast, lock, source};
use crate::control::reload::Reloader;

async fn manager(c: &Cluster, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(c.client.clone(), cfg).await
}

/// Connects the bulk connection, retrying until Redis answers.
async fn connect(c: &Arc<Cluster>) {
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match manager(c, Duration::from_secs(2)).await {
            Ok(bulk) => {
                c.bulk.store(Some(Arc::new(bulk)));
                c.mark_ok();
                return;
            }
            Err(e) => {
                // Said once (a wrong URL, password or CA would otherwise be silent).
                if !std::mem::replace(&mut logged, true) {
                    tracing::error!(cluster = %c.cfg.name, error = %e, "cannot connect to the cluster store; retrying (serving the last snapshot or the keys file)");
                }
                c.mark_down(&e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Keeps the request path's connection ([`fast`]) connected: connects, publishes
/// it in `c.fast`, waits until it closes (Redis gone, killed, a protocol surprise),
/// then connects anew after a short pause. Until then the closed connection fails
/// every call at once, which the request path answers with the breaker and the
/// fallback; it never connects itself.
pub(crate) async fn keep_fast(c: Arc<Cluster>) {
    let name = format!("keygate-fast-{}", c.cfg.node_name);
    let ca = c.cfg.ca.as_ref().map(|ca| ca.pem.as_slice());
    let target = match fast::Target::new(c.client.get_connection_info(), ca, &name) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(cluster = %c.cfg.name, error = %e, "no request-path connection to the cluster store");
            return;
        }
    };
    let mut wait = Duration::from_millis(50);
    let mut logged = false;
    loop {
        match fast::connect(&target).await {
            Ok((con, driver)) => {
                c.fast.store(Some(con));
                logged = false;
                wait = Duration::from_millis(50);
                let why = driver.await;
                tracing::debug!(cluster = %c.cfg.name, why = %why, "request-path connection closed; reconnecting");
            }
            Err(e) => {
                // Said once per outage (the bulk connection says the store is down).
                if !std::mem::replace(&mut logged, true) {
                    tracing::warn!(cluster = %c.cfg.name, error = %e, "cannot open the request-path connection; retrying");
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Reads the whole set and swaps it in when its version is new.
async fn full_sync(
    c: &Cluster,
    shared: &Reloader,
    con: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let raw: store::Raw = store::read_pipe(&c.layout).query_async(con).await?;
    c.mark_ok();
    let (state, _sources) = match store::decode(raw) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cluster data cannot be read; the last snapshot stays");
            return Ok(());
        }
    };
    if !epoch_ok(c, state.epoch.as_deref()) {
        return Ok(());
    }
    match shared.install_keys(&state.file) {
        Ok(n) => {
            c.version.store(state.version, Ordering::Release);
            c.metrics
                .snapshot_version
                .set(i64::try_from(state.version).unwrap_or(i64::MAX));
            let snap = shared.current();
            c.limiter.retain(|id| snap.keys.get(id).is_some());
            tracing::debug!(
                keys = n,
                version = state.version,
                "cluster snapshot applied"
            );
            let dir = snap.config.state_dir.clone();
            let lg = source::LastGood {
                name: c.cfg.name.clone(),
                epoch: state.epoch.unwrap_or_default(),
                version: state.version,
                file: state.file,
            };
            tokio::task::spawn_blocking(move || source::write(&dir, &lg));
        }
        Err(e) => {
            // Not retried until the version moves (a fix is a new version).
            c.failed_version.store(state.version, Ordering::Release);
            tracing::error!(error = %e, version = state.version, "cluster keys do not fit this config; the last snapshot stays");
        }
    }
    Ok(())
}

/// Checks the epoch read from Redis against the one in force. A first epoch is
/// adopted; a missing or different one is refused, loudly, once.
fn epoch_ok(c: &Cluster, seen: Option<&str>) -> bool {
    let mut known = lock(&c.epoch);
    match (known.as_deref(), seen) {
        (_, None) => {
            if !c.epoch_lost.swap(true, Ordering::AcqRel) {
                tracing::error!(cluster = %c.cfg.name, "the cluster's data is gone (Redis wiped or replaced): serving the last snapshot, refusing admin writes; restore Redis or reseed it");
            }
            c.metrics.fallback.with_label_values(&["keys"]).set(1);
            false
        }
        (Some(k), Some(s)) if k != s => {
            if !c.epoch_lost.swap(true, Ordering::AcqRel) {
                tracing::error!(cluster = %c.cfg.name, "the cluster's epoch changed (Redis replaced): serving the last snapshot, refusing admin writes");
            }
            c.metrics.fallback.with_label_values(&["keys"]).set(1);
            false
        }
        (_, Some(s)) => {
            if known.is_none() {
                *known = Some(s.to_string());
            }
            if c.epoch_lost.swap(false, Ordering::AcqRel) {
                tracing::info!(cluster = %c.cfg.name, "the cluster's data is back");
            }
            c.metrics.fallback.with_label_values(&["keys"]).set(0);
            true
        }
    }
}

/// Connects, seeds, then follows the version.
pub(crate) async fn run(c: Arc<Cluster>, shared: Arc<Reloader>) {
    connect(&c).await;
    let mut seeded = false;
    loop {
        let Some(mut con) = c.bulk_connection() else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        if !seeded {
            match super::seed::seed(&c, &shared, &mut con).await {
                Ok(()) => seeded = true,
                Err(e) => c.mark_down(&e),
            }
        }
        let polled: redis::RedisResult<(Option<String>, Option<u64>)> = redis::pipe()
            .get(&c.layout.epoch)
            .get(&c.layout.version)
            .query_async(&mut con)
            .await;
        match polled {
            Ok((epoch, version)) => {
                c.mark_ok();
                let v = version.unwrap_or(0);
                if epoch_ok(&c, epoch.as_deref())
                    && v != c.version.load(Ordering::Acquire)
                    && v != c.failed_version.load(Ordering::Acquire)
                    && let Err(e) = full_sync(&c, &shared, &mut con).await
                {
                    c.mark_down(&e);
                }
            }
            Err(e) => c.mark_down(&e),
        }
        c.metrics.stale_seconds.set(c.stale_seconds());
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = c.changed.notified() => {}
        }
    }
}

/// A blocking read of the change stream on its own connection; wakes [`run`].
/// A killed or silent connection is replaced; the poll covers the gap.
pub(crate) async fn read_changes(c: Arc<Cluster>) {
    let mut last = "$".to_string();
    loop {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(6)));
        let mut con = match c
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(con) => con,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let _: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("keygate-changes-{}", c.cfg.node_name))
            .query_async(&mut con)
            .await;
        loop {
            let r: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(5000)
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(&c.layout.changes)
                .arg(&last)
                .query_async(&mut con)
                .await;
            match r {
                Ok(redis::Value::Nil) => {}
                Ok(v) => {
                    if let Some(id) = last_id(&v) {
                        last = id;
                    }
                    c.changed.notify_one();
                }
                Err(_) => {
                    // Lost connection: the next one starts from what is new then;
                    // the version poll converges whatever was missed.
                    last = "$".into();
                    c.changed.notify_one();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

/// `<ms>-<seq>`, both decimal.
fn is_stream_id(b: &[u8]) -> bool {
    let mut parts = b.splitn(2, |c| *c == b'-');
    let ok =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    ok(parts.next()) && ok(parts.next())
}

/// The id of the last entry of an XREAD answer.
fn last_id(v: &redis::Value) -> Option<String> {
    fn walk(v: &redis::Value, out: &mut Option<String>) {
        match v {
            redis::Value::Array(items) => {
                // An entry is [id, [field, value, …]].
                if items.len() == 2
                    && let (redis::Value::BulkString(id), redis::Value::Array(_)) =
                        (&items[0], &items[1])
                    && is_stream_id(id)
                {
                    *out = String::from_utf8(id.clone()).ok();
                    return;
                }
                for i in items {
                    walk(i, out);
                }
            }
            redis::Value::Map(pairs) => {
                for (_, i) in pairs {
                    walk(i, out);
                }
            }
            _ => {}
        }
    }
    let mut out = None;
    walk(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use redis::Value as V;

    use super::last_id;

    fn bulk(s: &str) -> V {
        V::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn last_id_of_an_xread_answer() {
        let entry = |id: &str| V::Array(vec![bulk(id), V::Array(vec![bulk("v"), bulk("1")])]);
        let answer = V::Array(vec![V::Array(vec![
            bulk("kg:{my-cluster}:changes"),
            V::Array(vec![entry("1-0"), entry("2-5")]),
        ])]);
        assert_eq!(last_id(&answer).as_deref(), Some("2-5"));
        assert_eq!(last_id(&V::Nil), None);
    }
}
