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

/// What a replay needs of the request head. The first send takes the head itself; this copy keeps the headers'
/// names and values in one buffer: one allocation however many headers there are, and no header value cloned (the
/// first clone of a value built from a `&str` allocates a shared buffer for it, an allocation per such value). The
/// header map is rebuilt from the buffer only for a replay, which is rare.
pub(crate) struct HeadCopy {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    /// Each header in order: whether its value is sensitive (one byte), the lengths of its name and its value
    /// (native-endian `usize`s), then the name's bytes and the value's.
    headers: Box<[u8]>,
    extensions: http::Extensions,
}

const LENGTH: usize = size_of::<usize>();

impl HeadCopy {
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        let size = parts
            .headers
            .iter()
            .map(|(name, value)| 1 + 2 * LENGTH + name.as_str().len() + value.len())
            .sum();
        // Sized exactly, so that `into_boxed_slice` keeps the allocation.
        let mut headers = Vec::with_capacity(size);
        for (name, value) in &parts.headers {
            headers.push(u8::from(value.is_sensitive()));
            headers.extend_from_slice(&name.as_str().len().to_ne_bytes());
            headers.extend_from_slice(&value.len().to_ne_bytes());
            headers.extend_from_slice(name.as_str().as_bytes());
            headers.extend_from_slice(value.as_bytes());
        }
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: headers.into_boxed_slice(),
            extensions: parts.extensions.clone(),
        }
    }

    pub(crate) fn into_parts(self) -> http::request::Parts {
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = self.method;
        head.uri = self.uri;
        head.version = self.version;
        head.headers = HeaderMap::with_capacity(copied_headers(&self.headers).count());
        // `append`, so that repeated headers come back as they were, in order.
        for (sensitive, name, value) in copied_headers(&self.headers) {
            // Both were copied from a valid name and value, so both parse again.
            let (Ok(name), Ok(mut value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            else {
                continue;
            };
            value.set_sensitive(sensitive);
            head.headers.append(name, value);
        }
        head.extensions = self.extensions;
        head
    }
}

/// The headers [`HeadCopy::of`] wrote into `buffer`, in order: whether the value is sensitive, the name, the value.
fn copied_headers(mut buffer: &[u8]) -> impl Iterator<Item = (bool, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        let (&sensitive, rest) = buffer.split_first()?;
        let (name_length, rest) = rest.split_first_chunk::<LENGTH>()?;
        let (value_length, rest) = rest.split_first_chunk::<LENGTH>()?;
        let (name, rest) = rest.split_at_checked(usize::from_ne_bytes(*name_length))?;
        let (value, rest) = rest.split_at_checked(usize::from_ne_bytes(*value_length))?;
        buffer = rest;
        Some((sensitive != 0, name, value))
    })
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

#[cfg(test)]
mod tests {
    use http::header::{AUTHORIZATION, CONTENT_TYPE};

    use super::*;

    /// A replay resends the caller's head as it was: every header in order, repeated ones included, custom names,
    /// bytes past ASCII, and the sensitive flag.
    #[test]
    fn the_head_copy_gives_back_the_head_it_copied() {
        let mut sensitive = HeaderValue::from_str("Basic dXNlcjpwYXNz").unwrap();
        sensitive.set_sensitive(true);
        let request = Request::post("http://gateway.test/gw/v2/service?lang=ru")
            .version(http::Version::HTTP_11)
            .header(CONTENT_TYPE, "application/json")
            .header("x-trace", "first")
            .header(AUTHORIZATION, sensitive)
            .header("x-trace", "second")
            .header("x-latin-1", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .header("x-empty", "")
            .extension(7_u32)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let copy = HeadCopy::of(&parts).into_parts();
        assert_eq!(copy.method, parts.method);
        assert_eq!(copy.uri, parts.uri);
        assert_eq!(copy.version, parts.version);
        assert_eq!(copy.extensions.get::<u32>(), Some(&7));
        let listed = |headers: &HeaderMap| -> Vec<(String, Vec<u8>, bool)> {
            headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        value.as_bytes().to_vec(),
                        value.is_sensitive(),
                    )
                })
                .collect()
        };
        assert_eq!(listed(&copy.headers), listed(&parts.headers));
        assert_eq!(copy.headers.len(), 6);
        assert!(copy.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(
            copy.headers.get_all("x-trace").iter().collect::<Vec<_>>(),
            ["first", "second"]
        );
    }

    #[test]
    fn the_head_copy_of_a_head_without_headers_is_empty() {
        let (parts, ()) = Request::get("http://gateway.test/")
            .body(())
            .unwrap()
            .into_parts();
        let copy = HeadCopy::of(&parts);
        assert!(copy.headers.is_empty());
        assert!(copy.into_parts().headers.is_empty());
    }
}
