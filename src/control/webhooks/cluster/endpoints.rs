//! The endpoints in Redis, and what the admin API and the CLI read or write of
//! the cluster's webhooks directly: delivery logs, pending deliveries, a queued
//! event (`keygate webhooks test`), a resend. Blocking (one connection, 2 s
//! timeouts): call off the async workers.
//!
//! A change is made under `:wh:lock` (the file store's `endpoints.lock`), only
//! while the cluster holds keygate data (`:epoch`), and bumps
//! `:wh:endpoints_version`, which the replicas follow. Without Redis it is
//! refused ([`StoreError::Unavailable`], `503 cluster_unavailable`): never a
//! local-only write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::endpoint::{Endpoint, StoreError};
use super::super::log::{LOG_MAX, LogEntry};
use super::super::queue::{Delivery, delivery_key};
use super::{Keys, ONCE_TTL_SECS, lock, scripts};
use crate::config::cluster::ClusterConfig;

/// How long a writer may hold the lock (it is given up after it, should the
/// writer die).
const LOCK_MS: u64 = 5000;
/// How long a writer waits for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

pub(crate) struct RedisStore {
    client: redis::Client,
    keys: Keys,
    con: Mutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the cluster store cannot be reached ({e})"))
}

impl RedisStore {
    pub(crate) fn open(cfg: &ClusterConfig) -> Result<Self, String> {
        let client = cfg.client().map_err(|_| {
            "cluster.redis_url: cannot be used (the value is not shown)".to_string()
        })?;
        Ok(Self {
            client,
            keys: Keys::new(cfg),
            con: Mutex::new(None),
        })
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(con)
    }

    /// Runs `f` on the connection (made again after an error).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = lock(&self.con);
        let mut con = match slot.take() {
            Some(c) => c,
            None => self.connect().map_err(unavailable)?,
        };
        let r = f(&mut con, &self.keys);
        match r {
            Ok(v) => {
                *slot = Some(con);
                Ok(v)
            }
            // A broken connection is dropped; the next call makes a new one.
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The cluster holds keygate data (it was seeded and not wiped).
    fn check_epoch(con: &mut redis::Connection, k: &Keys) -> Result<(), StoreError> {
        let epoch: Option<String> = redis::cmd("GET")
            .arg(&k.epoch)
            .query(con)
            .map_err(unavailable)?;
        match epoch {
            Some(_) => Ok(()),
            None => Err(StoreError::Unavailable(
                "the cluster store holds no keygate data (wiped or not seeded yet)".into(),
            )),
        }
    }

    /// Every endpoint, by id.
    pub(crate) fn load(&self) -> Result<Vec<Endpoint>, StoreError> {
        let (epoch, all): (Option<String>, HashMap<String, String>) =
            self.with(|con, k| redis::pipe().get(&k.epoch).hgetall(&k.endpoints).query(con))?;
        if epoch.is_none() {
            return Err(StoreError::Unavailable(
                "the cluster store holds no keygate data (wiped or not seeded yet)".into(),
            ));
        }
        decode(all)
    }

    /// Locks, reads, applies `f`, writes what changed, unlocks.
    pub(crate) fn modify<T>(
        &self,
        f: impl FnOnce(&mut Vec<Endpoint>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = lock(&self.con);
        let mut con = match slot.take() {
            Some(c) => c,
            None => self.connect().map_err(unavailable)?,
        };
        let k = &self.keys;
        let token = super::super::events::new_event_id();
        let started = Instant::now();
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(&k.lock)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_MS)
                .query(&mut con)
                .map_err(unavailable)?;
            if got.is_some() {
                break;
            }
            if started.elapsed() > LOCK_WAIT {
                *slot = Some(con);
                return Err(StoreError::Unavailable(
                    "another change of the webhook endpoints is in progress; try again".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let result = (|| {
            Self::check_epoch(&mut con, k)?;
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&k.endpoints)
                .query(&mut con)
                .map_err(unavailable)?;
            let before = decode(all)?;
            let mut after = before.clone();
            let out = f(&mut after)?;
            let mut p = redis::pipe();
            p.atomic();
            for e in &after {
                if before.iter().find(|b| b.id == e.id) != Some(e) {
                    let json =
                        serde_json::to_string(e).map_err(|e| StoreError::Io(e.to_string()))?;
                    p.hset(&k.endpoints, &e.id, json).ignore();
                }
            }
            for b in &before {
                if !after.iter().any(|e| e.id == b.id) {
                    p.hdel(&k.endpoints, &b.id).ignore();
                }
            }
            p.incr(&k.endpoints_version, 1).ignore();
            p.query::<()>(&mut con).map_err(unavailable)?;
            Ok(out)
        })();
        let unlocked = scripts::unlock()
            .key(&k.lock)
            .arg(&token)
            .invoke::<i64>(&mut con);
        if unlocked.is_ok() {
            *slot = Some(con);
        }
        result
    }

    /// An endpoint's log, newest first.
    pub(crate) fn log(&self, endpoint_id: &str) -> Result<Vec<LogEntry>, StoreError> {
        let lines: Vec<String> = self.with(|con, k| {
            redis::cmd("LRANGE")
                .arg(k.log(endpoint_id))
                .arg(0)
                .arg(LOG_MAX - 1)
                .query(con)
        })?;
        Ok(lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Deletes an endpoint's log (the endpoint was deleted).
    pub(crate) fn drop_log(&self, endpoint_id: &str) -> Result<(), StoreError> {
        self.with(|con, k| redis::cmd("DEL").arg(k.log(endpoint_id)).query::<()>(con))
    }

    /// The pending deliveries to one endpoint (waiting, due or being attempted).
    pub(crate) fn pending(&self, endpoint_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let pattern = format!("{endpoint_id}/*");
        let found: Vec<String> = self.with(|con, k| {
            let mut out = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("HSCAN")
                    .arg(&k.pending)
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(con)?;
                // HSCAN answers field, value, field, value…
                out.extend(batch.into_iter().skip(1).step_by(2));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            Ok(out)
        })?;
        let mut v: Vec<Delivery> = found
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        v.sort_by_key(|d| d.created);
        Ok(v)
    }

    /// Queues deliveries directly (the CLI's test event). Returns how many were
    /// refused because the queue is at `max`.
    pub(crate) fn enqueue(&self, ds: &[Delivery], max: usize) -> Result<u64, StoreError> {
        let (_added, dropped): (u64, u64) = self.with(|con, k| {
            let script = scripts::enqueue();
            let mut inv = script.prepare_invoke();
            inv.key(&k.pending).key(&k.created).key(&k.queue);
            inv.arg(max).arg(ONCE_TTL_SECS);
            for d in ds {
                inv.arg(d.key())
                    .arg(serde_json::to_string(d).unwrap_or_default())
                    .arg(d.created)
                    .arg("");
            }
            inv.invoke(con)
        })?;
        Ok(dropped)
    }

    /// Resend: a pending delivery is made due now; else the event is queued
    /// again from the endpoint's log (under its id). False: neither is known.
    pub(crate) fn resend(
        &self,
        endpoint_id: &str,
        event_id: &str,
        max: usize,
        now: i64,
    ) -> Result<bool, StoreError> {
        let key = delivery_key(endpoint_id, event_id);
        let pending: i64 = self.with(|con, k| {
            scripts::due_now()
                .key(&k.pending)
                .key(&k.retry)
                .key(&k.queue)
                .arg(&key)
                .invoke(con)
        })?;
        if pending == 1 {
            return Ok(true);
        }
        let Some(entry) = self
            .log(endpoint_id)?
            .into_iter()
            .find(|e| e.event_id == event_id && e.body.is_some())
        else {
            return Ok(false);
        };
        let d = Delivery {
            endpoint_id: endpoint_id.to_string(),
            event_id: event_id.to_string(),
            kind: entry.kind,
            body: entry.body.unwrap_or_default(),
            attempt: 0,
            next_at: now,
            created: now,
            node: None,
        };
        Ok(self.enqueue(&[d], max)? == 0)
    }
}

pub(crate) fn decode(all: HashMap<String, String>) -> Result<Vec<Endpoint>, StoreError> {
    let mut v = all
        .into_iter()
        .map(|(id, json)| {
            serde_json::from_str::<Endpoint>(&json)
                .map_err(|e| StoreError::Io(format!("webhook endpoint {id:?} in Redis: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The order they were made in (ids do not sort by time).
    v.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    Ok(v)
}
