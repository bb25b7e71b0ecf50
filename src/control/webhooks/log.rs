//! Each endpoint's delivery log: its last [`LOG_MAX`] attempts, in memory and in
//! `state_dir/webhooks/deliveries/<id>.jsonl` (read by `keygate webhooks
//! deliveries` and after a restart). Lines keep the event body, for resend; the
//! admin API and the CLI never show it. Written by the worker, not the request path.
//! In cluster mode the log is the cluster's: a list in Redis (newest first), each
//! entry naming the replica (`node`) that made the attempt.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Webhooks;

/// Attempts kept per endpoint log.
pub(crate) const LOG_MAX: usize = 100;

/// One line of an endpoint's delivery log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogEntry {
    pub(crate) event_id: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) time: String,
    pub(crate) attempt: u32,
    /// `delivered`, `retrying`, `failed` (gave up), `endpoint.disabled`.
    pub(crate) result: String,
    pub(crate) status: Option<u16>,
    pub(crate) duration_ms: Option<f64>,
    pub(crate) response: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) next_retry: Option<String>,
    /// The body, for resend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    /// Cluster mode: the replica that made the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
}

pub(crate) fn log_path(dir: &Path, endpoint_id: &str) -> PathBuf {
    dir.join("deliveries").join(format!("{endpoint_id}.jsonl"))
}

/// Reads an endpoint's persisted log (newest last).
pub(crate) fn read_log(webhooks_dir: &Path, endpoint_id: &str) -> VecDeque<LogEntry> {
    let Ok(text) = fs::read_to_string(log_path(webhooks_dir, endpoint_id)) else {
        return VecDeque::new();
    };
    let mut v: VecDeque<LogEntry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    while v.len() > LOG_MAX {
        v.pop_front();
    }
    v
}

impl Webhooks {
    /// Appends to an endpoint's log, in memory and on disk.
    pub(crate) fn log(
        &self,
        logs: &mut HashMap<String, VecDeque<LogEntry>>,
        endpoint_id: &str,
        mut entry: LogEntry,
    ) {
        // Cluster mode: the log is the cluster's, in Redis (written by the pump).
        if let Some(sh) = &self.cluster {
            entry.node = Some(sh.node().to_string());
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let log = logs.entry(endpoint_id.to_string()).or_default();
            log.push_back(entry);
            while log.len() > LOG_MAX {
                log.pop_front();
            }
            sh.log(endpoint_id, json);
            return;
        }
        let dir = self.store.dir().to_path_buf();
        let log = logs
            .entry(endpoint_id.to_string())
            .or_insert_with(|| read_log(&dir, endpoint_id));
        log.push_back(entry.clone());
        let rewrite = log.len() > 2 * LOG_MAX;
        while log.len() > LOG_MAX {
            log.pop_front();
        }
        let path = log_path(&dir, endpoint_id);
        let _ = fs::create_dir_all(dir.join("deliveries"));
        let result = if rewrite {
            let text: String = log
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .map(|l| l + "\n")
                .collect();
            crate::keys::write::write_atomic(&path, &text).map_err(|e| e.to_string())
        } else {
            let mut line = serde_json::to_string(&entry).unwrap_or_default();
            line.push('\n');
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the webhook delivery log");
        }
    }
}
