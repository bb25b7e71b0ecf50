//! The serde mirror of config.yaml: field names, defaults and `deny_unknown_fields`,
//! nothing else. [`crate::config::Config::from_file`] validates and compiles it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::units::{ConfigDuration, ConfigSize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    pub(crate) upstream: String,
    #[serde(default)]
    pub(crate) upstream_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) tls: Option<TlsFile>,
    #[serde(default)]
    pub(crate) metrics: MetricsFile,
    #[serde(default)]
    pub(crate) admin: AdminFile,
    #[serde(default = "default_keys_file")]
    pub(crate) keys_file: PathBuf,
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: PathBuf,
    #[serde(default)]
    pub(crate) auth: AuthFile,
    #[serde(default)]
    pub(crate) routes: RoutesFile,
    #[serde(default)]
    pub(crate) rate_limit: RateLimitFile,
    #[serde(default)]
    pub(crate) timeouts: TimeoutsFile,
    #[serde(default)]
    pub(crate) limits: LimitsFile,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(crate) access_log: AccessLogFile,
    // cluster: the optional `cluster:` section (README, "Running several replicas").
    #[serde(default)]
    pub(crate) cluster: Option<ClusterFile>,
    #[serde(default)]
    pub(crate) webhooks: super::webhooks::WebhooksFile,
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_keys_file() -> PathBuf {
    "keys.yaml".into()
}
fn default_state_dir() -> PathBuf {
    "data".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsFile {
    pub(crate) listen: String,
    /// `/readyz` also needs a TCP connection to the upstream to succeed.
    pub(crate) readyz_checks_upstream: bool,
    /// Per-key series (`keygate_key_requests_total`, `keygate_key_info`).
    pub(crate) per_key_series: bool,
}

impl Default for MetricsFile {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            readyz_checks_upstream: false,
            per_key_series: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminFile {
    pub(crate) listen: String,
    pub(crate) token_env: String,
    pub(crate) allowed_hosts: Vec<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9180".into(),
            token_env: "KEYGATE_ADMIN_TOKEN".into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthFile {
    pub(crate) headers: Vec<String>,
    pub(crate) forward_key: bool,
}

impl Default for AuthFile {
    fn default() -> Self {
        Self {
            headers: vec!["x-api-key".into(), "authorization".into()],
            forward_key: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RoutesFile {
    pub(crate) public: Vec<String>,
    pub(crate) categories: BTreeMap<String, Vec<String>>,
    pub(crate) unmatched: UnmatchedFile,
    pub(crate) preflight: PreflightFile,
    pub(crate) allow_non_ascii_paths: bool,
    pub(crate) allow_trailing_dots: bool,
}

impl Default for RoutesFile {
    fn default() -> Self {
        Self {
            public: vec!["/healthz".into()],
            categories: BTreeMap::new(),
            unmatched: UnmatchedFile::Deny,
            preflight: PreflightFile::Deny,
            allow_non_ascii_paths: false,
            allow_trailing_dots: false,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UnmatchedFile {
    Deny,
    AllowAnyKey,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PreflightFile {
    Deny,
    Forward,
}

/// A rate as written: exactly one of `per_second` / `per_minute`, and a burst.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateFile {
    #[serde(default)]
    pub(crate) per_second: Option<u32>,
    #[serde(default)]
    pub(crate) per_minute: Option<u32>,
    #[serde(default)]
    pub(crate) burst: Option<u32>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpRateFile {
    #[serde(default)]
    pub(crate) per_second: Option<u32>,
    #[serde(default)]
    pub(crate) per_minute: Option<u32>,
    #[serde(default)]
    pub(crate) burst: Option<u32>,
    #[serde(default = "default_max_tracked_ips")]
    pub(crate) max_tracked_ips: u32,
}

fn default_max_tracked_ips() -> u32 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitFile {
    pub(crate) per_key: RateFile,
    pub(crate) unauthenticated_per_ip: IpRateFile,
}

impl Default for RateLimitFile {
    fn default() -> Self {
        Self {
            per_key: RateFile {
                per_second: Some(20),
                per_minute: None,
                burst: Some(40),
            },
            unauthenticated_per_ip: IpRateFile {
                per_second: None,
                per_minute: Some(60),
                burst: Some(20),
                max_tracked_ips: default_max_tracked_ips(),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TimeoutsFile {
    pub(crate) upstream_connect: ConfigDuration,
    pub(crate) upstream_response: ConfigDuration,
    pub(crate) upstream_read: ConfigDuration,
    pub(crate) client_header_read: ConfigDuration,
    pub(crate) client_body_read: ConfigDuration,
    pub(crate) idle: ConfigDuration,
    pub(crate) shutdown_delay: ConfigDuration,
    pub(crate) shutdown: ConfigDuration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        Self {
            upstream_connect: ConfigDuration::secs(2),
            upstream_response: ConfigDuration::secs(30),
            upstream_read: ConfigDuration::secs(60),
            client_header_read: ConfigDuration::secs(10),
            client_body_read: ConfigDuration::secs(60),
            idle: ConfigDuration::secs(120),
            shutdown_delay: ConfigDuration::secs(5),
            shutdown: ConfigDuration::secs(20),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsFile {
    pub(crate) max_header_bytes: ConfigSize,
    pub(crate) max_body_bytes: ConfigSize,
    pub(crate) max_connections: u32,
    pub(crate) accept_backlog: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_header_bytes: ConfigSize::bytes(16384),
            max_body_bytes: ConfigSize::bytes(10_485_760),
            max_connections: 10_000,
            accept_backlog: 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AccessLogFile {
    pub(crate) path: String,
    pub(crate) max_size: ConfigSize,
    pub(crate) max_files: u32,
}

impl Default for AccessLogFile {
    fn default() -> Self {
        Self {
            path: "logs/access.log".into(),
            max_size: ConfigSize::bytes(100 << 20),
            max_files: 5,
        }
    }
}

// cluster: the serde mirror of the `cluster:` section (README, "Running several replicas").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    pub redis_url: String,
    #[serde(default)]
    pub redis_password_env: Option<String>,
    /// PEM CA certificates that verify a `rediss://` server (default: system roots).
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    #[serde(default = "default_cluster_name")]
    pub name: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub on_redis_down: OnRedisDownFile,
    #[serde(default)]
    pub logs: ClusterLogsFile,
}

fn default_cluster_name() -> String {
    "default".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RedisDownRateFile {
    #[default]
    LocalShare,
    Open,
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OnRedisDownFile {
    pub rate_limit: RedisDownRateFile,
    pub max_staleness: ConfigDuration,
}

impl Default for OnRedisDownFile {
    fn default() -> Self {
        Self {
            rate_limit: RedisDownRateFile::LocalShare,
            max_staleness: ConfigDuration::secs(0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterLogsFile {
    pub max_entries: u64,
    pub sample_success: f64,
}

impl Default for ClusterLogsFile {
    fn default() -> Self {
        Self {
            max_entries: 50_000,
            sample_success: 1.0,
        }
    }
}
