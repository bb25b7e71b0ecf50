//! `keygate webhooks list|create|edit|delete|rotate-secret|test|deliveries`: the
//! same operations as the admin API, on the endpoints file in `state_dir` (a
//! running gateway follows within a second). `test` leaves the event in
//! `state_dir/webhooks/inbox` for the running gateway to deliver; `deliveries`
//! reads the endpoint's log there. Audited as `cli:<user>`.
//!
//! With a `cluster:` section every command works on the cluster's endpoints in
//! Redis (refused when it cannot be reached): `test` queues the event in the
//! cluster's queue, `deliveries` reads the cluster's log.

use std::net::ToSocketAddrs;
use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use crate::cli::output;
use crate::control::webhooks::manage::{
    apply_patch, check_description, check_events, rotate_in, test_event,
};
use crate::control::webhooks::sign::SigningSecret;
use crate::control::webhooks::store::{
    Endpoint, EndpointStore, StoreError, audit, created_now, new_endpoint_id,
};
use crate::control::webhooks::{target, worker};

#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// List webhook endpoints.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an endpoint and print its signing secret (once).
    Create {
        /// Where to POST events (https; http only with webhooks.allow_private_targets).
        #[arg(long)]
        url: String,
        /// An event type or pattern: key.created, key.*, candidates.created, * (repeatable).
        #[arg(long = "event", value_name = "TYPE", required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Include the response body (up to 64 KiB) in write events.
        #[arg(long)]
        include_body: bool,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
    },
    /// Change an endpoint.
    Edit {
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Replace the event types (repeatable).
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint.
    Delete { id: String },
    /// Make a new secret (printed once); the old one keeps signing for 24 hours.
    RotateSecret { id: String },
    /// Ask the running gateway to send a webhook.test event.
    Test { id: String },
    /// Show an endpoint's recent delivery attempts, newest first.
    Deliveries {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let t = target::parse_url(url, allow_private)?;
    if allow_private {
        return Ok(());
    }
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .collect();
    if let Some(a) = addrs.iter().find(|a| target::is_private(a.ip())) {
        return Err(format!(
            "refused: {} resolves to {}, a loopback, private or link-local address (set webhooks.allow_private_targets: true to allow)",
            t.host,
            a.ip()
        ));
    }
    Ok(())
}

fn err(e: StoreError) -> String {
    e.to_string()
}

/// Runs one `keygate webhooks` command.
pub(crate) fn run(config_path: &Path, cmd: WebhooksCommand) -> Result<(), String> {
    let config = super::env::load_config(config_path)?;
    let store = EndpointStore::open(&config)?;
    let actor = super::env::actor();
    match cmd {
        WebhooksCommand::List { json } => {
            let all = store.load().map_err(err)?;
            if json {
                let v: Vec<_> = all.iter().map(Endpoint::view).collect();
                output::line(&serde_json::Value::from(v).to_string());
            } else {
                let mut rows = vec![vec![
                    "ID".to_string(),
                    "URL".into(),
                    "EVENTS".into(),
                    "ENABLED".into(),
                ]];
                for e in &all {
                    rows.push(vec![
                        e.id.clone(),
                        e.url.clone(),
                        e.events.join(","),
                        if e.enabled { "yes" } else { "no" }.into(),
                    ]);
                }
                output::table(&rows);
            }
        }
        WebhooksCommand::Create {
            url,
            events,
            description,
            include_body,
            disabled,
        } => {
            check_url(&url, config.webhooks.allow_private_targets)?;
            check_events(&events, &config.policy)?;
            check_description(description.as_deref())?;
            let secret = SigningSecret::generate()?;
            let e = Endpoint {
                id: new_endpoint_id(),
                url,
                events,
                description,
                include_body,
                enabled: !disabled,
                secret: secret.expose().to_string(),
                previous_secret: None,
                created_at: created_now(),
                failing_since: None,
                disabled_reason: None,
            };
            let id = e.id.clone();
            store
                .modify(|all| {
                    all.push(e);
                    Ok(())
                })
                .map_err(err)?;
            audit(
                &config.state_dir,
                &actor,
                "webhook.create",
                &id,
                &["url", "events"],
            );
            output::line(&format!("created webhook endpoint {id}"));
            output::line(&format!("signing secret (shown once): {}", secret.expose()));
        }
        WebhooksCommand::Edit {
            id,
            url,
            events,
            description,
            enable,
            disable,
        } => {
            if let Some(u) = &url {
                check_url(u, config.webhooks.allow_private_targets)?;
            }
            let events = (!events.is_empty()).then_some(events);
            if let Some(ev) = &events {
                check_events(ev, &config.policy)?;
            }
            check_description(description.as_deref())?;
            let enabled = if enable {
                Some(true)
            } else if disable {
                Some(false)
            } else {
                None
            };
            store
                .update(&id, |e| {
                    apply_patch(e, url, events, description.map(Some), None, enabled);
                    Ok(())
                })
                .map_err(err)?;
            audit(&config.state_dir, &actor, "webhook.edit", &id, &[]);
            output::line(&format!("updated webhook endpoint {id}"));
        }
        WebhooksCommand::Delete { id } => {
            store
                .modify(|all| {
                    let n = all.len();
                    all.retain(|e| e.id != id);
                    if all.len() == n {
                        return Err(StoreError::NotFound(id.clone()));
                    }
                    Ok(())
                })
                .map_err(err)?;
            audit(&config.state_dir, &actor, "webhook.delete", &id, &[]);
            output::line(&format!("deleted webhook endpoint {id}"));
        }
        WebhooksCommand::RotateSecret { id } => {
            let secret = SigningSecret::generate()?;
            store
                .update(&id, |e| {
                    rotate_in(e, &secret, crate::control::webhooks::now_ms() / 1000);
                    Ok(())
                })
                .map_err(err)?;
            audit(
                &config.state_dir,
                &actor,
                "webhook.rotate_secret",
                &id,
                &["secret"],
            );
            output::line(&format!(
                "new signing secret (shown once; the old one keeps signing for 24 hours): {}",
                secret.expose()
            ));
        }
        WebhooksCommand::Test { id } => {
            if !store.load().map_err(err)?.iter().any(|e| e.id == id) {
                return Err(StoreError::NotFound(id).to_string());
            }
            let event = test_event(&id);
            if let Some(r) = store.redis() {
                let now = crate::control::webhooks::now_ms();
                let d = crate::control::webhooks::queue::Delivery {
                    endpoint_id: id,
                    event_id: event.id.clone(),
                    kind: event.kind,
                    body: event.body,
                    attempt: 0,
                    next_at: now,
                    created: now,
                    node: None,
                };
                if r.enqueue(&[d], config.webhooks.queue_max).map_err(err)? > 0 {
                    return Err("the webhook queue is full (webhooks.queue_max)".into());
                }
                output::line(&format!(
                    "queued test event {} (a replica sends it within a second)",
                    event.id
                ));
                return Ok(());
            }
            let item = worker::InboxItem {
                endpoint_id: id,
                event_id: event.id.clone(),
                kind: event.kind,
                body: event.body,
            };
            let inbox = store.dir().join("inbox");
            std::fs::create_dir_all(&inbox).map_err(|e| format!("{}: {e}", inbox.display()))?;
            let text = serde_json::to_string(&item).map_err(|e| e.to_string())?;
            crate::keys::write::write_atomic(&inbox.join(format!("{}.json", item.event_id)), &text)
                .map_err(|e| e.to_string())?;
            output::line(&format!(
                "queued test event {} (a running gateway sends it within a second)",
                item.event_id
            ));
        }
        WebhooksCommand::Deliveries { id, json } => {
            let log: Vec<_> = match store.redis() {
                Some(r) => r.log(&id).map_err(err)?,
                None => crate::control::webhooks::log::read_log(store.dir(), &id)
                    .into_iter()
                    .rev()
                    .collect(),
            };
            if json {
                for e in &log {
                    let mut v = json!(e);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("body");
                    }
                    output::line(&v.to_string());
                }
            } else {
                let mut rows = vec![vec![
                    "TIME".to_string(),
                    "EVENT".into(),
                    "TYPE".into(),
                    "ATTEMPT".into(),
                    "RESULT".into(),
                    "STATUS".into(),
                    "NEXT RETRY".into(),
                ]];
                for e in &log {
                    rows.push(vec![
                        e.time.clone(),
                        e.event_id.clone(),
                        e.kind.clone(),
                        e.attempt.to_string(),
                        e.result.clone(),
                        e.status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| e.error.clone().unwrap_or_else(|| "-".into())),
                        e.next_retry.clone().unwrap_or_default(),
                    ]);
                }
                output::table(&rows);
            }
        }
    }
    Ok(())
}
