//! Webhook endpoints, kept in `state_dir/webhooks/endpoints.json` (mode 0600: it
//! holds the signing secrets). Every change — admin API or CLI — goes through
//! [`EndpointStore::modify`]: an exclusive lock on `endpoints.lock`, read, change,
//! atomic write (the keys file's writer), and one audit record. A running gateway
//! notices a change by the file's identity.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::now_rfc3339;
use super::sign::SigningSecret;
use crate::config::identity::{Identity, identity};
use crate::keys::write::write_atomic;

/// How long a rotated-out secret keeps signing.
pub(crate) const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;

/// One endpoint, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) include_body: bool,
    pub(crate) enabled: bool,
    pub(crate) secret: String,
    /// The secret before the last rotation and until when (Unix seconds) it signs.
    #[serde(default)]
    pub(crate) previous_secret: Option<PreviousSecret>,
    pub(crate) created_at: String,
    /// Unix milliseconds of the first failure since the last success.
    #[serde(default)]
    pub(crate) failing_since: Option<i64>,
    /// Why keygate switched it off (failing for too long).
    #[serde(default)]
    pub(crate) disabled_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviousSecret {
    pub(crate) secret: String,
    pub(crate) until: i64,
}

impl Endpoint {
    /// What the admin API and the CLI show: never a secret.
    pub(crate) fn view(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "include_body": self.include_body,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "failing_since": self.failing_since.map(crate::control::state_dir::format_ms),
            "disabled_reason": self.disabled_reason,
            "previous_secret_until": self.previous_secret.as_ref().map(|p| crate::control::state_dir::format_ms(p.until * 1000)),
        })
    }

    /// The secrets that sign now: the current one, and the previous one during the
    /// rotation overlap.
    pub(crate) fn signing_secrets(&self, now_secs: i64) -> Vec<SigningSecret> {
        let mut v = Vec::with_capacity(2);
        if let Ok(s) = SigningSecret::parse(&self.secret) {
            v.push(s);
        }
        if let Some(p) = &self.previous_secret
            && p.until > now_secs
            && let Ok(s) = SigningSecret::parse(&p.secret)
        {
            v.push(s);
        }
        v
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    endpoints: Vec<Endpoint>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("no webhook endpoint {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub(crate) struct EndpointStore {
    dir: PathBuf,
}

impl EndpointStore {
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("webhooks"),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join("endpoints.json")
    }

    /// The version of the file now (to notice changes by others).
    pub(crate) fn identity(&self) -> Option<Identity> {
        identity(&self.path())
    }

    pub(crate) fn load(&self) -> Result<Vec<Endpoint>, StoreError> {
        match fs::read_to_string(self.path()) {
            Ok(t) => serde_json::from_str::<StoreFile>(&t)
                .map(|f| f.endpoints)
                .map_err(|e| StoreError::Io(format!("{}: {e}", self.path().display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StoreError::Io(format!("{}: {e}", self.path().display()))),
        }
    }

    /// Locks, reads, applies `f`, writes. Blocking: call off the async workers.
    pub(crate) fn modify<T>(
        &self,
        f: impl FnOnce(&mut Vec<Endpoint>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::Io(format!("{}: {e}", self.dir.display())))?;
        let lock_path = self.dir.join("endpoints.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StoreError::Io(format!("{}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| StoreError::Io(format!("{}: {e}", lock_path.display())))?;
        let mut endpoints = self.load()?;
        let out = f(&mut endpoints)?;
        let text = serde_json::to_string_pretty(&StoreFile { endpoints })
            .map_err(|e| StoreError::Io(e.to_string()))?;
        write_atomic(&self.path(), &format!("{text}\n"))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        drop(lock);
        Ok(out)
    }

    /// Updates one endpoint by id.
    pub(crate) fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut Endpoint) -> Result<(), StoreError>,
    ) -> Result<Endpoint, StoreError> {
        self.modify(|all| {
            let e = all
                .iter_mut()
                .find(|e| e.id == id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            f(e)?;
            Ok(e.clone())
        })
    }
}

/// A new endpoint id: `wh_` + 12 base62-ish characters from a ULID's tail.
pub(crate) fn new_endpoint_id() -> String {
    let ulid = crate::proxy::requestid::new_ulid();
    let s = ulid.to_str().unwrap_or("0");
    format!(
        "wh_{}",
        &s[s.len().saturating_sub(12)..].to_ascii_lowercase()
    )
}

pub(crate) fn created_now() -> String {
    now_rfc3339()
}

/// Appends one audit record for a webhook change to `state_dir/audit.log` (the
/// file key changes use): time, actor, action, endpoint id, changed fields. Never
/// a secret.
pub(crate) fn audit(
    state_dir: &Path,
    actor: &str,
    action: &str,
    endpoint_id: &str,
    fields: &[&str],
) {
    let path = state_dir.join("audit.log");
    let mut line = json!({
        "ts": now_rfc3339(),
        "actor": actor,
        "action": action,
        "webhook_id": endpoint_id,
        "fields": fields,
    })
    .to_string();
    line.push('\n');
    let r = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f: File| f.write_all(line.as_bytes()));
    if let Err(e) = r {
        tracing::warn!(file = %path.display(), error = %e, "could not write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let p = std::env::temp_dir().join(format!("kg-wh-store-{}", new_endpoint_id()));
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn modify_round_trips_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp();
        let s = EndpointStore::new(&dir);
        assert!(s.load().unwrap().is_empty());
        let secret = SigningSecret::generate().unwrap();
        s.modify(|all| {
            all.push(Endpoint {
                id: "wh_1".into(),
                url: "https://example.com/hook".into(),
                events: vec!["key.*".into()],
                description: None,
                include_body: false,
                enabled: true,
                secret: secret.expose().into(),
                previous_secret: None,
                created_at: created_now(),
                failing_since: None,
                disabled_reason: None,
            });
            Ok(())
        })
        .unwrap();
        let all = s.load().unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].view().to_string().contains(secret.expose()));
        let mode = fs::metadata(dir.join("webhooks/endpoints.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            s.update("nope", |_| Ok(())),
            Err(StoreError::NotFound(_))
        ));
        let _ = fs::remove_dir_all(dir);
    }
}
