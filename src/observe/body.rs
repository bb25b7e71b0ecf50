//! The body every response carries: one keygate made, or the upstream's streamed
//! through. It owns the request's [`Finish`] guard and fires it when the body has
//! been sent, as `upstream_error` when the upstream failed or paused longer than
//! `timeouts.upstream_read` mid-body (the stream is then cut), or as
//! `client_closed` when dropped early.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::observe::record::{BODY_CAPTURE_MAX, CapturedBody, Decision, Finish};
use crate::observe::request_body::{BoxError, IdleTimer, ReqBody};
use crate::pool::Lease;

/// The upstream paused longer than `timeouts.upstream_read` mid-body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream paused longer than timeouts.upstream_read")]
pub(crate) struct UpstreamReadTimeout;

enum Inner {
    Full(Option<Bytes>),
    /// The upstream's body, its pause timer, and the lease on its connection
    /// (given back to the pool when the body has been read to its end).
    Stream(Incoming, IdleTimer, Option<Lease<ReqBody>>),
}

/// Every response body: made by keygate, or the upstream's.
pub(crate) struct ResBody {
    inner: Inner,
    sent: u64,
    finish: Option<Box<Finish>>,
    /// No body is expected (HEAD, 204, 304): complete as soon as the head is sent.
    bodiless: bool,
    /// A copy of the body's start, kept only when an observer asked for it.
    capture: Option<Box<Capture>>,
}

/// The copy being made: at most [`BODY_CAPTURE_MAX`] bytes.
#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, d: &[u8]) {
        let room = BODY_CAPTURE_MAX - self.buf.len();
        if d.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&d[..d.len().min(room)]);
    }
}

impl std::fmt::Debug for ResBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResBody").field("sent", &self.sent).finish()
    }
}

impl ResBody {
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(data)),
            sent: 0,
            finish: None,
            bodiless: false,
            capture: None,
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            sent: 0,
            finish: None,
            bodiless: false,
            capture: None,
        }
    }

    /// The upstream's body; `upstream_read` bounds each pause in it. `lease`: the
    /// connection it comes on, given back to the pool once the body has ended and
    /// the request was sent whole (else the connection closes).
    pub(crate) fn stream(
        body: Incoming,
        lease: Option<Lease<ReqBody>>,
        upstream_read: Duration,
    ) -> Self {
        Self {
            inner: Inner::Stream(body, IdleTimer::new(upstream_read), lease),
            sent: 0,
            finish: None,
            bodiless: false,
            capture: None,
        }
    }

    /// Keeps a copy of the first [`BODY_CAPTURE_MAX`] bytes, handed to the
    /// observer in `record.body` when the body has been sent to its end (not when
    /// it is cut or the client leaves). Call before [`ResBody::attach`].
    pub(crate) fn capture(&mut self) {
        self.capture = Some(Box::default());
    }

    /// Attaches the request's guard; fired when this body is done or dropped.
    pub(crate) fn attach(&mut self, finish: Box<Finish>, bodiless: bool) {
        self.finish = Some(finish);
        self.bodiless = bodiless;
        if bodiless || self.is_end_stream() {
            self.complete();
        }
    }

    fn complete(&mut self) {
        if let Inner::Stream(_, _, lease) = &mut self.inner
            && let Some(lease) = lease.take()
            && self
                .finish
                .as_ref()
                .is_some_and(|f| f.counters.as_ref().is_some_and(|c| c.body_fully_read()))
        {
            // Only a response read to its end, for a request sent whole: anything
            // less (or not known) lets the connection close.
            lease.release();
        }
        if let Some(mut f) = self.finish.take() {
            if let Some(c) = self.capture.take() {
                f.record.body = Some(CapturedBody {
                    bytes: Bytes::from(c.buf),
                    truncated: c.truncated,
                });
            }
            f.fire(true, self.sent);
        }
    }

    /// The upstream's body failed or stalled: the client's stream is cut.
    fn cut(&mut self, stalled: bool) {
        // An abandoned response never goes back to the pool.
        if let Inner::Stream(_, _, lease) = &mut self.inner {
            lease.take();
        }
        if let Some(mut f) = self.finish.take() {
            f.record.decision = Decision::UpstreamError;
            f.record.reason = Some(if stalled {
                "upstream_timeout"
            } else {
                "upstream_unavailable"
            });
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
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res: Poll<Option<Result<Frame<Bytes>, BoxError>>> = match &mut this.inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Stream(body, timer, _) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending if timer.expired(cx) => {
                    tracing::debug!(
                        "upstream body paused longer than timeouts.upstream_read; cutting the response"
                    );
                    Poll::Ready(Some(Err(Box::new(UpstreamReadTimeout))))
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => {
                    timer.progress();
                    Poll::Ready(r.map(|f| f.map_err(BoxError::from)))
                }
            },
        };
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                    if let Some(c) = &mut this.capture {
                        c.push(d);
                    }
                }
                if this.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            // The upstream failed or stalled mid-body: the client's stream is cut.
            Poll::Ready(Some(Err(e))) => {
                let stalled = e.is::<UpstreamReadTimeout>();
                this.cut(stalled);
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(d) => d.is_none(),
            Inner::Stream(b, ..) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(b, ..) => b.size_hint(),
        }
    }
}
