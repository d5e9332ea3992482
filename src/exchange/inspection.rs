//! The answer side of an exchange: deciding from the head, or from the body read up to the inspection limit (and
//! decoded when compressed), whether the gateway rejected the token.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::Body;
use tracing::{debug, warn};

use super::buffer::Buffer;
use super::policy::AuthPolicy;
use super::response_body::ResponseBody;
use crate::coding::{ContentCoding, decode_bounded};
use crate::error::{BoxError, Error};

// Lives on the stack for one call; boxing the response to shrink it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inspected<B> {
    Accepted(Response<ResponseBody<B>>),
    Rejected,
}

/// The whole inspection as one future, for the async paths (the replay, the reqwest adapter); the middleware's
/// future drives an [`Inspection`] itself.
pub(crate) async fn inspect<B>(
    policy: &AuthPolicy,
    response: Response<B>,
) -> Result<Inspected<B>, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    match Inspection::begin(policy, response) {
        Begun::Decided(inspected) => Ok(inspected),
        Begun::Reading(mut inspection) => {
            std::future::poll_fn(|cx| inspection.poll_inspect(cx, policy)).await
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
    pub(crate) fn begin(policy: &AuthPolicy, response: Response<B>) -> Begun<B> {
        if let Some(rejected) = policy.rejection.judge_head(response.status()) {
            return Begun::Decided(if rejected {
                Inspected::Rejected
            } else {
                Inspected::Accepted(response.map(ResponseBody::streaming))
            });
        }
        let limit = policy.inspect_limit as u64;
        let coding = ContentCoding::of(response.headers());
        if !coding.is_readable() {
            policy.manager.note_uninspected();
            if policy.manager.first_unreadable_coding() {
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
            policy.manager.note_uninspected();
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

    // One poll loop: reading, bounding and decoding the body are steps of the same loop over its frames.
    pub(crate) fn poll_inspect(
        &mut self,
        cx: &mut Context<'_>,
        policy: &AuthPolicy,
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
                        policy.manager.note_uninspected();
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
        let rule = &policy.rejection;
        let rejected = match self.coding {
            ContentCoding::Identity => rule.rejects_body(&bytes),
            // An empty body holds no rejection, whatever its label says.
            _ if bytes.is_empty() => false,
            coding => match decode_bounded(coding, &bytes, self.limit as usize) {
                Some(decoded) => rule.rejects_body(&decoded),
                None => {
                    policy.manager.note_uninspected();
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
