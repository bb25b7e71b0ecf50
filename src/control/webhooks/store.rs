//! Webhook endpoints, kept in `state_dir/webhooks/endpoints.json` (mode 0600: it
//! holds the signing secrets), or in Redis in cluster mode
//! ([`super::cluster::endpoints`]; the file is then the replica's last-good copy).
//! Every change — admin API or CLI — goes through [`EndpointStore::modify`]: an
//! exclusive lock on `endpoints.lock` (`:wh:lock` in Redis), read, change, atomic
//! write (the keys file's writer), and one audit record. A running gateway
//! notices a change by the file's identity (the version in Redis).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cluster::endpoints::RedisStore;
pub(crate) use super::endpoint::{Endpoint, PreviousSecret, ROTATION_OVERLAP_SECS, StoreError};
use super::events::now_rfc3339;
use crate::config::identity::{Identity, identity};
use crate::keys::write::write_atomic;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone)]
pub(crate) struct EndpointStore {
    dir: PathBuf,
    /// Cluster mode: the endpoints live in Redis.
    redis: Option<Arc<RedisStore>>,
}

impl EndpointStore {
    /// The store of `state_dir` alone.
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("webhooks"),
            redis: None,
        }
    }

    /// The store of this config: Redis when it has a `cluster:` section.
    pub(crate) fn open(config: &crate::config::Config) -> Result<Self, String> {
        let mut s = Self::new(&config.state_dir);
        if let Some(c) = &config.cluster {
            s.redis = Some(Arc::new(RedisStore::open(c)?));
        }
        Ok(s)
    }

    /// With the Redis store of a running gateway (one connection for both).
    pub(crate) fn with_redis(state_dir: &Path, redis: Arc<RedisStore>) -> Self {
        Self {
            dir: state_dir.join("webhooks"),
            redis: Some(redis),
        }
    }

    /// Cluster mode: the Redis side (logs, pending deliveries, resend).
    pub(crate) fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// The last-good copy (cluster mode), read at start when Redis is not there.
    pub(crate) fn load_copy(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.load_file()
    }

    /// Saves the endpoints the replica follows as its last-good copy.
    pub(crate) fn save_copy(&self, endpoints: &[Endpoint]) {
        let r = fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                serde_json::to_string_pretty(&StoreFile {
                    endpoints: endpoints.to_vec(),
                })
                .map_err(|e| e.to_string())
            })
            .and_then(|text| {
                write_atomic(&self.path(), &format!("{text}\n")).map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot save the copy of the webhook endpoints");
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

    /// Every endpoint. Blocking (a file, or Redis).
    pub(crate) fn load(&self) -> Result<Vec<Endpoint>, StoreError> {
        match &self.redis {
            Some(r) => r.load(),
            None => self.load_file(),
        }
    }

    fn load_file(&self) -> Result<Vec<Endpoint>, StoreError> {
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
        if let Some(r) = &self.redis {
            return r.modify(f);
        }
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
        let mut endpoints = self.load_file()?;
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
    use crate::control::webhooks::sign::SigningSecret;

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
