//! The runtime configuration: validated, typed, compiled values only.
//!
//! [`Config::load`] reads config.yaml through the serde mirror in [`file`], then
//! validates and compiles it in one conversion whose errors name the file, the line
//! (where the parser knows it) and the field. Relative paths are resolved against the
//! directory of config.yaml.

pub mod file;
pub mod units;

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
    pub file: PathBuf,
    pub line: Option<(usize, usize)>,
    pub message: String,
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
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

/// Parses YAML text into a serde mirror, naming the field path and the line on error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, LoadError> {
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
        }
    })
}

/// Where the upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_env: String,
    pub allowed_hosts: Vec<String>,
}

/// Where an API key is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHeader {
    /// A header whose whole value is the key (`X-API-Key`).
    Plain(http::HeaderName),
    /// `Authorization: Bearer <key>`.
    Bearer,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub headers: Vec<KeyHeader>,
    pub forward_key: bool,
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub per_key: Rate,
    pub per_ip: Rate,
    pub max_tracked_ips: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub client_header_read: Duration,
    pub idle: Duration,
    pub shutdown_delay: Duration,
    pub shutdown: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    /// `None` = unlimited.
    pub max_body_bytes: Option<u64>,
    pub max_connections: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub target: LogTarget,
    pub max_size: u64,
    pub max_files: u32,
}

/// The validated configuration of one snapshot.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    pub upstream_ca_file: Option<PathBuf>,
    pub tls: Option<TlsPaths>,
    pub metrics_listen: SocketAddr,
    pub admin: AdminConfig,
    pub keys_file: PathBuf,
    pub state_dir: PathBuf,
    pub auth: AuthConfig,
    pub policy: Policy,
    pub rate_limit: RateLimits,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: AccessLogConfig,
    pub webhooks: crate::webhooks::config::WebhooksConfig, // webhooks:
    /// Values that were capped at load (`timeouts.idle`), for a warning.
    pub capped: Vec<String>,
}

/// Finds config.yaml: `-c`, else `$KEYGATE_CONFIG`, else `./config.yaml`, else
/// `/etc/keygate/config.yaml`.
pub fn discover(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KEYGATE_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("config.yaml");
    if local.exists() {
        return local;
    }
    PathBuf::from("/etc/keygate/config.yaml")
}

impl Config {
    /// Reads and validates config.yaml.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::new(path, format!("cannot read: {e}")))?;
        Self::from_text(path, &text)
    }

    pub fn from_text(path: &Path, text: &str) -> Result<Self, LoadError> {
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

        let policy = Policy::compile(
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
        )?;

        let per_key = Rate::from_file(&f.rate_limit.per_key)
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
            ("timeouts.client_header_read", t.client_header_read),
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
            ("timeouts.client_header_read", t.client_header_read),
            ("timeouts.idle", t.idle),
        ] {
            if d.value.is_zero() {
                return Err(format!("{name}: must be more than 0"));
            }
        }
        let timeouts = Timeouts {
            upstream_connect: t.upstream_connect.value,
            upstream_response: t.upstream_response.value,
            client_header_read: t.client_header_read.value,
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
            webhooks: f.webhooks.compile()?, // webhooks:
            capped,
        })
    }

    /// Fields that a reload cannot apply (they need a restart), described.
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
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
