//! Admin and CLI writes in cluster mode, for [`crate::control::manage::Manager`] (the one
//! writer): read the cluster's keys, let the manager change them as it changes a
//! file, then send the difference in one atomic script per changed key —
//! compare-and-set on the key's revision (`If-Match`), version bump, change record,
//! audit record. Never a local-only write: without Redis (or with its data gone)
//! the write is refused with `503 cluster_unavailable`.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderMap;

use super::ClusterConfig;
use super::store::{self, Layout, Source};
use crate::config::Config;
use crate::keys::file::{KeyEntry, KeysFile};
use crate::keys::seal::SealKey;
use crate::keys::write::WriteError;

pub(crate) use crate::keys::write::Refusal;

fn unavailable(e: impl std::fmt::Display) -> WriteError {
    WriteError::Cluster(Refusal::Unavailable(format!(
        "the cluster store cannot be reached ({e})"
    )))
}

/// `If-Match: <revision>` (quotes allowed), if sent.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| "If-Match: send the key's revision, a number".to_string())
}

/// The cluster writer of one config.
#[derive(Debug, Clone)]
pub(crate) struct ClusterWriter {
    cfg: ClusterConfig,
    layout: Layout,
    keys_file: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    seal: Option<std::sync::Arc<SealKey>>,
}

struct Read {
    epoch: String,
    file: KeysFile,
    sources: HashMap<String, Source>,
}

impl ClusterWriter {
    /// `seal` is the seal key the embedder handed in, if any.
    pub(crate) fn open(config: &Config, seal: Option<std::sync::Arc<SealKey>>) -> Option<Self> {
        let cfg = config.cluster.clone()?;
        Some(Self {
            layout: Layout::new(&cfg.name),
            cfg,
            keys_file: config.keys_file.clone(),
            state_dir: config.state_dir.clone(),
            seal,
        })
    }

    fn connect(&self) -> Result<redis::Connection, WriteError> {
        let client = self.cfg.client().map_err(unavailable)?;
        let con = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(unavailable)?;
        con.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(unavailable)?;
        con.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(unavailable)?;
        Ok(con)
    }

    fn read_with(&self, con: &mut redis::Connection) -> Result<Read, WriteError> {
        let raw: store::Raw = store::read_pipe(&self.layout)
            .query(con)
            .map_err(unavailable)?;
        let (state, sources) = store::decode(raw).map_err(WriteError::Rejected)?;
        let Some(epoch) = state.epoch else {
            return Err(WriteError::Cluster(Refusal::Unavailable(
                "the cluster store holds no keygate data (wiped or not seeded yet)".into(),
            )));
        };
        // A replica that knew another epoch must not write into a replaced store.
        if let Some(known) = super::source::read(&self.state_dir, &self.cfg.name)
            && known.epoch != epoch
        {
            return Err(WriteError::Cluster(Refusal::Unavailable(
                "the cluster store was replaced since this replica last synced".into(),
            )));
        }
        Ok(Read {
            epoch,
            file: state.file,
            sources,
        })
    }

    /// The cluster's keys, with their revisions.
    pub(crate) fn read(&self) -> Result<KeysFile, WriteError> {
        let mut con = self.connect()?;
        Ok(self.read_with(&mut con)?.file)
    }

    /// Reads the keys, lets `change` edit them, and writes the difference.
    pub(crate) fn update<T>(
        &self,
        actor: &str,
        if_match: Option<u64>,
        change: impl FnOnce(&mut KeysFile) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut con = self.connect()?;
        let before = self.read_with(&mut con)?;
        let mut after = before.file.clone();
        let out = change(&mut after)?;
        let old: HashMap<&str, &KeyEntry> = before
            .file
            .keys
            .iter()
            .map(|k| (k.id.as_str(), k))
            .collect();
        let new: HashMap<&str, &KeyEntry> = after.keys.iter().map(|k| (k.id.as_str(), k)).collect();
        let seal = self.seal.clone();
        let mut ops: Vec<(&str, Option<&KeyEntry>)> = Vec::new();
        for (id, e) in &new {
            let changed = old
                .get(id)
                .is_none_or(|o| serde_json::to_value(o).ok() != serde_json::to_value(e).ok());
            if changed {
                ops.push((id, Some(e)));
            }
        }
        for id in old.keys() {
            if !new.contains_key(id) {
                ops.push((id, None));
            }
        }
        for (id, e) in ops {
            if before.sources.get(id) == Some(&Source::File) {
                return Err(WriteError::ReadOnly(self.keys_file.clone()));
            }
            let current = old.get(id).map(|o| o.revision.unwrap_or(0));
            if let (Some(want), Some(cur)) = (if_match, current)
                && want != cur
            {
                return Err(WriteError::Cluster(Refusal::RevisionConflict {
                    id: id.to_string(),
                    expected: want,
                    current: cur,
                }));
            }
            let expected = match current {
                None => "new".to_string(),
                Some(c) => if_match.unwrap_or(c).to_string(),
            };
            let old_lname = old
                .get(id)
                .map(|o| o.name.to_lowercase())
                .unwrap_or_default();
            let (op, value, new_lname, fields) = match e {
                Some(e) => {
                    let s = store::to_stored(e.clone(), Source::Api, seal.as_deref())
                        .map_err(WriteError::Rejected)?;
                    ("put", store::stored_json(&s), e.name.to_lowercase(), "key")
                }
                None => ("delete", String::new(), String::new(), "key"),
            };
            let audit = audit_json(actor, op, Some(id), fields);
            self.run(
                &mut con,
                &before.epoch,
                op,
                id,
                &expected,
                &value,
                &old_lname,
                &new_lname,
                &audit,
            )?;
        }
        if after.api_enabled != before.file.api_enabled {
            let v = if after.api_enabled { "1" } else { "0" };
            let audit = audit_json(
                actor,
                if after.api_enabled {
                    "api.on"
                } else {
                    "api.off"
                },
                None,
                "api_enabled",
            );
            self.run(&mut con, &before.epoch, "api", "", "", v, "", "", &audit)?;
        }
        Ok(out)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the script's arguments, in order"
    )]
    fn run(
        &self,
        con: &mut redis::Connection,
        epoch: &str,
        op: &str,
        id: &str,
        expected: &str,
        value: &str,
        old_lname: &str,
        new_lname: &str,
        audit: &str,
    ) -> Result<(), WriteError> {
        let l = &self.layout;
        let script = store::write();
        let mut inv = script.prepare_invoke();
        inv.key(&l.epoch)
            .key(&l.keys)
            .key(&l.revs)
            .key(&l.names)
            .key(&l.version)
            .key(&l.changes)
            .key(&l.audit)
            .key(&l.api);
        inv.arg(epoch)
            .arg(op)
            .arg(id)
            .arg(expected)
            .arg(value)
            .arg(old_lname)
            .arg(new_lname)
            .arg(audit);
        let (outcome, n, _): (String, u64, u64) = inv.invoke(con).map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "conflict" => Err(WriteError::Cluster(Refusal::RevisionConflict {
                id: id.to_string(),
                expected: expected.parse().unwrap_or(0),
                current: n,
            })),
            "epoch" => Err(WriteError::Cluster(Refusal::Unavailable(
                "the cluster store was wiped or replaced".into(),
            ))),
            "not_found" => Err(WriteError::NotFound(id.to_string())),
            "name_taken" => Err(WriteError::Rejected(
                "name: already used by another key (names are unique ignoring case)".into(),
            )),
            other => Err(WriteError::Rejected(format!(
                "the cluster store refused: {other}"
            ))),
        }
    }
}

fn audit_json(actor: &str, action: &str, key_id: Option<&str>, fields: &str) -> String {
    serde_json::json!({
        "ts": crate::control::state_dir::format_ms((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64),
        "actor": actor,
        "action": action,
        "key_id": key_id,
        "fields": [fields],
    })
    .to_string()
}

/// `keygate keys export`: the cluster's keys as a keys file (hashes and sealed
/// copies only), with the cluster's version as its `revision:`.
pub(crate) fn export(config: &Config) -> Result<String, String> {
    let w = ClusterWriter::open(config, None)
        .ok_or("this config has no cluster: section; the keys file is the export")?;
    let mut con = w.connect().map_err(|e| e.to_string())?;
    let mut file = w.read_with(&mut con).map_err(|e| e.to_string())?.file;
    let version: Option<u64> = redis::cmd("GET")
        .arg(&w.layout.version)
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    // No `revision:`: the operator sets one when the file should be applied again.
    let _ = version;
    file.revision = None;
    serde_yaml::to_string(&file).map_err(|e| e.to_string())
}
