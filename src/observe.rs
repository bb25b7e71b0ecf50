//! Observability: the one request-finished hook ([`record::Finish`]) and the
//! response body that fires it, the Prometheus metrics, the access-log writer and
//! its reader.
//!
//! May import: `config`, `keys`, `policy`. Never the planes above it.

pub(crate) mod accesslog;
pub(crate) mod body;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod record;
pub(crate) mod request_body;
