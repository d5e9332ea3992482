//! One deadline for a whole call: from the moment it is made to the last byte of the answer's body.
//!
//! [`DeadlineLayer`] goes outside [`PaynetAuthLayer`](crate::PaynetAuthLayer), so that everything a call may do
//! (wait for a login, read the answer to look for a rejection, replay once) fits in the caller's budget, and the
//! body it hands back keeps counting against the same deadline. It exists beside tower's and tower-http's
//! timeouts because neither bounds a call end to end: `tower::timeout::Timeout` stops at the answer's head, and
//! tower-http's `TimeoutBody` is an idle timeout, restarted by every frame, which a gateway dribbling its answer a
//! byte at a time never trips. reqwest's own `timeout` is total in the same sense, for its users.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use paynet_auth::deadline::DeadlineLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
//! let gateway = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(30)))
//!     // .layer(paynet_auth_layer) — the deadline covers the login, the inspection and a replay too.
//!     .service(gateway);
//! let response = client.oneshot(http::Request::new(Full::default())).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(&body[..], b"{}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;

/// The error of a call that did not finish within its deadline: before the answer came, or while its body was
/// being read. Nothing says whether the gateway acted on the request: a payment must be looked up, not sent
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    after: Duration,
    reading_body: bool,
}

impl DeadlineExceeded {
    /// The deadline that ran out.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Whether the answer's head had come and its body was still arriving.
    pub fn while_reading_body(&self) -> bool {
        self.reading_body
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = humantime::format_duration(self.after);
        if self.reading_body {
            write!(
                f,
                "the call did not finish within its request timeout ({after}): the answer's body was still arriving"
            )
        } else {
            write!(
                f,
                "the call did not finish within its request timeout ({after}): no answer yet"
            )
        }
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Wraps a service in [`Deadline`]: see the [module](self).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Each call must finish, body included, within `timeout` of being made.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::new(inner, self.timeout)
    }
}

/// A service whose calls must finish, the answer's body included, within a deadline set when each is made.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Deadline<S> {
    /// `inner` with a deadline of `timeout` per call.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<DeadlineBody<ResBody>>;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + self.timeout,
            ))),
            timeout: self.timeout,
        }
    }
}

pin_project! {
    /// The future of [`Deadline`]'s calls.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Boxed so that the body can take it over as it is, still armed for the same instant.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
    }
}

impl<F, B, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<DeadlineBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let sleep = this.sleep.take();
            let timeout = *this.timeout;
            return Poll::Ready(
                result
                    .map(|response| {
                        response.map(|body| DeadlineBody {
                            body,
                            sleep,
                            timeout,
                            expired: false,
                        })
                    })
                    .map_err(Into::into),
            );
        }
        let sleep = this.sleep.as_mut().expect("polled after it answered");
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(Box::new(DeadlineExceeded {
            after: *this.timeout,
            reading_body: false,
        })))
    }
}

pin_project! {
    /// An answer's body that fails with [`DeadlineExceeded`] once its call's deadline passes.
    pub struct DeadlineBody<B> {
        #[pin]
        body: B,
        // `None` once the body has ended or failed: nothing more to bound.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        // The deadline ran out while the body was read: it ends there, whatever else the body has.
        expired: bool,
    }
}

impl<B> fmt::Debug for DeadlineBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return this.body.poll_frame(cx).map_err(Into::into);
        };
        // The body first: a frame that is ready when the deadline passes is still handed on.
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            if !matches!(frame, Some(Ok(_))) {
                *this.sleep = None;
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(sleep.as_mut().poll(cx));
        *this.sleep = None;
        *this.expired = true;
        Poll::Ready(Some(Err(Box::new(DeadlineExceeded {
            after: *this.timeout,
            reading_body: true,
        }))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;

    /// A body that yields one byte per `every`, on tokio's clock.
    struct Dribble {
        left: VecDeque<u8>,
        every: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    }

    impl Body for Dribble {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left.is_empty() {
                return Poll::Ready(None);
            }
            let every = self.every;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
            let byte = self.left.pop_front().expect("checked above");
            Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&[byte])))))
        }
    }

    fn dribbling(
        len: usize,
        every: Duration,
    ) -> impl Service<
        Request<()>,
        Response = Response<Dribble>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<Response<Dribble>, std::convert::Infallible>>,
    > {
        tower::service_fn(move |_: Request<()>| async move {
            Ok(Response::new(Dribble {
                left: vec![b'x'; len].into(),
                every,
                sleep: None,
            }))
        })
    }

    /// The head comes at once, then a byte every 500 ms: 75 bytes would take 37.5 s. The deadline of 30 s ends
    /// the body at 30 s, not 30 s after the last byte.
    #[tokio::test(start_paused = true)]
    async fn a_dribbling_body_ends_at_the_deadline() {
        use tower::ServiceExt;
        let service = DeadlineLayer::new(Duration::from_secs(30))
            .layer(dribbling(75, Duration::from_millis(500)));
        let started = Instant::now();
        let response = service.oneshot(Request::new(())).await.unwrap();
        let error = response.into_body().collect().await.unwrap_err();
        let exceeded = error.downcast_ref::<DeadlineExceeded>().unwrap();
        assert!(exceeded.while_reading_body());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(
            error.to_string(),
            "the call did not finish within its request timeout (30s): the answer's body was still arriving"
        );
    }

    /// A body that ends within the deadline is handed on whole, and nothing fails after it.
    #[tokio::test(start_paused = true)]
    async fn a_body_within_the_deadline_is_whole() {
        use tower::ServiceExt;
        let service = DeadlineLayer::new(Duration::from_secs(30))
            .layer(dribbling(10, Duration::from_millis(500)));
        let response = service.oneshot(Request::new(())).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"xxxxxxxxxx");
    }

    /// An answer whose head does not come in time fails with the deadline, saying no answer came.
    #[tokio::test(start_paused = true)]
    async fn a_head_that_does_not_come_ends_at_the_deadline() {
        use tower::ServiceExt;
        let service = DeadlineLayer::new(Duration::from_secs(2)).layer(tower::service_fn(
            |_: Request<()>| async {
                std::future::pending::<()>().await;
                Ok::<_, std::convert::Infallible>(Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            },
        ));
        let error = service.oneshot(Request::new(())).await.unwrap_err();
        let exceeded = error.downcast_ref::<DeadlineExceeded>().unwrap();
        assert!(!exceeded.while_reading_body());
    }
}
