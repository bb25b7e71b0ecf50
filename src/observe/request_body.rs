//! The client's request body on its way upstream: counts bytes, enforces
//! `limits.max_body_bytes` (it fails the stream past the limit, and the pipeline
//! answers `413` if the upstream has not answered yet) and `timeouts.client_body_read`
//! (`408`), and tells a body the client framed badly (`400 bad_request_body`) from
//! an upstream failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::observe::record::ReqCounters;

/// What a body stream fails with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest pause allowed between two frames of a body. The timer is made on
/// the first pause only and re-armed (not re-made) on later ones.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            sleep: None,
            armed: false,
        }
    }

    /// The body made progress: the next pause starts a new wait.
    pub(crate) fn progress(&mut self) {
        self.armed = false;
    }

    /// The body is pending: has the pause lasted longer than allowed?
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.idle;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// The client paused longer than `timeouts.client_body_read` in its body.
#[derive(Debug, thiserror::Error)]
#[error("the client paused longer than timeouts.client_body_read in its request body")]
pub(crate) struct ClientBodyTimeout;

#[derive(Debug, thiserror::Error)]
#[error("request body is larger than limits.max_body_bytes")]
pub(crate) struct BodyTooLarge;

/// The client's request body on its way upstream.
#[derive(Debug)]
pub(crate) struct ReqBody {
    /// `None`: an empty body (a replay of a bodiless request).
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    counters: Arc<ReqCounters>,
    timer: IdleTimer,
}

impl ReqBody {
    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        idle: std::time::Duration,
        counters: Arc<ReqCounters>,
    ) -> Self {
        if inner.is_end_stream() {
            counters.mark_complete();
        }
        Self {
            inner: Some(inner),
            limit,
            seen: 0,
            counters,
            timer: IdleTimer::new(idle),
        }
    }
}

impl ReqBody {
    /// An empty body sharing `counters` (a retried bodiless request).
    pub(crate) fn empty_like(&self) -> Self {
        Self {
            inner: None,
            limit: self.limit,
            seen: 0,
            counters: self.counters.clone(),
            // Never armed: an empty body has no frame to wait for.
            timer: IdleTimer::new(std::time::Duration::from_secs(1)),
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if polled.is_ready() {
            this.timer.progress();
        }
        match polled {
            Poll::Pending if this.timer.expired(cx) => {
                this.counters.client_timeout.store(true, Ordering::Relaxed);
                this.counters.mark_done();
                Poll::Ready(Some(Err(Box::new(ClientBodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.counters.mark_complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // Reading the client's body failed: bad chunked framing, or the
                // client broke the body off.
                this.counters.client_error.store(true, Ordering::Relaxed);
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
                if inner.is_end_stream() {
                    this.counters.mark_complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
