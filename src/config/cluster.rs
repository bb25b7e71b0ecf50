//! The validated `cluster:` section of config.yaml (README, "Running several replicas"), built from the serde
//! mirror in [`crate::config::file`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::file::{ClusterFile, RedisDownRateFile};

/// What the shared rate limit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisDown {
    /// Each replica enforces the limit divided by the replicas last seen alive.
    LocalShare,
    /// Rate-limited keys pass unlimited (fails open).
    Open,
    /// Rate-limited keys are refused with 429 (fails closed).
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterConfig {
    pub(crate) redis_url: String,
    /// Environment variable holding the Redis password (also `<VAR>_FILE`).
    pub(crate) password_env: Option<String>,
    /// The password itself, handed in by the embedder (the binary reads it from
    /// `password_env`); never read from the environment here.
    pub(crate) password: Option<Password>,
    /// `redis_ca_file`: the CA certificates that verify a `rediss://` server.
    pub(crate) ca: Option<RedisCa>,
    pub(crate) name: String,
    pub(crate) node_name: String,
    pub(crate) on_down: RedisDown,
    /// `None` = serve the last snapshot for ever.
    pub(crate) max_staleness: Option<Duration>,
    pub(crate) log_max_entries: u64,
    pub(crate) sample_success: f64,
}

/// `kg:{<name>}`: every Redis key of the cluster `name` starts with it.
pub(crate) fn key_prefix(name: &str) -> String {
    format!("kg:{{{name}}}")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keygate".into())
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The PEM CA certificates of `cluster.redis_ca_file`, read once at load (so a
/// changed file is a changed config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisCa {
    pub(crate) path: PathBuf,
    pub(crate) pem: Vec<u8>,
}

impl RedisCa {
    /// Reads `path`; it must hold at least one PEM certificate, all of them valid.
    fn read(path: PathBuf) -> Result<Self, String> {
        let field =
            |e: &dyn std::fmt::Display| format!("cluster.redis_ca_file: {}: {e}", path.display());
        let pem = std::fs::read(&path).map_err(|e| field(&e))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| field(&e))?;
            // The same check the Redis client makes when it connects.
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).map_err(|e| field(&e))?;
            found += 1;
        }
        if found == 0 {
            return Err(field(&"no PEM certificate found"));
        }
        Ok(Self { path, pem })
    }
}

impl ClusterConfig {
    /// `rel` resolves a path of the config against the config file's folder.
    pub(crate) fn from_file(
        f: &ClusterFile,
        rel: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<Self, String> {
        // The URL may hold a password: never quote it.
        let info = redis::Client::open(f.redis_url.as_str()).map_err(|_| {
            "cluster.redis_url: not a redis:// or rediss:// URL (the value is not shown)"
                .to_string()
        })?;
        let ca = f
            .redis_ca_file
            .as_deref()
            .map(|p| RedisCa::read(rel(p)))
            .transpose()?;
        if ca.is_some()
            && !matches!(
                info.get_connection_info().addr(),
                redis::ConnectionAddr::TcpTls { .. }
            )
        {
            return Err(
                "cluster.redis_ca_file: set, but cluster.redis_url is not a rediss:// URL".into(),
            );
        }
        if !valid_label(&f.name) {
            return Err("cluster.name: 1-64 characters of letters, digits, '.', '_' or '-'".into());
        }
        let node_name = if f.node_name.is_empty() {
            host_name()
        } else {
            f.node_name.clone()
        };
        if !valid_label(&node_name) {
            return Err(
                "cluster.node_name: 1-64 characters of letters, digits, '.', '_' or '-'".into(),
            );
        }
        if !(0.0..=1.0).contains(&f.logs.sample_success) {
            return Err("cluster.logs.sample_success: a share from 0.0 to 1.0".into());
        }
        if f.logs.max_entries == 0 || f.logs.max_entries > 10_000_000 {
            return Err("cluster.logs.max_entries: from 1 to 10000000".into());
        }
        let staleness = f.on_redis_down.max_staleness.value;
        Ok(Self {
            redis_url: f.redis_url.clone(),
            password_env: f.redis_password_env.clone().filter(|e| !e.is_empty()),
            password: None,
            ca,
            name: f.name.clone(),
            node_name,
            on_down: match f.on_redis_down.rate_limit {
                RedisDownRateFile::LocalShare => RedisDown::LocalShare,
                RedisDownRateFile::Open => RedisDown::Open,
                RedisDownRateFile::Closed => RedisDown::Closed,
            },
            max_staleness: (!staleness.is_zero()).then_some(staleness),
            log_max_entries: f.logs.max_entries,
            sample_success: f.logs.sample_success,
        })
    }

    /// The start of every Redis key of this cluster: `kg:{<name>}` (one hash slot).
    pub(crate) fn key_prefix(&self) -> String {
        key_prefix(&self.name)
    }

    /// A client for the configured Redis (connections are made later). With
    /// `redis_ca_file`, a `rediss://` server is verified against those CAs only;
    /// without it, against the system roots.
    pub(crate) fn client(&self) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let mut info = self.redis_url.as_str().into_connection_info()?;
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p.0.clone());
            info = info.set_redis_settings(settings);
        }
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_text(
            Path::new("/etc/keygate/config.yaml"),
            &format!("upstream: http://127.0.0.1:3000\n{extra}"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_fields() {
        assert!(load("").unwrap().cluster.is_none());
        let c = load("cluster:\n  redis_url: redis://r:6379/0\n  node_name: pod-1\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.node_name, "pod-1");
        assert_eq!(c.on_down, RedisDown::LocalShare);
        assert_eq!(c.max_staleness, None);
        assert_eq!(c.log_max_entries, 50_000);
        let c = load("cluster:\n  redis_url: redis://r\n  on_redis_down: { rate_limit: closed, max_staleness: 30s }\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.on_down, RedisDown::Closed);
        assert_eq!(c.max_staleness, Some(Duration::from_secs(30)));
    }

    #[test]
    fn errors_name_the_field_and_never_the_url() {
        let e = load("cluster:\n  redis_url: \"http://user:hunter2@x\"\n").unwrap_err();
        assert!(e.contains("cluster.redis_url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = load("cluster:\n  redis_url: redis://r\n  name: \"a}b\"\n").unwrap_err();
        assert!(e.contains("cluster.name"), "{e}");
        let e = load("cluster:\n  redis_url: redis://r\n  colour: red\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e =
            load("cluster:\n  redis_url: redis://r\n  logs: { sample_success: 2 }\n").unwrap_err();
        assert!(e.contains("sample_success"), "{e}");
    }

    #[test]
    fn redis_ca_file_is_read_relative_to_the_config_and_checked() {
        let dir = std::env::temp_dir().join(format!("kg-redis-ca-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["redis-ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("certs/ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let load_in = |extra: &str| {
            Config::from_text(
                &dir.join("config.yaml"),
                &format!("upstream: http://127.0.0.1:3000\ncluster:\n{extra}"),
            )
            .map_err(|e| e.to_string())
        };
        let c = load_in("  redis_url: rediss://r:6380/0\n  redis_ca_file: certs/ca.pem\n")
            .unwrap()
            .cluster
            .unwrap();
        let got = c.ca.as_ref().unwrap();
        assert_eq!(got.path, dir.join("certs/ca.pem"));
        assert_eq!(got.pem, ca.pem().into_bytes());
        assert!(c.client().is_ok());
        for (extra, why) in [
            (
                "  redis_url: rediss://r\n  redis_ca_file: missing.pem\n",
                "missing.pem",
            ),
            (
                "  redis_url: rediss://r\n  redis_ca_file: empty.pem\n",
                "no PEM certificate",
            ),
            (
                "  redis_url: redis://r\n  redis_ca_file: certs/ca.pem\n",
                "not a rediss://",
            ),
        ] {
            let e = load_in(extra).unwrap_err();
            assert!(
                e.contains("cluster.redis_ca_file") && e.contains(why),
                "{e}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The Redis password: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Password(pub(crate) String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}
