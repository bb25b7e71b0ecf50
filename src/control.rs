//! THE CONTROL PLANE, the only writer: the [`reload::Reloader`] builds and swaps
//! snapshots (SIGHUP, `POST /admin/v1/reload`, admin key writes, the keys-file
//! watcher); key management and the state folder; the admin API + console and the
//! metrics listener, which hold handles, not the proxy.
//!
//! May import: `proxy` (the snapshot types, the error body), `server` (the accept
//! loop), `observe`, `config`, `keys`, `policy`, `ratelimit`. Never `cli` or
//! `gateway`.

pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod health;
pub(crate) mod manage;
pub(crate) mod reload;
pub(crate) mod source;
pub(crate) mod state_dir;
pub(crate) mod watch;
pub(crate) mod webhooks;
