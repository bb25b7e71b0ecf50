//! The "request finished" hook (STYLE habit 7): one [`Finish`] guard per request,
//! created when the request arrives and fired exactly once — when the response body
//! has been sent, or when it is dropped early (the client went away). It feeds the
//! [`Observer`] (access log, metrics) and the key's last-used time.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::keys::store::KeyRecord;

/// `ip` as text in `buf`, as `Display` writes it; IPv4 (the usual case) digit by
/// digit, without the formatting machinery.
pub(crate) fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write as _;
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            n
        }
        // The longest IPv6 text is 45 bytes.
        IpAddr::V6(v6) => {
            let mut w = std::io::Cursor::new(&mut buf[..]);
            match write!(w, "{v6}") {
                Ok(()) => usize::try_from(w.position()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// Shared between the request body and the pipeline.
#[derive(Debug, Default)]
pub(crate) struct ReqCounters {
    pub(crate) bytes_in: AtomicU64,
    /// The body went past `limits.max_body_bytes`.
    pub(crate) over_limit: AtomicBool,
    /// The client's body could not be read: malformed framing (chunked) or the
    /// client broke it off — the client's fault, not the upstream's.
    pub(crate) client_error: AtomicBool,
    /// The client paused longer than `timeouts.client_body_read` in its body.
    pub(crate) client_timeout: AtomicBool,
    done: AtomicBool,
    /// The client's body was read to its end.
    complete: AtomicBool,
    done_notify: Notify,
}

impl ReqCounters {
    /// Was the client's body read to its end (so the connection can be reused)?
    pub(crate) fn body_fully_read(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub(crate) fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
        self.mark_done();
    }

    pub(crate) fn mark_done(&self) {
        self.done.store(true, Ordering::Release);
        self.done_notify.notify_waiters();
    }

    /// Resolves once the whole request body has been sent upstream (or failed).
    pub(crate) async fn body_sent(&self) {
        let notified = self.done_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// The access-log decision (docs/http.md, "The access-log record").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allowed,
    Public,
    BadRequest,
    ApiDisabled,
    Unauthenticated,
    Forbidden,
    RateLimited,
    UpstreamError,
    ClientClosed,
}

impl Record {
    /// The record of a request that has just arrived: what is known from its head,
    /// and a client that closed before any response (until the pipeline knows more).
    pub(crate) fn arrived(
        ts: OffsetDateTime,
        method: Method,
        request_id: HeaderValue,
        ip: IpAddr,
        user_agent: Option<HeaderValue>,
    ) -> Self {
        Self {
            ts,
            request_id,
            method,
            path: String::new(),
            status: 499,
            decision: Decision::ClientClosed,
            reason: None,
            key: None,
            category: None,
            ip,
            duration: Duration::ZERO,
            upstream: None,
            bytes_in: 0,
            bytes_out: 0,
            user_agent,
            body: None,
        }
    }

    /// The id of the key that was recognised, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }

    /// The name of the key that was recognised, if any.
    pub fn key_name(&self) -> Option<&str> {
        self.key.as_ref().map(|k| &*k.name)
    }
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Public => "public",
            Self::BadRequest => "bad_request",
            Self::ApiDisabled => "api_disabled",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::UpstreamError => "upstream_error",
            Self::ClientClosed => "client_closed",
        }
    }
}

/// Everything known about a finished request.
#[derive(Debug, Clone)]
pub struct Record {
    pub ts: OffsetDateTime,
    pub request_id: HeaderValue,
    pub method: Method,
    /// The normalised path (the raw one when it was refused as a bad path).
    pub path: String,
    /// Status sent, or the one that was being sent; 499 when the client left before
    /// any response head.
    pub status: u16,
    pub decision: Decision,
    /// The refusal's code (`invalid_api_key`…); `None` for a forwarded request.
    pub reason: Option<&'static str>,
    pub(crate) key: Option<Arc<KeyRecord>>,
    pub category: Option<Arc<str>>,
    pub ip: IpAddr,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub user_agent: Option<HeaderValue>,
    /// The start of the response body, when an observer asked for it
    /// ([`Observer::wants_body`]) and the body was sent to its end.
    pub(crate) body: Option<CapturedBody>,
}

/// The most of a response body [`Observer::wants_body`] gets (64 KiB).
pub(crate) const BODY_CAPTURE_MAX: usize = 64 * 1024;

/// Up to [`BODY_CAPTURE_MAX`] bytes of a response body, as the upstream sent them.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedBody {
    pub(crate) bytes: bytes::Bytes,
    /// The body was longer: `bytes` is its start.
    pub(crate) truncated: bool,
}

/// Sees every request start and finish. Must not block: it runs on the request's
/// task.
pub trait Observer: Send + Sync + 'static {
    fn started(&self) {}
    fn finished(&self, record: &Record);
    /// Asked once per forwarded response, when its head is known (status,
    /// decision, key, category are in `record`): should a copy of the start of
    /// the body reach [`Observer::finished`] in `record.body`? Runs on the
    /// request's task for every response, so it must be cheap (an atomic load);
    /// `false` (the default) costs the body path nothing.
    fn wants_body(&self, _record: &Record) -> bool {
        false
    }
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn finished(&self, _: &Record) {}
}

/// The guard. Fields are filled in as the pipeline learns them.
pub(crate) struct Finish {
    observer: Arc<dyn Observer>,
    started: Instant,
    pub(crate) record: Record,
    pub(crate) counters: Option<Arc<ReqCounters>>,
    pub(crate) upstream_started: Option<Instant>,
    fired: bool,
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("record", &self.record)
            .finish()
    }
}

impl Finish {
    /// `arrived`: when the request arrived (the record's `ts`).
    pub(crate) fn new(
        observer: Arc<dyn Observer>,
        arrived: OffsetDateTime,
        method: Method,
        request_id: HeaderValue,
        ip: IpAddr,
        user_agent: Option<HeaderValue>,
    ) -> Self {
        observer.started();
        Self {
            observer,
            started: Instant::now(),
            record: Record::arrived(arrived, method, request_id, ip, user_agent),
            counters: None,
            upstream_started: None,
            fired: false,
        }
    }

    /// Fires the hook. `complete` is false when the client went away first.
    pub(crate) fn fire(&mut self, complete: bool, bytes_out: u64) {
        if self.fired {
            return;
        }
        self.fired = true;
        let r = &mut self.record;
        r.duration = self.started.elapsed();
        r.bytes_out = bytes_out;
        if let Some(c) = &self.counters {
            r.bytes_in = c.bytes_in.load(Ordering::Relaxed);
        }
        if !complete {
            r.decision = Decision::ClientClosed;
        }
        if let Some(k) = &r.key
            && !k.is_expired(r.ts)
        {
            let ms = (r.ts.unix_timestamp_nanos() / 1_000_000) as i64;
            k.state.last_used.fetch_max(ms, Ordering::Relaxed);
        }
        self.observer.finished(&self.record);
    }

    /// Marks the moment the upstream answered.
    pub(crate) fn upstream_answered(&mut self) {
        if let Some(s) = self.upstream_started {
            self.record.upstream = Some(s.elapsed());
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before the response completed: the client went away.
        self.fire(false, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.99",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.1",
        ] {
            let a: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(a, &mut buf), a.to_string());
        }
    }
}
