//! What keygate keeps in `state_dir`: the gateway lock (one gateway per state_dir),
//! last-used times (`last_used.json`), and the audit log (`audit.log`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::store::{KeySet, parse_time};
use crate::keys::write::{WriteError, write_atomic};

const LAST_USED: &str = "last_used.json";
const AUDIT: &str = "audit.log";
const GATEWAY_LOCK: &str = "gateway.lock";

/// Takes the gateway lock of `state_dir` for as long as the returned file lives.
pub(crate) fn lock_gateway(state_dir: &Path) -> Result<File, String> {
    fs::create_dir_all(state_dir).map_err(|e| format!("state_dir {}: {e}", state_dir.display()))?;
    let path = state_dir.join(GATEWAY_LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "another keygate is already running with state_dir {}; two gateways must not share one",
            state_dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// Last-used times by key id, in Unix milliseconds.
pub(crate) fn read_last_used(state_dir: &Path) -> HashMap<String, i64> {
    let Ok(text) = fs::read_to_string(state_dir.join(LAST_USED)) else {
        return HashMap::new();
    };
    let Ok(map) = serde_json::from_str::<BTreeMap<String, String>>(&text) else {
        tracing::warn!(file = %state_dir.join(LAST_USED).display(), "ignoring an unreadable last-used file");
        return HashMap::new();
    };
    map.into_iter()
        .filter_map(|(id, t)| {
            let t = parse_time(&t).ok()?;
            Some((id, (t.unix_timestamp_nanos() / 1_000_000) as i64))
        })
        .collect()
}

/// Gives the keys of `set` their last-used times from `times`, where newer.
pub(crate) fn seed_last_used(set: &KeySet, times: &HashMap<String, i64>) {
    for k in set.iter() {
        if let Some(&ms) = times.get(k.id.as_str()) {
            k.state.last_used.fetch_max(ms, Ordering::Relaxed);
        }
    }
}

pub(crate) fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Writes the last-used times of `set` (keys never used are left out).
pub(crate) fn write_last_used(state_dir: &Path, set: &KeySet) -> Result<(), WriteError> {
    let map: BTreeMap<&str, String> = set
        .iter()
        .filter_map(|k| {
            let ms = k.state.last_used.load(Ordering::Relaxed);
            (ms > 0).then(|| (k.id.as_str(), format_ms(ms)))
        })
        .collect();
    let text = serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".into());
    write_atomic(&state_dir.join(LAST_USED), &format!("{text}\n"))
}

/// Appends one audit record: time, actor, action, key id, changed fields. Never a
/// secret: callers pass field names, not values.
pub(crate) fn audit(
    state_dir: &Path,
    actor: &str,
    action: &str,
    key_id: Option<&str>,
    fields: &[&str],
) -> Result<(), String> {
    fs::create_dir_all(state_dir).map_err(|e| format!("state_dir {}: {e}", state_dir.display()))?;
    let path = state_dir.join(AUDIT);
    let record = serde_json::json!({
        "ts": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "actor": actor,
        "action": action,
        "key_id": key_id,
        "fields": fields,
    });
    let mut line = record.to_string();
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}
