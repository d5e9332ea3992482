//! [`PaynetAuth`]: the service the layer makes, and the body of its responses.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::Either;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_service::Service;
use tracing::warn;

use crate::PaynetAuthLayer;
use crate::body::inject_token;
use crate::error::{BoxError, Error};
use crate::future::ResponseFuture;
use crate::layer::{Placement, RejectionRule, Settings};
use crate::token::{ActiveToken, LoginSender, TokenManager};

/// Authorises requests to the wrapped service with the manager's token. Made by [`PaynetAuthLayer`].
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
    type Future = ResponseFuture<Self::Response>;

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
        let settings = Arc::clone(&self.settings);
        ResponseFuture::new(authorise(ready, settings, request).boxed())
    }
}

async fn authorise<S, ReqBody, ResBody>(
    ready: S,
    settings: Arc<Settings>,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, Error>
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
    let (parts, body) = request.into_parts();
    let body = read_request_body(body, &parts.headers, settings.max_request_body).await?;
    let template = ready.clone();
    let login_template = ready.clone();
    // The service that poll_ready readied sends the first request; a replay goes through a fresh clone.
    let mut ready = Some(ready);
    let send = move |request: Request<Bytes>| {
        let request = request.map(Full::new);
        match ready.take() {
            Some(mut ready) => Either::Left(ready.call(request)),
            None => Either::Right(template.clone().oneshot(request)),
        }
    };
    let login = move || LoginSender::from_service(login_template.clone());
    authorise_buffered(&settings, parts, body, send, login).await
}

/// The request path once the body is buffered: token, send, inspect, and at most one replay. Shared by the tower
/// service and the reqwest-middleware adapter.
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
    let manager = &settings.manager;
    let token = match manager.cached() {
        Some(token) => token,
        None => manager.token(login()).await?,
    };
    // The first send consumes a copy of the head; the original stays for a replay.
    let first = authorised_request(settings, clone_head(&parts), &body, &token)?;
    let response = send(first).await.map_err(|e| Error::Inner(e.into()))?;
    if let Inspected::Accepted(response) = inspect(settings, response).await? {
        return Ok(response);
    }
    let fresh = manager.token_after(token.generation(), login()).await?;
    let replay = authorised_request(settings, parts, &body, &fresh)?;
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

pub(crate) async fn read_request_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
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
    // Read frame by frame rather than through `collect()`, whose buffer list costs an allocation per call even
    // for the usual single-chunk body.
    let mut body = std::pin::pin!(body);
    let mut buffer = Buffer::default();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| Error::RequestBody(e.into()))?;
        if let Ok(mut data) = frame.into_data() {
            buffer.push(data.copy_to_bytes(data.remaining()));
            if buffer.len() > limit {
                return Err(Error::RequestTooLarge { limit });
            }
        }
    }
    Ok(buffer.into_bytes())
}

fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head.extensions = parts.extensions.clone();
    head
}

fn authorised_request(
    settings: &Settings,
    mut head: http::request::Parts,
    body: &Bytes,
    token: &ActiveToken,
) -> Result<Request<Bytes>, Error> {
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
enum Inspected<B> {
    Accepted(Response<ResponseBody<B>>),
    Rejected,
}

async fn inspect<B>(settings: &Settings, response: Response<B>) -> Result<Inspected<B>, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let detector = match (&settings.rejection, &settings.detector) {
        (RejectionRule::HttpStatus(status), _) => {
            if response.status() == *status {
                return Ok(Inspected::Rejected);
            }
            return Ok(Inspected::Accepted(response.map(ResponseBody::streaming)));
        }
        (RejectionRule::JsonRpcError { .. }, Some(detector)) => detector,
        (RejectionRule::JsonRpcError { code }, None) => {
            unreachable!("a detector is built for every JSON-RPC rule (code {code})")
        }
    };
    let limit = settings.inspect_limit as u64;
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) || response.body().size_hint().lower() > limit {
        return Ok(Inspected::Accepted(response.map(ResponseBody::streaming)));
    }
    let (parts, mut body) = response.into_parts();
    let mut buffer = Buffer::default();
    let mut trailers = None;
    loop {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| Error::ResponseBody(e.into()))?;
        match frame.into_data() {
            Ok(data) => {
                buffer.push(data);
                if buffer.len() as u64 > limit {
                    // Too long to be a rejection worth parsing: hand it on as it comes.
                    let body = ResponseBody::resumed(buffer.into_bytes(), body);
                    return Ok(Inspected::Accepted(Response::from_parts(parts, body)));
                }
            }
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                break;
            }
        }
    }
    let bytes = buffer.into_bytes();
    if detector.is_rejection(&bytes) {
        return Ok(Inspected::Rejected);
    }
    Ok(Inspected::Accepted(Response::from_parts(
        parts,
        ResponseBody::buffered(bytes, trailers),
    )))
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
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        hint.set_lower(hint.lower() + head);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}
