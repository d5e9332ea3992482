//! The error types. Every enum is `#[non_exhaustive]` and every message says what failed and where, never a
//! secret: tokens and passwords are not part of any variant.
//!
//! One convention holds for every error of the crate, as in std, hyper and reqwest: a wrapper's `Display` says
//! what it adds (which endpoint, which store, what was being done) and leaves its cause to
//! [`source()`](std::error::Error::source). `to_string()` is then one level; a chain printer (`{:#}` of anyhow,
//! eyre's report, [`Chain`]) shows each cause once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A boxed error from an inner service or a transport.
///
/// ```
/// use paynet_auth::{BoxError, Error};
///
/// fn send() -> Result<(), BoxError> {
///     Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset"))?
/// }
///
/// let error = send().unwrap_err();
/// assert!(error.downcast_ref::<std::io::Error>().is_some());
/// // The layer hands such an error on as it is; it cannot tell whether the gateway executed the request.
/// assert!(!Error::Inner(error).is_safe_to_retry());
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not carry the token. The request was **not sent**.
///
/// ```
/// use paynet_auth::error::InjectError;
/// use paynet_auth::envelope::{TokenField, inject_token};
///
/// let positional = br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":[5]}"#;
/// let error = inject_token(positional, TokenField::Params, br#""T-1""#).unwrap_err();
/// assert_eq!(error, InjectError::ParamsNotObject { found: "an array" });
/// assert_eq!(
///     error.to_string(),
///     "request `params` is an array, not an object: cannot add a named `token` parameter"
/// );
/// // A top-level token leaves `params` alone, whatever it is.
/// assert!(inject_token(positional, TokenField::TopLevel, br#""T-1""#).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// The body is not valid JSON (or not UTF-8).
    #[error("request body is not valid JSON: {reason} at byte {offset}")]
    NotJson {
        /// What the scanner found wrong.
        reason: &'static str,
        /// Where in the body.
        offset: usize,
    },
    /// The body is JSON but neither an object nor an array of objects (a JSON-RPC call or batch).
    #[error(
        "request body is not a JSON-RPC call: expected an object or an array of objects, found {found}"
    )]
    NotJsonRpc {
        /// The kind of JSON value found.
        found: &'static str,
    },
    /// `params` is an array (positional parameters) or another non-object, so it has no place for a named token.
    #[error("request `params` is {found}, not an object: cannot add a named `token` parameter")]
    ParamsNotObject {
        /// The kind of JSON value found.
        found: &'static str,
    },
    /// A key that decides where the token goes appears more than once in one object, so a reader could pick
    /// either.
    #[error("request body has a duplicate `{key}` key")]
    DuplicateKey {
        /// The duplicated key.
        key: &'static str,
    },
    /// An empty JSON-RPC batch.
    #[error("request body is an empty JSON-RPC batch")]
    EmptyBatch,
}

/// Why a login at the token endpoint failed.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::PaynetLogin;
/// use paynet_auth::token::LoginSender;
/// use paynet_auth::{LoginError, TokenError, TokenManager};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// // A gateway that refuses every login.
/// let gateway = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
///     let answer = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"wrong password"}}"#;
///     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(answer))))
/// });
/// let Err(TokenError::Login(error)) = manager.token(LoginSender::from_service(gateway)).await else {
///     panic!("the gateway refuses the login");
/// };
/// assert!(matches!(&*error, LoginError::Refused { code: -32001, .. }));
/// assert!(error.is_refused()); // retrying will not help until the password changes
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The endpoint could not be reached (connection refused, DNS, TLS, dropped connection …).
    #[error("token endpoint {endpoint} is unreachable")]
    Unreachable {
        /// The login URL.
        endpoint: String,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
    /// The endpoint did not answer within the login timeout.
    #[error("token endpoint {endpoint} did not answer within {after:?}")]
    Timeout {
        /// The login URL.
        endpoint: String,
        /// The login timeout that ran out.
        after: Duration,
    },
    /// The endpoint answered with an HTTP status other than success.
    #[error("token endpoint {endpoint} answered HTTP {status}")]
    HttpStatus {
        /// The login URL.
        endpoint: String,
        /// The status it answered.
        status: http::StatusCode,
    },
    /// The answer was larger than the manager reads ([`MAX_LOGIN_RESPONSE`](crate::token::defaults::MAX_LOGIN_RESPONSE)
    /// bytes, after decompression). The endpoint answered, so this is not an outage: the last token is not served
    /// past its lifetime through it, and the login backs off as after a refusal.
    #[error(
        "token endpoint {endpoint} answered with more than the {limit}-byte limit of a login answer"
    )]
    TooLarge {
        /// The login URL.
        endpoint: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer was not the JSON the endpoint should send.
    #[error("token endpoint {endpoint} answered with a body that is not valid JSON: {reason}")]
    NotJson {
        /// The login URL.
        endpoint: String,
        /// What was wrong with it (the parser's words, which may quote the answer: sanitised as
        /// [`redact::gateway_text`](crate::redact::gateway_text) does).
        reason: String,
    },
    /// The endpoint refused the login with a JSON-RPC error (wrong credentials, blocked terminal …).
    #[error("token endpoint {endpoint} refused the login: error {code} \"{message}\"")]
    Refused {
        /// The login URL.
        endpoint: String,
        /// The JSON-RPC error code.
        code: i64,
        /// The JSON-RPC error message, with the password and any token in it replaced by `****`, control
        /// characters removed and its length bounded ([`redact::gateway_text`](crate::redact::gateway_text)).
        message: String,
    },
    /// An OAuth 2.0 token endpoint (the Bearer preset, [`ClientCredentials`](crate::token::source::ClientCredentials))
    /// answered with an `error` member, in a 2xx or a 4xx answer (RFC 6749 section 5.2): `invalid_client`,
    /// `invalid_grant`, `unauthorized_client` …. The code and description are the server's, with the client secret
    /// and any token in them replaced by `****` and their length bounded.
    #[error("token endpoint {endpoint} refused the login (HTTP {status}): OAuth error `{error}`{}",
        description.as_deref().map(|d| format!(" \"{d}\"")).unwrap_or_default())]
    OAuthRefused {
        /// The token endpoint's URL.
        endpoint: String,
        /// The HTTP status of the answer.
        status: http::StatusCode,
        /// The OAuth `error` code.
        error: String,
        /// The OAuth `error_description`, if any.
        description: Option<String>,
    },
    /// The token endpoint issued a token of a type other than Bearer (compared without case), which the Bearer
    /// preset cannot send.
    #[error(
        "token endpoint {endpoint} issued a `{token_type}` token; only Bearer tokens can be sent"
    )]
    UnsupportedTokenType {
        /// The token endpoint's URL.
        endpoint: String,
        /// The `token_type` it answered (bounded in length).
        token_type: String,
    },
    /// The answer was a success but carried no token.
    #[error("token endpoint {endpoint} answered without a token")]
    MissingToken {
        /// The login URL.
        endpoint: String,
    },
    /// The login request could not be built from the configuration.
    #[error("cannot build the login request for {endpoint}: {reason}")]
    InvalidRequest {
        /// The login URL.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The login succeeded, but the gateway rejected the token it issued before accepting a single call with it:
    /// a session the gateway does not honour (a terminal not allowed to call, a gateway whose sessions are broken,
    /// another client logging in as the same terminal at once). Counted as a failed login, so that such a gateway
    /// gets a login per backoff pause rather than one per call.
    #[error(
        "token endpoint {endpoint} issued generation {generation}, which the gateway rejected before accepting any \
         call with it"
    )]
    RejectedAtOnce {
        /// The login URL.
        endpoint: String,
        /// The generation of the rejected token.
        generation: u64,
    },
}

impl LoginError {
    /// The error with `secrets` (the tokens the manager holds, which a source cannot know) masked in the text the
    /// endpoint sent, as [`redact::gateway_text`](crate::redact::gateway_text) does. The sources sanitise what
    /// they put in an error already; a second pass changes nothing else.
    pub(crate) fn mask(mut self, secrets: &[&str]) -> Self {
        use crate::redact::gateway_text;
        match &mut self {
            Self::NotJson { reason: text, .. }
            | Self::Refused { message: text, .. }
            | Self::UnsupportedTokenType {
                token_type: text, ..
            } => *text = gateway_text(text, secrets),
            Self::OAuthRefused {
                error, description, ..
            } => {
                *error = gateway_text(error, secrets);
                if let Some(description) = description {
                    *description = gateway_text(description, secrets);
                }
            }
            _ => {}
        }
        self
    }

    /// Whether the endpoint refused the credentials ([`Refused`](Self::Refused) from a JSON-RPC login,
    /// [`OAuthRefused`](Self::OAuthRefused) from an OAuth token endpoint): retrying will not help until the
    /// configuration changes.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::OAuthRefused { .. })
    }

    /// Whether the token endpoint could not give a token for reasons of its own rather than a verdict on the
    /// credentials: unreachable, no answer within the login timeout, or an HTTP 5xx, 408 or 429. The last token
    /// is served past its lifetime through such a failure (static stability); a refusal or a malformed answer
    /// is not an outage.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::StatusCode;
    /// use paynet_auth::LoginError;
    ///
    /// let endpoint = "https://gateway.example/gw/v2/user".to_owned();
    /// assert!(LoginError::Timeout { endpoint: endpoint.clone(), after: Duration::from_secs(10) }.is_outage());
    /// assert!(LoginError::HttpStatus { endpoint: endpoint.clone(), status: StatusCode::BAD_GATEWAY }.is_outage());
    /// assert!(!LoginError::HttpStatus { endpoint: endpoint.clone(), status: StatusCode::FORBIDDEN }.is_outage());
    /// let refused = LoginError::Refused { endpoint, code: -32001, message: "bad password".into() };
    /// assert!(!refused.is_outage());
    /// ```
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            // The endpoint answered, only too much: waiting it out would not help.
            Self::TooLarge { .. } => false,
            Self::HttpStatus { status, .. } => {
                status.is_server_error()
                    || *status == http::StatusCode::REQUEST_TIMEOUT
                    || *status == http::StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// Why the token store failed.
///
/// ```
/// use paynet_auth::StoreError;
/// use paynet_auth::store::{StoreOptions, connect};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let Err(error) = connect("mongodb://cache.internal", StoreOptions::default()).await else {
///     panic!("mongodb is not a token store");
/// };
/// assert!(matches!(error, StoreError::Config(_)));
/// assert!(!error.is_conflict() && !error.is_unavailable());
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL or options are wrong.
    #[error("token store configuration: {0}")]
    Config(String),
    /// The database could not be reached, a connection could not be had from the pool, the connection broke
    /// mid-statement, or the statement ran into the database's statement timeout. The manager serves from memory
    /// and logs in without the lease, spaced out (see the README, "When the database is down").
    #[error("token store {store} is unreachable")]
    Unavailable {
        /// Which store (URL without password).
        store: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The database refused the statement because of a concurrent one: a serialization failure or deadlock
    /// (PostgreSQL SQLSTATE 40001, 40P01), a deadlock or lock wait timeout (MySQL/MariaDB 1213, 1205), or a busy or
    /// locked SQLite database. Nothing is wrong with the store: retry after a jittered pause. For a lease it means
    /// "not acquired", never "log in without the lease".
    #[error("token store {store}: {operation} collided with a concurrent transaction")]
    Conflict {
        /// Which store (URL without password).
        store: String,
        /// What was being done (`load`, `save`, `lease` …).
        operation: &'static str,
        /// The database's error.
        #[source]
        source: BoxError,
    },
    /// A query failed for a reason retrying will not cure: a missing table or column, a constraint, a bug. Logged
    /// at ERROR.
    #[error("token store {store}: {operation} failed")]
    Query {
        /// Which store (URL without password).
        store: String,
        /// What was being done (`load`, `save`, `lease` …).
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The migrations could not be applied.
    #[error("token store {store}: migrations failed")]
    Migration {
        /// Which store (URL without password).
        store: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The database refused the store's credentials or permissions: a failed authentication (PostgreSQL
    /// SQLSTATE 28P01, 28000; MySQL/MariaDB 1045) or a missing grant (PostgreSQL 42501; MySQL/MariaDB 1044, 1142).
    /// Not an outage that passes by itself, so never served through degraded mode: a refresh that meets it fails,
    /// logged at ERROR, until the user or its grants are fixed.
    #[error(
        "token store {store}: {operation} was refused: access denied (check the store user and its grants)"
    )]
    Denied {
        /// Which store (URL without password).
        store: String,
        /// What was being done (`load`, `save`, `lease` …, or `connect`).
        operation: &'static str,
        /// The database's error.
        #[source]
        source: BoxError,
    },
    /// A table of the store is missing (PostgreSQL 42P01, MySQL/MariaDB 1146, SQLite "no such table"): someone
    /// dropped it, or the migrations never ran on this database. `migrate` (`paynet-auth migrate`) creates it
    /// again; meanwhile [`TokenManager::health`](crate::TokenManager::health) reports it and tokens live in memory
    /// only.
    #[error(
        "token store {store}: {operation} failed: a table of the token store is missing (run the migrations)"
    )]
    MissingTable {
        /// Which store (URL without password).
        store: String,
        /// What was being done (`load`, `save`, `lease` …).
        operation: &'static str,
        /// The database's error, which names the table.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the database refused the statement only because of a concurrent one ([`StoreError::Conflict`]):
    /// retry after a pause.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// Whether the database could not be reached ([`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether the database refused the store's credentials or permissions ([`StoreError::Denied`]).
    pub fn is_denied(&self) -> bool {
        matches!(self, StoreError::Denied { .. })
    }

    /// Whether a table of the store is missing ([`StoreError::MissingTable`]).
    pub fn is_missing_table(&self) -> bool {
        matches!(self, StoreError::MissingTable { .. })
    }
}

/// Why no token could be had. Cheap to clone: every caller waiting on one refresh gets the same error.
///
/// ```
/// use paynet_auth::PaynetLogin;
/// use paynet_auth::token::LoginSender;
/// use paynet_auth::{LoginError, TokenError, TokenManager};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// // A transport that cannot reach the token endpoint.
/// let unreachable = || LoginSender::new(|_request| Box::pin(async { Err("connection refused".into()) }));
///
/// let first = manager.token(unreachable()).await.unwrap_err();
/// assert!(matches!(&first, TokenError::Login(cause) if matches!(**cause, LoginError::Unreachable { .. })));
/// // Until the pause after the failed login ends, callers fail at once, without another login.
/// let second = manager.token(unreachable()).await.unwrap_err();
/// assert!(matches!(second, TokenError::Backoff { .. }));
/// assert_eq!(manager.login_attempts(), 1);
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The login failed.
    #[error("token refresh failed")]
    Login(#[source] Arc<LoginError>),
    /// A recent login failed and the manager is backing off before it tries again. Callers fail with this at
    /// once, without sending anything: a token the gateway rejected is not sent again meanwhile.
    #[error(
        "token refresh is backing off until {} (in {retry_in:?}) after a failed login",
        humantime::format_rfc3339_millis(*retry_at)
    )]
    Backoff {
        /// How long until the next login attempt is allowed.
        retry_in: Duration,
        /// When the next login attempt is allowed, on the manager's clock (UTC).
        retry_at: SystemTime,
        /// The failure that started the backoff.
        #[source]
        cause: Arc<LoginError>,
    },
    /// The refresh lease could not be taken and no new token appeared in the store in time: another instance
    /// held it, or (`row_locked`) a database session kept the lease row locked past the store's operation timeout.
    #[error(
        "no token: {} in {store} and no new token appeared within {waited:?}",
        if *row_locked {
            "the refresh lease row was locked by another database session"
        } else {
            "another instance held the refresh lease"
        }
    )]
    LeaseWait {
        /// Which store.
        store: String,
        /// How long this instance waited.
        waited: Duration,
        /// Whether the last attempt found the lease row locked (a lock wait that ran out) rather than the lease
        /// held by an instance.
        row_locked: bool,
    },
    /// The token store refused what the refresh needed in a way that waiting will not cure: its credentials or
    /// permissions ([`StoreError::Denied`]). No login is made without the store in that case.
    #[error("token refresh failed: the token store refused access")]
    Store(#[source] Arc<StoreError>),
    /// The refresh task ended without an answer (it panicked or the runtime is shutting down).
    #[error("token refresh task ended without an answer")]
    Aborted,
}

impl TokenError {
    /// Whether no token could be had because the token endpoint is down ([`LoginError::is_outage`], now or in
    /// the failure a backoff waits out), or another instance held the lease and no token appeared (its login is
    /// most likely failing the same way). Through such a failure the manager serves the last token past its
    /// lifetime (static stability).
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Login(cause) | Self::Backoff { cause, .. } => cause.is_outage(),
            Self::LeaseWait { .. } => true,
            Self::Store(_) | Self::Aborted => false,
        }
    }
}

/// The error the [`PaynetAuth`](crate::PaynetAuth) service returns.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::{Error, PaynetAuthLayer, PaynetLogin, TokenManager};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// let gateway = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
/// });
/// let service = PaynetAuthLayer::new(manager).max_request_body(64).layer(gateway);
/// let request = http::Request::post("https://gateway.example/gw/v2/pay")
///     .body(Full::new(Bytes::from(vec![b' '; 1024])))
///     .unwrap();
/// let error = service.oneshot(request).await.unwrap_err();
/// assert!(matches!(error, Error::RequestTooLarge { limit: 64 }));
/// assert!(error.is_safe_to_retry()); // it was never sent
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The inner service failed (transport error, timeout …). Returned as it is: the request is never replayed
    /// after such an error, since the gateway may have executed it.
    #[error("request failed")]
    Inner(#[source] BoxError),
    /// Reading the request body failed.
    #[error("reading the request body failed")]
    RequestBody(#[source] BoxError),
    /// The request body is larger than the configured limit. It was not sent.
    #[error("request body is larger than the {limit}-byte limit; it was not sent")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token could not be written into the request body. It was not sent.
    #[error("request was not sent")]
    Inject(#[from] InjectError),
    /// No token could be obtained. The request was not sent (or, after a rejection, not replayed).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The gateway rejected the request again with a freshly refreshed token. Not replayed a second time.
    #[error(
        "gateway rejected the request again after a token refresh (token generation {generation})"
    )]
    RejectedAfterRefresh {
        /// The generation of the fresh token that was rejected.
        generation: u64,
    },
    /// The token has characters a header value cannot carry, so it cannot be sent in the configured header.
    #[error(
        "the token cannot be sent in the `{header}` header: it has characters a header value cannot carry"
    )]
    TokenNotHeaderSafe {
        /// The configured header.
        header: http::HeaderName,
    },
    /// Reading the response body failed.
    #[error("reading the response body failed")]
    ResponseBody(#[source] BoxError),
    /// The request names a [`CredentialName`](crate::CredentialName) the layer does not serve. It was not sent.
    #[error("no credential named `{name}` here (known: {}); the request was not sent", known.join(", "))]
    UnknownCredential {
        /// The name the request asked for.
        name: String,
        /// The names the layer serves, sorted.
        known: Vec<String>,
    },
}

impl Error {
    /// Whether the gateway cannot have executed the request, so that sending it again is safe even for a
    /// payment: it was never sent (no token, a body that cannot carry one, a body too large), or every send was
    /// explicitly rejected for its token. `false` for [`Inner`](Self::Inner) and
    /// [`ResponseBody`](Self::ResponseBody): the request may have reached the gateway and executed before the
    /// transport failed.
    ///
    /// A retry policy above the layer (tower's `Retry`) should retry only when this is `true`. Safe is not the
    /// same as useful: [`RequestTooLarge`](Self::RequestTooLarge), [`Inject`](Self::Inject) and
    /// [`TokenNotHeaderSafe`](Self::TokenNotHeaderSafe) fail the same way on every attempt, and
    /// [`TokenError::Backoff`] says when the next one can succeed. An error from the inner service's readiness is
    /// an [`Inner`](Self::Inner) error too, so it counts as unsafe although nothing was sent: the conservative side.
    ///
    /// ```
    /// use paynet_auth::Error;
    ///
    /// assert!(Error::RequestTooLarge { limit: 1024 }.is_safe_to_retry());
    /// assert!(!Error::Inner("connection reset".into()).is_safe_to_retry());
    /// ```
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::Inner(_) | Error::ResponseBody(_) => false,
            Error::RequestBody(_)
            | Error::RequestTooLarge { .. }
            | Error::Inject(_)
            | Error::Token(_)
            | Error::RejectedAfterRefresh { .. }
            | Error::TokenNotHeaderSafe { .. }
            | Error::UnknownCredential { .. } => true,
        }
    }
}

/// Why a policy could not join a [`PolicySet`](crate::PolicySet).
///
/// ```
/// use paynet_auth::{AuthPolicy, PaynetLogin, PolicySet, PolicySetError, TokenManager};
///
/// let terminal = |id| {
///     let login = PaynetLogin::new("https://gateway.example/gw", "username", "secret".into(), id);
///     AuthPolicy::paynet(TokenManager::builder(login).name("north").build().unwrap())
/// };
/// let mut policies = PolicySet::new(terminal(17));
/// let error = policies.insert(terminal(42)).unwrap_err();
/// assert!(matches!(&error, PolicySetError::DuplicateName { name } if name == "north"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicySetError {
    /// A policy of this name is in the set already: a request's
    /// [`CredentialName`](crate::CredentialName) must select one policy. The set is left as it was.
    #[error(
        "a policy named `{name}` is in the set already; give each manager its own name (TokenManagerBuilder::name)"
    )]
    DuplicateName {
        /// The name.
        name: String,
    },
}

/// Why a configuration could not be turned into a ready stack ([`Configured::open`](crate::setup::Configured::open)).
///
/// ```
/// use paynet_auth::config::{Config, PaynetConfig};
/// use paynet_auth::setup::Configured;
/// use paynet_auth::{SetupError, StoreError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config: PaynetConfig = serde_json::from_value(serde_json::json!({
///     "base_url": "https://gateway.example/gw",
///     "username": "username_17627_56530",
///     "password": "secret",
///     "terminal_id": 4027096,
///     "store": { "url": "mongodb://cache.internal" },
/// }))
/// .unwrap();
/// let error = Configured::open(&Config::from(config)).await.unwrap_err();
/// assert!(matches!(&error, SetupError::Store { url, source: StoreError::Config(_) } if url == "mongodb://cache.internal"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The settings cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated. Its `Display` names the store only when the cause does not (a
    /// store error other than a configuration one names it already), so a chain printer names it once.
    #[error("cannot open the token store{}", if matches!(source, StoreError::Config(_)) { format!(" {url}") } else { String::new() })]
    Store {
        /// The store URL, without its password.
        url: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },
}

/// A configuration value is wrong.
///
/// ```
/// use paynet_auth::config::PaynetConfig;
/// use paynet_auth::error::ConfigError;
///
/// let config: PaynetConfig = serde_json::from_value(serde_json::json!({
///     "base_url": "https://gateway.example/gw",
///     "username": "username_17627_56530",
///     "password": "secret",
///     "terminal_id": 4027096,
///     "store": { "encryption_key": "c2hvcnQ=" },
/// }))
/// .unwrap();
/// let error = config.validate("paynet.yaml").unwrap_err();
/// assert!(matches!(&error, ConfigError::Refused { fields, .. } if fields == &["paynet.store.encryption_key"]));
/// assert!(error.to_string().starts_with("paynet.yaml: `paynet.store.encryption_key` must be base64 of 32 bytes"));
/// assert!(!error.to_string().contains("c2hvcnQ="));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Reading the configuration file failed.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML could not be parsed into the configuration (the message carries line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, where.
        message: String,
    },
    /// An environment variable named in the configuration is not set.
    #[error("{path}: line {line}: environment variable `{var}` is not set")]
    MissingVar {
        /// The file.
        path: String,
        /// The line where it is used.
        line: usize,
        /// The variable.
        var: String,
    },
    /// Settings that each parse but cannot work: alone (an encryption key that is not 32 bytes) or together (a
    /// token that expires before it may be used, a lease shorter than the login it guards).
    #[error("{origin}: {reason}")]
    Refused {
        /// Where the settings came from: the configuration file, or `TokenManagerBuilder`.
        origin: String,
        /// The settings refused, named as `origin` spells them (`paynet.token_ttl` in a file, `token_ttl` in
        /// the builder).
        fields: Vec<String>,
        /// Why, naming the fields and their values (never a secret).
        reason: String,
    },
}

/// An error and its causes on one line, `error: cause: root cause`: the form for a log line or a CLI's last word.
///
/// Every level is printed as it is. Since the crate's errors never repeat their cause in their own `Display` (nor
/// do those of std, hyper, hyper-util, rustls and tokio-postgres under them), each cause shows once.
///
/// ```
/// use paynet_auth::error::Chain;
/// use paynet_auth::{LoginError, TokenError};
/// use std::sync::Arc;
///
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let login = LoginError::Unreachable { endpoint: "https://gw.example/v2/user".into(), source: refused.into() };
/// let error = TokenError::Login(Arc::new(login));
/// assert_eq!(error.to_string(), "token refresh failed");
/// assert_eq!(
///     Chain(&error).to_string(),
///     "token refresh failed: token endpoint https://gw.example/v2/user is unreachable: connection refused"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}
