//! Body wrappers on the request path.
//!
//! * [`ReqBody`] streams the client's body to the upstream, counting bytes and
//!   enforcing `limits.max_body_bytes` (it fails the stream past the limit, and the
//!   pipeline answers `413` if the upstream has not answered yet).
//! * [`ResBody`] is what every response carries: a body keygate made, or the
//!   upstream's streamed through. It owns the request's [`Finish`] guard and fires it
//!   when the body has been sent, or as `client_closed` when dropped early.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::conn::ConnState;
use crate::record::Finish;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared between the request body and the pipeline.
#[derive(Debug, Default)]
pub struct ReqCounters {
    pub bytes_in: AtomicU64,
    /// The body went past `limits.max_body_bytes`.
    pub over_limit: AtomicBool,
    done: AtomicBool,
    /// The client's body was read to its end.
    complete: AtomicBool,
    done_notify: Notify,
}

impl ReqCounters {
    /// Was the client's body read to its end (so the connection can be reused)?
    pub fn body_fully_read(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
        self.mark_done();
    }

    fn mark_done(&self) {
        self.done.store(true, Ordering::Release);
        self.done_notify.notify_waiters();
    }

    /// Resolves once the whole request body has been sent upstream (or failed).
    pub async fn body_sent(&self) {
        let notified = self.done_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body is larger than limits.max_body_bytes")]
pub struct BodyTooLarge;

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct ReqBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    counters: Arc<ReqCounters>,
}

impl ReqBody {
    pub fn new(inner: Incoming, limit: Option<u64>, counters: Arc<ReqCounters>) -> Self {
        if inner.is_end_stream() {
            counters.mark_complete();
        }
        Self {
            inner,
            limit,
            seen: 0,
            counters,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.counters.mark_complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.counters.mark_done();
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.counters.bytes_in.store(this.seen, Ordering::Relaxed);
                    if this.limit.is_some_and(|l| this.seen > l) {
                        this.counters.over_limit.store(true, Ordering::Relaxed);
                        this.counters.mark_done();
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                if this.inner.is_end_stream() {
                    this.counters.mark_complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Inner {
    Full(Option<Bytes>),
    Stream(Incoming),
}

/// Counts a request as in flight on its connection until dropped (it travels with
/// the response body), so the idle timer never closes a busy connection.
#[derive(Debug)]
pub struct InflightGuard(Arc<ConnState>);

impl InflightGuard {
    pub(crate) fn new(state: Arc<ConnState>) -> Self {
        Self(state)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// Every response body: made by keygate, or the upstream's.
pub struct ResBody {
    inner: Inner,
    sent: u64,
    finish: Option<Box<Finish>>,
    inflight: Option<InflightGuard>,
    /// No body is expected (HEAD, 204, 304): complete as soon as the head is sent.
    bodiless: bool,
}

impl std::fmt::Debug for ResBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResBody").field("sent", &self.sent).finish()
    }
}

impl ResBody {
    pub fn full(data: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(data)),
            sent: 0,
            finish: None,
            inflight: None,
            bodiless: false,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            sent: 0,
            finish: None,
            inflight: None,
            bodiless: false,
        }
    }

    pub fn stream(body: Incoming) -> Self {
        Self {
            inner: Inner::Stream(body),
            sent: 0,
            finish: None,
            inflight: None,
            bodiless: false,
        }
    }

    /// Attaches the request's guard; fired when this body is done or dropped.
    pub fn attach(&mut self, finish: Box<Finish>, bodiless: bool) {
        self.finish = Some(finish);
        self.bodiless = bodiless;
        if bodiless || self.is_end_stream() {
            self.complete();
        }
    }

    /// Keeps the connection's in-flight count up while this body is alive.
    pub fn hold(&mut self, guard: InflightGuard) {
        self.inflight = Some(guard);
    }

    fn complete(&mut self) {
        if let Some(mut f) = self.finish.take() {
            f.fire(true, self.sent);
        }
    }
}

impl Drop for ResBody {
    fn drop(&mut self) {
        if let Some(mut f) = self.finish.take() {
            f.fire(self.bodiless, self.sent);
        }
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let res = match &mut this.inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Stream(body) => Pin::new(body).poll_frame(cx),
        };
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            // The upstream failed mid-body: the client's stream is cut, not complete.
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(d) => d.is_none(),
            Inner::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(b) => b.size_hint(),
        }
    }
}
