//! Logging in: how the login request is sent ([`LoginSender`]), the call with its timeout, decoding of a
//! compressed answer, the record of the token it returns, and the login made without the lease while the store
//! does not answer. Kept apart from the refresh protocol, which decides *whether* to log in.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use tower::ServiceExt;
use tower_service::Service;
use tracing::{debug, info, warn};

use super::generation::Numbering;
use super::refresh::Outcome;
use super::{Inner, defaults, duration_ms};
use crate::error::{BoxError, LoginError, StoreError, TokenError};
use crate::record::{Generation, TokenRecord};
use crate::token::source::LoginResponse;
use crate::token::{ActiveToken, Grant};

/// The future a [`LoginSender`] returns.
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use http_body_util::Full;
/// use paynet_auth::{PaynetLogin, TokenManager};
/// use paynet_auth::token::{LoginFuture, LoginResponse, LoginSender};
/// use paynet_auth::record::Generation;
///
/// /// A canned login answer instead of a network call, as a test may use.
/// fn canned(_request: http::Request<Full<Bytes>>) -> LoginFuture {
///     Box::pin(async {
///         let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"token":"T-1"}}"#);
///         Ok(LoginResponse { status: StatusCode::OK, headers: HeaderMap::new(), body })
///     })
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build()?;
/// let token = manager.token(LoginSender::new(canned)).await?;
/// assert_eq!(token.generation(), Generation(1));
/// # Ok(()) }
/// ```
pub type LoginFuture = BoxFuture<'static, Result<LoginResponse, BoxError>>;

/// Sends one login request. The layer makes one from a clone of the service it wraps, so the login goes through
/// the same client, TLS settings, timeouts and proxies as the calls it authorises.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::{PaynetLogin, TokenManager};
/// use paynet_auth::token::LoginSender;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build()?;
/// let gateway = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
///     assert_eq!(request.uri(), "https://gateway.example/gw/v2/user");
///     let answer = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"token":"T-1"}}"#);
///     Ok::<_, Infallible>(http::Response::new(Full::new(answer)))
/// });
/// let token = manager.token(LoginSender::from_service(gateway)).await?;
/// assert_eq!(manager.logins(), 1);
/// // The token is cached now: the next caller's sender is not used.
/// let again = manager.token(LoginSender::new(|_| unreachable!("the token is cached"))).await?;
/// assert_eq!(again.generation(), token.generation());
/// # Ok(()) }
/// ```
pub struct LoginSender(Box<dyn FnOnce(Request<Full<Bytes>>) -> LoginFuture + Send>);

impl LoginSender {
    /// A sender from a function.
    pub fn new(send: impl FnOnce(Request<Full<Bytes>>) -> LoginFuture + Send + 'static) -> Self {
        Self(Box::new(send))
    }

    /// A sender that calls `service` once and reads its answer (up to
    /// [`MAX_LOGIN_RESPONSE`](defaults::MAX_LOGIN_RESPONSE) bytes; a longer one fails the login with
    /// [`LoginError::TooLarge`]).
    pub fn from_service<S, B>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Self::new(move |request| {
            async move {
                let response = service.oneshot(request).await.map_err(Into::into)?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, defaults::MAX_LOGIN_RESPONSE)
                    .collect()
                    .await?
                    .to_bytes();
                Ok(LoginResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            .boxed()
        })
    }

    fn send(self, request: Request<Full<Bytes>>) -> LoginFuture {
        (self.0)(request)
    }
}

impl fmt::Debug for LoginSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSender")
    }
}

impl Inner {
    pub(super) async fn login(&self, login: LoginSender) -> Result<Grant, LoginError> {
        let request = self.source.login_request()?;
        let started = tokio::time::Instant::now();
        let result = self.send_login(request, login).await;
        self.counters
            .login(result.as_ref().map(|_| ()), started.elapsed());
        result
    }

    async fn send_login(
        &self,
        request: Request<Full<Bytes>>,
        login: LoginSender,
    ) -> Result<Grant, LoginError> {
        let endpoint = self.source.endpoint();
        let response =
            match tokio::time::timeout(self.settings.login_timeout, login.send(request)).await {
                Err(_) => {
                    return Err(LoginError::Timeout {
                        endpoint: endpoint.to_owned(),
                        after: self.settings.login_timeout,
                    });
                }
                // The endpoint answered, with more than the limit (`Limited`, as `from_service` reads): not a
                // transport failure, and not an outage.
                Ok(Err(source)) if source.is::<http_body_util::LengthLimitError>() => {
                    return Err(too_large(endpoint));
                }
                Ok(Err(source)) => {
                    return Err(LoginError::Unreachable {
                        endpoint: endpoint.to_owned(),
                        source,
                    });
                }
                // A sender of the caller's own (the reqwest adapter's) reads the whole answer.
                Ok(Ok(response)) if response.body.len() > defaults::MAX_LOGIN_RESPONSE => {
                    return Err(too_large(endpoint));
                }
                Ok(Ok(response)) => response,
            };
        let response = decoded(response, endpoint)?;
        let grant = self.source.parse_response(response).map_err(|error| {
            // A gateway may echo the token it issued before; the source only knows the answer in hand.
            let current = self.cache.current.load();
            let token = current
                .as_ref()
                .map(|t| secrecy::ExposeSecret::expose_secret(t.secret()));
            error.mask(&[token.unwrap_or_default()])
        })?;
        info!(endpoint = %endpoint, fingerprint = %crate::record::fingerprint(secrecy::ExposeSecret::expose_secret(&grant.token)), "logged in");
        Ok(grant)
    }

    pub(super) fn new_record(
        &self,
        newest: Option<Generation>,
        grant: Grant,
        numbering: Numbering,
    ) -> TokenRecord {
        let now = self.now_ms();
        if let Some(expires_in) = grant.expires_in
            && expires_in / 2 < self.settings.expiry_skew
            && !self.said.skew_scaled.swap(true, Ordering::Relaxed)
        {
            warn!(
                endpoint = %self.source.endpoint(),
                expires_in_ms = expires_in.as_millis() as u64,
                expiry_skew_ms = self.settings.expiry_skew.as_millis() as u64,
                "the token endpoint's expires_in leaves less than twice expiry_skew: a token is used until half \
                 its lifetime is left instead (said once)"
            );
        }
        let ttl = match (self.settings.token_ttl, grant.expires_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_in = grant.expires_in;
        let record = TokenRecord {
            token: grant.token,
            generation: self.next_generation(newest, numbering),
            obtained_at_ms: now,
            expires_at_ms: ttl.map(|ttl| now.saturating_add(duration_ms(ttl))),
            meta: grant.meta,
            written_by: self.owner.clone(),
        };
        if let (Some(expires_in), Some(window)) = (expires_in, self.settings.refresh_ahead)
            && self.window_shrunk(&record)
            && !self.said.ahead_scaled.swap(true, Ordering::Relaxed)
        {
            warn!(
                endpoint = %self.source.endpoint(),
                expires_in_ms = expires_in.as_millis() as u64,
                refresh_ahead_ms = window.as_millis() as u64,
                "the token endpoint's expires_in leaves no more than refresh_ahead of usable life: a token is \
                 refreshed in the background from half its usable life on instead (said once)"
            );
        }
        record
    }

    pub(super) async fn login_without_store(
        self: &Arc<Self>,
        newest: Option<Generation>,
        login: LoginSender,
        cause: &StoreError,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        self.store_failed(
            "refresh",
            "logging in without the lease, the new token is served from memory",
            cause,
        );
        let result = self.login(login).await;
        // Counted whether or not the login succeeded: both cost the gateway a login attempt.
        let pause = self.degraded_login();
        debug!(
            next_in_ms = pause.as_millis() as u64,
            "next login without the lease spaced out"
        );
        let grant = result.map_err(|e| TokenError::Login(Arc::new(e)))?;
        let record = self.new_record(newest, grant, Numbering::Unordered);
        self.persist_later(record.clone(), std::time::Duration::ZERO);
        Ok((Arc::new(ActiveToken::new(record)), Outcome::LoggedInUnsaved))
    }
}

fn too_large(endpoint: &str) -> LoginError {
    LoginError::TooLarge {
        endpoint: endpoint.to_owned(),
        limit: defaults::MAX_LOGIN_RESPONSE,
    }
}

/// The login answer with its body decoded, when a gateway or a proxy compressed it (some compress whatever the
/// request asked for). The sources then read plain JSON.
fn decoded(mut response: LoginResponse, endpoint: &str) -> Result<LoginResponse, LoginError> {
    use crate::coding::{ContentCoding, decode_bounded};
    let coding = ContentCoding::of(&response.headers);
    if coding == ContentCoding::Identity || response.body.is_empty() {
        return Ok(response);
    }
    let Some(plain) = decode_bounded(coding, &response.body, defaults::MAX_LOGIN_RESPONSE) else {
        let encoding = response
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        return Err(LoginError::NotJson {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "the answer is `Content-Encoding: {encoding}` and could not be decoded (this build reads gzip, \
                 deflate and br with the `decompression` feature; or put tower-http's DecompressionLayer below \
                 the layer)"
            ),
        });
    };
    response.body = Bytes::from(plain);
    response.headers.remove(http::header::CONTENT_ENCODING);
    response.headers.remove(http::header::CONTENT_LENGTH);
    Ok(response)
}
