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
    pub listen: String,
    pub upstream: String,
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub metrics: MetricsFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default = "default_keys_file")]
    pub keys_file: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub routes: RoutesFile,
    #[serde(default)]
    pub rate_limit: RateLimitFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)] // webhooks:
    pub webhooks: crate::webhooks::config::WebhooksFile, // webhooks:
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
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsFile {
    pub listen: String,
}

impl Default for MetricsFile {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminFile {
    pub listen: String,
    pub token_env: String,
    pub allowed_hosts: Vec<String>,
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
    pub headers: Vec<String>,
    pub forward_key: bool,
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
    pub public: Vec<String>,
    pub categories: BTreeMap<String, Vec<String>>,
    pub unmatched: UnmatchedFile,
    pub preflight: PreflightFile,
    pub allow_non_ascii_paths: bool,
}

impl Default for RoutesFile {
    fn default() -> Self {
        Self {
            public: vec!["/healthz".into()],
            categories: BTreeMap::new(),
            unmatched: UnmatchedFile::Deny,
            preflight: PreflightFile::Deny,
            allow_non_ascii_paths: false,
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
    pub per_second: Option<u32>,
    #[serde(default)]
    pub per_minute: Option<u32>,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpRateFile {
    #[serde(default)]
    pub per_second: Option<u32>,
    #[serde(default)]
    pub per_minute: Option<u32>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default = "default_max_tracked_ips")]
    pub max_tracked_ips: u32,
}

fn default_max_tracked_ips() -> u32 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitFile {
    pub per_key: RateFile,
    pub unauthenticated_per_ip: IpRateFile,
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
    pub upstream_connect: ConfigDuration,
    pub upstream_response: ConfigDuration,
    pub client_header_read: ConfigDuration,
    pub idle: ConfigDuration,
    pub shutdown_delay: ConfigDuration,
    pub shutdown: ConfigDuration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        Self {
            upstream_connect: ConfigDuration::secs(2),
            upstream_response: ConfigDuration::secs(30),
            client_header_read: ConfigDuration::secs(10),
            idle: ConfigDuration::secs(120),
            shutdown_delay: ConfigDuration::secs(5),
            shutdown: ConfigDuration::secs(20),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsFile {
    pub max_header_bytes: ConfigSize,
    pub max_body_bytes: ConfigSize,
    pub max_connections: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_header_bytes: ConfigSize::bytes(16384),
            max_body_bytes: ConfigSize::bytes(10_485_760),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AccessLogFile {
    pub path: String,
    pub max_size: ConfigSize,
    pub max_files: u32,
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
