//! The client's request body on its way upstream: counts bytes and enforces
//! `limits.max_body_bytes` (it fails the stream past the limit, and the pipeline
//! answers `413` if the upstream has not answered yet).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::observe::record::ReqCounters;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("request body is larger than limits.max_body_bytes")]
pub(crate) struct BodyTooLarge;

/// The client's request body on its way upstream.
#[derive(Debug)]
pub(crate) struct ReqBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    counters: Arc<ReqCounters>,
}

impl ReqBody {
    pub(crate) fn new(inner: Incoming, limit: Option<u64>, counters: Arc<ReqCounters>) -> Self {
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
