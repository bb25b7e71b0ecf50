//! The `webhooks:` section of config.yaml: its serde mirror ([`WebhooksFile`],
//! `deny_unknown_fields`, defaults in docs/configuration.md) and the validated runtime values
//! ([`WebhooksConfig`]). Wired into [`crate::config`] by one field on each side.

use std::time::Duration;

use serde::Deserialize;

use super::units::ConfigDuration;

/// As written in config.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebhooksFile {
    /// Loopback, private and link-local targets (and plain `http://`) are refused
    /// unless this is true.
    pub(crate) allow_private_targets: bool,
    pub(crate) timeout: ConfigDuration,
    pub(crate) retry_schedule: Vec<ConfigDuration>,
    pub(crate) queue_max: u32,
    pub(crate) failing: FailingFile,
    /// How long an endpoint may fail before it is disabled (default 5 days):
    /// `5d`, `12h` or any config duration; at most 365 days.
    pub(crate) disable_after: Days,
}

/// A duration that may be longer than the 1-day cap of other durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Days(pub Duration);

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if let Some(n) = t.strip_suffix('d')
            && let Ok(n) = n.trim().parse::<u64>()
        {
            if n == 0 || n > 365 {
                return Err(serde::de::Error::custom("must be between 1d and 365d"));
            }
            return Ok(Self(Duration::from_secs(n * 86_400)));
        }
        super::units::parse_duration(t)
            .map(|c| Self(c.value))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FailingFile {
    pub(crate) window: ConfigDuration,
    pub(crate) min_failures: u32,
    pub(crate) ratio: f64,
}

impl Default for FailingFile {
    fn default() -> Self {
        Self {
            window: ConfigDuration::secs(60),
            min_failures: 5,
            ratio: 0.5,
        }
    }
}

impl Default for WebhooksFile {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout: ConfigDuration::secs(10),
            retry_schedule: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .into_iter()
                .map(ConfigDuration::secs)
                .collect(),
            queue_max: 100_000,
            failing: FailingFile::default(),
            disable_after: Days(Duration::from_secs(5 * 24 * 3600)),
        }
    }
}

/// The validated `webhooks:` settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhooksConfig {
    pub(crate) allow_private_targets: bool,
    pub(crate) timeout: Duration,
    /// Waits before each retry; its length is the number of retries.
    pub(crate) retry_schedule: Vec<Duration>,
    pub(crate) queue_max: usize,
    pub(crate) failing: FailingConfig,
    pub(crate) disable_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FailingConfig {
    pub(crate) window: Duration,
    pub(crate) min_failures: u32,
    pub(crate) ratio: f64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        // The defaults are valid by construction.
        WebhooksFile::default().compile().unwrap_or_else(|_| Self {
            allow_private_targets: false,
            timeout: Duration::from_secs(10),
            retry_schedule: vec![Duration::from_secs(5)],
            queue_max: 100_000,
            failing: FailingConfig {
                window: Duration::from_secs(60),
                min_failures: 5,
                ratio: 0.5,
            },
            disable_after: Duration::from_secs(5 * 24 * 3600),
        })
    }
}

impl WebhooksFile {
    /// Validates the section; errors name the field.
    pub(crate) fn compile(&self) -> Result<WebhooksConfig, String> {
        if self.timeout.value.is_zero() {
            return Err("webhooks.timeout: must be more than 0".into());
        }
        if self.retry_schedule.len() > 50 {
            return Err("webhooks.retry_schedule: at most 50 retries".into());
        }
        if self.queue_max == 0 {
            return Err("webhooks.queue_max: must be at least 1".into());
        }
        let f = &self.failing;
        if f.window.value.is_zero() {
            return Err("webhooks.failing.window: must be more than 0".into());
        }
        if f.min_failures == 0 {
            return Err("webhooks.failing.min_failures: must be at least 1".into());
        }
        if !(f.ratio > 0.0 && f.ratio <= 1.0) {
            return Err("webhooks.failing.ratio: must be more than 0 and at most 1".into());
        }
        if self.disable_after.0.is_zero() {
            return Err("webhooks.disable_after: must be more than 0".into());
        }
        Ok(WebhooksConfig {
            allow_private_targets: self.allow_private_targets,
            timeout: self.timeout.value,
            retry_schedule: self.retry_schedule.iter().map(|d| d.value).collect(),
            queue_max: self.queue_max as usize,
            failing: FailingConfig {
                window: f.window.value,
                min_failures: f.min_failures,
                ratio: f.ratio,
            },
            disable_after: self.disable_after.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = WebhooksConfig::default();
        assert!(!c.allow_private_targets);
        assert_eq!(c.retry_schedule.len(), 7);
        assert_eq!(c.retry_schedule[1], Duration::from_secs(300));
        assert_eq!(c.queue_max, 100_000);
        assert_eq!(c.disable_after, Duration::from_secs(432_000));
    }

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let f: WebhooksFile = serde_yaml::from_str(
            "allow_private_targets: true\nretry_schedule: [100ms, 1s]\nfailing: { window: 2s }\ndisable_after: 7d\n",
        )
        .unwrap();
        let c = f.compile().unwrap();
        assert_eq!(
            c.retry_schedule,
            [Duration::from_millis(100), Duration::from_secs(1)]
        );
        assert_eq!(c.failing.min_failures, 5);
        assert_eq!(c.disable_after, Duration::from_secs(7 * 86_400));
        assert!(serde_yaml::from_str::<WebhooksFile>("retries: 3\n").is_err());
    }
}
