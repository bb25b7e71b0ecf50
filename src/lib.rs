//! keygate: an API-key gateway that runs as a reverse-proxy sidecar.
//!
//! The code is organised by plane; every import between top-level modules points
//! down this list, and none points up:
//!
//! | module | its one job |
//! | --- | --- |
//! | `bench` | not API: thin wrappers over the internals for `benches/` (hidden from the docs) |
//! | [`cli`] | the command line: arguments, `serve`, key commands, log printing, the demo; the only reader of the environment |
//! | `gateway` | the composition root: builds the snapshot handle and the reloader, binds the listeners, drains on shutdown |
//! | `control` | the only writer: the reloader, the keys watcher, key management, the state folder, the admin API + console, the metrics listener |
//! | `proxy` | the data plane: the pipeline (the one place that knows the order of a request's checks), hygiene, auth, refusals, the header rewrite, the upstream client; reads snapshots, never writes one |
//! | `server` | transport only: one accept loop for every listener, connection deadlines, TLS |
//! | `observe` | the request-finished hook, the response body that fires it, metrics, the access-log writer and reader |
//! | `config`, `keys`, `policy`, `ratelimit`, `pool` | leaves: the two layers of config.yaml, key formats and the key set, categories and levels, limiters, the upstream connection pool |
//!
//! A request's path: `server` accepts the connection and hands each request to the
//! `proxy` pipeline with the snapshot in force → hygiene → public paths → the API
//! switch → the key → rate limits → category → permission → forward. Every refusal is
//! one `Reject`, turned into a response in one match. The `Finish` guard travels with
//! the response body and fires exactly once, feeding metrics, the access log and the
//! key's last-used time.

#[doc(hidden)]
pub mod bench;
pub mod cli;
mod config;
mod control;
mod gateway;
mod keys;
mod observe;
mod policy;
mod pool;
mod proxy;
mod ratelimit;
mod server;

pub use config::LoadError;
pub use gateway::{Gateway, GatewayOptions, LAST_USED_EVERY, StartError};
pub use keys::{KeyHash, Secret, mint};
pub use proxy::hygiene::{PathError, normalize_path};

/// What keygate records about each finished request (the access log's fields), and
/// the observer trait embedders and tests use to see every record.
pub mod record {
    pub use crate::observe::record::{Decision, NoObserver, Observer, Record};
}
