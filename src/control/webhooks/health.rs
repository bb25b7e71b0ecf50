//! The integration-health detector: `key.failing` when a key that was succeeding
//! starts being refused or failing (401/403/429/5xx) over `webhooks.failing` in a
//! window, and `key.recovered` when it succeeds again. One event per key per
//! episode, and a key that fired waits at least one window before it fires again:
//! no storm.
//!
//! A refused request whose key keygate no longer knows (deleted, mistyped) carries
//! no key; it is counted against the key that last succeeded from the same client
//! address, which is how "the integration keeps calling with a deleted key" is
//! seen. Bounded: at most [`MAX_TRACKED`] keys and addresses (least recently seen
//! evicted). Runs on the webhook worker, never on the request path.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde_json::{Value, json};

use crate::config::webhooks::FailingConfig;
use crate::observe::record::Decision;

const MAX_TRACKED: usize = 10_000;

/// What the detector needs of a finished request (built off the request task).
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) at_ms: i64,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) decision: Decision,
    pub(crate) key: Option<(String, String)>,
    pub(crate) ip: IpAddr,
}

#[derive(Debug, Default)]
struct KeyState {
    name: String,
    window_start: i64,
    ok: u32,
    failed: u32,
    codes: BTreeMap<u16, u32>,
    last_failure: Option<Failure>,
    ever_ok: bool,
    failing: bool,
    last_event_ms: i64,
}

/// A `key.failing` or `key.recovered` to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthEvent {
    pub(crate) kind: &'static str,
    pub(crate) data: Value,
}

pub(crate) struct Detector {
    cfg: FailingConfig,
    keys: LruCache<String, KeyState>,
    last_ok_from: LruCache<IpAddr, String>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").finish_non_exhaustive()
    }
}

fn is_failure(status: u16) -> bool {
    matches!(status, 401 | 403 | 429) || status >= 500
}

impl Detector {
    pub(crate) fn new(cfg: FailingConfig) -> Self {
        let n = NonZeroUsize::new(MAX_TRACKED).unwrap_or(NonZeroUsize::MIN);
        Self {
            cfg,
            keys: LruCache::new(n),
            last_ok_from: LruCache::new(n),
        }
    }

    pub(crate) fn set_config(&mut self, cfg: FailingConfig) {
        self.cfg = cfg;
    }

    /// Feeds one request; `key_exists` says whether a key id is in the snapshot now
    /// (for the likely cause).
    pub(crate) fn observe(
        &mut self,
        s: &Seen,
        key_exists: &dyn Fn(&str) -> bool,
    ) -> Option<HealthEvent> {
        let window = self.cfg.window.as_millis() as i64;
        let failure = is_failure(s.status);
        let (id, name) = match &s.key {
            Some((id, name)) => (id.clone(), name.clone()),
            None if failure
                && matches!(
                    s.decision,
                    Decision::Unauthenticated | Decision::ApiDisabled | Decision::RateLimited
                ) =>
            {
                let id = self.last_ok_from.get(&s.ip)?.clone();
                let name = self
                    .keys
                    .peek(&id)
                    .map(|k| k.name.clone())
                    .unwrap_or_default();
                (id, name)
            }
            None => return None,
        };
        if !failure {
            self.last_ok_from.put(s.ip, id.clone());
        }
        let st = self.keys.get_or_insert_mut(id.clone(), KeyState::default);
        st.name = name;
        if s.at_ms - st.window_start >= window {
            st.window_start = s.at_ms;
            st.ok = 0;
            st.failed = 0;
            st.codes.clear();
        }
        if !failure {
            st.ok += 1;
            st.ever_ok = true;
            if st.failing {
                st.failing = false;
                st.last_event_ms = s.at_ms;
                return Some(HealthEvent {
                    kind: "key.recovered",
                    data: json!({
                        "key": { "id": id, "name": st.name },
                        "status": s.status,
                    }),
                });
            }
            return None;
        }
        st.failed += 1;
        *st.codes.entry(s.status).or_insert(0) += 1;
        st.last_failure = Some(Failure {
            method: s.method.clone(),
            path: s.path.clone(),
            status: s.status,
            decision: s.decision,
            key_known: s.key.is_some(),
        });
        let total = st.ok + st.failed;
        let over = st.failed >= self.cfg.min_failures
            && f64::from(st.failed) >= self.cfg.ratio * f64::from(total);
        if !over
            || st.failing
            || !st.ever_ok
            || (st.last_event_ms > 0 && s.at_ms - st.last_event_ms < window)
        {
            return None;
        }
        st.failing = true;
        st.last_event_ms = s.at_ms;
        let cause = likely_cause(st.last_failure.as_ref(), &|| key_exists(&id));
        Some(HealthEvent {
            kind: "key.failing",
            data: json!({
                "key": { "id": id, "name": st.name },
                "window_seconds": self.cfg.window.as_secs_f64(),
                "failures": st.failed,
                "successes": st.ok,
                "codes": st.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                "likely_cause": cause,
            }),
        })
    }
}

/// The last refusal or failure of a key's window.
#[derive(Debug, Clone)]
struct Failure {
    method: String,
    path: String,
    status: u16,
    decision: Decision,
    /// keygate recognised the key in that request (else it was attributed by
    /// the client address).
    key_known: bool,
}

/// The likely cause, for the person debugging the integration. A request that
/// carried a recognised key says so itself; for one attributed by address, the
/// snapshot now tells a deleted key from a mistyped one.
fn likely_cause(last: Option<&Failure>, exists_now: &dyn Fn() -> bool) -> String {
    let Some(f) = last else {
        return "unknown".into();
    };
    let (method, path, status) = (&f.method, &f.path, f.status);
    if !f.key_known {
        return match f.decision {
            Decision::ApiDisabled => "the API is switched off".into(),
            _ if exists_now() => {
                "the integration sends a key keygate does not know (mistyped, or an old value)"
                    .into()
            }
            _ => "the key was deleted".into(),
        };
    }
    match (status, f.decision) {
        (401, Decision::ApiDisabled) => "the API is switched off".into(),
        (401, _) => "the key is expired or no longer valid".into(),
        (403, _) => format!("missing permission for {method} {path}"),
        (429, _) => "the key is over its rate limit".into(),
        _ => format!("the upstream answers {status} to {method} {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seen(at_ms: i64, status: u16, key: bool) -> Seen {
        Seen {
            at_ms,
            method: "GET".into(),
            path: "/api/v1/jobs".into(),
            status,
            decision: if status == 401 {
                Decision::Unauthenticated
            } else {
                Decision::Allowed
            },
            key: key.then(|| ("kz".to_string(), "Zapier".to_string())),
            ip: "203.0.113.7".parse().unwrap(),
        }
    }

    fn det() -> Detector {
        Detector::new(FailingConfig {
            window: Duration::from_secs(60),
            min_failures: 5,
            ratio: 0.5,
        })
    }

    #[test]
    fn deleted_key_fires_once_then_recovers() {
        let mut d = det();
        let gone = |_: &str| false;
        assert_eq!(d.observe(&seen(0, 200, true), &gone), None);
        let mut events = Vec::new();
        for i in 1..=50 {
            if let Some(e) = d.observe(&seen(i * 100, 401, false), &gone) {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "key.failing");
        assert_eq!(events[0].data["key"]["id"], "kz");
        assert_eq!(events[0].data["codes"]["401"], 5);
        assert!(
            events[0].data["likely_cause"]
                .as_str()
                .unwrap()
                .contains("deleted")
        );
        let r = d.observe(&seen(6000, 200, true), &|_| true).unwrap();
        assert_eq!(r.kind, "key.recovered");
        assert_eq!(d.observe(&seen(6100, 200, true), &|_| true), None);
    }

    #[test]
    fn a_key_never_seen_working_does_not_fire() {
        let mut d = det();
        for i in 0..20 {
            assert_eq!(d.observe(&seen(i, 403, true), &|_| true), None);
        }
    }

    #[test]
    fn below_ratio_does_not_fire() {
        let mut d = det();
        for i in 0..40 {
            let status = if i % 4 == 0 { 500 } else { 200 };
            assert_eq!(d.observe(&seen(i, status, true), &|_| true), None);
        }
    }
}
