//! Not API: thin wrappers for `benches/`, may change any time.
//!
//! The hot functions of the request path are crate-private; these wrappers let the
//! `cargo bench` suite call the real internals (config → routing table, keys file →
//! key set, the access-log line) without making them public. Each one calls through
//! and holds no logic of its own. Path normalisation is already public
//! ([`crate::normalize_path`]).

use std::net::IpAddr;
use std::path::Path;

use http::{HeaderValue, Method};

use crate::config::LoadError;
use crate::keys::KeyHash;
use crate::observe::record::Record;
use crate::policy::Route as PolicyRoute;

/// A validated config.yaml (the runtime type a snapshot holds).
#[derive(Debug)]
pub struct Config(crate::config::Config);

/// What a normalised path is, by the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Public,
    /// The category's name.
    Category(&'a str),
    Unmatched,
}

impl Config {
    /// Validates config.yaml text as the gateway does when it loads the file.
    pub fn from_yaml(text: &str) -> Result<Self, LoadError> {
        crate::config::Config::from_text(Path::new("config.yaml"), text).map(Self)
    }

    /// The route of a normalised path: the policy's most-specific match.
    pub fn route(&self, path: &str) -> Route<'_> {
        let policy = &self.0.policy;
        match policy.route(path) {
            PolicyRoute::Public => Route::Public,
            PolicyRoute::Category(id) => Route::Category(policy.category_name(id)),
            PolicyRoute::Unmatched => Route::Unmatched,
        }
    }
}

/// The key set of one snapshot.
#[derive(Debug)]
pub struct KeySet(crate::keys::store::KeySet);

impl KeySet {
    /// Builds the set from keys.yaml text against `config`'s categories and
    /// default rate, as a (re)load does.
    pub fn from_yaml(config: &Config, text: &str) -> Result<Self, LoadError> {
        let c = &config.0;
        crate::keys::store::KeySet::build_from_text(
            &c.keys_file,
            text,
            &c.policy,
            &c.rate_limit.per_key,
            None,
        )
        .map(|(set, _)| Self(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The id of the key with this hash, as the data plane looks a presented key up.
    pub fn lookup(&self, hash: &KeyHash) -> Option<&str> {
        self.0.lookup(hash).map(|k| k.id.as_str())
    }
}

/// The record of a request that has just arrived (the other fields are public).
pub fn record(
    method: Method,
    request_id: HeaderValue,
    ip: IpAddr,
    user_agent: Option<HeaderValue>,
) -> Record {
    Record::arrived(
        time::OffsetDateTime::now_utc(),
        method,
        request_id,
        ip,
        user_agent,
    )
}

/// Sets the record's key (a crate-private field) to the key `hash` finds in `keys`;
/// says whether there was one.
pub fn set_key(record: &mut Record, keys: &KeySet, hash: &KeyHash) -> bool {
    record.key = keys.0.lookup(hash).cloned();
    record.key.is_some()
}

/// Hands `f` the record's access-log line, formatted as the access log does.
pub fn access_log_line<T>(record: &Record, f: impl FnOnce(&str) -> T) -> T {
    crate::observe::accesslog::with_line(record, f)
}
