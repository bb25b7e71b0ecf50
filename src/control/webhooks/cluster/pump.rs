//! The one task of a replica that talks to Redis for the webhooks. Every
//! [`TICK`] (or when woken) it writes the changes the worker left
//! ([`super::queue::Op`]), moves retries that are due back into the stream, and
//! reads new deliveries from the stream for this replica (as many as it has room
//! to attempt). Every [`RENEW`] it renews the deliveries it holds, takes over
//! those another replica held without renewing them for [`LEASE`] (it was killed
//! mid-attempt), reads the cluster's depth and oldest delivery, follows the
//! endpoints, and looks for key events ([`super::keyevents`]).
//!
//! Redis down: the changes stay buffered (bounded, see [`super::queue`]) and are
//! written when it is back; nothing here blocks a request or the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use tokio::sync::watch;

use super::super::queue::Delivery;
use super::super::{Webhooks, now_ms};
use super::queue::{HOLD_MAX, Held, Op};
use super::{GROUP, LEASE, ONCE_TTL_SECS, RENEW, Shared, keyevents, lock, scripts};

/// How often the stream and the due retries are looked at.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Retries moved into the stream per tick at most.
const PROMOTE: usize = 200;
/// New deliveries written per script call at most.
const BATCH: usize = 100;

async fn manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client.clone(), cfg).await
}

/// What the pump remembers between ticks.
#[derive(Debug, Default)]
struct Pump {
    group_ready: bool,
    last_slow: Option<Instant>,
    endpoints_version: Option<u64>,
    down: bool,
}

/// Runs until `stop` turns true (then writes what it can, once).
pub(crate) async fn run(w: Arc<Webhooks>, sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut con: Option<ConnectionManager> = None;
    let mut p = Pump::default();
    loop {
        let stopping = *stop.borrow();
        if con.is_none() {
            match manager(&sh.client).await {
                Ok(c) => con = Some(c),
                Err(e) => p.mark_down(&e),
            }
        }
        if let Some(c) = con.as_mut() {
            match p.tick(&w, &sh, c, stopping).await {
                Ok(()) => p.mark_up(),
                Err(e) => p.mark_down(&e),
            }
        }
        if stopping {
            return;
        }
        let wait = if con.is_some() {
            TICK
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sh.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

impl Pump {
    fn mark_down(&mut self, e: &redis::RedisError) {
        if !self.down {
            self.down = true;
            self.group_ready = false;
            tracing::error!(error = %e, "webhooks: the cluster store cannot be reached; events are buffered (bounded) until it can");
        }
    }

    fn mark_up(&mut self) {
        if self.down {
            self.down = false;
            tracing::info!("webhooks: the cluster store is reachable again");
        }
    }

    async fn tick(
        &mut self,
        w: &Arc<Webhooks>,
        sh: &Shared,
        con: &mut ConnectionManager,
        stopping: bool,
    ) -> redis::RedisResult<()> {
        if !self.group_ready {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&sh.keys.queue)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(con)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.to_string().contains("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            self.group_ready = true;
        }
        flush(w, sh, con).await?;
        if stopping {
            return Ok(());
        }
        let _: i64 = scripts::promote()
            .key(&sh.keys.retry)
            .key(&sh.keys.pending)
            .key(&sh.keys.queue)
            .arg(now_ms())
            .arg(PROMOTE)
            .invoke_async(con)
            .await?;
        read_new(w, sh, con).await?;
        let slow_due = self.last_slow.is_none_or(|t| t.elapsed() >= RENEW);
        if slow_due {
            self.last_slow = Some(Instant::now());
            renew(sh, con).await?;
            take_over(w, sh, con).await?;
            stats(sh, con).await?;
            self.follow_endpoints(w, sh, con).await?;
            let (version, emitted): (Option<u64>, Option<u64>) = redis::pipe()
                .get(&sh.keys.version)
                .get(&sh.keys.keys_version)
                .query_async(con)
                .await?;
            if version.is_some() && version != emitted {
                sh.keys_dirty.store(true, Ordering::Release);
            }
        }
        if sh.keys_dirty.swap(false, Ordering::AcqRel) {
            let r = keyevents::emit(w, sh, con).await;
            if r.is_err() {
                sh.keys_dirty.store(true, Ordering::Release);
            }
            r?;
        }
        Ok(())
    }

    /// The endpoints changed (by any replica or the CLI): put them in force here,
    /// and keep a copy in `state_dir` to start from without Redis.
    async fn follow_endpoints(
        &mut self,
        w: &Arc<Webhooks>,
        sh: &Shared,
        con: &mut ConnectionManager,
    ) -> redis::RedisResult<()> {
        let (epoch, version): (Option<String>, Option<u64>) = redis::pipe()
            .get(&sh.keys.epoch)
            .get(&sh.keys.endpoints_version)
            .query_async(con)
            .await?;
        // No keygate data (wiped): the endpoints in force stay.
        if epoch.is_none()
            || (self.endpoints_version.is_some() && self.endpoints_version == version)
        {
            return Ok(());
        }
        let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&sh.keys.endpoints)
            .query_async(con)
            .await?;
        match super::endpoints::decode(all) {
            Ok(list) => {
                self.endpoints_version = version;
                let store = w.store.clone();
                let copy = list.clone();
                tokio::task::spawn_blocking(move || store.save_copy(&copy));
                w.install_endpoints(list, None);
            }
            Err(e) => {
                tracing::error!(error = %e, "webhooks: the endpoints in the cluster store cannot be read; the last ones stay in force");
            }
        }
        Ok(())
    }
}

/// Writes the buffered changes, in order; what fails stays buffered.
async fn flush(w: &Webhooks, sh: &Shared, con: &mut ConnectionManager) -> redis::RedisResult<()> {
    let (ops, max) = {
        let mut st = lock(&sh.state);
        (st.take(), st.max)
    };
    let mut i = 0;
    while i < ops.len() {
        // Consecutive new deliveries go in one script call.
        let mut j = i;
        while j < ops.len() && j - i < BATCH && matches!(ops[j], Op::Enqueue { .. }) {
            j += 1;
        }
        let r = if j > i {
            enqueue(w, sh, con, &ops[i..j], max).await
        } else {
            j = i + 1;
            write_op(sh, con, &ops[i]).await
        };
        if let Err(e) = r {
            lock(&sh.state).put_back(ops[i..].to_vec());
            return Err(e);
        }
        i = j;
    }
    Ok(())
}

async fn enqueue(
    w: &Webhooks,
    sh: &Shared,
    con: &mut ConnectionManager,
    ops: &[Op],
    max: usize,
) -> redis::RedisResult<()> {
    let script = scripts::enqueue();
    let mut inv = script.prepare_invoke();
    inv.key(&sh.keys.pending)
        .key(&sh.keys.created)
        .key(&sh.keys.queue);
    inv.arg(max).arg(ONCE_TTL_SECS);
    for op in ops {
        if let Op::Enqueue { d, once } = op {
            let key = d.key();
            inv.arg(&key)
                .arg(serde_json::to_string(d).unwrap_or_default())
                .arg(d.created)
                .arg(if *once {
                    sh.keys.once(&key)
                } else {
                    String::new()
                });
        }
    }
    let (_added, dropped): (u64, u64) = inv.invoke_async(con).await?;
    if dropped > 0 {
        w.metrics.dropped.inc_by(dropped);
    }
    Ok(())
}

async fn settle(
    sh: &Shared,
    con: &mut ConnectionManager,
    entry: &str,
    key: &str,
    outcome: &str,
    json: &str,
    next_at: i64,
) -> redis::RedisResult<()> {
    let _: i64 = scripts::settle()
        .key(&sh.keys.queue)
        .key(&sh.keys.pending)
        .key(&sh.keys.created)
        .key(&sh.keys.retry)
        .arg(GROUP)
        .arg(entry)
        .arg(key)
        .arg(outcome)
        .arg(json)
        .arg(next_at)
        .invoke_async(con)
        .await?;
    Ok(())
}

async fn write_op(sh: &Shared, con: &mut ConnectionManager, op: &Op) -> redis::RedisResult<()> {
    match op {
        Op::Enqueue { .. } => Ok(()),
        Op::Begin { key, json } => settle(sh, con, "", key, "begin", json, 0).await,
        Op::Retry {
            entry,
            key,
            json,
            next_at,
        } => settle(sh, con, entry, key, "retry", json, *next_at).await,
        Op::Done { entry, key } => settle(sh, con, entry, key, "done", "", 0).await,
        Op::Forget { endpoint_id } => {
            let _: i64 = scripts::forget()
                .key(&sh.keys.pending)
                .key(&sh.keys.created)
                .key(&sh.keys.retry)
                .arg(format!("{endpoint_id}/"))
                .invoke_async(con)
                .await?;
            Ok(())
        }
        Op::Log { endpoint_id, json } => {
            let log = sh.keys.log(endpoint_id);
            redis::pipe()
                .lpush(&log, json)
                .ignore()
                .ltrim(&log, 0, super::super::log::LOG_MAX as isize - 1)
                .ignore()
                .query_async::<()>(con)
                .await
        }
    }
}

/// Reads the deliveries of stream entries (`None`: gone meanwhile).
async fn deliveries_of(
    sh: &Shared,
    con: &mut ConnectionManager,
    keys: &[String],
) -> redis::RedisResult<Vec<Option<Delivery>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&sh.keys.pending)
        .arg(keys)
        .query_async(con)
        .await?;
    Ok(raw
        .into_iter()
        .map(|j| j.and_then(|j| serde_json::from_str(&j).ok()))
        .collect())
}

fn room(sh: &Shared) -> usize {
    HOLD_MAX.saturating_sub(lock(&sh.state).held.len())
}

/// New stream entries for this replica: due now.
async fn read_new(
    w: &Webhooks,
    sh: &Shared,
    con: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let room = room(sh);
    if room == 0 {
        return Ok(());
    }
    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(sh.node())
        .arg("COUNT")
        .arg(room)
        .arg("STREAMS")
        .arg(&sh.keys.queue)
        .arg(">")
        .query_async(con)
        .await?;
    let entries: Vec<(String, String)> = reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .map(|id| {
            let key: String = id.get("k").unwrap_or_default();
            (id.id, key)
        })
        .collect();
    hold(w, sh, con, entries, false).await
}

/// Takes the entries into this replica's hands. `taken_over`: another replica
/// held them (its attempt, if it made one, was counted when it began: a
/// delivery whose next attempt is not due yet goes back to wait for it).
async fn hold(
    w: &Webhooks,
    sh: &Shared,
    con: &mut ConnectionManager,
    entries: Vec<(String, String)>,
    taken_over: bool,
) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = entries.iter().map(|(_, k)| k.clone()).collect();
    let found = deliveries_of(sh, con, &keys).await?;
    let now = now_ms();
    let mut added = 0;
    for ((entry, key), d) in entries.into_iter().zip(found) {
        let already = lock(&sh.state).held.contains_key(&key);
        match d {
            // Dropped meanwhile (endpoint deleted, delivered by another replica).
            None => settle(sh, con, &entry, &key, "done", "", 0).await?,
            // The same delivery twice in the stream: one entry is enough.
            Some(_) if already => settle(sh, con, &entry, &key, "ack", "", 0).await?,
            Some(mut d) if taken_over && d.next_at > now => {
                d.node = None;
                let json = serde_json::to_string(&d).unwrap_or_default();
                settle(sh, con, &entry, &key, "retry", &json, d.next_at).await?;
            }
            Some(mut d) => {
                if taken_over {
                    tracing::info!(endpoint = %d.endpoint_id, event = %d.event_id, from = ?d.node, "webhooks: took over a delivery from a replica that stopped renewing it");
                }
                d.next_at = d.next_at.min(now);
                lock(&sh.state).held.insert(key, Held { entry, d });
                added += 1;
            }
        }
    }
    if added > 0 {
        w.notify.notify_one();
    }
    Ok(())
}

/// Renews what this replica holds; drops what another replica took over.
async fn renew(sh: &Shared, con: &mut ConnectionManager) -> redis::RedisResult<()> {
    let ids: Vec<String> = lock(&sh.state)
        .held
        .values()
        .map(|h| h.entry.clone())
        .filter(|e| !e.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let lost: Vec<String> = scripts::renew()
        .key(&sh.keys.queue)
        .arg(GROUP)
        .arg(sh.node())
        .arg(&ids)
        .invoke_async(con)
        .await?;
    if !lost.is_empty() {
        let mut st = lock(&sh.state);
        st.held.retain(|_, h| !lost.contains(&h.entry));
        tracing::warn!(
            n = lost.len(),
            "webhooks: deliveries this replica held were taken over by another one"
        );
    }
    Ok(())
}

/// Deliveries another replica held without renewing them for [`LEASE`].
async fn take_over(
    w: &Webhooks,
    sh: &Shared,
    con: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let room = room(sh);
    if room == 0 {
        return Ok(());
    }
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(&sh.keys.queue)
        .arg(GROUP)
        .arg(sh.node())
        .arg(LEASE.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(room)
        .query_async(con)
        .await?;
    let entries: Vec<(String, String)> = reply
        .claimed
        .into_iter()
        .map(|id| {
            let key: String = id.get("k").unwrap_or_default();
            (id.id, key)
        })
        .collect();
    hold(w, sh, con, entries, true).await
}

/// The cluster's depth and oldest pending delivery, for the metrics.
async fn stats(sh: &Shared, con: &mut ConnectionManager) -> redis::RedisResult<()> {
    let (depth, oldest): (usize, Vec<(String, f64)>) = redis::pipe()
        .zcard(&sh.keys.created)
        .cmd("ZRANGE")
        .arg(&sh.keys.created)
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .query_async(con)
        .await?;
    let mut st = lock(&sh.state);
    st.depth = depth;
    st.oldest = oldest.first().map(|(_, t)| *t as i64);
    Ok(())
}
