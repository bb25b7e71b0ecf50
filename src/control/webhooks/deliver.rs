//! One delivery attempt and its outcome: sign and send a due delivery (the
//! attempt is committed to the queue first, so a restart mid-attempt keeps the
//! schedule), then record the answer — delivered, retry after the next wait of
//! `retry_schedule`, or give up — in the queue, the metrics and the endpoint's
//! log; an endpoint failing for `disable_after` is switched off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::Webhooks;
use super::log::LogEntry;
use super::queue::Delivery;
use super::sign::signature_header;
use super::store::Endpoint;
use super::target::{self, Answer};
use super::{MAX_IN_FLIGHT, now_ms};

/// Cluster mode: how long a delivery to an endpoint this replica does not know
/// yet waits (the endpoints are followed every second).
const UNKNOWN_ENDPOINT_WAIT_MS: i64 = 1000;

pub(crate) struct Attempted {
    delivery: Delivery,
    result: Result<Answer, String>,
    at_ms: i64,
}

pub(crate) fn dispatch(
    w: &Arc<Webhooks>,
    in_flight: &mut JoinSet<Attempted>,
    tasks: &mut HashMap<tokio::task::Id, String>,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
    if room == 0 {
        return;
    }
    let cfg = w.config();
    let now = now_ms();
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    let due = {
        let busy = &inner.busy;
        inner.queue.due(now, room, &|k| busy.contains(k))
    };
    for d in due {
        let key = d.key();
        let Some(ep) = inner
            .endpoints
            .iter()
            .find(|e| e.id == d.endpoint_id)
            .cloned()
        else {
            if w.cluster.is_some() {
                // Cluster mode: made on another replica a moment ago and not
                // followed here yet (a deleted one has no delivery left to
                // wait): back to wait, uncounted, until it is.
                inner
                    .queue
                    .retry(&key, d.attempt, now + UNKNOWN_ENDPOINT_WAIT_MS);
                continue;
            }
            // The endpoint was deleted: nothing to deliver to.
            inner.queue.remove(&key);
            continue;
        };
        if !ep.enabled && d.kind != "webhook.test" {
            inner.queue.remove(&key);
            continue;
        }
        // Commit the attempt before making it: if the process dies mid-attempt,
        // the next one (after a restart) still waits its turn in the schedule.
        let wait = cfg
            .retry_schedule
            .get(d.attempt as usize)
            .copied()
            .unwrap_or(cfg.timeout);
        inner
            .queue
            .begin(&key, d.attempt + 1, now + wait.as_millis() as i64);
        inner.busy.insert(key.clone());
        let ts = now / 1000;
        let secrets = ep.signing_secrets(ts);
        let refs: Vec<&super::sign::SigningSecret> = secrets.iter().collect();
        let signature = signature_header(&refs, &d.event_id, ts, d.body.as_bytes());
        let headers = vec![
            ("webhook-id", d.event_id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ];
        let allow_private = cfg.allow_private_targets;
        let timeout = cfg.timeout;
        let tls = tls.clone();
        let handle = in_flight.spawn(async move {
            let result = match target::parse_url(&ep.url, allow_private) {
                Ok(t) => {
                    target::send(
                        &t,
                        allow_private,
                        tls,
                        headers,
                        Bytes::from(d.body.clone()),
                        timeout,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            Attempted {
                delivery: d,
                result,
                at_ms: now,
            }
        });
        tasks.insert(handle.id(), key);
    }
}

pub(crate) fn finish(w: &Webhooks, a: Attempted) {
    let cfg = w.config();
    let now = now_ms();
    let d = a.delivery;
    let key = d.key();
    let attempt = d.attempt + 1;
    let mut inner = w.inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.busy.remove(&key);
    let ok = matches!(&a.result, Ok(ans) if (200..300).contains(&ans.status));
    let (status, duration_ms, response, error) = match &a.result {
        Ok(ans) => (
            Some(ans.status),
            Some(ans.duration.as_secs_f64() * 1000.0),
            Some(ans.excerpt.clone()),
            if ok {
                None
            } else if (300..400).contains(&ans.status) {
                Some("redirects are not followed".to_string())
            } else {
                None
            },
        ),
        Err(e) => (None, None, None, Some(e.clone())),
    };
    let mut entry = LogEntry {
        event_id: d.event_id.clone(),
        kind: d.kind.clone(),
        time: crate::control::state_dir::format_ms(a.at_ms),
        attempt,
        result: String::new(),
        status,
        duration_ms,
        response,
        error,
        next_retry: None,
        body: Some(d.body.clone()),
        node: None,
    };
    let mut failing_update: Option<Option<i64>> = None;
    let mut disable = false;
    let ep = inner
        .endpoints
        .iter()
        .find(|e| e.id == d.endpoint_id)
        .cloned();
    if ok {
        w.metrics.deliveries.with_label_values(&["success"]).inc();
        inner.queue.remove(&key);
        entry.result = "delivered".into();
        if ep.as_ref().is_some_and(|e| e.failing_since.is_some()) {
            failing_update = Some(None);
        }
    } else {
        let since = ep.as_ref().and_then(|e| e.failing_since);
        match since {
            None => failing_update = Some(Some(now)),
            Some(t) if now - t >= cfg.disable_after.as_millis() as i64 => disable = true,
            Some(_) => {}
        }
        match cfg.retry_schedule.get(d.attempt as usize) {
            Some(wait) if !disable => {
                w.metrics.deliveries.with_label_values(&["failure"]).inc();
                let next = now + wait.as_millis() as i64;
                inner.queue.retry(&key, attempt, next);
                entry.result = "retrying".into();
                entry.next_retry = Some(crate::control::state_dir::format_ms(next));
            }
            _ => {
                w.metrics.deliveries.with_label_values(&["gave_up"]).inc();
                inner.queue.remove(&key);
                entry.result = "failed".into();
            }
        }
    }
    w.log(&mut inner.logs, &d.endpoint_id, entry);
    if disable {
        inner.queue.forget_endpoint(&d.endpoint_id);
        let reason = format!(
            "failing since {} ({} or more): switched off; fix the receiver, then enable it again",
            ep.as_ref()
                .and_then(|e| e.failing_since)
                .map(crate::control::state_dir::format_ms)
                .unwrap_or_default(),
            humanize(cfg.disable_after)
        );
        let entry = LogEntry {
            event_id: String::new(),
            kind: "endpoint.disabled".into(),
            time: crate::control::state_dir::format_ms(now),
            attempt,
            result: "endpoint.disabled".into(),
            status: None,
            duration_ms: None,
            response: None,
            error: Some(reason.clone()),
            next_retry: None,
            body: None,
            node: None,
        };
        w.log(&mut inner.logs, &d.endpoint_id, entry);
        if let Some(e) = inner.endpoints.iter_mut().find(|e| e.id == d.endpoint_id) {
            e.enabled = false;
            e.disabled_reason = Some(reason.clone());
        }
        drop(inner);
        persist(w, &d.endpoint_id, move |e| {
            e.enabled = false;
            e.disabled_reason = Some(reason);
        });
        super::store::audit(
            &w.state_dir,
            "keygate",
            "webhook.disable",
            &d.endpoint_id,
            &["enabled"],
        );
        tracing::warn!(endpoint = %d.endpoint_id, "webhook endpoint disabled: failing for too long");
    } else if let Some(f) = failing_update {
        if let Some(e) = inner.endpoints.iter_mut().find(|e| e.id == d.endpoint_id) {
            e.failing_since = f;
        }
        drop(inner);
        persist(w, &d.endpoint_id, move |e| e.failing_since = f);
    }
}

/// Saves a change the worker made to an endpoint, off the async workers.
fn persist(w: &Webhooks, id: &str, f: impl FnOnce(&mut Endpoint) + Send + 'static) {
    let store = w.store.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.update(&id, |e| {
            f(e);
            Ok(())
        }) {
            tracing::warn!(endpoint = %id, error = %e, "cannot save the webhook endpoint");
        }
    });
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 && s.is_multiple_of(86_400) {
        format!("{} days", s / 86_400)
    } else {
        format!("{s} s")
    }
}
