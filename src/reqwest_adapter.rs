//! A [`reqwest_middleware::Middleware`] on the same token manager and request path as the tower layer
//! (feature `reqwest`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Extensions, Request, Response};
use http_body::Body;
use reqwest_middleware::{Middleware, Next};

use crate::error::BoxError;
use crate::exchange::{
    AuthPolicy, HeadCopy, Inspected, ResponseBody, authorised_request, authorised_request_in,
    inspect, read_request_body, replay, token_slots,
};
use crate::token::{LoginResponse, LoginSender};
use crate::{Error, PolicySet};

/// Authorises reqwest calls with the manager's token, like [`PaynetAuthLayer`](crate::PaynetAuthLayer) does for
/// tower services, following the same [`PolicySet`].
///
/// The login goes through `login_client`, usually the same `reqwest::Client` the middleware is attached to.
///
/// ```
/// use paynet_auth::{PaynetAuthLayer, TokenManager, reqwest_adapter::PaynetAuthMiddleware};
/// use paynet_auth::PaynetLogin;
///
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "http://127.0.0.1:8080/gw", "username_17627_56530", "password_17627_56530".into(), 4027096,
/// ))
/// .build()
/// .unwrap();
/// # // The tests' reqwest has no default crypto provider (see the README's reqwest section).
/// # let _ = rustls::crypto::ring::default_provider().install_default();
/// let client = reqwest::Client::new();
/// let client = reqwest_middleware::ClientBuilder::new(client.clone())
///     .with(PaynetAuthMiddleware::new(PaynetAuthLayer::new(manager), client))
///     .build();
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct PaynetAuthMiddleware {
    policies: Arc<PolicySet>,
    login_client: reqwest::Client,
}

impl PaynetAuthMiddleware {
    /// The middleware with the policies of `policies`, each credential's (placement, rejection rule, limits,
    /// manager): a [`PolicySet`], an [`AuthPolicy`], or a [`PaynetAuthLayer`](crate::PaynetAuthLayer), whose set it
    /// then shares. A request names its credential with a [`CredentialName`](crate::CredentialName) extension
    /// (`RequestBuilder::with_extension`); without one it uses the set's default.
    pub fn new(policies: impl Into<Arc<PolicySet>>, login_client: reqwest::Client) -> Self {
        Self {
            policies: policies.into(),
            login_client,
        }
    }

    fn login_sender(&self) -> LoginSender {
        let client = self.login_client.clone();
        LoginSender::new(move |request| {
            async move {
                let request = reqwest::Request::try_from(request.map(reqwest::Body::wrap))?;
                let response = client.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok(LoginResponse {
                    status,
                    headers,
                    body,
                })
            }
            .boxed()
        })
    }
}

fn middleware_error(error: Error) -> reqwest_middleware::Error {
    match error {
        // The transport's own error goes back as reqwest's, so callers can match it as usual.
        Error::Inner(inner) => match inner.downcast::<reqwest_middleware::Error>() {
            Ok(error) => *error,
            Err(other) => reqwest_middleware::Error::middleware(Error::Inner(other)),
        },
        other => reqwest_middleware::Error::middleware(other),
    }
}

#[async_trait::async_trait]
impl Middleware for PaynetAuthMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let request = http::Request::<reqwest::Body>::try_from(request)?;
        let (parts, body) = request.into_parts();
        // reqwest-middleware carries a request's extensions (`with_extension`) beside it, not in it.
        let policy = self
            .policies
            .for_request(extensions)
            .map_err(middleware_error)?;
        let body = read_request_body(body, &parts.headers, policy.max_request_body)
            .await
            .map_err(middleware_error)?;
        let send = |request: http::Request<Bytes>| {
            let next = next.clone();
            // Each send gets its own copy: a replay must see the extensions as the caller set them.
            let mut extensions = extensions.clone();
            async move {
                let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
                    .map_err(reqwest_middleware::Error::Reqwest)?;
                let response = next.run(request, &mut extensions).await?;
                Ok::<_, reqwest_middleware::Error>(http::Response::<reqwest::Body>::from(response))
            }
        };
        let response = authorise_buffered(policy, parts, body, send, || self.login_sender())
            .await
            .map_err(middleware_error)?;
        Ok(reqwest::Response::from(response.map(reqwest::Body::wrap)))
    }
}

/// The request path once the body is buffered: token, send, inspect, and at most one replay. The tower service
/// runs the same steps as a state machine ([`ResponseFuture`](crate::ResponseFuture)) and shares `replay` with
/// this.
async fn authorise_buffered<B, E, Fut>(
    policy: &AuthPolicy,
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
    let copy = HeadCopy::of(&parts);
    let first = match policy.manager.usable(&login) {
        Some(token) => {
            let first = authorised_request(policy, parts, &body, &token)?;
            (first, token.into_shared())
        }
        None => {
            // No token to send: a body that would be refused is refused now, before it costs a login.
            let slots = token_slots(policy, &body)?;
            let token = policy.manager.token(login()).await?;
            let first = authorised_request_in(policy, parts, &body, slots.as_ref(), &token)?;
            (first, token)
        }
    };
    let (first, token) = first;
    let response = send(first).await.map_err(|e| Error::Inner(e.into()))?;
    if let Inspected::Accepted(response) = inspect(policy, response).await? {
        policy.manager.note_accepted(token.generation());
        return Ok(response);
    }
    replay(
        policy,
        copy.into_parts(),
        &body,
        token.generation(),
        send,
        login,
    )
    .await
}
