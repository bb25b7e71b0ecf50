//! The body every response carries: one keygate made, or the upstream's streamed
//! through. It owns the request's [`Finish`] guard and fires it when the body has
//! been sent, or as `client_closed` when dropped early.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::observe::record::Finish;

enum Inner {
    Full(Option<Bytes>),
    Stream(Incoming),
}

/// Every response body: made by keygate, or the upstream's.
pub(crate) struct ResBody {
    inner: Inner,
    sent: u64,
    finish: Option<Box<Finish>>,
    /// No body is expected (HEAD, 204, 304): complete as soon as the head is sent.
    bodiless: bool,
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
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            sent: 0,
            finish: None,
            bodiless: false,
        }
    }

    pub(crate) fn stream(body: Incoming) -> Self {
        Self {
            inner: Inner::Stream(body),
            sent: 0,
            finish: None,
            bodiless: false,
        }
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
