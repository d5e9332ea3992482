//! The response future of [`PaynetAuth`](crate::PaynetAuth).
//!
//! The hot path (body read, token cached, first answer accepted) is a state machine over the inner service's own
//! future, so a call costs no allocation for the future itself. Waiting for a token and replaying a rejected
//! request are rare and each run as one boxed future; the replay shares its code with the reqwest-middleware
//! adapter.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_service::Service;

use crate::envelope::splice::TokenSlots;
use crate::error::{BoxError, Error, TokenError};
use crate::exchange::{
    AuthPolicy, Begun, HeadCopy, Inspected, Inspection, RequestReader, ResponseBody,
    authorised_request_in, replay, token_slots,
};
use crate::record::Generation;
use crate::token::{ActiveToken, LoginSender};

type Output<B> = Result<Response<ResponseBody<B>>, Error>;

pin_project! {
    /// The future [`PaynetAuth`](crate::PaynetAuth) returns. Like most futures, it panics if polled again
    /// after it completed.
    ///
    /// It runs the whole exchange: the token, the send, the inspection of the answer and, after a rejection, the
    /// refresh and the one replay. Under the bounds [`PaynetAuth`](crate::PaynetAuth) puts on the inner service
    /// and the bodies it is `Send + 'static`, so it can be spawned.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use paynet_auth::{BoxError, PaynetAuth, PaynetLogin, ResponseFuture, TokenManager};
    /// use serde_json::{Value, json};
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
    /// # let logins = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    /// # let gateway = tower::service_fn(move |request: http::Request<Full<Bytes>>| {
    /// #     let logins = logins.clone();
    /// #     async move {
    /// #         let call: Value = serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
    /// #         let answer = if call["method"] == "login" {
    /// #             let n = logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    /// #             json!({"jsonrpc": "2.0", "id": 1, "result": {"token": format!("T-{n}")}})
    /// #         } else if call["params"]["token"] == "T-1" {
    /// #             json!({"jsonrpc": "2.0", "id": call["id"], "error": {"code": -9999, "message": "unauthorized"}})
    /// #         } else {
    /// #             json!({"jsonrpc": "2.0", "id": call["id"], "result": {"paid": true}})
    /// #         };
    /// #         Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(answer.to_string()))))
    /// #     }
    /// # });
    /// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
    /// let manager = TokenManager::builder(login).build()?;
    /// // `gateway` grants `T-1`, then `T-2`, and rejects `T-1` with -9999.
    /// let mut service = PaynetAuth::new(gateway, manager.clone());
    /// let request = http::Request::post("https://gateway.example/gw/v2/payment")
    ///     .body(Full::new(Bytes::from(r#"{"jsonrpc":"2.0","method":"pay","id":7,"params":{"amount":5}}"#)))?;
    /// let ready = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut service).await?;
    /// let future: ResponseFuture<_, _, _> = ready.call(request);
    /// let response = tokio::spawn(future).await??;
    /// let answer: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    /// assert_eq!(answer["result"]["paid"], true);
    /// assert_eq!(manager.logins(), 2); // the rejected call was replayed once, with `T-2`
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<S::Future, ReqBody, ResBody>,
        // The service that `poll_ready` readied. It sends the first request and stays here for a replay, so
        // that the hot path clones the inner service only the once tower requires (in `PaynetAuth::call`).
        // Kept outside the state, like the policy, so that moving from state to state does not copy it.
        service: S,
        policy: Arc<AuthPolicy>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, ReqBody, ResBody> {
        /// Reading the caller's body.
        Reading {
            #[pin]
            reader: RequestReader<ReqBody>,
            head: Option<http::request::Parts>,
            // Whether the readied service was let go because the body kept the call waiting.
            released: bool,
        },
        /// No usable token was cached: waiting for one (rare, so boxed). The readied service was let go first.
        Waiting {
            token: BoxFuture<'static, Result<Arc<ActiveToken>, TokenError>>,
            call: Option<Box<Call>>,
        },
        /// The token is here: readying the service again before sending.
        Readying {
            call: Option<(Box<Call>, Arc<ActiveToken>)>,
        },
        /// The first request is with the inner service.
        Sending {
            #[pin]
            future: F,
            sent: Option<Sent>,
        },
        /// Reading the first answer's body to look for a rejection.
        Inspecting {
            inspection: Inspection<ResBody>,
            sent: Option<Sent>,
        },
        /// A refresh and the replay after a rejection: rare, so boxed.
        Replaying {
            future: BoxFuture<'static, Output<ResBody>>,
        },
        /// Failed before anything was sent.
        Failed {
            error: Option<Error>,
        },
        Done,
    }
}

/// A call that waits for a token, its body checked and the token's place in it found beforehand.
struct Call {
    head: http::request::Parts,
    body: Bytes,
    slots: Option<TokenSlots>,
}

/// What a replay needs of the request once the first one is gone.
struct Sent {
    head: HeadCopy,
    body: Bytes,
    /// The generation the first request carried: a replay needs a newer one.
    sent_with: Generation,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<Full<Bytes>>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    /// `ready` is the service that `poll_ready` readied.
    pub(crate) fn new(ready: S, policy: Arc<AuthPolicy>, request: Request<ReqBody>) -> Self {
        let (head, body) = request.into_parts();
        let state = match RequestReader::new(body, &head.headers, policy.max_request_body) {
            Ok(reader) => State::Reading {
                reader,
                head: Some(head),
                released: false,
            },
            Err(error) => State::Failed { error: Some(error) },
        };
        Self {
            state,
            service: ready,
            policy,
        }
    }

    /// A call that fails with `error` before anything is sent.
    pub(crate) fn failed(ready: S, policy: Arc<AuthPolicy>, error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            service: ready,
            policy,
        }
    }
}

/// The steps from state to state. They take the service and the policy apart from the state, since those live
/// beside it.
impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    /// The state once the body is read: sending with the cached token, or waiting for one when there is none.
    fn send(
        service: &mut S,
        policy: &AuthPolicy,
        head: http::request::Parts,
        body: Bytes,
        readied: bool,
    ) -> State<S::Future, ReqBody, ResBody> {
        // A token inside its refresh window is sent at once; the login for its background refresh goes through a
        // clone of the stack, built only by the one call that starts that refresh.
        let login = || LoginSender::from_service(service.clone());
        if let Some(token) = policy.manager.usable(login) {
            if readied {
                return Self::sending(service, policy, head, body, None, &token);
            }
            // The readied service was let go while the body arrived: ready a clone before sending.
            return match token_slots(policy, &body) {
                Ok(slots) => State::Readying {
                    call: Some((Box::new(Call { head, body, slots }), token.into_shared())),
                },
                Err(error) => State::Failed { error: Some(error) },
            };
        }
        // No token to send: a body that would be refused is refused now, before it costs a login.
        let slots = match token_slots(policy, &body) {
            Ok(slots) => slots,
            Err(error) => return State::Failed { error: Some(error) },
        };
        // Let the readied service go before waiting: its readiness may be a permit of a `ConcurrencyLimit` or a
        // slot of a `Buffer` below, which the login (through a clone of the same stack) or other callers need.
        // Holding it while waiting for a login deadlocks `concurrency_limit(1)` on a cold start. The token's
        // arrival readies the fresh clone again (`State::Readying`).
        *service = service.clone();
        let manager = policy.manager.clone();
        let login = LoginSender::from_service(service.clone());
        State::Waiting {
            token: Box::pin(async move { manager.token(login).await }),
            call: Some(Box::new(Call { head, body, slots })),
        }
    }

    /// The first request, sent through the service that `poll_ready` readied.
    fn sending(
        service: &mut S,
        policy: &AuthPolicy,
        head: http::request::Parts,
        body: Bytes,
        slots: Option<&TokenSlots>,
        token: &ActiveToken,
    ) -> State<S::Future, ReqBody, ResBody> {
        let copy = HeadCopy::of(&head);
        match authorised_request_in(policy, head, &body, slots, token) {
            Ok(first) => State::Sending {
                future: service.call(first.map(Full::new)),
                sent: Some(Sent {
                    head: copy,
                    body,
                    sent_with: token.generation(),
                }),
            },
            Err(error) => State::Failed { error: Some(error) },
        }
    }

    /// The state after a rejection: a refresh and the replay, boxed since they are rare.
    fn replay(
        service: &S,
        policy: &Arc<AuthPolicy>,
        sent: Sent,
    ) -> State<S::Future, ReqBody, ResBody> {
        let Sent {
            head,
            body,
            sent_with,
        } = sent;
        let template = service.clone();
        let policy = Arc::clone(policy);
        State::Replaying {
            future: Box::pin(async move {
                let login_template = template.clone();
                let send =
                    move |request: Request<Bytes>| template.clone().oneshot(request.map(Full::new));
                let login = move || LoginSender::from_service(login_template.clone());
                replay(&policy, head.into_parts(), &body, sent_with, send, login).await
            }),
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Output<ResBody>;

    // Longer than a function should be, on purpose: the whole exchange is one `match` over the states, so that a
    // reader sees every transition in one place and the hot path is one poll without a call per state. Each arm
    // is short and hands its work to the exchange's steps.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        let service = this.service;
        let policy = &*this.policy;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Reading {
                    reader,
                    head,
                    released,
                } => match reader.poll_read(cx) {
                    Poll::Pending => {
                        // The body is still arriving (a slow upload, a client forwarding its own caller's
                        // body): nothing is sent meanwhile, so let the readied service go rather than hold its
                        // permit or buffer slot for as long as the upload takes. A body already in memory is read
                        // on the first poll and never gets here.
                        if !*released {
                            *service = service.clone();
                            *released = true;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(body)) => {
                        let head = head.take().expect("read once");
                        Self::send(service, policy, head, body, !*released)
                    }
                    Poll::Ready(Err(error)) => State::Failed { error: Some(error) },
                },
                StateProj::Waiting { token, call } => {
                    let token = ready!(token.as_mut().poll(cx));
                    let call = call.take().expect("waited once");
                    match token {
                        Ok(token) => State::Readying {
                            call: Some((call, token)),
                        },
                        Err(error) => State::Failed {
                            error: Some(error.into()),
                        },
                    }
                }
                StateProj::Readying { call } => match ready!(service.poll_ready(cx)) {
                    Ok(()) => {
                        let (call, token) = call.take().expect("readied once");
                        let Call { head, body, slots } = *call;
                        Self::sending(service, policy, head, body, slots.as_ref(), &token)
                    }
                    Err(error) => State::Failed {
                        error: Some(Error::Inner(error.into())),
                    },
                },
                StateProj::Sending { future, sent } => match ready!(future.poll(cx)) {
                    Ok(response) => match Inspection::begin(policy, response) {
                        Begun::Decided(Inspected::Accepted(response)) => {
                            if let Some(sent) = sent {
                                policy.manager.note_accepted(sent.sent_with);
                            }
                            state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Begun::Decided(Inspected::Rejected) => {
                            Self::replay(service, policy, sent.take().expect("sent once"))
                        }
                        Begun::Reading(inspection) => State::Inspecting {
                            inspection,
                            sent: sent.take(),
                        },
                    },
                    Err(error) => State::Failed {
                        error: Some(Error::Inner(error.into())),
                    },
                },
                StateProj::Inspecting { inspection, sent } => {
                    match ready!(inspection.poll_inspect(cx, policy)) {
                        Ok(Inspected::Accepted(response)) => {
                            if let Some(sent) = sent {
                                policy.manager.note_accepted(sent.sent_with);
                            }
                            state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Ok(Inspected::Rejected) => {
                            Self::replay(service, policy, sent.take().expect("inspected once"))
                        }
                        Err(error) => State::Failed { error: Some(error) },
                    }
                }
                StateProj::Replaying { future } => {
                    let output = ready!(future.as_mut().poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(output);
                }
                StateProj::Failed { error } => {
                    let error = error.take().expect("failed once");
                    state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after it completed"),
            };
            state.set(next);
        }
    }
}

impl<S, ReqBody, ResBody> fmt::Debug for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
