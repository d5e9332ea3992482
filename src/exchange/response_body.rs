//! [`ResponseBody`]: the body of an answer handed on, read whole for inspection or streamed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::error::BoxError;

pin_project! {
    /// The body of a response that went through [`PaynetAuth`](crate::PaynetAuth): either read whole for inspection, or streamed
    /// from the inner service (possibly after a first part that was read).
    ///
    /// Either way it yields the bytes the inner service answered, unchanged.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use http_body_util::{BodyExt, Full};
    /// use paynet_auth::{BoxError, PaynetAuth, PaynetLogin, ResponseBody, TokenManager};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
    /// const ANSWER: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"balance":"12.50"}}"#;
    /// # let gateway = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
    /// #     let login = request.uri().path().ends_with("/v2/user");
    /// #     let answer = if login { r#"{"jsonrpc":"2.0","id":1,"result":{"token":"T-1"}}"# } else { ANSWER };
    /// #     Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(answer))))
    /// # });
    /// # let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
    /// # let service = PaynetAuth::new(gateway, TokenManager::builder(login).build()?);
    /// let request = http::Request::post("https://gateway.example/gw/v2/balance")
    ///     .body(Full::new(Bytes::from(r#"{"jsonrpc":"2.0","method":"balance","id":7}"#)))?;
    /// let response: http::Response<ResponseBody<Full<Bytes>>> = service.oneshot(request).await?;
    /// assert_eq!(response.into_body().collect().await?.to_bytes(), ANSWER);
    ///
    /// // The empty body, for a middleware above the layer that answers on its own.
    /// assert!(ResponseBody::<Full<Bytes>>::default().is_end_stream());
    /// # Ok(()) }
    /// ```
    pub struct ResponseBody<B> {
        head: Option<Bytes>,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn streaming(body: B) -> Self {
        Self {
            head: None,
            trailers: None,
            rest: Some(body),
        }
    }

    pub(super) fn resumed(head: Bytes, body: B) -> Self {
        Self {
            head: Some(head).filter(|h| !h.is_empty()),
            trailers: None,
            rest: Some(body),
        }
    }

    pub(super) fn buffered(bytes: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            head: Some(bytes).filter(|h| !h.is_empty()),
            trailers,
            rest: None,
        }
    }
}

/// An empty body, for middleware that answers on its own (tower-http's `TimeoutLayer` answers `408` with one).
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self {
            head: None,
            trailers: None,
            rest: None,
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("buffered", &self.head.as_ref().map(Bytes::len))
            .field("streaming", &self.rest.is_some())
            .finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // Built from an unbounded hint: `SizeHint` panics whenever lower would pass upper, so raising the lower
        // bound of an exact hint before its upper one (as an in-place update would) panics for every buffered body.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(head));
        }
        hint.set_lower(rest.lower().saturating_add(head));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use http::HeaderValue;
    use http_body_util::Full;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use proptest::prelude::*;

    /// A body whose size hint is whatever the test says, and whose frames add up to `len` bytes.
    struct Hinted {
        frames: Vec<Bytes>,
        hint: SizeHint,
    }

    impl Body for Hinted {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.frames.is_empty() {
                return Poll::Ready(None);
            }
            let frame = self.frames.remove(0);
            let len = frame.len() as u64;
            let lower = self.hint.lower().saturating_sub(len);
            let upper = self.hint.upper().map(|u| u.saturating_sub(len));
            let mut hint = SizeHint::new();
            if let Some(upper) = upper {
                hint.set_upper(upper);
            }
            hint.set_lower(lower.min(upper.unwrap_or(u64::MAX)));
            self.hint = hint;
            Poll::Ready(Some(Ok(Frame::data(frame))))
        }

        fn size_hint(&self) -> SizeHint {
            self.hint
        }
    }

    /// What the inner body says of itself: exact, a range, or only a lower bound.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Exact,
        Range,
        Unbounded,
    }

    fn hinted(len: usize, kind: Kind, chunks: usize) -> Hinted {
        let data = Bytes::from(vec![b'x'; len]);
        let step = len.div_ceil(chunks.max(1)).max(1);
        let frames = (0..len)
            .step_by(step)
            .map(|at| data.slice(at..(at + step).min(len)))
            .collect();
        let mut hint = SizeHint::new();
        match kind {
            Kind::Exact => hint.set_exact(len as u64),
            Kind::Range => {
                hint.set_upper(len as u64 + 7);
                hint.set_lower(len as u64 / 2);
            }
            Kind::Unbounded => hint.set_lower(len as u64 / 3),
        }
        Hinted { frames, hint }
    }

    /// Every state of a `ResponseBody` the crate hands out, built the way the inspection builds it.
    fn every_state(
        head: usize,
        rest: usize,
        kind: Kind,
        chunks: usize,
    ) -> Vec<ResponseBody<Hinted>> {
        let head_bytes = Bytes::from(vec![b'h'; head]);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("1"));
        vec![
            ResponseBody::streaming(hinted(rest, kind, chunks)),
            ResponseBody::resumed(head_bytes.clone(), hinted(rest, kind, chunks)),
            ResponseBody::buffered(head_bytes.clone(), None),
            ResponseBody::buffered(head_bytes, Some(trailers)),
            ResponseBody::default(),
        ]
    }

    /// Checks the hint against what the body really yields, at every frame: lower <= remaining <= upper, and
    /// exact when both inner and outer know the length.
    fn check_while_reading(mut body: ResponseBody<Hinted>) -> Result<(), TestCaseError> {
        let mut remaining: Vec<u64> = Vec::new();
        let mut hints = vec![body.size_hint()];
        let mut total = 0u64;
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().now_or_never().expect("in memory") {
            let frame = frame.expect("infallible");
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
            }
            sizes.push(total);
            hints.push(body.size_hint());
        }
        for seen in &sizes {
            remaining.push(total - seen);
        }
        remaining.insert(0, total);
        for (hint, left) in hints.iter().zip(&remaining) {
            prop_assert!(
                hint.lower() <= *left,
                "lower {} > remaining {left}",
                hint.lower()
            );
            if let Some(upper) = hint.upper() {
                prop_assert!(upper >= *left, "upper {upper} < remaining {left}");
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn size_hint_is_consistent_in_every_state(
            head in 0usize..300,
            rest in 0usize..300,
            chunks in 1usize..5,
            kind in prop_oneof![Just(Kind::Exact), Just(Kind::Range), Just(Kind::Unbounded)],
        ) {
            for body in every_state(head, rest, kind, chunks) {
                // `SizeHint` panics on an inconsistent update, so building the hint is half of the check.
                let hint = body.size_hint();
                if let Some(upper) = hint.upper() {
                    prop_assert!(hint.lower() <= upper);
                }
                check_while_reading(body)?;
            }
        }
    }

    #[test]
    fn a_buffered_body_reports_its_exact_length() {
        let body: ResponseBody<Empty<Bytes>> =
            ResponseBody::buffered(Bytes::from_static(b"{\"result\":1}"), None);
        assert_eq!(body.size_hint().exact(), Some(12));
        let empty: ResponseBody<Empty<Bytes>> = ResponseBody::buffered(Bytes::new(), None);
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(
            ResponseBody::<Empty<Bytes>>::default().size_hint().exact(),
            Some(0)
        );
        assert!(ResponseBody::<Empty<Bytes>>::default().is_end_stream());
        let resumed = ResponseBody::resumed(
            Bytes::from_static(b"abc"),
            Full::new(Bytes::from_static(b"de")),
        );
        assert_eq!(resumed.size_hint().exact(), Some(5));
        let stream = StreamBody::new(futures_util::stream::iter(vec![Ok::<
            _,
            std::convert::Infallible,
        >(Frame::data(
            Bytes::from_static(b"de"),
        ))]));
        let unknown = ResponseBody::resumed(Bytes::from_static(b"abc"), stream);
        assert_eq!(unknown.size_hint().lower(), 3);
        assert_eq!(unknown.size_hint().upper(), None);
    }
}
