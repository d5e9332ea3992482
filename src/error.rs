//! The error types. Every enum is `#[non_exhaustive]` and every message says what failed and where, never a
//! secret: tokens and passwords are not part of any variant.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A boxed error from an inner service or a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not carry the token. The request was **not sent**.
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The endpoint could not be reached (connection refused, DNS, TLS, dropped connection …).
    #[error("token endpoint {endpoint} is unreachable: {source}")]
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
    /// The answer was not the JSON the endpoint should send.
    #[error("token endpoint {endpoint} answered with a body that is not valid JSON: {reason}")]
    NotJson {
        /// The login URL.
        endpoint: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The endpoint refused the login with a JSON-RPC error (wrong credentials, blocked terminal …).
    #[error("token endpoint {endpoint} refused the login: error {code} \"{message}\"")]
    Refused {
        /// The login URL.
        endpoint: String,
        /// The JSON-RPC error code.
        code: i64,
        /// The JSON-RPC error message.
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
}

impl LoginError {
    /// Whether the endpoint refused the credentials ([`Refused`](Self::Refused) from a JSON-RPC login,
    /// [`OAuthRefused`](Self::OAuthRefused) from an OAuth token endpoint): retrying will not help until the
    /// configuration changes.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::OAuthRefused { .. })
    }
}

/// Why the token store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL or options are wrong.
    #[error("token store configuration: {0}")]
    Config(String),
    /// The database could not be reached, a connection could not be had from the pool, the connection broke
    /// mid-statement, or the statement ran into the database's statement timeout. The manager serves from memory
    /// and logs in without the lease, spaced out (see the README, "When the database is down").
    #[error("token store {store} is unreachable: {source}")]
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
    #[error("token store {store}: {operation} collided with a concurrent transaction: {source}")]
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
    #[error("token store {store}: {operation} failed: {source}")]
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
    #[error("token store {store}: migrations failed: {source}")]
    Migration {
        /// Which store (URL without password).
        store: String,
        /// The underlying error.
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
}

/// Why no token could be had. Cheap to clone: every caller waiting on one refresh gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The login failed.
    #[error("token refresh failed: {0}")]
    Login(#[source] Arc<LoginError>),
    /// A recent login failed and the manager is backing off before it tries again. Callers fail with this at
    /// once, without sending anything: a token the gateway rejected is not sent again meanwhile.
    #[error(
        "token refresh is backing off until {} (in {retry_in:?}) after a failed login: {cause}",
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
    /// Another instance held the refresh lease and no new token appeared in the store in time.
    #[error(
        "no token: another instance held the refresh lease in {store} and no new token appeared within {waited:?}"
    )]
    LeaseWait {
        /// Which store.
        store: String,
        /// How long this instance waited.
        waited: Duration,
    },
    /// The refresh task ended without an answer (it panicked or the runtime is shutting down).
    #[error("token refresh task ended without an answer")]
    Aborted,
}

/// The error the [`PaynetAuth`](crate::PaynetAuth) service returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The inner service failed (transport error, timeout …). Returned as it is: the request is never replayed
    /// after such an error, since the gateway may have executed it.
    #[error("request failed: {0}")]
    Inner(#[source] BoxError),
    /// Reading the request body failed.
    #[error("reading the request body failed: {0}")]
    RequestBody(#[source] BoxError),
    /// The request body is larger than the configured limit. It was not sent.
    #[error("request body is larger than the {limit}-byte limit; it was not sent")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token could not be written into the request body. It was not sent.
    #[error("request was not sent: {0}")]
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
    #[error("reading the response body failed: {0}")]
    ResponseBody(#[source] BoxError),
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
            | Error::TokenNotHeaderSafe { .. } => true,
        }
    }
}

/// Why a configuration could not be turned into a ready stack ([`Stack::from_config`](crate::setup::Stack::from_config)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The settings cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated.
    #[error("cannot open the token store {url}")]
    Store {
        /// The store URL, without its password.
        url: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },
}

/// A configuration value is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Reading the configuration file failed.
    #[error("cannot read configuration file {path}: {source}")]
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
