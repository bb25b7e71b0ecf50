//! The runtime configuration: validated, typed, compiled values only.
//!
//! [`Config::load`] reads config.yaml through the serde mirror in [`file`], then
//! validates and compiles it in one conversion whose errors name the file, the line
//! (where the parser knows it) and the field. Relative paths are resolved against the
//! directory of config.yaml.

pub(crate) mod cluster;
pub(crate) mod file;
pub(crate) mod identity;
pub(crate) mod units;
pub(crate) mod webhooks;

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use crate::policy::{Policy, Preflight, Unmatched};
use crate::ratelimit::Rate;
use file::{ConfigFile, PreflightFile, UnmatchedFile};

/// An error loading one of keygate's files: `file:line:col: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<(usize, usize)>,
    pub(crate) message: String,
    /// The file could not be read at all (a transient error is possible: out of
    /// file descriptors, a volume being remounted): worth retrying as it is.
    pub(crate) unreadable: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.line {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
            unreadable: false,
        }
    }

    /// The file could not be read (see [`LoadError::unreadable`]).
    pub(crate) fn unreadable(file: &Path, e: &std::io::Error) -> Self {
        Self {
            unreadable: true,
            ..Self::new(file, format!("cannot read: {e}"))
        }
    }
}

/// Parses YAML text into a serde mirror, naming the field path and the line on error.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, LoadError> {
    // Fast path: field-path tracking costs ~10% on large files and only matters for
    // the error message, so a failed parse is simply repeated with it.
    if let Ok(v) = serde_yaml::from_str(text) {
        return Ok(v);
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| (l.line(), l.column()));
        let mut msg = inner.to_string();
        // serde_yaml appends " at line L column C"; the location is already in front.
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        // serde_yaml may start with its own (shorter) path: keep only ours.
        if let Some((prefix, rest)) = msg.split_once(": ")
            && !prefix.contains(' ')
            && path.starts_with(prefix)
        {
            msg = rest.to_string();
        }
        // A parser message may quote the value; for a key field that value is a
        // secret (or its hash), so say what is wrong without it.
        let secret_field = ["secret", "sha256", "sealed"]
            .iter()
            .any(|f| path.rsplit('.').next() == Some(f));
        let message = if secret_field {
            format!("{path}: must be a quoted string (the value is not shown)")
        } else if path.is_empty() || path == "." {
            msg
        } else {
            format!("{path}: {msg}")
        };
        LoadError {
            file: file.to_path_buf(),
            line,
            message,
            unreadable: false,
        }
    })
}

/// Where the upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPaths {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct AdminConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) token_env: String,
    pub(crate) allowed_hosts: Vec<String>,
}

/// Where an API key is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyHeader {
    /// A header whose whole value is the key (`X-API-Key`).
    Plain(http::HeaderName),
    /// `Authorization: Bearer <key>`.
    Bearer,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    pub(crate) headers: Vec<KeyHeader>,
    pub(crate) forward_key: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RateLimits {
    pub(crate) per_key: Rate,
    pub(crate) per_ip: Rate,
    pub(crate) max_tracked_ips: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) upstream_connect: Duration,
    pub(crate) upstream_response: Duration,
    /// Longest pause between reads of the upstream's response body.
    pub(crate) upstream_read: Duration,
    pub(crate) client_header_read: Duration,
    /// Longest pause between reads of the client's request body.
    pub(crate) client_body_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) shutdown_delay: Duration,
    pub(crate) shutdown: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: usize,
    /// `None` = unlimited.
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) max_connections: NonZeroU32,
    /// The listen(2) backlog of the public listener (a restart applies it).
    pub(crate) accept_backlog: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub(crate) struct AccessLogConfig {
    pub(crate) target: LogTarget,
    pub(crate) max_size: u64,
    pub(crate) max_files: u32,
}

/// The validated configuration of one snapshot.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) path: PathBuf,
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: Upstream,
    pub(crate) upstream_ca_file: Option<PathBuf>,
    pub(crate) tls: Option<TlsPaths>,
    pub(crate) metrics_listen: SocketAddr,
    /// `metrics.readyz_checks_upstream`: `/readyz` fails while the upstream refuses
    /// TCP connections (checked at most every 2 s).
    pub(crate) readyz_checks_upstream: bool,
    /// `metrics.per_key_series`: export the per-key series.
    pub(crate) per_key_series: bool,
    pub(crate) admin: AdminConfig,
    pub(crate) keys_file: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) auth: AuthConfig,
    pub(crate) policy: Policy,
    pub(crate) rate_limit: RateLimits,
    pub(crate) timeouts: Timeouts,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) access_log: AccessLogConfig,
    // cluster: the validated `cluster:` section; `None` = this gateway alone.
    pub(crate) cluster: Option<crate::config::cluster::ClusterConfig>,
    pub(crate) webhooks: crate::config::webhooks::WebhooksConfig,
    /// Values that were capped at load (`timeouts.idle`), for a warning.
    pub(crate) capped: Vec<String>,
}

impl Config {
    /// Reads and validates config.yaml.
    pub(crate) fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::unreadable(path, &e))?;
        Self::from_text(path, &text)
    }

    pub(crate) fn from_text(path: &Path, text: &str) -> Result<Self, LoadError> {
        let raw: ConfigFile = parse_yaml(path, text)?;
        Self::from_file(path, raw).map_err(|m| LoadError::new(path, m))
    }

    fn from_file(path: &Path, f: ConfigFile) -> Result<Self, String> {
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let addr = |field: &str, s: &str| -> Result<SocketAddr, String> {
            s.parse()
                .map_err(|_| format!("{field}: {s:?} is not an address such as 0.0.0.0:8080"))
        };
        let mut capped = Vec::new();

        let upstream = parse_upstream(&f.upstream)?;
        let headers = f
            .auth
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let lower = h.to_ascii_lowercase();
                if lower == "authorization" {
                    Ok(KeyHeader::Bearer)
                } else {
                    http::HeaderName::from_bytes(lower.as_bytes())
                        .map(KeyHeader::Plain)
                        .map_err(|_| format!("auth.headers[{i}]: {h:?} is not a header name"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if headers.is_empty() {
            return Err("auth.headers: name at least one header".into());
        }

        let mut policy = Policy::compile(
            &f.routes.public,
            &f.routes.categories,
            match f.routes.unmatched {
                UnmatchedFile::Deny => Unmatched::Deny,
                UnmatchedFile::AllowAnyKey => Unmatched::AllowAnyKey,
            },
            match f.routes.preflight {
                PreflightFile::Deny => Preflight::Deny,
                PreflightFile::Forward => Preflight::Forward,
            },
            f.routes.allow_non_ascii_paths,
            f.routes.allow_trailing_dots,
        )?;
        policy.config_name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );

        let rk = &f.rate_limit.per_key;
        let per_key = Rate::from_parts(rk.per_second, rk.per_minute, rk.burst)
            .map_err(|e| format!("rate_limit.per_key: {e}"))?;
        let ip = &f.rate_limit.unauthenticated_per_ip;
        let per_ip = Rate::from_parts(ip.per_second, ip.per_minute, ip.burst)
            .map_err(|e| format!("rate_limit.unauthenticated_per_ip: {e}"))?;
        let max_tracked_ips = NonZeroUsize::new(ip.max_tracked_ips as usize)
            .ok_or("rate_limit.unauthenticated_per_ip.max_tracked_ips: must be at least 1")?;

        let t = &f.timeouts;
        for (name, d) in [
            ("timeouts.upstream_connect", t.upstream_connect),
            ("timeouts.upstream_response", t.upstream_response),
            ("timeouts.upstream_read", t.upstream_read),
            ("timeouts.client_header_read", t.client_header_read),
            ("timeouts.client_body_read", t.client_body_read),
            ("timeouts.idle", t.idle),
            ("timeouts.shutdown_delay", t.shutdown_delay),
            ("timeouts.shutdown", t.shutdown),
        ] {
            if d.capped {
                capped.push(format!("{name} capped at 1d"));
            }
        }
        for (name, d) in [
            ("timeouts.upstream_connect", t.upstream_connect),
            ("timeouts.upstream_response", t.upstream_response),
            ("timeouts.upstream_read", t.upstream_read),
            ("timeouts.client_header_read", t.client_header_read),
            ("timeouts.client_body_read", t.client_body_read),
            ("timeouts.idle", t.idle),
        ] {
            if d.value.is_zero() {
                return Err(format!("{name}: must be more than 0"));
            }
        }
        let timeouts = Timeouts {
            upstream_connect: t.upstream_connect.value,
            upstream_response: t.upstream_response.value,
            upstream_read: t.upstream_read.value,
            client_header_read: t.client_header_read.value,
            client_body_read: t.client_body_read.value,
            idle: t.idle.value,
            shutdown_delay: t.shutdown_delay.value,
            shutdown: t.shutdown.value,
        };

        let l = &f.limits;
        if l.max_header_bytes.value < 1024 || l.max_header_bytes.value > 1 << 20 {
            return Err("limits.max_header_bytes: must be between 1KiB and 1MiB".into());
        }
        for (name, s) in [
            ("limits.max_header_bytes", l.max_header_bytes),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("access_log.max_size", f.access_log.max_size),
        ] {
            if s.capped {
                capped.push(format!("{name} capped at 1TiB"));
            }
        }
        let limits = Limits {
            max_header_bytes: l.max_header_bytes.value as usize,
            max_body_bytes: (l.max_body_bytes.value > 0).then_some(l.max_body_bytes.value),
            max_connections: NonZeroU32::new(l.max_connections)
                .ok_or("limits.max_connections: must be at least 1")?,
            accept_backlog: match l.accept_backlog {
                1..=65535 => l.accept_backlog,
                _ => return Err("limits.accept_backlog: must be between 1 and 65535".into()),
            },
        };

        let trusted_proxies = f
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("trusted_proxies[{i}]: {s:?} is not a CIDR such as 10.0.0.0/8")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let target = if f.access_log.path == "-" {
            LogTarget::Stdout
        } else if f.access_log.path.is_empty() {
            return Err("access_log.path: give a file path or \"-\" for standard output".into());
        } else {
            LogTarget::File(rel(Path::new(&f.access_log.path)))
        };
        if f.access_log.max_files == 0 {
            return Err("access_log.max_files: must be at least 1".into());
        }
        if f.admin.token_env.is_empty() {
            return Err("admin.token_env: name an environment variable".into());
        }

        // cluster: validate the `cluster:` section.
        let cluster = f
            .cluster
            .as_ref()
            .map(|c| crate::config::cluster::ClusterConfig::from_file(c, &rel))
            .transpose()?;

        Ok(Self {
            path: path.to_path_buf(),
            listen: addr("listen", &f.listen)?,
            upstream,
            upstream_ca_file: f.upstream_ca_file.as_deref().map(rel),
            tls: f.tls.map(|t| TlsPaths {
                cert_file: rel(&t.cert_file),
                key_file: rel(&t.key_file),
            }),
            metrics_listen: addr("metrics.listen", &f.metrics.listen)?,
            readyz_checks_upstream: f.metrics.readyz_checks_upstream,
            per_key_series: f.metrics.per_key_series,
            admin: AdminConfig {
                listen: addr("admin.listen", &f.admin.listen)?,
                token_env: f.admin.token_env,
                allowed_hosts: f
                    .admin
                    .allowed_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            },
            keys_file: rel(&f.keys_file),
            state_dir: rel(&f.state_dir),
            auth: AuthConfig {
                headers,
                forward_key: f.auth.forward_key,
            },
            policy,
            rate_limit: RateLimits {
                per_key,
                per_ip,
                max_tracked_ips,
            },
            timeouts,
            limits,
            trusted_proxies,
            access_log: AccessLogConfig {
                target,
                max_size: f.access_log.max_size.value.max(1),
                max_files: f.access_log.max_files,
            },
            cluster, // cluster:
            webhooks: f.webhooks.compile()?,
            capped,
        })
    }

    /// Fields that a reload cannot apply (they need a restart), described.
    /// Hands the Redis password (read by the binary) to the `cluster:` section.
    pub(crate) fn set_redis_password(&mut self, password: Option<&str>) {
        if let Some(c) = &mut self.cluster {
            c.password = password.map(|p| cluster::Password(p.to_string()));
        }
    }

    pub(crate) fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.listen != new.listen {
            v.push("listen");
        }
        if self.tls != new.tls {
            v.push("tls");
        }
        if self.metrics_listen != new.metrics_listen {
            v.push("metrics.listen");
        }
        if self.admin.listen != new.admin.listen {
            v.push("admin.listen");
        }
        if self.keys_file != new.keys_file {
            v.push("keys_file");
        }
        if self.state_dir != new.state_dir {
            v.push("state_dir");
        }
        // The connection bound is a semaphore sized at start.
        if self.limits.max_connections != new.limits.max_connections {
            v.push("limits.max_connections");
        }
        if self.admin.token_env != new.admin.token_env {
            v.push("admin.token_env");
        }
        // cluster: the store and the node are chosen at start.
        if self.cluster != new.cluster {
            v.push("cluster");
        }
        v
    }
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("upstream: {s:?} is not a URL such as http://127.0.0.1:3000"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("upstream: {s:?} needs a scheme (http:// or https://)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "upstream: scheme must be http or https, not {scheme}"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("upstream: {s:?} needs a host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "upstream: {s:?} must not have a path or query; keygate forwards the request's own path"
        ));
    }
    Ok(Upstream { scheme, authority })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, LoadError> {
        Config::from_text(Path::new("/etc/kg/config.yaml"), text)
    }

    #[test]
    fn defaults_need_only_upstream() {
        let c = load("upstream: http://127.0.0.1:3000\n").unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.keys_file, Path::new("/etc/kg/keys.yaml"));
        assert_eq!(c.state_dir, Path::new("/etc/kg/data"));
        assert_eq!(c.timeouts.upstream_response, Duration::from_secs(30));
        assert_eq!(c.limits.max_body_bytes, Some(10_485_760));
        assert_eq!(c.auth.headers.len(), 2);
        assert_eq!(
            c.access_log.target,
            LogTarget::File("/etc/kg/logs/access.log".into())
        );
    }

    #[test]
    fn missing_upstream_is_an_error() {
        let e = load("listen: 0.0.0.0:1\n").unwrap_err();
        assert!(e.to_string().contains("upstream"), "{e}");
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = load("upstream: http://a:1\ntimeouts:\n  idel: 5s\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/kg/config.yaml:3:"), "{s}");
        assert!(s.contains("timeouts") && s.contains("idel"), "{s}");
    }

    #[test]
    fn bad_duration_names_field() {
        let e = load("upstream: http://a:1\ntimeouts:\n  idle: 5 parsecs\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("timeouts.idle") && s.contains(":3:"), "{s}");
    }

    #[test]
    fn durations_are_capped() {
        let c = load("upstream: http://a:1\ntimeouts:\n  idle: 400d\n").unwrap();
        assert_eq!(c.timeouts.idle, units::MAX_DURATION);
        assert_eq!(c.capped.len(), 1);
    }

    #[test]
    fn upstream_forms() {
        assert!(load("upstream: ftp://a:1\n").is_err());
        assert!(load("upstream: http://a:1/base\n").is_err());
        assert!(load("upstream: https://app.internal\n").is_ok());
    }

    #[test]
    fn restart_required_fields() {
        let a = load("upstream: http://a:1\n").unwrap();
        let b = load("upstream: http://b:1\nlisten: 0.0.0.0:1\nkeys_file: k.yaml\n").unwrap();
        assert_eq!(a.restart_required(&b), vec!["listen", "keys_file"]);
    }
}
