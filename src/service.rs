//! [`PaynetAuth`]: the service the layer makes, and the body of its responses.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::{debug, warn};

use crate::PaynetAuthLayer;
use crate::coding::{ContentCoding, decode_bounded};
use crate::envelope::inject_token;
use crate::error::{BoxError, Error};
use crate::future::ResponseFuture;
use crate::layer::{Placement, RejectionRule, Settings};
use crate::token::{ActiveToken, Generation, LoginSender, TokenManager};

/// Authorises requests to the wrapped service with the manager's token. Made by [`PaynetAuthLayer`].
///
/// The wrapped service must be `Clone` (see [`PaynetAuthLayer`] for every bound, in plain words). A call clones it
/// once, as tower's services do, so that the instance `poll_ready` readied is the one that sends. A call that has
/// to wait for a token first lets that readied instance go (with any permit or buffer slot it holds) and readies a
/// clone once the token is there; a rejected call is replayed through a clone, which waits for readiness again.
#[derive(Debug, Clone)]
pub struct PaynetAuth<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> PaynetAuth<S> {
    /// Wraps `inner` with the Paynet preset of [`PaynetAuthLayer::new`].
    pub fn new(inner: S, manager: TokenManager) -> Self {
        Self::from_settings(inner, PaynetAuthLayer::new(manager).settings())
    }

    /// A layer of the Paynet preset.
    pub fn layer(manager: TokenManager) -> PaynetAuthLayer {
        PaynetAuthLayer::new(manager)
    }

    pub(crate) fn from_settings(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    /// The token manager.
    pub fn manager(&self) -> &TokenManager {
        &self.settings.manager
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PaynetAuth<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::Inner(e.into()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready; the one that poll_ready readied is the one to call, see
        // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(ready, Arc::clone(&self.settings), request)
    }
}

/// The request path once the body is buffered: token, send, inspect, and at most one replay. The tower service
/// runs the same steps as a state machine ([`ResponseFuture`]) and shares [`replay`] with this.
#[cfg(feature = "reqwest")]
pub(crate) async fn authorise_buffered<B, E, Fut>(
    settings: &Settings,
    parts: http::request::Parts,
    body: Bytes,
    mut send: impl FnMut(Request<Bytes>) -> Fut,
    login: impl Fn() -> LoginSender,
) -> Result<Response<ResponseBody<B>>, Error>
where
    Fut: std::future::Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let token = match settings.manager.cached() {
        Some(token) => token,
        None => settings.manager.token(login()).await?,
    };
    let copy = HeadCopy::of(&parts);
    let first = authorised_request(settings, parts, &body, &token)?;
    let response = send(first).await.map_err(|e| Error::Inner(e.into()))?;
    if let Inspected::Accepted(response) = inspect(settings, response).await? {
        return Ok(response);
    }
    replay(
        settings,
        copy.into_parts(),
        &body,
        token.generation(),
        send,
        login,
    )
    .await
}

/// After the gateway rejected `rejected`: a newer token, and the request sent once more with it.
pub(crate) async fn replay<B, E, Fut>(
    settings: &Settings,
    parts: http::request::Parts,
    body: &Bytes,
    rejected: Generation,
    mut send: impl FnMut(Request<Bytes>) -> Fut,
    login: impl Fn() -> LoginSender,
) -> Result<Response<ResponseBody<B>>, Error>
where
    Fut: std::future::Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let manager = &settings.manager;
    let fresh = manager.token_after(rejected, login()).await?;
    let replay = authorised_request(settings, parts, body, &fresh)?;
    let response = send(replay).await.map_err(|e| Error::Inner(e.into()))?;
    match inspect(settings, response).await? {
        Inspected::Accepted(response) => Ok(response),
        Inspected::Rejected => {
            warn!(
                key = %manager.credential_key(),
                generation = fresh.generation().0,
                "gateway rejected a freshly refreshed token; not replaying again"
            );
            Err(Error::RejectedAfterRefresh {
                generation: fresh.generation().0,
            })
        }
    }
}

#[cfg(feature = "reqwest")]
pub(crate) async fn read_request_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut reader = std::pin::pin!(RequestReader::new(body, headers, limit)?);
    std::future::poll_fn(|cx| reader.as_mut().poll_read(cx)).await
}

pin_project! {
    /// Reads a request body whole, frame by frame rather than through `collect()`, whose buffer list costs an
    /// allocation per call even for the usual single-chunk body.
    pub(crate) struct RequestReader<B> {
        #[pin]
        body: B,
        buffer: Buffer,
        limit: usize,
    }
}

impl<B> RequestReader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Fails at once when the declared length or the body's own size hint is over `limit`.
    pub(crate) fn new(body: B, headers: &HeaderMap, limit: usize) -> Result<Self, Error> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = declared
            .into_iter()
            .chain(Some(body.size_hint().lower()))
            .any(|len| len > limit as u64);
        if too_large {
            return Err(Error::RequestTooLarge { limit });
        }
        Ok(Self {
            body,
            buffer: Buffer::default(),
            limit,
        })
    }

    pub(crate) fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, Error>> {
        let mut this = self.project();
        while let Some(frame) = ready!(this.body.as_mut().poll_frame(cx)) {
            let frame = frame.map_err(|e| Error::RequestBody(e.into()))?;
            if let Ok(mut data) = frame.into_data() {
                this.buffer.push(data.copy_to_bytes(data.remaining()));
                if this.buffer.len() > *this.limit {
                    return Poll::Ready(Err(Error::RequestTooLarge { limit: *this.limit }));
                }
            }
        }
        Poll::Ready(Ok(std::mem::take(this.buffer).into_bytes()))
    }
}

/// What a replay needs of the request head. The first send takes the head itself; this copy keeps the headers as
/// a flat list, one allocation where a cloned header map costs two, and rebuilds the map only for a replay.
pub(crate) struct HeadCopy {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    extensions: http::Extensions,
}

impl HeadCopy {
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            extensions: parts.extensions.clone(),
        }
    }

    pub(crate) fn into_parts(self) -> http::request::Parts {
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = self.method;
        head.uri = self.uri;
        head.version = self.version;
        head.headers = HeaderMap::with_capacity(self.headers.len());
        // `append`, so that repeated headers come back as they were, in order.
        for (name, value) in self.headers {
            head.headers.append(name, value);
        }
        head.extensions = self.extensions;
        head
    }
}

pub(crate) fn authorised_request(
    settings: &Settings,
    mut head: http::request::Parts,
    body: &Bytes,
    token: &ActiveToken,
) -> Result<Request<Bytes>, Error> {
    if settings.identity_encoding {
        head.headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let body = match &settings.placement {
        Placement::JsonBody(field) => {
            let rewritten = Bytes::from(inject_token(body, *field, token.json_literal())?);
            // The body changed length, so a declared Content-Length would be stale. Removing it (instead of writing
            // the new one, which allocates) is enough: the body's exact size hint gives the length on the wire.
            head.headers.remove(CONTENT_LENGTH);
            rewritten
        }
        Placement::Header { name, prefix } => {
            let mut value = HeaderValue::try_from(format!(
                "{prefix}{}",
                secrecy::ExposeSecret::expose_secret(token.secret())
            ))
            .map_err(|_| Error::TokenNotHeaderSafe {
                header: name.clone(),
            })?;
            value.set_sensitive(true);
            head.headers.insert(name.clone(), value);
            body.clone()
        }
    };
    Ok(Request::from_parts(head, body))
}

// Lives on the stack for one call; boxing the response to shrink it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inspected<B> {
    Accepted(Response<ResponseBody<B>>),
    Rejected,
}

async fn inspect<B>(settings: &Settings, response: Response<B>) -> Result<Inspected<B>, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    match Inspection::begin(settings, response) {
        Begun::Decided(inspected) => Ok(inspected),
        Begun::Reading(mut inspection) => {
            std::future::poll_fn(|cx| inspection.poll_inspect(cx, settings)).await
        }
    }
}

/// How an inspection starts: decided by the head alone, or with the body to read.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Begun<B> {
    Decided(Inspected<B>),
    Reading(Inspection<B>),
}

/// Reading a response body whole (up to the inspection limit) to look for a rejection.
pub(crate) struct Inspection<B> {
    /// Taken when the inspection ends.
    response: Option<(http::response::Parts, B)>,
    buffer: Buffer,
    limit: u64,
    /// How the body is encoded: a compressed one is decoded (a bounded copy) before the detector reads it.
    coding: ContentCoding,
}

impl<B> Inspection<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn begin(settings: &Settings, response: Response<B>) -> Begun<B> {
        match &settings.rejection {
            RejectionRule::HttpStatus(status) => {
                return Begun::Decided(if response.status() == *status {
                    Inspected::Rejected
                } else {
                    Inspected::Accepted(response.map(ResponseBody::streaming))
                });
            }
            RejectionRule::JsonRpcError { .. } => {}
        }
        let limit = settings.inspect_limit as u64;
        let coding = ContentCoding::of(response.headers());
        if !coding.is_readable() {
            settings.manager.note_uninspected();
            if settings.manager.first_unreadable_coding() {
                // Once per manager: every answer may come this way, and each is counted anyway.
                warn!(
                    content_encoding = ?response.headers().get(CONTENT_ENCODING),
                    "gateway answered in a content coding this build cannot read: such answers are passed on \
                     without looking for a rejection (ask for identity encoding, or decode them below the layer)"
                );
            }
            return Begun::Decided(Inspected::Accepted(response.map(ResponseBody::streaming)));
        }
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) || response.body().size_hint().lower() > limit {
            settings.manager.note_uninspected();
            debug!(
                limit,
                "response declared longer than the inspection limit: passed on uninspected"
            );
            return Begun::Decided(Inspected::Accepted(response.map(ResponseBody::streaming)));
        }
        Begun::Reading(Self {
            response: Some(response.into_parts()),
            buffer: Buffer::default(),
            limit,
            coding,
        })
    }

    pub(crate) fn poll_inspect(
        &mut self,
        cx: &mut Context<'_>,
        settings: &Settings,
    ) -> Poll<Result<Inspected<B>, Error>> {
        let (_, body) = self
            .response
            .as_mut()
            .expect("inspection polled after it ended");
        let mut trailers = None;
        while let Some(frame) = ready!(Pin::new(&mut *body).poll_frame(cx)) {
            let frame = frame.map_err(|e| Error::ResponseBody(e.into()))?;
            match frame.into_data() {
                Ok(data) => {
                    self.buffer.push(data);
                    if self.buffer.len() as u64 > self.limit {
                        // Too long to be a rejection worth parsing: hand it on as it comes.
                        settings.manager.note_uninspected();
                        debug!(
                            limit = self.limit,
                            "response streamed past the inspection limit: passed on uninspected"
                        );
                        let (parts, body) = self.response.take().expect("taken once");
                        let head = std::mem::take(&mut self.buffer).into_bytes();
                        let body = ResponseBody::resumed(head, body);
                        return Poll::Ready(Ok(Inspected::Accepted(Response::from_parts(
                            parts, body,
                        ))));
                    }
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break;
                }
            }
        }
        let (parts, _) = self.response.take().expect("taken once");
        let bytes = std::mem::take(&mut self.buffer).into_bytes();
        let Some(detector) = &settings.detector else {
            unreachable!("only a JSON-RPC rule reads the body, and it always has a detector")
        };
        let rejected = match self.coding {
            ContentCoding::Identity => detector.is_rejection(&bytes),
            // An empty body holds no rejection, whatever its label says.
            _ if bytes.is_empty() => false,
            coding => match decode_bounded(coding, &bytes, self.limit as usize) {
                Some(decoded) => detector.is_rejection(&decoded),
                None => {
                    settings.manager.note_uninspected();
                    debug!(
                        ?coding,
                        limit = self.limit,
                        "compressed response does not decode within the inspection limit: passed on uninspected"
                    );
                    false
                }
            },
        };
        if rejected {
            return Poll::Ready(Ok(Inspected::Rejected));
        }
        // Handed on as it came: a compressed answer stays compressed, with its headers, for the decoder above.
        Poll::Ready(Ok(Inspected::Accepted(Response::from_parts(
            parts,
            ResponseBody::buffered(bytes, trailers),
        ))))
    }
}

/// Collects data frames without copying when the body arrives in one chunk, as it usually does.
#[derive(Default)]
struct Buffer {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
}

impl Buffer {
    fn push(&mut self, data: Bytes) {
        match (&mut self.first, &mut self.rest) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                self.rest = Some(joined);
            }
            (Some(_), Some(rest)) => rest.extend_from_slice(&data),
        }
    }

    fn len(&self) -> usize {
        match (&self.first, &self.rest) {
            (_, Some(rest)) => rest.len(),
            (Some(first), None) => first.len(),
            (None, None) => 0,
        }
    }

    fn into_bytes(self) -> Bytes {
        match (self.first, self.rest) {
            (_, Some(rest)) => rest.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        }
    }
}

pin_project! {
    /// The body of a response that went through [`PaynetAuth`]: either read whole for inspection, or streamed
    /// from the inner service (possibly after a first part that was read).
    pub struct ResponseBody<B> {
        head: Option<Bytes>,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> ResponseBody<B> {
    fn streaming(body: B) -> Self {
        Self {
            head: None,
            trailers: None,
            rest: Some(body),
        }
    }

    fn resumed(head: Bytes, body: B) -> Self {
        Self {
            head: Some(head).filter(|h| !h.is_empty()),
            trailers: None,
            rest: Some(body),
        }
    }

    fn buffered(bytes: Bytes, trailers: Option<HeaderMap>) -> Self {
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
