//! The composition root: loads the first snapshot, builds the read-only
//! [`Snapshots`] handle and the one [`Reloader`], binds the listeners, spawns the
//! watchers, and shuts down in the order of the operations contract (readyz fails,
//! then the listener stops accepting, then in-flight requests get a grace period).
//! `cli` and the tests both start gateways here; nothing in it reads the environment.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::LoadError;
use crate::control::admin::{self, Admin, AdminService};
use crate::control::health::{self, Health, Readiness};
use crate::control::reload::{self, Reloader};
use crate::control::source::KeySource;
use crate::control::{state_dir, watch as keys_watch};
use crate::keys::seal::SealKey;
use crate::observe::accesslog::AccessLog;
use crate::observe::metrics::{Metrics, ReloadWhat};
use crate::observe::record::{NoObserver, Observer, Record};
use crate::proxy::pipeline::Pipeline;
use crate::proxy::snapshot::Snapshots;
use crate::server::tls::ListenerTls;
use crate::server::{self, Listener};

/// Why a gateway did not start.
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
    #[error("seal key: {0}")]
    SealKey(String),
}

/// What the embedder (the binary, a test) hands in: everything the library would
/// otherwise read from the environment.
#[derive(Clone)]
pub struct GatewayOptions {
    /// Sees every finished request besides the gateway's own metrics and log.
    pub observer: Arc<dyn Observer>,
    /// The admin token (`None` = the admin API is off; the console still loads).
    pub admin_token: Option<String>,
    /// The seal key, base64 of 32 bytes (`None` = new keys cannot be revealed).
    pub seal_key: Option<String>,
    /// The Redis password in cluster mode (`None` = none, or in the URL).
    pub redis_password: Option<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            observer: Arc::new(NoObserver),
            admin_token: None,
            seal_key: None,
            redis_password: None,
        }
    }
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "…"))
            .field("seal_key", &self.seal_key.as_ref().map(|_| "…"))
            .field("redis_password", &self.redis_password.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// What every finished request feeds: the metrics, the access log, and an extra
/// observer (tests use one to see each record).
struct Observers {
    metrics: Arc<Metrics>,
    log: Arc<AccessLog>,
    extra: Arc<dyn Observer>,
    // cluster: the shared recent-requests stream.
    cluster: Option<Arc<crate::control::cluster::Cluster>>,
}

impl Observer for Observers {
    fn started(&self) {
        self.metrics.request_started();
        self.extra.started();
    }

    fn finished(&self, r: &Record) {
        self.metrics.request_finished(r);
        // One formatting of the line for the access log and the shared stream.
        crate::observe::accesslog::with_line(r, |line| {
            self.log.push_line(line);
            if let Some(c) = &self.cluster {
                c.record(r, line);
            }
        });
        self.extra.finished(r);
    }

    fn wants_body(&self, r: &Record) -> bool {
        self.extra.wants_body(r)
    }
}

/// A running gateway.
pub struct Gateway {
    snapshots: Snapshots,
    reloader: Arc<Reloader>,
    cluster: Option<Arc<crate::control::cluster::Cluster>>,
    webhooks: Arc<crate::control::webhooks::Webhooks>,
    readiness: Readiness,
    pub public_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop_public: watch::Sender<bool>,
    public_task: JoinHandle<()>,
    stop_ops: watch::Sender<bool>,
    ops_tasks: Vec<JoinHandle<()>>,
    access_log: Arc<AccessLog>,
    /// Held for the gateway's lifetime: one gateway per state_dir.
    _state_lock: std::fs::File,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("public_addr", &self.public_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
    backlog: u32,
) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

fn local_addr(
    what: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Gateway {
    /// Loads the config and keys, binds the listeners and starts serving.
    pub async fn start(config_path: &Path, options: GatewayOptions) -> Result<Self, StartError> {
        let seal = match options.seal_key.as_deref() {
            Some(s) => Some(Arc::new(
                SealKey::from_base64(s).map_err(StartError::SealKey)?,
            )),
            None => None,
        };
        let (snapshot, notes) = reload::load(config_path, None, options.redis_password.as_deref())?;
        if snapshot.keys.len() >= 10_000 {
            // What loading a large keys file left behind.
            crate::keys::store::give_back_memory();
        }
        for n in notes {
            tracing::warn!("{n}");
        }
        let cfg = snapshot.config.clone();
        let state_lock = state_dir::lock_gateway(&cfg.state_dir).map_err(StartError::State)?;
        state_dir::seed_last_used(&snapshot.keys, &state_dir::read_last_used(&cfg.state_dir));
        let backlog = cfg.limits.accept_backlog;
        let public = bind("listen", cfg.listen, backlog).await?;
        let ops_listener = bind("metrics.listen", cfg.metrics_listen, 128).await?;
        let admin_listener = bind("admin.listen", cfg.admin.listen, 128).await?;
        let public_addr = local_addr("listen", &public, cfg.listen)?;
        let metrics_addr = local_addr("metrics.listen", &ops_listener, cfg.metrics_listen)?;
        let admin_addr = local_addr("admin.listen", &admin_listener, cfg.admin.listen)?;

        let metrics = Arc::new(Metrics::new()?);
        metrics.reload(ReloadWhat::Config, true);
        metrics.reload(ReloadWhat::Keys, true);
        let access_log = Arc::new(
            AccessLog::start(&cfg.access_log, metrics.clone()).map_err(StartError::AccessLog)?,
        );
        // The cluster handle (None without a `cluster:` section).
        let cluster = crate::control::cluster::Cluster::new(&cfg, &metrics, seal.clone())
            .map_err(StartError::State)?;
        let webhooks = crate::control::webhooks::Webhooks::new(&cfg, &metrics.registry)
            .map_err(StartError::State)?;
        let observers = Arc::new(Observers {
            metrics: metrics.clone(),
            log: access_log.clone(),
            extra: crate::control::webhooks::tee(options.observer, &webhooks),
            cluster: cluster.clone(),
        });
        let keys_count = snapshot.keys.len();
        let (snapshots, publisher) = Snapshots::new(snapshot, observers, metrics.clone());
        let reloader = Arc::new(Reloader::new(
            config_path.to_path_buf(),
            options.redis_password.clone(),
            KeySource::from_config(&cfg),
            publisher,
            metrics.clone(),
            access_log.clone(),
        ));
        reloader.set_webhooks(webhooks.clone());
        webhooks.start(&snapshots);
        let readiness = Readiness::default();

        let tls = match &cfg.tls {
            Some(paths) => {
                let t = ListenerTls::new(paths, &metrics).map_err(StartError::Tls)?;
                tokio::spawn(t.clone().watch(Duration::from_secs(1), metrics.clone()));
                Some(t)
            }
            None => None,
        };
        let (stop_public, public_rx) = watch::channel(false);
        let (stop_ops, ops_rx) = watch::channel(false);
        let public_task = tokio::spawn(server::serve(
            Listener {
                socket: public,
                max_connections: cfg.limits.max_connections.get() as usize,
                tls,
                metrics: Some(metrics.clone()),
                name: "listen",
            },
            Pipeline {
                snapshots: snapshots.clone(),
            },
            public_rx,
        ));
        // Keys follow the cluster store in cluster mode, else the keys file.
        match &cluster {
            Some(c) => {
                snapshots.set_shared_limit(c.clone());
                c.start(reloader.clone());
            }
            None => {
                tokio::spawn(keys_watch::watch(reloader.clone()));
            }
        }
        tokio::spawn(flush_last_used(snapshots.clone()));
        let health_task = tokio::spawn(server::serve(
            Listener {
                socket: ops_listener,
                max_connections: health::MAX_CONNECTIONS,
                tls: None,
                metrics: None,
                name: "metrics.listen",
            },
            Health {
                snapshots: snapshots.clone(),
                readiness: readiness.clone(),
                upstream: Arc::default(),
            },
            ops_rx.clone(),
        ));
        let admin = Arc::new(Admin::new(
            snapshots.clone(),
            reloader.clone(),
            options.admin_token.as_deref(),
            seal,
            cluster.clone(),
            Some(webhooks.clone()),
        ));
        if !admin.enabled() {
            match options
                .admin_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                Some(t) => tracing::warn!(
                    env = %cfg.admin.token_env,
                    "admin API off: the admin token is {} characters, at least {} are needed; the console at / still loads",
                    t.chars().count(),
                    admin::MIN_TOKEN
                ),
                None => {
                    tracing::info!(env = %cfg.admin.token_env, "admin API off (no token set); the console at / still loads")
                }
            }
        }
        let admin_task = tokio::spawn(server::serve(
            Listener {
                socket: admin_listener,
                max_connections: admin::MAX_CONNECTIONS,
                tls: None,
                metrics: None,
                name: "admin.listen",
            },
            AdminService(admin),
            ops_rx,
        ));
        tracing::info!(%public_addr, %metrics_addr, %admin_addr, upstream = %cfg.upstream.authority, keys = keys_count, "keygate is serving");
        // An upstream that is down at start is said at once (not at the first 502).
        {
            let upstream = cfg.upstream.clone();
            let timeout = cfg.timeouts.upstream_connect;
            tokio::spawn(async move {
                if let Err(e) = health::connects(&upstream, timeout).await {
                    tracing::warn!(upstream = %upstream.authority, error = %e, "the upstream is not reachable at start; requests get 502 until it is");
                }
            });
        }
        Ok(Self {
            snapshots,
            reloader,
            cluster,
            webhooks,
            readiness,
            public_addr,
            metrics_addr,
            admin_addr,
            stop_public,
            public_task,
            stop_ops,
            ops_tasks: vec![health_task, admin_task],
            access_log,
            _state_lock: state_lock,
        })
    }

    /// Reloads config and keys (SIGHUP; the same code as `POST /admin/v1/reload`).
    /// The old snapshot stays on error.
    pub fn reload(&self) -> Result<(), LoadError> {
        self.reloader.reload()?;
        // In cluster mode the keys came from the last-good copy: sync again now.
        if let Some(c) = &self.cluster {
            c.resync();
        }
        Ok(())
    }

    /// Re-reads only the keys (what the watcher does); returns how many are in force.
    pub fn reload_keys(&self) -> Result<usize, LoadError> {
        self.reloader.reload_keys()
    }

    /// Waits up to `max` until every access-log record queued so far is written.
    pub fn flush_access_log(&self, max: Duration) {
        self.access_log.flush(max);
    }

    /// The number of keys in force.
    pub fn keys_loaded(&self) -> usize {
        self.snapshots.load().keys.len()
    }

    /// When the key `id` was last used, in ms since the Unix epoch (`None`: unknown
    /// key or never used).
    pub fn key_last_used_ms(&self, id: &str) -> Option<i64> {
        let ms = self
            .snapshots
            .load()
            .keys
            .get_str(id)?
            .state
            .last_used
            .load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    /// SIGTERM: readyz fails at once; after `shutdown_delay` the listener stops
    /// accepting; in-flight requests get up to `shutdown`.
    pub async fn shutdown(self) {
        let t = self.snapshots.load().config.timeouts.clone();
        self.readiness.begin_shutdown();
        tokio::time::sleep(t.shutdown_delay).await;
        self.drain(t.shutdown).await;
    }

    /// Stops accepting now and waits up to `grace` for in-flight requests; then the
    /// admin and metrics listeners are drained too (bounded by the same grace).
    pub async fn drain(self, grace: Duration) {
        self.readiness.begin_shutdown();
        let _ = self.stop_public.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, self.public_task)
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within timeouts.shutdown");
        }
        let _ = self.stop_ops.send(true);
        for t in self.ops_tasks {
            let _ =
                tokio::time::timeout_at(deadline.max(tokio::time::Instant::now() + OPS_GRACE), t)
                    .await;
        }
        self.webhooks.stop();
        write_last_used(&self.snapshots);
        self.access_log.flush(Duration::from_secs(5));
    }
}

/// The least time admin and metrics connections get to finish at shutdown.
const OPS_GRACE: Duration = Duration::from_secs(1);

fn write_last_used(snapshots: &Snapshots) {
    let snap = snapshots.load();
    if let Err(e) = state_dir::write_last_used(&snap.config.state_dir, &snap.keys) {
        tracing::warn!(error = %e, "could not write last-used times");
    }
}

/// Writes last-used times every [`LAST_USED_EVERY`] (when they changed).
async fn flush_last_used(snapshots: Snapshots) {
    let mut written: i64 = 0;
    loop {
        tokio::time::sleep(LAST_USED_EVERY).await;
        let snap = snapshots.load();
        let newest = snap
            .keys
            .iter()
            .map(|k| k.state.last_used.load(std::sync::atomic::Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        if newest != written {
            let s = snapshots.clone();
            let _ = tokio::task::spawn_blocking(move || write_last_used(&s)).await;
            written = newest;
        }
    }
}

/// How often last-used times are written to `state_dir/last_used.json`.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(10);
