//! One webhook endpoint as stored (in `state_dir`, or in Redis in cluster mode),
//! what the admin API shows of it (never a secret), and the errors of the stores.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::sign::SigningSecret;

/// How long a rotated-out secret keeps signing.
pub(crate) const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;

/// One endpoint, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) include_body: bool,
    pub(crate) enabled: bool,
    pub(crate) secret: String,
    /// The secret before the last rotation and until when (Unix seconds) it signs.
    #[serde(default)]
    pub(crate) previous_secret: Option<PreviousSecret>,
    pub(crate) created_at: String,
    /// Unix milliseconds of the first failure since the last success.
    #[serde(default)]
    pub(crate) failing_since: Option<i64>,
    /// Why keygate switched it off (failing for too long).
    #[serde(default)]
    pub(crate) disabled_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviousSecret {
    pub(crate) secret: String,
    pub(crate) until: i64,
}

impl Endpoint {
    /// What the admin API and the CLI show: never a secret.
    pub(crate) fn view(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "include_body": self.include_body,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "failing_since": self.failing_since.map(crate::control::state_dir::format_ms),
            "disabled_reason": self.disabled_reason,
            "previous_secret_until": self.previous_secret.as_ref().map(|p| crate::control::state_dir::format_ms(p.until * 1000)),
        })
    }

    /// The secrets that sign now: the current one, and the previous one during the
    /// rotation overlap.
    pub(crate) fn signing_secrets(&self, now_secs: i64) -> Vec<SigningSecret> {
        let mut v = Vec::with_capacity(2);
        if let Ok(s) = SigningSecret::parse(&self.secret) {
            v.push(s);
        }
        if let Some(p) = &self.previous_secret
            && p.until > now_secs
            && let Ok(s) = SigningSecret::parse(&p.secret)
        {
            v.push(s);
        }
        v
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("no webhook endpoint {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Io(String),
    /// Cluster mode: Redis cannot be reached (or holds no keygate data); a
    /// change is never made locally only.
    #[error("{0}")]
    Unavailable(String),
}
