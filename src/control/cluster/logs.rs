//! The shared recent-requests stream: each replica appends compact records (the
//! access-log line plus `node`) to one capped Redis stream, and the admin API, the
//! console and `keygate logs` read it newest first with the usual filters.
//!
//! The request path only copies its access-log line (formatted once for both, see
//! [`crate::observe::accesslog::with_line`]) behind a `{"node":…,` prefix made at
//! start onto a bounded buffer (one byte buffer, a mutex held for one copy, no
//! allocation per record); a task sends the buffer every [`FLUSH`], [`CHUNK`]
//! records per call of a script that `XADD`s each (one command and one answer per
//! chunk, not per record; a chunk holds Redis for about 0.2 ms on the bench box). A full
//! buffer or an unreachable Redis drops records and counts them
//! (`keygate_cluster_log_dropped_total`); the local access log is unaffected.
//! Reads are paged ([`PAGE`] entries per `XREVRANGE`), never one huge range.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::ClusterMetrics;
use super::{Cluster, lock};
use crate::observe::logs::{Filter, Line};
use crate::observe::record::{Decision, Record};

/// Records buffered at most.
const BUFFER: usize = 10_000;
const FLUSH: Duration = Duration::from_millis(200);
/// Records per script call.
const CHUNK: usize = 50;
/// Entries per read.
pub(crate) const PAGE: usize = 200;
/// Entries looked at per query at most (a filter that matches nothing stops here).
const SCAN_MAX: usize = 20_000;

/// Buffered records: one byte buffer and where each record ends.
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.bytes[a..b])
    }
}

pub(crate) struct Queue {
    lines: Mutex<Lines>,
    /// `{"node":"<node>",`, made once.
    prefix: String,
    sample: f64,
    seq: AtomicU64,
}

impl Queue {
    pub(crate) fn new(sample: f64, node: &str) -> Self {
        Self {
            lines: Mutex::new(Lines::default()),
            prefix: format!(
                "{{\"node\":{},",
                serde_json::Value::String(node.to_string())
            ),
            sample,
            seq: AtomicU64::new(0),
        }
    }

    /// Queues `r`, whose access-log line is `line`, unless sampled out.
    pub(crate) fn push(&self, r: &Record, line: &str, m: &ClusterMetrics) {
        let success = matches!(r.decision, Decision::Allowed | Decision::Public) && r.status < 400;
        if success && self.sample < 1.0 {
            // Deterministic sampling: every n-th success.
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let keep =
                ((n as f64) * self.sample).floor() != (((n + 1) as f64) * self.sample).floor();
            if !keep {
                return;
            }
        }
        let body = line.trim_end().strip_prefix('{').unwrap_or("");
        let mut q = lock(&self.lines);
        if q.ends.len() >= BUFFER {
            drop(q);
            m.log_dropped.inc();
            return;
        }
        q.bytes.extend_from_slice(self.prefix.as_bytes());
        q.bytes.extend_from_slice(body.as_bytes());
        let end = q.bytes.len();
        q.ends.push(end);
    }

    /// The buffered records, `spare` (emptied) in their place: the flush task hands
    /// back the buffers it sent, so neither is grown again from empty (no realloc
    /// and copy of a growing buffer per flush). Each keeps the size of the largest
    /// batch it held, at most [`BUFFER`] records.
    fn swap(&self, mut spare: Lines) -> Lines {
        spare.bytes.clear();
        spare.ends.clear();
        std::mem::replace(&mut *lock(&self.lines), spare)
    }
}

/// Sends the buffer to the stream, capped at `logs.max_entries`.
pub(crate) async fn flush(c: Arc<Cluster>) {
    let script = super::store::append_logs();
    let mut spare = Lines::default();
    loop {
        tokio::time::sleep(FLUSH).await;
        let batch = c.logs.swap(std::mem::take(&mut spare));
        spare = send(&c, &script, batch).await;
    }
}

/// Sends one batch; gives its buffers back for the next swap.
async fn send(c: &Cluster, script: &redis::Script, batch: Lines) -> Lines {
    if batch.ends.is_empty() {
        return batch;
    }
    let Some(mut con) = c.bulk_connection() else {
        c.metrics.log_dropped.inc_by(batch.ends.len() as u64);
        return batch;
    };
    {
        let lines: Vec<&[u8]> = batch.iter().collect();
        for (i, chunk) in lines.chunks(CHUNK).enumerate() {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash())
                .arg(1)
                .arg(&c.layout.logs)
                .arg(c.cfg.log_max_entries);
            for line in chunk {
                cmd.arg(*line);
            }
            if let Err(e) = super::store::evalsha::<u64>(script, &cmd, &mut con).await {
                // This chunk and the rest: Redis is not answering.
                c.metrics
                    .log_dropped
                    .inc_by((lines.len() - i * CHUNK) as u64);
                tracing::debug!(error = %e, "shared log batch dropped");
                break;
            }
        }
    }
    batch
}

/// What one page of entries (newest first) leaves to do.
enum Step {
    /// Finished; the cursor of the next page, if there may be more.
    Done(Option<String>),
    /// Read on from this range end.
    More(String),
}

/// Filters one page into `out`.
fn scan(
    batch: &[(String, String)],
    filter: &Filter,
    limit: usize,
    out: &mut Vec<serde_json::Value>,
    scanned: &mut usize,
) -> Step {
    for (id, json) in batch {
        *scanned += 1;
        let Ok(line) = serde_json::from_str::<Line>(json) else {
            continue;
        };
        match filter.check(&line) {
            None => return Step::Done(None),
            Some(true) => {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                    out.push(v);
                }
                if out.len() >= limit {
                    return Step::Done(Some(id.clone()));
                }
            }
            Some(false) => {}
        }
    }
    let last = batch.last().map(|b| b.0.clone());
    match last {
        Some(id) if batch.len() == PAGE && *scanned < SCAN_MAX => Step::More(format!("({id}")),
        Some(id) if batch.len() == PAGE => Step::Done(Some(id)),
        _ => Step::Done(None),
    }
}

fn start(before: Option<&str>) -> String {
    before.map_or_else(|| "+".to_string(), |b| format!("({b}"))
}

fn xrevrange(stream: &str, end: &str) -> redis::Cmd {
    let mut c = redis::cmd("XREVRANGE");
    c.arg(stream).arg(end).arg("-").arg("COUNT").arg(PAGE);
    c
}

type RawEntries = Vec<(String, Vec<(String, String)>)>;

fn flatten(raw: RawEntries) -> Vec<(String, String)> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "j")
                .map(|(_, v)| (id, v))
        })
        .collect()
}

/// Newest-first records of every replica, and the `next_before` cursor.
pub(crate) type Found = (Vec<serde_json::Value>, Option<String>);

/// The admin API's read (on the bulk connection).
pub(crate) async fn query(
    c: &Cluster,
    filter: &Filter,
    limit: usize,
    before: Option<&str>,
) -> Result<Found, String> {
    let Some(mut con) = c.bulk_connection() else {
        return Err("the cluster store is not reachable".into());
    };
    let (mut out, mut scanned, mut end) = (Vec::new(), 0, start(before));
    loop {
        let raw: RawEntries = xrevrange(&c.layout.logs, &end)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("the cluster store did not answer: {e}"))?;
        match scan(&flatten(raw), filter, limit, &mut out, &mut scanned) {
            Step::Done(next) => return Ok((out, next)),
            Step::More(e) => end = e,
        }
    }
}

/// `keygate logs` in cluster mode: the same read on a plain connection.
pub(crate) fn query_blocking(
    cfg: &super::ClusterConfig,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<serde_json::Value>, String> {
    let client = cfg.client().map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("the cluster store is not reachable: {e}"))?;
    let layout = super::store::Layout::new(&cfg.name);
    let (mut out, mut scanned, mut end) = (Vec::new(), 0, start(None));
    loop {
        let raw: RawEntries = xrevrange(&layout.logs, &end)
            .query(&mut con)
            .map_err(|e| format!("the cluster store did not answer: {e}"))?;
        match scan(&flatten(raw), filter, limit, &mut out, &mut scanned) {
            Step::Done(_) => return Ok(out),
            Step::More(e) => end = e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_where_each_record_ends() {
        let q = Queue::new(1.0, "pod \"1\"");
        assert_eq!(q.prefix, r#"{"node":"pod \"1\"","#);
        {
            let mut l = lock(&q.lines);
            for body in ["a", "", "bc"] {
                l.bytes.extend_from_slice(body.as_bytes());
                let end = l.bytes.len();
                l.ends.push(end);
            }
        }
        let taken = q.swap(Lines::default());
        let got: Vec<&[u8]> = taken.iter().collect();
        assert_eq!(got, [&b"a"[..], b"", b"bc"]);
        // The buffers handed back come back empty, with their capacity.
        let cap = taken.bytes.capacity();
        assert!(q.swap(taken).ends.is_empty());
        let back = q.swap(Lines::default());
        assert!(back.ends.is_empty() && back.bytes.is_empty());
        assert_eq!(back.bytes.capacity(), cap);
    }
}
