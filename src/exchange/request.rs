//! The request side of an exchange: the caller's body read whole under a limit, the copy of the head a replay
//! needs, and the request with the token in it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body::Body;
use pin_project_lite::pin_project;

use super::buffer::Buffer;
use super::policy::{AuthPolicy, Placement};
use crate::envelope::inject_token;
use crate::envelope::splice::TokenSlots;
use crate::error::{BoxError, Error};
use crate::token::ActiveToken;

/// The caller's body read whole under `limit`, as one future (the reqwest adapter); the middleware's future
/// polls a [`RequestReader`] itself.
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

/// Where the token will go in `body`, found before any token is asked for: a body the layer refuses is refused
/// before it costs a login. `None` when the token goes in a header.
pub(crate) fn token_slots(policy: &AuthPolicy, body: &Bytes) -> Result<Option<TokenSlots>, Error> {
    match &policy.placement {
        Placement::JsonBody(field) => Ok(Some(TokenSlots::find(body, *field)?)),
        Placement::Header { .. } => Ok(None),
    }
}

/// The request with `token` in it, written into the slots [`token_slots`] found in `body` beforehand.
pub(crate) fn authorised_request_in(
    policy: &AuthPolicy,
    mut head: http::request::Parts,
    body: &Bytes,
    slots: Option<&TokenSlots>,
    token: &ActiveToken,
) -> Result<Request<Bytes>, Error> {
    let Some(slots) = slots else {
        return authorised_request(policy, head, body, token);
    };
    if policy.identity_encoding {
        head.headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let rewritten = Bytes::from(slots.write(body, token.json_literal()));
    head.headers.remove(CONTENT_LENGTH);
    Ok(Request::from_parts(head, rewritten))
}

/// The request with `token` in it: the body validated and spliced in one pass, or the header set.
pub(crate) fn authorised_request(
    policy: &AuthPolicy,
    mut head: http::request::Parts,
    body: &Bytes,
    token: &ActiveToken,
) -> Result<Request<Bytes>, Error> {
    if policy.identity_encoding {
        head.headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let body = match &policy.placement {
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
