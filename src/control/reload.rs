//! The one writer of snapshots. SIGHUP, `POST /admin/v1/reload`, admin key writes
//! and the keys watcher all come here, so they behave the same: build and validate
//! the whole new snapshot first; on any error the old one stays in force and the
//! failure is counted. Reloads are serialised: each builds on the one in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::{Config, LoadError};
use crate::keys::file::KeysFile;
use crate::keys::store::KeySet;
use crate::observe::accesslog::AccessLog;
use crate::observe::metrics::{Metrics, ReloadWhat};
use crate::proxy::snapshot::{Publisher, Snapshot};
use crate::proxy::upstream::client;
use crate::ratelimit::IpLimiter;

use super::source::{KeySource, KeysInput};
use super::webhooks::Webhooks;

/// Builds a snapshot from a config and its keys, carrying over from
/// `previous` what did not change (limiter state, last-used cells, the per-IP
/// table, the upstream connection pool).
pub(crate) fn build(
    config: Arc<Config>,
    keys: KeysInput<'_>,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, LoadError> {
    let (path, policy, rate) = (
        &config.keys_file,
        &config.policy,
        &config.rate_limit.per_key,
    );
    let prev_keys = previous.map(|p| &p.keys);
    let mut digest = None;
    let keys = match keys {
        KeysInput::File(p) => {
            let (set, _, d) = KeySet::build_from_file(p, policy, rate, prev_keys)?;
            digest = Some(d);
            set
        }
        KeysInput::Text(t) => KeySet::build_from_text(path, t, policy, rate, prev_keys)?.0,
        KeysInput::Parsed(f) => KeySet::build(path, f, policy, rate, prev_keys)?,
    };
    let rl = &config.rate_limit;
    let ip_limiter = match previous {
        Some(p)
            if p.config.rate_limit.per_ip == rl.per_ip
                && p.config.rate_limit.max_tracked_ips == rl.max_tracked_ips =>
        {
            p.ip_limiter.clone()
        }
        _ => Arc::new(IpLimiter::new(&rl.per_ip, rl.max_tracked_ips)),
    };
    let client = match previous {
        Some(p)
            if p.config.timeouts.upstream_connect == config.timeouts.upstream_connect
                && p.config.upstream.scheme == config.upstream.scheme
                && p.config.upstream.authority == config.upstream.authority
                && p.config.upstream_ca_file == config.upstream_ca_file =>
        {
            p.client.clone()
        }
        _ => client(&config).map_err(|e| LoadError::new(&config.path, e))?,
    };
    Ok(Snapshot {
        config,
        keys,
        keys_identity: None,
        keys_digest: digest,
        ip_limiter,
        client,
    })
}

/// Reads config.yaml and the keys it names, and builds a snapshot. Returns notes to
/// log: capped values, and fields that only a restart changes (those keep their
/// running values).
pub(crate) fn load(
    config_path: &Path,
    previous: Option<&Snapshot>,
    redis_password: Option<&str>,
) -> Result<(Snapshot, Vec<String>), LoadError> {
    let mut config = Config::load(config_path)?;
    config.set_redis_password(redis_password);
    let mut notes = std::mem::take(&mut config.capped);
    if let Some(prev) = previous {
        let fields = prev.config.restart_required(&config);
        if !fields.is_empty() {
            notes.push(format!(
                "restart required to apply: {} (the running values stay until then)",
                fields.join(", ")
            ));
        }
        config.keys_file.clone_from(&prev.config.keys_file);
        config.state_dir.clone_from(&prev.config.state_dir);
        config.limits.max_connections = prev.config.limits.max_connections;
    }
    let loaded = KeySource::from_config(&config).load()?;
    let mut snap = build(Arc::new(config), loaded.keys.input(), previous)?;
    snap.keys_identity = loaded.version;
    if loaded.digest.is_some() {
        snap.keys_digest = loaded.digest;
    }
    Ok((snap, notes))
}

/// The only code that swaps snapshots.
pub(crate) struct Reloader {
    config_path: PathBuf,
    /// Handed to every config it loads (cluster mode).
    redis_password: Option<String>,
    source: KeySource,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// Serialises reloads: each builds on the snapshot in force.
    one_at_a_time: Mutex<()>,
    /// Told of every swap (key and account events), once set.
    webhooks: OnceLock<Arc<Webhooks>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_path", &self.config_path)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(
        config_path: PathBuf,
        redis_password: Option<String>,
        source: KeySource,
        publisher: Publisher,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Self {
            config_path,
            redis_password,
            source,
            publisher,
            metrics,
            access_log,
            one_at_a_time: Mutex::new(()),
            webhooks: OnceLock::new(),
        }
    }

    /// From now on every swap is reported to `webhooks`.
    pub(crate) fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// The one place a snapshot is put in force.
    fn swap(&self, old: &Arc<Snapshot>, new: Snapshot) {
        let large = new.keys.len() >= 10_000;
        self.publisher.publish(new);
        if large {
            // What building the set left behind (parse buffers, the name table).
            crate::keys::store::give_back_memory();
        }
        if let Some(w) = self.webhooks.get() {
            w.keys_changed(old, &self.publisher.current());
        }
    }

    pub(crate) fn source(&self) -> &KeySource {
        &self.source
    }

    /// The snapshot in force now.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// SIGHUP and `POST /admin/v1/reload`: re-reads config.yaml and the keys,
    /// reopens the access log, logs the notes. On error the old snapshot stays.
    pub(crate) fn reload(&self) -> Result<(), LoadError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.publisher.current();
        let result = load(
            &self.config_path,
            Some(&old),
            self.redis_password.as_deref(),
        );
        self.metrics.reload(ReloadWhat::Config, result.is_ok());
        match result {
            Ok((snap, notes)) => {
                for n in notes {
                    tracing::warn!("{n}");
                }
                self.access_log.reopen(&snap.config.access_log);
                self.swap(&old, snap);
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
                Err(e)
            }
        }
    }

    /// Cluster mode: puts keys synced from the shared store in force, built on the
    /// snapshot in force. Returns the number of keys.
    pub(crate) fn install_keys(&self, file: &KeysFile) -> Result<usize, LoadError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.publisher.current();
        let result = build(old.config.clone(), KeysInput::Parsed(file), Some(&old));
        self.metrics.reload(ReloadWhat::Keys, result.is_ok());
        let snap = result?;
        let n = snap.keys.len();
        self.swap(&old, snap);
        Ok(n)
    }

    /// The keys watcher and admin key writes: re-reads only the keys. Returns the
    /// number of keys now in force.
    pub(crate) fn reload_keys(&self) -> Result<usize, LoadError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.publisher.current();
        let result = self
            .source
            .load()
            .and_then(|l| build(old.config.clone(), l.keys.input(), Some(&old)).map(|s| (s, l)));
        self.metrics.reload(ReloadWhat::Keys, result.is_ok());
        let (mut snap, loaded) = result?;
        snap.keys_identity = loaded.version;
        if loaded.digest.is_some() {
            snap.keys_digest = loaded.digest;
        }
        let n = snap.keys.len();
        self.swap(&old, snap);
        Ok(n)
    }
}
