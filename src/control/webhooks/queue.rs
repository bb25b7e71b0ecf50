//! The durable, bounded delivery queue.
//!
//! [`DeliveryQueue`] is the small interface the worker needs, so a Redis-stream
//! queue (cluster mode, one consumer group so one replica delivers each event) can
//! be added beside [`FileQueue`] without touching the worker.
//!
//! [`FileQueue`] keeps the pending deliveries in memory and journals every change
//! to `state_dir/webhooks/queue.jsonl` (`add`, `retry`, `done` lines), written at
//! once (not buffered), so a restart — or a crash of the process — loses nothing
//! that was accepted. The journal is rewritten (atomically) when it holds many
//! more lines than pending deliveries. Bounded: beyond `queue_max` pending
//! deliveries `push` refuses, and the caller drops and counts the event.
//! Only the delivery worker calls it: never the request path.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::write::write_atomic;

/// One event to deliver to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) endpoint_id: String,
    pub(crate) event_id: String,
    pub(crate) kind: String,
    pub(crate) body: String,
    /// Attempts made so far.
    pub(crate) attempt: u32,
    /// Unix milliseconds of the next attempt.
    pub(crate) next_at: i64,
    /// Unix milliseconds when it was queued.
    pub(crate) created: i64,
    /// Cluster mode: the replica making the attempt now (none while it waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
}

impl Delivery {
    pub(crate) fn key(&self) -> String {
        delivery_key(&self.endpoint_id, &self.event_id)
    }
}

pub(crate) fn delivery_key(endpoint_id: &str, event_id: &str) -> String {
    format!("{endpoint_id}/{event_id}")
}

/// The queue is at `queue_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// What the delivery worker needs of a queue.
pub(crate) trait DeliveryQueue: Send {
    /// Adds a delivery (or, if the same one is pending, makes it due at `next_at`).
    fn push(&mut self, d: Delivery) -> Result<(), Full>;
    /// Adds a delivery that other replicas may add too (cluster mode: the first
    /// one wins); alone, the same as [`DeliveryQueue::push`].
    fn push_once(&mut self, d: Delivery) -> Result<(), Full> {
        self.push(d)
    }
    /// Up to `limit` deliveries due at `now`, oldest due first, skipping `busy` keys.
    fn due(&self, now: i64, limit: usize, busy: &dyn Fn(&str) -> bool) -> Vec<Delivery>;
    /// When the next delivery is due.
    fn next_due(&self) -> Option<i64>;
    /// Records a failed attempt and when to try again.
    fn retry(&mut self, key: &str, attempt: u32, next_at: i64);
    /// An attempt starts: it is counted and the next one scheduled before it is
    /// made, so an attempt cut off by a crash still keeps the schedule.
    fn begin(&mut self, key: &str, attempt: u32, next_at: i64) {
        self.retry(key, attempt, next_at);
    }
    /// Removes a delivery (delivered, given up, or its endpoint gone).
    fn remove(&mut self, key: &str);
    fn len(&self) -> usize;
    /// Unix milliseconds of the oldest pending delivery.
    fn oldest(&self) -> Option<i64>;
    /// Keys of pending deliveries to one endpoint.
    fn keys_for(&self, endpoint_id: &str) -> Vec<String>;
    /// The pending delivery of `key`, if any.
    fn get(&self, key: &str) -> Option<Delivery>;
    /// Applies a new `queue_max` (a config reload); what is pending stays.
    fn set_limit(&mut self, max: usize);
    /// Drops every pending delivery to one endpoint (deleted or disabled).
    fn forget_endpoint(&mut self, endpoint_id: &str) {
        for k in self.keys_for(endpoint_id) {
            self.remove(&k);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Add(Delivery),
    Retry {
        k: String,
        attempt: u32,
        next_at: i64,
    },
    Done {
        k: String,
    },
}

#[derive(Debug)]
pub(crate) struct FileQueue {
    path: PathBuf,
    file: Option<File>,
    max: usize,
    pending: BTreeMap<String, Delivery>,
    by_due: BTreeSet<(i64, String)>,
    journal_lines: usize,
}

impl FileQueue {
    /// Opens (and replays) the journal in `dir`.
    pub(crate) fn open(dir: &Path, max: usize) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("queue.jsonl");
        let mut q = Self {
            path: path.clone(),
            file: None,
            max,
            pending: BTreeMap::new(),
            by_due: BTreeSet::new(),
            journal_lines: 0,
        };
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    // A torn last line (a crash mid-write) is skipped.
                    let Ok(l) = serde_json::from_str::<Line>(&line) else {
                        continue;
                    };
                    q.apply(l);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        q.compact();
        Ok(q)
    }

    fn apply(&mut self, l: Line) {
        match l {
            Line::Add(d) => {
                let k = d.key();
                if let Some(old) = self.pending.remove(&k) {
                    self.by_due.remove(&(old.next_at, k.clone()));
                }
                self.by_due.insert((d.next_at, k.clone()));
                self.pending.insert(k, d);
            }
            Line::Retry {
                k,
                attempt,
                next_at,
            } => {
                if let Some(d) = self.pending.get_mut(&k) {
                    self.by_due.remove(&(d.next_at, k.clone()));
                    d.attempt = attempt;
                    d.next_at = next_at;
                    self.by_due.insert((next_at, k));
                }
            }
            Line::Done { k } => {
                if let Some(d) = self.pending.remove(&k) {
                    self.by_due.remove(&(d.next_at, k));
                }
            }
        }
    }

    fn write(&mut self, l: &Line) {
        let Ok(mut text) = serde_json::to_string(l) else {
            return;
        };
        text.push('\n');
        if self.file.is_none() {
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(|e| tracing::error!(file = %self.path.display(), error = %e, "cannot open the webhook queue"))
                .ok();
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(text.as_bytes())
        {
            tracing::error!(file = %self.path.display(), error = %e, "cannot write the webhook queue; pending deliveries may not survive a restart");
            self.file = None;
        }
        self.journal_lines += 1;
        if self.journal_lines > 2 * self.pending.len() + 1024 {
            self.compact();
        }
    }

    /// Rewrites the journal with one `add` line per pending delivery.
    fn compact(&mut self) {
        let mut text = String::new();
        for d in self.pending.values() {
            if let Ok(s) = serde_json::to_string(&Line::Add(d.clone())) {
                text.push_str(&s);
                text.push('\n');
            }
        }
        match write_atomic(&self.path, &text) {
            Ok(()) => {
                self.file = None;
                self.journal_lines = self.pending.len();
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact the webhook queue"),
        }
    }
}

impl DeliveryQueue for FileQueue {
    fn push(&mut self, d: Delivery) -> Result<(), Full> {
        let k = d.key();
        if !self.pending.contains_key(&k) && self.pending.len() >= self.max {
            return Err(Full);
        }
        let line = Line::Add(d);
        self.write(&line);
        self.apply(line);
        Ok(())
    }

    fn due(&self, now: i64, limit: usize, busy: &dyn Fn(&str) -> bool) -> Vec<Delivery> {
        self.by_due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter(|(_, k)| !busy(k))
            .take(limit)
            .filter_map(|(_, k)| self.pending.get(k).cloned())
            .collect()
    }

    fn next_due(&self) -> Option<i64> {
        self.by_due.iter().next().map(|(t, _)| *t)
    }

    fn retry(&mut self, key: &str, attempt: u32, next_at: i64) {
        if self.pending.contains_key(key) {
            let line = Line::Retry {
                k: key.to_string(),
                attempt,
                next_at,
            };
            self.write(&line);
            self.apply(line);
        }
    }

    fn remove(&mut self, key: &str) {
        if self.pending.contains_key(key) {
            let line = Line::Done { k: key.to_string() };
            self.write(&line);
            self.apply(line);
        }
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    fn oldest(&self) -> Option<i64> {
        self.pending.values().map(|d| d.created).min()
    }

    fn keys_for(&self, endpoint_id: &str) -> Vec<String> {
        let prefix = format!("{endpoint_id}/");
        self.pending
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn get(&self, key: &str) -> Option<Delivery> {
        self.pending.get(key).cloned()
    }

    fn set_limit(&mut self, max: usize) {
        self.max = max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ep: &str, ev: &str, next_at: i64) -> Delivery {
        Delivery {
            endpoint_id: ep.into(),
            event_id: ev.into(),
            kind: "webhook.test".into(),
            body: "{}".into(),
            attempt: 0,
            next_at,
            created: next_at,
            node: None,
        }
    }

    fn tmp() -> PathBuf {
        std::env::temp_dir().join(format!(
            "kg-wh-queue-{}",
            super::super::events::new_event_id()
        ))
    }

    #[test]
    fn survives_reopen_and_is_bounded() {
        let dir = tmp();
        {
            let mut q = FileQueue::open(&dir, 3).unwrap();
            q.push(d("a", "1", 10)).unwrap();
            q.push(d("a", "2", 20)).unwrap();
            q.push(d("b", "3", 5)).unwrap();
            assert_eq!(q.push(d("b", "4", 5)), Err(Full));
            // The same delivery again is not a new one.
            q.push(d("b", "3", 1)).unwrap();
            q.retry("a/1", 1, 100);
            q.remove("a/2");
        }
        let q = FileQueue::open(&dir, 3).unwrap();
        assert_eq!(q.len(), 2);
        let due = q.due(50, 10, &|_| false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key(), "b/3");
        assert_eq!(q.get("a/1").unwrap().attempt, 1);
        assert_eq!(q.next_due(), Some(1));
        assert_eq!(q.keys_for("a"), vec!["a/1".to_string()]);
        assert!(q.due(50, 10, &|k| k == "b/3").is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tmp();
        {
            let mut q = FileQueue::open(&dir, 10).unwrap();
            q.push(d("a", "1", 10)).unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("queue.jsonl"))
            .unwrap();
        f.write_all(b"{\"op\":\"add\",\"endpo").unwrap();
        let q = FileQueue::open(&dir, 10).unwrap();
        assert_eq!(q.len(), 1);
        let _ = fs::remove_dir_all(dir);
    }
}
