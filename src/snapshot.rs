//! One immutable snapshot of config + keys (+ the state built from them), swapped
//! atomically: a request sees the old snapshot or the new one, never a mix.
//!
//! A reload builds and validates the whole new snapshot first; on failure the old one
//! stays in force. Per-key limiter state, last-used cells, the per-IP table and the
//! upstream connection pool are carried over when their settings did not change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use governor::clock::DefaultClock;

use crate::config::{Config, LoadError};
use crate::keys::file::KeysFile;
use crate::keys::store::KeySet;
use crate::keys::watch::{Identity, identity};
use crate::metrics::Metrics;
use crate::proxy::{UpstreamClient, client};
use crate::ratelimit::IpLimiter;
use crate::record::Observer;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub keys: KeySet,
    /// The keys file version this snapshot was read from (taken before reading).
    pub keys_identity: Option<Identity>,
    pub ip_limiter: Arc<IpLimiter>,
    pub client: UpstreamClient,
}

impl Snapshot {
    /// Reads config.yaml and the keys file it names, and builds a snapshot.
    pub fn load(
        config_path: &Path,
        previous: Option<&Snapshot>,
    ) -> Result<(Self, Vec<String>), LoadError> {
        let mut config = Config::load(config_path)?;
        let mut notes = std::mem::take(&mut config.capped);
        if let Some(prev) = previous {
            let fields = prev.config.restart_required(&config);
            if !fields.is_empty() {
                notes.push(format!(
                    "restart required to apply: {} (the running values stay until then)",
                    fields.join(", ")
                ));
            }
            // Paths that only a restart changes keep their running values.
            config.keys_file = prev.config.keys_file.clone();
            config.state_dir = prev.config.state_dir.clone();
        }
        let identity = identity(&config.keys_file);
        let keys_file = KeysFile::load(&config.keys_file)?;
        let mut snap = Self::build(Arc::new(config), &keys_file, previous)?;
        snap.keys_identity = identity;
        Ok((snap, notes))
    }

    /// Builds a snapshot from a config and a parsed keys file.
    pub fn build(
        config: Arc<Config>,
        keys_file: &KeysFile,
        previous: Option<&Snapshot>,
    ) -> Result<Self, LoadError> {
        let keys = KeySet::build(
            &config.keys_file,
            keys_file,
            &config.policy,
            &config.rate_limit.per_key,
            previous.map(|p| &p.keys),
        )?;
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
                    && p.config.upstream_ca_file == config.upstream_ca_file =>
            {
                p.client.clone()
            }
            _ => client(&config).map_err(|e| LoadError::new(&config.path, e))?,
        };
        Ok(Self {
            config,
            keys,
            keys_identity: None,
            ip_limiter,
            client,
        })
    }
}

/// What every request and every background task shares.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// Serialises reloads (SIGHUP, the keys watcher, the admin API): each builds on
    /// the snapshot in force, so two must not interleave.
    reloading: Mutex<()>,
    pub config_path: PathBuf,
    pub clock: DefaultClock,
    pub observer: Arc<dyn Observer>,
    pub metrics: Arc<Metrics>,
    shutting_down: AtomicBool,
    pub webhooks: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>, // webhooks:
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        config_path: PathBuf,
        snapshot: Snapshot,
        observer: Arc<dyn Observer>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            reloading: Mutex::new(()),
            config_path,
            clock: crate::ratelimit::clock().clone(),
            observer,
            metrics,
            shutting_down: AtomicBool::new(false),
            webhooks: std::sync::OnceLock::new(), // webhooks:
        }
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads config.yaml and the keys file; on any error the old snapshot stays.
    /// Returns notes to log (capped values, fields that need a restart).
    pub fn reload(&self) -> Result<Vec<String>, LoadError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let result = Snapshot::load(&self.config_path, Some(&old));
        self.metrics.reload("config", result.is_ok());
        let (snap, notes) = result?;
        self.current.store(Arc::new(snap));
        crate::webhooks::on_keys_changed(self, &old); // webhooks:
        Ok(notes)
    }

    /// Re-reads only the keys file (the watcher); returns the number of keys.
    pub fn reload_keys(&self) -> Result<usize, LoadError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let version = identity(&old.config.keys_file);
        let result = KeysFile::load(&old.config.keys_file)
            .and_then(|file| Snapshot::build(old.config.clone(), &file, Some(&old)));
        self.metrics.reload("keys", result.is_ok());
        let mut snap = result?;
        snap.keys_identity = version;
        let n = snap.keys.len();
        self.current.store(Arc::new(snap));
        crate::webhooks::on_keys_changed(self, &old); // webhooks:
        Ok(n)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
