//! [`PaynetAuth`]: the service the layer makes.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::PaynetAuthLayer;
use crate::error::{BoxError, Error};
use crate::exchange::{AuthPolicy, CredentialName, PolicySet, ResponseBody};
use crate::token::TokenManager;

/// Authorises requests to the wrapped service with the manager's token. Made by [`PaynetAuthLayer`].
///
/// The wrapped service must be `Clone` (see [`PaynetAuthLayer`] for every bound, in plain words). A call clones it
/// once, as tower's services do, so that the instance `poll_ready` readied is the one that sends. A call that has
/// to wait for a token first lets that readied instance go (with any permit or buffer slot it holds) and readies a
/// clone once the token is there; a rejected call is replayed through a clone, which waits for readiness again.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use paynet_auth::{BoxError, PaynetAuth, PaynetLogin, TokenManager};
/// use serde_json::{Value, json};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
/// // A gateway that grants the token `T-1` and echoes the token each call carries.
/// let gateway = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
///     let call: Value = serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
///     let answer = match call["method"].as_str() {
///         Some("login") => json!({"jsonrpc": "2.0", "id": 1, "result": {"token": "T-1"}}),
///         _ => json!({"jsonrpc": "2.0", "id": call["id"], "result": {"seen": call["params"]["token"]}}),
///     };
///     Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(answer.to_string()))))
/// });
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let service = PaynetAuth::new(gateway, TokenManager::builder(login).build()?);
/// let request = http::Request::post("https://gateway.example/gw/v2/payment")
///     .body(Full::new(Bytes::from(r#"{"jsonrpc":"2.0","method":"pay","id":7,"params":{"amount":5}}"#)))?;
/// let response = service.clone().oneshot(request).await?;
/// let answer: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
/// assert_eq!(answer["result"]["seen"], "T-1");
/// assert_eq!(service.manager().logins(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PaynetAuth<S> {
    inner: S,
    policies: Arc<PolicySet>,
}

impl<S> PaynetAuth<S> {
    /// Wraps `inner` with the Paynet preset of [`PaynetAuthLayer::new`].
    pub fn new(inner: S, manager: TokenManager) -> Self {
        Self::with_policies(inner, PolicySet::new(AuthPolicy::paynet(manager)))
    }

    /// A layer of the Paynet preset.
    pub fn layer(manager: TokenManager) -> PaynetAuthLayer {
        PaynetAuthLayer::new(manager)
    }

    /// Wraps `inner` with the policies of `policies` (shared, when given as an `Arc` or a layer).
    pub fn with_policies(inner: S, policies: impl Into<Arc<PolicySet>>) -> Self {
        Self {
            inner,
            policies: policies.into(),
        }
    }

    /// The token manager of the default credential.
    pub fn manager(&self) -> &TokenManager {
        self.policies.default_policy().manager()
    }

    /// The token manager of the credential named `name` (see [`CredentialName`](crate::CredentialName)).
    pub fn credential_manager(&self, name: &str) -> Option<&TokenManager> {
        self.policies.get(name).map(AuthPolicy::manager)
    }

    /// The policies served, shared with the layer that made this service and with its other services.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready; the one that poll_ready readied is the one to call, see
        // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        // Without a `CredentialName` extension, the default: no lookup. A name the layer does not serve fails the
        // call unsent. The name is taken out of the request: nothing below needs it, and extensions left empty are
        // dropped, so that the copy kept for a replay clones nothing (a map of one costs three allocations).
        let chosen = match request.extensions_mut().remove::<CredentialName>() {
            None => Ok(self.policies.default_shared()),
            Some(credential) => {
                if request.extensions().is_empty() {
                    *request.extensions_mut() = http::Extensions::new();
                }
                self.policies.named(&credential)
            }
        };
        match chosen {
            Ok(policy) => ResponseFuture::new(ready, Arc::clone(policy), request),
            Err(error) => {
                ResponseFuture::failed(ready, Arc::clone(self.policies.default_shared()), error)
            }
        }
    }
}
