//! The body of the simulator's answers: whole, or one byte at a time for a slow-loris gateway.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// An answer's body as hyper sends it.
pub(crate) struct SimBody {
    kind: Kind,
}

enum Kind {
    Whole(Full<Bytes>),
    Dribble {
        rest: Bytes,
        interval: Duration,
        // Boxed because `Sleep` is `!Unpin` and the body is polled through `Pin<&mut Self>` without a projection.
        wait: Option<Pin<Box<Sleep>>>,
    },
}

impl SimBody {
    pub(crate) fn whole(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Whole(body),
        }
    }

    /// `bytes`, one byte after each `interval`.
    pub(crate) fn dribble(bytes: Bytes, interval: Duration) -> Self {
        Self {
            kind: Kind::Dribble {
                rest: bytes,
                interval,
                wait: None,
            },
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Whole(body) => Pin::new(body).poll_frame(cx),
            Kind::Dribble {
                rest,
                interval,
                wait,
            } => {
                if rest.is_empty() {
                    return Poll::Ready(None);
                }
                let sleep = wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(*interval)));
                ready!(sleep.as_mut().poll(cx));
                *wait = None;
                Poll::Ready(Some(Ok(Frame::data(rest.split_to(1)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(body) => body.is_end_stream(),
            Kind::Dribble { rest, .. } => rest.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(body) => body.size_hint(),
            Kind::Dribble { rest, .. } => SizeHint::with_exact(rest.len() as u64),
        }
    }
}
