//! Starting and stopping a gateway in-process: bind the listeners, spawn the tasks,
//! reload on demand, and shut down in the order of SPEC §9. `main.rs` and the tests
//! both use this.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accesslog::AccessLog;
use crate::admin::{Admin, AdminSecrets};
use crate::config::LoadError;
use crate::metrics::Metrics;
use crate::ops;
use crate::record::{Observer, Record};
use crate::snapshot::{Shared, Snapshot};
use crate::tls::ListenerTls;
use crate::{keys, server, state};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    State(String),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
}

/// What every finished request feeds: the metrics, the access log, and an extra
/// observer (tests use one to see each record).
struct Observers {
    metrics: Arc<Metrics>,
    log: Arc<AccessLog>,
    extra: Arc<dyn Observer>,
}

impl Observer for Observers {
    fn started(&self) {
        self.metrics.request_started();
        self.extra.started();
    }

    fn finished(&self, r: &Record) {
        self.metrics.request_finished(r);
        self.log.record(r);
        self.extra.finished(r);
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub shared: Arc<Shared>,
    pub public_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop_accepting: watch::Sender<bool>,
    public_task: JoinHandle<()>,
    ops_task: JoinHandle<()>,
    stop_ops: watch::Sender<bool>,
    pub access_log: Arc<AccessLog>,
    /// Held for the gateway's lifetime: one gateway per state_dir.
    _state_lock: std::fs::File,
}

impl Gateway {
    /// Loads the config and keys, binds the listeners and starts serving. `observer`
    /// sees every request besides the gateway's own metrics and access log.
    pub async fn start(
        config_path: &Path,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, StartError> {
        Self::start_with(config_path, observer, None).await
    }

    /// [`Gateway::start`] with the admin listener's token and seal key given by the
    /// caller (`None`: read from the environment).
    pub async fn start_with(
        config_path: &Path,
        observer: Arc<dyn Observer>,
        admin_secrets: Option<AdminSecrets>,
    ) -> Result<Self, StartError> {
        let (snapshot, notes) = Snapshot::load(config_path, None)?;
        for n in notes {
            tracing::warn!("{n}");
        }
        let cfg = snapshot.config.clone();
        let state_lock = state::lock_gateway(&cfg.state_dir).map_err(StartError::State)?;
        state::seed_last_used(&snapshot.keys, &state::read_last_used(&cfg.state_dir));
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        let public = bind("listen", cfg.listen).await?;
        let ops_listener = bind("metrics.listen", cfg.metrics_listen).await?;
        let admin_listener = bind("admin.listen", cfg.admin.listen).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin.listen",
                addr: cfg.admin.listen,
                source,
            })?;
        let public_addr = public.local_addr().map_err(|source| StartError::Bind {
            what: "listen",
            addr: cfg.listen,
            source,
        })?;
        let metrics_addr = ops_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "metrics.listen",
                addr: cfg.metrics_listen,
                source,
            })?;
        let metrics = Arc::new(Metrics::new()?);
        metrics.reload("config", true);
        metrics.reload("keys", true);
        let access_log = Arc::new(
            AccessLog::start(&cfg.access_log, metrics.clone()).map_err(StartError::AccessLog)?,
        );
        let observers = Arc::new(Observers {
            metrics: metrics.clone(),
            log: access_log.clone(),
            extra: observer,
        });
        let shared = Arc::new(Shared::new(
            config_path.to_path_buf(),
            snapshot,
            observers,
            metrics.clone(),
        ));
        let (stop_accepting, rx) = watch::channel(false);
        let (stop_ops, ops_rx) = watch::channel(false);
        let tls = match &cfg.tls {
            Some(paths) => {
                let t = ListenerTls::new(paths, &metrics).map_err(StartError::Tls)?;
                tokio::spawn(t.clone().watch(Duration::from_secs(1), metrics.clone()));
                Some(t)
            }
            None => None,
        };
        let public_task = tokio::spawn(server::serve(public, tls, shared.clone(), rx));
        tokio::spawn(keys::watch::watch(shared.clone()));
        tokio::spawn(flush_last_used(shared.clone()));
        let ops_task = tokio::spawn(ops::serve(ops_listener, shared.clone(), ops_rx.clone()));
        let admin = Arc::new(match admin_secrets {
            Some(s) => Admin::with_secrets(shared.clone(), s),
            None => Admin::new(shared.clone()),
        });
        if !admin.enabled() {
            tracing::info!(env = %cfg.admin.token_env, "admin API off (no token set); the console at / still loads");
        }
        tokio::spawn(crate::admin::serve(admin_listener, admin, ops_rx));
        tracing::info!(%public_addr, %metrics_addr, %admin_addr, upstream = %cfg.upstream.authority, keys = shared.snapshot().keys.len(), "keygate is serving");
        Ok(Self {
            shared,
            public_addr,
            metrics_addr,
            admin_addr,
            stop_accepting,
            public_task,
            ops_task,
            stop_ops,
            access_log,
            _state_lock: state_lock,
        })
    }

    /// Reloads config and keys (SIGHUP); the old snapshot stays on error.
    pub fn reload(&self) -> Result<(), LoadError> {
        match self.shared.reload() {
            Ok(notes) => {
                for n in notes {
                    tracing::warn!("{n}");
                }
                self.access_log
                    .reopen(&self.shared.snapshot().config.access_log);
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
                Err(e)
            }
        }
    }

    /// SPEC §9: readyz fails at once; after `shutdown_delay` the listener stops
    /// accepting; in-flight requests get up to `shutdown`.
    pub async fn shutdown(self) {
        let t = self.shared.snapshot().config.timeouts.clone();
        self.shared.begin_shutdown();
        tokio::time::sleep(t.shutdown_delay).await;
        self.drain(t.shutdown).await;
    }

    /// Stops accepting now and waits up to `grace` for in-flight requests.
    pub async fn drain(self, grace: Duration) {
        self.shared.begin_shutdown();
        let _ = self.stop_accepting.send(true);
        if tokio::time::timeout(grace, self.public_task).await.is_err() {
            tracing::warn!("in-flight requests did not finish within timeouts.shutdown");
        }
        let _ = self.stop_ops.send(true);
        let _ = self.ops_task.await;
        write_last_used(&self.shared);
        self.access_log.flush(Duration::from_secs(5));
    }
}

fn write_last_used(shared: &Shared) {
    let snap = shared.snapshot();
    if let Err(e) = state::write_last_used(&snap.config.state_dir, &snap.keys) {
        tracing::warn!(error = %e, "could not write last-used times");
    }
}

/// Writes last-used times every 10 s (when they changed).
async fn flush_last_used(shared: Arc<Shared>) {
    let mut written: i64 = 0;
    loop {
        tokio::time::sleep(LAST_USED_EVERY).await;
        let snap = shared.snapshot();
        let newest = snap
            .keys
            .iter()
            .map(|k| k.last_used.load(std::sync::atomic::Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        if newest != written {
            write_last_used(&shared);
            written = newest;
        }
    }
}

/// How often last-used times are written to `state_dir/last_used.json`.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(10);
