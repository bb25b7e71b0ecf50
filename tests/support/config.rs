//! Builders for config.yaml and keys.yaml from typed fields, serialised with
//! serde_yaml, so tests say what they change instead of pasting YAML. The field
//! names mirror keygate's own serde types (`src/config/file.rs`, the keys file);
//! keygate rejects unknown fields, so a typo here fails the gateway's start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::{SECRET_ALL, SECRET_EXPIRED, SECRET_READ, SECRET_SLOW, SECRET_WRITE, TempDir};

/// A listener block (`metrics:`, `admin:`).
#[derive(Debug, Clone, Serialize)]
pub struct ListenOn {
    pub listen: String,
}

/// `routes:`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Routes {
    pub public: Vec<String>,
    pub categories: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<String>,
}

impl Routes {
    /// The routes of [`super::ROUTES`]: two public patterns, `candidates` and `jobs`.
    pub fn standard() -> Self {
        let mut categories = BTreeMap::new();
        for c in ["candidates", "jobs"] {
            categories.insert(
                c.to_string(),
                vec![format!("/api/v1/{c}"), format!("/api/v1/{c}/**")],
            );
        }
        Self {
            public: vec!["/healthz".into(), "/public/**".into()],
            categories,
            unmatched: None,
            preflight: None,
        }
    }

    pub fn category(mut self, name: &str, patterns: &[&str]) -> Self {
        self.categories.insert(
            name.to_string(),
            patterns.iter().map(|p| p.to_string()).collect(),
        );
        self
    }
}

/// A rate (`rate_limit.per_key`, a key's `rate_limit`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Rate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessLog {
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    pub cert_file: String,
    pub key_file: String,
}

/// config.yaml. [`TestConfig::new`] is the tests' standard config: every listener
/// on 127.0.0.1:0, the standard routes, `keys.yaml` and `data` next to it.
#[derive(Debug, Clone, Serialize)]
pub struct TestConfig {
    pub listen: String,
    pub upstream: String,
    pub metrics: ListenOn,
    pub admin: ListenOn,
    pub keys_file: String,
    pub state_dir: String,
    pub routes: Routes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// `timeouts.<name>: <duration>` (e.g. `("shutdown", "2s")`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<String, String>,
    /// `limits.<name>: <value>` (e.g. `("max_connections", 5)`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, serde_yaml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

impl TestConfig {
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            upstream: format!("http://{upstream}"),
            metrics: ListenOn {
                listen: "127.0.0.1:0".into(),
            },
            admin: ListenOn {
                listen: "127.0.0.1:0".into(),
            },
            keys_file: "keys.yaml".into(),
            state_dir: "data".into(),
            routes: Routes::standard(),
            rate_limit: None,
            timeouts: BTreeMap::new(),
            limits: BTreeMap::new(),
            access_log: None,
            tls: None,
        }
    }

    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// A per-key rate high enough never to refuse (for tests that send many).
    pub fn unlimited_keys(mut self) -> Self {
        self.rate_limit = Some(RateLimit {
            per_key: Some(Rate {
                per_second: Some(1_000_000),
                per_minute: None,
                burst: Some(1_000_000),
            }),
        });
        self
    }

    pub fn timeout(mut self, name: &str, value: &str) -> Self {
        self.timeouts.insert(name.to_string(), value.to_string());
        self
    }

    pub fn limit(mut self, name: &str, value: impl Into<serde_yaml::Value>) -> Self {
        self.limits.insert(name.to_string(), value.into());
        self
    }

    pub fn access_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.access_log = Some(AccessLog {
            path: path.into().display().to_string(),
        });
        self
    }

    pub fn tls(mut self, cert_file: &str, key_file: &str) -> Self {
        self.tls = Some(Tls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        });
        self
    }

    pub fn yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }

    /// Writes `config.yaml` into `dir`; returns its path.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        dir.write("config.yaml", &self.yaml())
    }
}

/// One entry of keys.yaml.
#[derive(Debug, Clone, Serialize)]
pub struct TestKey {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub permissions: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
}

impl TestKey {
    /// An operator key with a plain `secret`.
    pub fn secret(id: &str, name: &str, secret: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            secret: Some(secret.into()),
            sha256: None,
            prefix: None,
            permissions: BTreeMap::new(),
            expires_at: None,
            rate_limit: None,
        }
    }

    /// `category` may be `"*"`; `level` is `none`, `read` or `write`.
    pub fn perm(mut self, category: &str, level: &str) -> Self {
        self.permissions
            .insert(category.to_string(), level.to_string());
        self
    }
}

/// keys.yaml.
#[derive(Debug, Clone, Serialize)]
pub struct TestKeys {
    pub api_enabled: bool,
    pub keys: Vec<TestKey>,
}

impl TestKeys {
    pub fn empty() -> Self {
        Self {
            api_enabled: true,
            keys: Vec::new(),
        }
    }

    /// The same key set as [`super::keys_yaml`]: kzapier, kreporting, kexpired,
    /// kslow, kwriter and kminted (the minted `kg_key`).
    pub fn standard(kg_key: &str) -> Self {
        let mut slow = TestKey::secret("kslow", "Slow Poke", SECRET_SLOW).perm("*", "write");
        slow.rate_limit = Some(Rate {
            per_second: None,
            per_minute: Some(1),
            burst: Some(2),
        });
        let mut expired =
            TestKey::secret("kexpired", "Old Integration", SECRET_EXPIRED).perm("*", "write");
        expired.expires_at = Some("2020-01-01T00:00:00Z".into());
        let mut minted = TestKey::secret("kminted", "Minted", "").perm("*", "write");
        minted.secret = None;
        minted.sha256 = Some(super::sha256_hex(kg_key));
        minted.prefix = Some("kg_abcd".into());
        Self {
            api_enabled: true,
            keys: vec![
                TestKey::secret("kzapier", "Zapier", SECRET_READ).perm("candidates", "read"),
                TestKey::secret("kreporting", "Reporting Dashboard", SECRET_ALL).perm("*", "read"),
                expired,
                slow,
                TestKey::secret("kwriter", "Jobs Writer ✓", SECRET_WRITE)
                    .perm("jobs", "write")
                    .perm("candidates", "none"),
                minted,
            ],
        }
    }

    pub fn api_enabled(mut self, on: bool) -> Self {
        self.api_enabled = on;
        self
    }

    pub fn with(mut self, key: TestKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Without the key `id` (which must be there).
    pub fn without(mut self, id: &str) -> Self {
        let n = self.keys.len();
        self.keys.retain(|k| k.id != id);
        assert_eq!(self.keys.len() + 1, n, "no key {id} to remove");
        self
    }

    /// Changes the key `id` (which must be there).
    pub fn edit(mut self, id: &str, f: impl FnOnce(&mut TestKey)) -> Self {
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .unwrap_or_else(|| panic!("no key {id} to edit"));
        f(k);
        self
    }

    pub fn yaml(&self) -> String {
        serde_yaml::to_string(self).expect("keys serialise")
    }

    /// Writes `keys.yaml` into `dir`; returns its path.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        dir.write("keys.yaml", &self.yaml())
    }
}
