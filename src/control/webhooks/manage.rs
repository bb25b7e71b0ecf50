//! Endpoint operations shared by the admin API and the CLI: the checks of a new
//! or changed endpoint, applying a change, rotating a secret, the test event.

use serde_json::json;

use super::events::{self, Event};
use super::sign::SigningSecret;
use super::store::{Endpoint, PreviousSecret, ROTATION_OVERLAP_SECS};
use super::target;
use crate::policy::Policy;

/// Checks a URL's form and where it resolves to now (it is checked again at
/// every delivery).
pub(crate) async fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let t = target::parse_url(url, allow_private)?;
    target::resolve(&t, allow_private).await.map(|_| ())
}

pub(crate) fn check_events(list: &[String], policy: &Policy) -> Result<(), String> {
    if list.is_empty() {
        return Err("events: name at least one event type (or \"*\")".into());
    }
    for (i, p) in list.iter().enumerate() {
        events::validate_pattern(p, policy).map_err(|m| format!("events[{i}]: {m}"))?;
    }
    Ok(())
}

pub(crate) fn check_description(d: Option<&str>) -> Result<(), String> {
    match d {
        Some(d) if d.chars().count() > 256 => Err("description: at most 256 characters".into()),
        Some(d) if d.chars().any(char::is_control) => {
            Err("description: no control characters".into())
        }
        _ => Ok(()),
    }
}

/// Applies a change (shared by the admin API and the CLI). Enabling an endpoint
/// clears its failure record.
pub(crate) fn apply_patch(
    e: &mut Endpoint,
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<Option<String>>,
    include_body: Option<bool>,
    enabled: Option<bool>,
) {
    if let Some(u) = url {
        e.url = u;
    }
    if let Some(ev) = events {
        e.events = ev;
    }
    if let Some(d) = description {
        e.description = d;
    }
    if let Some(i) = include_body {
        e.include_body = i;
    }
    if let Some(on) = enabled {
        if on && !e.enabled {
            e.failing_since = None;
            e.disabled_reason = None;
        }
        e.enabled = on;
    }
}

/// Rotates an endpoint's secret: the new one is returned; the old one keeps
/// signing (a second signature) for 24 hours.
pub(crate) fn rotate_in(e: &mut Endpoint, new: &SigningSecret, now_secs: i64) {
    let old = std::mem::replace(&mut e.secret, new.expose().to_string());
    e.previous_secret = Some(PreviousSecret {
        secret: old,
        until: now_secs + ROTATION_OVERLAP_SECS,
    });
}

pub(crate) fn test_event(endpoint_id: &str) -> Event {
    Event::new(
        "webhook.test",
        json!({
            "endpoint_id": endpoint_id,
            "message": "a test event from keygate: this endpoint receives and verifies deliveries",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::webhooks::store::created_now;

    #[test]
    fn rotation_keeps_the_old_secret_for_a_day() {
        let old = SigningSecret::generate().unwrap();
        let new = SigningSecret::generate().unwrap();
        let mut e = Endpoint {
            id: "wh_1".into(),
            url: "https://example.com/".into(),
            events: vec!["*".into()],
            description: None,
            include_body: false,
            enabled: true,
            secret: old.expose().into(),
            previous_secret: None,
            created_at: created_now(),
            failing_since: None,
            disabled_reason: None,
        };
        rotate_in(&mut e, &new, 1_000);
        assert_eq!(e.signing_secrets(1_000).len(), 2);
        assert_eq!(e.signing_secrets(1_000 + ROTATION_OVERLAP_SECS).len(), 1);
        assert_eq!(e.signing_secrets(2_000)[0], new);
    }
}
