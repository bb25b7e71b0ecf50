//! keygate: an API-key gateway that runs as a reverse-proxy sidecar.
//!
//! A request's path through the code:
//!
//! 1. [`server`] accepts the connection, detects HTTP/1.1 or HTTP/2, and hands each
//!    request to [`pipeline::handle`] with the snapshot in force ([`snapshot`]).
//! 2. [`pipeline`] is the only place that knows the order: [`hygiene`] (path and
//!    header rules) → public paths and categories ([`policy`]) → the API switch →
//!    the key ([`auth`], [`keys`]) → rate limits ([`ratelimit`]) → permission →
//!    [`proxy`] (header rewrite, pooled client, 502/504/413).
//! 3. Every refusal is a [`reject::Reject`]; one match turns it into a JSON response.
//! 4. The [`record::Finish`] guard travels with the response body ([`body`]) and
//!    fires exactly once when the response is done or abandoned, feeding the
//!    [`record::Observer`] and the key's last-used time.
//!
//! [`config`] holds the two layers of config.yaml (serde mirror and runtime types);
//! [`gateway`] starts and stops everything in-process, for `main.rs` and the tests.

pub mod accesslog;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod commands;
pub mod config;
pub mod conn;
pub mod demo;
pub mod gateway;
pub mod hygiene;
pub mod keys;
pub mod logs;
pub mod manage;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod reject;
pub mod requestid;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod tunnel;
pub mod webhooks; // webhooks:
