//! THE DATA PLANE: what happens to one request on the public listener. It reads a
//! [`snapshot::Snapshot`] through the read-only [`snapshot::Snapshots`] handle and
//! never writes one (reloads belong to `control`).
//!
//! May import: `observe`, `server` (connection facts), `config`, `keys`, `policy`,
//! `ratelimit`. Never `control`, `cli` or `gateway`.

pub(crate) mod auth;
pub(crate) mod forward;
pub(crate) mod hygiene;
pub(crate) mod pipeline;
pub(crate) mod reject;
pub(crate) mod requestid;
pub(crate) mod snapshot;
pub(crate) mod tunnel;
pub(crate) mod upstream;
