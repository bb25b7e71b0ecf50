//! Key management operations on the keys file, shared by the command line (and the
//! admin API): every change goes through the one writer ([`KeysWriter`]), is
//! validated against the config as a whole snapshot before it is written, and is
//! recorded in the audit log. A running gateway picks changes up through its watcher.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::control::state_dir;
use crate::keys::file::{KeyEntry, KeyRateFile, KeysFile};
use crate::keys::seal::SealKey;
use crate::keys::store::{KeyRecord, KeySet, parse_time};
use crate::keys::write::{KeysWriter, WriteError};
use crate::keys::{KeyHash, KeyId, Level, Secret, display_prefix, mint, validate_name};
use crate::policy::Policy;

/// A new key's settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewKey {
    pub(crate) name: String,
    /// Category (or `"*"`) → level.
    pub(crate) permissions: BTreeMap<String, Level>,
    pub(crate) rate_limit: Option<KeyRateFile>,
    pub(crate) expires_at: Option<String>,
}

/// Changes to a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyEdit {
    pub(crate) name: Option<String>,
    /// Set these categories (others kept).
    pub(crate) set_permissions: BTreeMap<String, Level>,
    /// Replace the whole map (the admin API's PATCH).
    pub(crate) replace_permissions: Option<BTreeMap<String, Level>>,
    /// `Some(None)` removes the key's own rate limit.
    pub(crate) rate_limit: Option<Option<KeyRateFile>>,
    /// `Some(None)` removes the expiry.
    pub(crate) expires_at: Option<Option<String>>,
    // cluster: the revision the caller read (`If-Match`); a stale one is refused.
    pub(crate) if_match: Option<u64>,
}

/// A key just made: the only moment its value is shown.
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) entry: KeyEntry,
    pub(crate) secret: Secret,
    pub(crate) sealed: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RevealError {
    #[error(
        "not_revealable: key '{name}' was made without KEYGATE_SEAL_KEY, so keygate keeps only its hash; create a new key if the value is lost"
    )]
    NotRevealable { name: String },
    #[error(
        "key '{name}' has a sealed copy, but no seal key is set: set KEYGATE_SEAL_KEY (or KEYGATE_SEAL_KEY_FILE) to the key it was sealed with"
    )]
    NoSealKey { name: String },
    #[error(
        "key '{name}' has a sealed copy that does not open with this seal key: it was sealed with another one"
    )]
    WrongSealKey { name: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

pub(crate) struct Manager {
    pub(crate) config: Arc<Config>,
    writer: KeysWriter,
    // cluster: in cluster mode every read and write goes to the cluster store.
    cluster: Option<crate::control::cluster::write::ClusterWriter>,
    seal: Option<Arc<SealKey>>,
    actor: String,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Finds a key by id, else by name (ignoring case).
fn find(file: &KeysFile, selector: &str) -> Option<usize> {
    file.keys.iter().position(|k| k.id == selector).or_else(|| {
        let lower = selector.to_lowercase();
        file.keys
            .iter()
            .position(|k| k.name.to_lowercase() == lower)
    })
}

fn not_found(selector: &str) -> WriteError {
    WriteError::NotFound(selector.to_string())
}

/// `NameTaken` when a key other than `except` (an index) has `name`, ignoring case.
fn check_name_free(file: &KeysFile, name: &str, except: Option<usize>) -> Result<(), WriteError> {
    let lower = name.to_lowercase();
    match file
        .keys
        .iter()
        .enumerate()
        .find(|(i, k)| Some(*i) != except && k.name.to_lowercase() == lower)
    {
        Some((_, k)) => Err(WriteError::NameTaken(k.name.clone())),
        None => Ok(()),
    }
}

fn levels_to_strings(m: &BTreeMap<String, Level>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(c, l)| (c.clone(), l.as_str().to_string()))
        .collect()
}

/// A key as the CLI's `--json` and the admin API show it: never the value.
pub(crate) fn key_view(e: &KeyEntry, last_used_ms: Option<i64>) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "name": e.name,
        "key": e.masked(),
        "prefix": e.prefix,
        "permissions": e.permissions,
        "rate_limit": e.rate_limit,
        "created_at": e.created_at,
        "expires_at": e.expires_at,
        "last_used": last_used_ms.filter(|m| *m > 0).map(state_dir::format_ms),
        "revealable": e.revealable(),
        // cluster: the key's revision, for If-Match (cluster mode only).
        "revision": e.revision,
    })
}

/// A key's view from the snapshot in force, the same fields as [`key_view`]: what
/// the admin list and `GET /keys/{id}` show in single-node mode, so a page of keys
/// reads no file. Times are shown in RFC 3339 (a date-only `expires_at` as written).
pub(crate) fn record_view(k: &KeyRecord, policy: &Policy) -> serde_json::Value {
    let rfc = |t: &OffsetDateTime| t.format(&Rfc3339).ok();
    let last_used = k.state.last_used.load(std::sync::atomic::Ordering::Relaxed);
    let v = &k.view;
    let expires_at = k.expires_at.as_ref().and_then(|t| {
        if v.expires_is_date {
            Some(t.date().to_string())
        } else {
            rfc(t)
        }
    });
    serde_json::json!({
        "id": k.id.as_str(),
        "name": &*k.name,
        "key": k.masked(),
        "prefix": v.prefix.as_ref().map(|p| p.as_str()),
        "permissions": k.permissions(policy),
        "rate_limit": k.rate_limit(),
        "created_at": v.created_at.as_ref().and_then(rfc),
        "expires_at": expires_at,
        "last_used": (last_used > 0).then(|| state_dir::format_ms(last_used)),
        "revealable": v.revealable,
        "revision": v.revision(),
    })
}

/// Normalises an expiry to RFC 3339.
pub(crate) fn parse_expiry(s: &str) -> Result<String, String> {
    parse_time(s).and_then(|t| t.format(&Rfc3339).map_err(|e| e.to_string()))
}

impl Manager {
    /// `seal` is the seal key the binary read, if any.
    pub(crate) fn open(config: Arc<Config>, actor: String, seal: Option<Arc<SealKey>>) -> Self {
        let writer = KeysWriter::new(&config.keys_file, &config.state_dir);
        Self {
            cluster: crate::control::cluster::write::ClusterWriter::open(&config, seal.clone()),
            config,
            writer,
            seal,
            actor,
        }
    }

    /// Why the keys file on disk would not load now (the gateway then keeps the
    /// last good keys in force); `None` when it would.
    pub(crate) fn load_error(&self) -> Option<String> {
        KeysFile::load(self.keys_file())
            .map_err(WriteError::from)
            .and_then(|f| self.validate(&f))
            .err()
            .map(|e| e.to_string())
    }

    pub(crate) fn keys_file(&self) -> &Path {
        self.writer.keys_file()
    }

    /// Validates the whole file against the config, as the gateway would load it.
    fn validate(&self, file: &KeysFile) -> Result<(), WriteError> {
        KeySet::build(
            &self.config.keys_file,
            file,
            &self.config.policy,
            &self.config.rate_limit.per_key,
            None,
        )?;
        Ok(())
    }

    fn audit(&self, action: &str, key_id: Option<&str>, fields: &[&str]) {
        if let Err(e) =
            state_dir::audit(&self.config.state_dir, &self.actor, action, key_id, fields)
        {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }

    /// Reads the keys file (no lock needed: writes are atomic renames).
    pub(crate) fn read(&self) -> Result<KeysFile, WriteError> {
        // cluster: the cluster's keys.
        if let Some(c) = &self.cluster {
            return c.read();
        }
        Ok(KeysFile::load_or_empty(self.keys_file())?)
    }

    // cluster: the one write path: the keys file, or the cluster store.
    fn update<T>(
        &self,
        if_match: Option<u64>,
        change: impl FnOnce(&mut KeysFile) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        match &self.cluster {
            Some(c) => c.update(&self.actor, if_match, change),
            None => self.writer.update(change),
        }
    }

    pub(crate) fn get(&self, selector: &str) -> Result<KeyEntry, WriteError> {
        let file = self.read()?;
        find(&file, selector)
            .map(|i| file.keys[i].clone())
            .ok_or_else(|| not_found(selector))
    }

    pub(crate) fn create(&self, new: NewKey) -> Result<Created, WriteError> {
        validate_name(&new.name).map_err(|e| WriteError::Rejected(format!("name: {e}")))?;
        let secret = mint().map_err(|e| WriteError::Rejected(format!("no randomness: {e}")))?;
        let created = self.update(None, |file| {
            check_name_free(file, &new.name, None)?;
            let mut id = KeyId::generate()
                .map_err(|e| WriteError::Rejected(format!("no randomness: {e}")))?;
            while file.keys.iter().any(|k| k.id == id.as_str()) {
                id = KeyId::generate()
                    .map_err(|e| WriteError::Rejected(format!("no randomness: {e}")))?;
            }
            let sealed = match &self.seal {
                Some(s) => Some(s.seal(id.as_str(), &secret).map_err(WriteError::Rejected)?),
                None => None,
            };
            let entry = KeyEntry {
                id: id.as_str().to_string(),
                name: new.name.clone(),
                sha256: Some(KeyHash::of(secret.expose().as_bytes()).to_hex()),
                prefix: Some(display_prefix(secret.expose())),
                secret: None,
                sealed,
                created_at: Some(now_rfc3339()),
                permissions: levels_to_strings(&new.permissions),
                rate_limit: new.rate_limit,
                expires_at: new.expires_at.clone(),
                revision: None,
            };
            file.keys.push(entry.clone());
            self.validate(file)?;
            Ok(entry)
        })?;
        self.audit(
            "key.create",
            Some(&created.id),
            &["name", "permissions", "rate_limit", "expires_at"],
        );
        // cluster: a new key's first revision.
        let mut created = created;
        if self.cluster.is_some() {
            created.revision = Some(1);
        }
        let sealed = created.sealed.is_some();
        Ok(Created {
            entry: created,
            secret,
            sealed,
        })
    }

    pub(crate) fn edit(&self, selector: &str, edit: KeyEdit) -> Result<KeyEntry, WriteError> {
        let mut changed: Vec<&str> = Vec::new();
        let entry = self.update(edit.if_match, |file| {
            // cluster: via self.update
            let i = find(file, selector).ok_or_else(|| not_found(selector))?;
            if let Some(n) = &edit.name {
                check_name_free(file, n, Some(i))?;
            }
            let k = &mut file.keys[i];
            if let Some(n) = &edit.name {
                validate_name(n).map_err(|e| WriteError::Rejected(format!("name: {e}")))?;
                k.name.clone_from(n);
                changed.push("name");
            }
            if let Some(all) = &edit.replace_permissions {
                k.permissions = levels_to_strings(all);
                changed.push("permissions");
            }
            if !edit.set_permissions.is_empty() {
                for (c, l) in &edit.set_permissions {
                    k.permissions.insert(c.clone(), l.as_str().to_string());
                }
                changed.push("permissions");
            }
            if let Some(r) = &edit.rate_limit {
                k.rate_limit = *r;
                changed.push("rate_limit");
            }
            if let Some(e) = &edit.expires_at {
                k.expires_at.clone_from(e);
                changed.push("expires_at");
            }
            let entry = k.clone();
            self.validate(file)?;
            Ok(entry)
        })?;
        changed.dedup();
        // cluster: the write was a compare-and-set on the revision read: one more now.
        let mut entry = entry;
        if self.cluster.is_some() {
            entry.revision = entry.revision.map(|r| r + 1);
        }
        self.audit("key.edit", Some(&entry.id), &changed);
        Ok(entry)
    }

    pub(crate) fn delete(&self, selector: &str) -> Result<KeyEntry, WriteError> {
        self.delete_if_match(selector, None)
    }

    // cluster: delete with the revision the caller read.
    pub(crate) fn delete_if_match(
        &self,
        selector: &str,
        if_match: Option<u64>,
    ) -> Result<KeyEntry, WriteError> {
        let entry = self.update(if_match, |file| {
            // cluster: via self.update
            let i = find(file, selector).ok_or_else(|| not_found(selector))?;
            let entry = file.keys.remove(i);
            self.validate(file)?;
            Ok(entry)
        })?;
        self.audit("key.delete", Some(&entry.id), &[]);
        Ok(entry)
    }

    pub(crate) fn reveal(&self, selector: &str) -> Result<Secret, RevealError> {
        let entry = self.get(selector).map_err(|e| match e {
            WriteError::NotFound(_) => RevealError::NotFound(e.to_string()),
            other => RevealError::Other(other.to_string()),
        })?;
        let secret = match (&entry.secret, &entry.sealed, &self.seal) {
            (Some(s), _, _) => Secret::new(s.clone()),
            (None, Some(sealed), Some(key)) => {
                key.open(&entry.id, sealed)
                    .map_err(|_| RevealError::WrongSealKey {
                        name: entry.name.clone(),
                    })?
            }
            (None, Some(_), None) => return Err(RevealError::NoSealKey { name: entry.name }),
            (None, None, _) => return Err(RevealError::NotRevealable { name: entry.name }),
        };
        self.audit("key.reveal", Some(&entry.id), &[]);
        Ok(secret)
    }

    pub(crate) fn set_api(&self, enabled: bool) -> Result<(), WriteError> {
        self.update(None, |file| {
            // cluster: via self.update
            file.api_enabled = enabled;
            Ok(())
        })?;
        self.audit(
            if enabled { "api.on" } else { "api.off" },
            None,
            &["api_enabled"],
        );
        Ok(())
    }
}
