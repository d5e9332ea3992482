//! [`PaynetAuthLayer`]: what the layer does, and how it is configured.

use std::sync::Arc;

use http::StatusCode;
use tower_layer::Layer;

use super::service::PaynetAuth;
use crate::envelope::{RejectionDetector, TokenField};
use crate::exchange::{
    Credentials, DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, ExchangePolicy,
    PAYNET_REJECTION_CODE, Placement, RejectionRule,
};
use crate::token::TokenManager;

/// Authorises every request with the manager's token and replays it once when the gateway rejects the token.
///
/// The Paynet preset ([`new`](Self::new)) writes the token into `params.token` of the JSON-RPC body and treats the
/// JSON-RPC error `-9999` as a rejection. [`bearer`](Self::bearer) is the preset for APIs that take
/// `Authorization: Bearer` and answer `401`.
///
/// # What the wrapped service must be
///
/// In plain words: an HTTP client service that
/// - takes `http::Request<http_body_util::Full<bytes::Bytes>>` (the layer buffers the caller's body, whatever its
///   type, and sends the rewritten bytes), and answers `http::Response<B>` where `B` is an `http_body::Body` of
///   `Bytes` that is `Send + Unpin + 'static` (hyper's `Incoming`, tower-http's decompression body, a boxed body);
/// - fails with an error that converts into `Box<dyn Error + Send + Sync>`;
/// - is `Clone + Send + 'static`, with a `Send` future: each call clones it once (as tower's services do), and the
///   login and a replay go through clones of it, so the user's TLS, proxies and timeouts apply to them too.
///
/// A service that is not `Clone` (tower's `RateLimit`, a client behind a `Mutex`) is made so with tower's
/// `ServiceBuilder::buffer(n)` between it and the layer, as in the stack below. Without it the stack does not
/// compile, and the error names `Clone`:
///
/// ```compile_fail,E0277
/// # use std::time::Duration;
/// # use bytes::Bytes;
/// # use http_body_util::Full;
/// # use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// # use paynet_auth::{PaynetAuthLayer, TokenManager, token::PaynetLogin};
/// # let manager = TokenManager::builder(PaynetLogin::new("http://127.0.0.1:8080/gw", "u", "p".into(), 1))
/// #     .build().unwrap();
/// # let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let service = tower::ServiceBuilder::new()
///     .layer(PaynetAuthLayer::new(manager))
///     .rate_limit(100, Duration::from_secs(1)) // RateLimit is not Clone: add `.buffer(64)` above it
///     .service(client);
/// ```
///
/// While a call waits for a token, a lease, a login or the rest of its caller's body, it holds nothing of the
/// service below it: no `ConcurrencyLimit` permit, no `Buffer` slot, no readiness. A limit below the layer counts
/// logins as requests.
///
/// # Where it goes in a stack
///
/// From the outside in:
/// 1. Observation and safety nets: tower-http's `TraceLayer`, `SetSensitiveRequestHeadersLayer` (the Bearer
///    header is marked sensitive anyway), `CatchPanicLayer`. Above the layer they see its errors.
/// 2. A timeout for the whole call, token wait and replay included: tower-http's `TimeoutLayer` (answers 408 with
///    an empty body) or tower's `timeout` (an error).
/// 3. A retry policy, if any: tower's `retry`, retrying only errors for which
///    [`Error::is_safe_to_retry`](crate::Error::is_safe_to_retry) holds, so that a payment whose connection
///    dropped is never sent twice. The layer replays after `-9999` by itself.
/// 4. **`PaynetAuthLayer`.**
/// 5. tower-http's `DecompressionLayer`, so the layer reads plain answers. Above the layer works too: the layer
///    then decodes a copy of each compressed answer to look for the rejection (feature `decompression`), or asks
///    for none with [`identity_encoding`](Self::identity_encoding).
/// 6. Limits and a timeout per send (`concurrency_limit`, `buffer` + `rate_limit`, `timeout`): they apply to the
///    login as well.
/// 7. The client.
///
/// ```
/// use std::time::Duration;
///
/// use bytes::Bytes;
/// use http::StatusCode;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use paynet_auth::{PaynetAuthLayer, TokenManager};
/// use paynet_auth::token::PaynetLogin;
/// use tower::ServiceBuilder;
/// use tower_http::decompression::DecompressionLayer;
/// use tower_http::timeout::TimeoutLayer;
/// use tower_http::trace::TraceLayer;
///
/// # tokio_test::block_on(async {
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "http://127.0.0.1:8080/gw", "username_17627_56530", "password_17627_56530".into(), 4027096,
/// ))
/// .build()
/// .unwrap();
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let service = ServiceBuilder::new()
///     .layer(TraceLayer::new_for_http())
///     .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
///     .layer(PaynetAuthLayer::new(manager))
///     .layer(DecompressionLayer::new())
///     .buffer(64)
///     .rate_limit(100, Duration::from_secs(1))
///     .timeout(Duration::from_secs(15)) // per send; longer than the login timeout (10 s by default)
///     .service(client);
/// # fn takes_requests<S: tower::Service<http::Request<Full<Bytes>>>>(_: &S) {}
/// # takes_requests(&service);
/// # });
/// ```
///
/// The JSON field of the token can be changed, as can the rejection code, the limits and the encoding asked for:
///
/// ```
/// use paynet_auth::{PaynetAuthLayer, TokenManager};
/// use paynet_auth::envelope::TokenField;
/// use paynet_auth::token::PaynetLogin;
///
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "http://127.0.0.1:8080/gw", "username_17627_56530", "password_17627_56530".into(), 4027096,
/// ))
/// .build()
/// .unwrap();
/// let layer = PaynetAuthLayer::new(manager).token_field(TokenField::TopLevel);
/// # let _ = layer;
/// ```
///
/// # Several credentials
///
/// One layer serves several credentials (a terminal per merchant, a Bearer API beside Paynet), each with its own
/// token, store row, lease and backoff: add each with [`credential`](Self::credential), and name the one a
/// request uses with a [`Credential`](crate::Credential) in its extensions. A request without one uses the
/// layer's own credential, the default.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::{Credential, PaynetAuthLayer, TokenManager};
/// use paynet_auth::token::{ClientCredentials, PaynetLogin};
///
/// let terminal = |name: &str, username: &str, terminal_id| {
///     let login = PaynetLogin::new("https://gateway.example/gw", username, "secret".into(), terminal_id);
///     TokenManager::builder(login).name(name).build().unwrap()
/// };
/// let reports = TokenManager::builder(ClientCredentials::new("https://reports.example/oauth/token", "id", "secret".into()))
///     .name("reports")
///     .build()
///     .unwrap();
/// let layer = PaynetAuthLayer::new(terminal("merchant-17", "username_17", 17)) // the default
///     .credential(PaynetAuthLayer::new(terminal("merchant-42", "username_42", 42)))
///     .credential(PaynetAuthLayer::bearer(reports));
/// assert_eq!(layer.credential_names(), ["merchant-17", "merchant-42", "reports"]);
///
/// let mut request = http::Request::post("https://gateway.example/gw/v2/payment")
///     .body(Full::new(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{}}"#)))
///     .unwrap();
/// request.extensions_mut().insert(Credential::new("merchant-42"));
/// ```
#[derive(Debug, Clone)]
pub struct PaynetAuthLayer {
    manager: TokenManager,
    placement: Placement,
    rejection: RejectionRule,
    max_request_body: usize,
    inspect_limit: usize,
    identity_encoding: bool,
    /// The other credentials, each with its own settings; none of them has others of its own.
    others: Vec<PaynetAuthLayer>,
}

impl PaynetAuthLayer {
    /// The Paynet preset: token in `params.token`, rejection is the JSON-RPC error `-9999`.
    pub fn new(manager: TokenManager) -> Self {
        Self {
            manager,
            placement: Placement::JsonBody(TokenField::Params),
            rejection: RejectionRule::JsonRpcError {
                code: PAYNET_REJECTION_CODE,
            },
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            inspect_limit: DEFAULT_INSPECT_LIMIT,
            identity_encoding: false,
            others: Vec::new(),
        }
    }

    /// Serves the credential of `layer` too, with `layer`'s settings (preset, placement, rejection rule, limits),
    /// for requests whose [`Credential`](crate::Credential) extension names its manager
    /// ([`TokenManager::name`]); the credentials `layer` serves besides its own are added as well.
    ///
    /// # Panics
    ///
    /// If a credential of that name is already served: each name selects one credential. (A configuration file
    /// with a name twice is refused when it is loaded.)
    pub fn credential(mut self, mut layer: PaynetAuthLayer) -> Self {
        let more = std::mem::take(&mut layer.others);
        for added in std::iter::once(layer).chain(more) {
            let name = added.manager.name();
            assert!(
                self.credential_manager(name).is_none(),
                "PaynetAuthLayer::credential: a credential named `{name}` is already served; give each manager its \
                 own name (TokenManagerBuilder::name)"
            );
            self.others.push(added);
        }
        self
    }

    /// The Bearer preset: `Authorization: Bearer <token>`, rejection is HTTP `401`.
    pub fn bearer(manager: TokenManager) -> Self {
        Self::new(manager)
            .placement(Placement::bearer())
            .rejection(RejectionRule::HttpStatus(StatusCode::UNAUTHORIZED))
    }

    /// Where the token goes. Defaults to `params.token`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Shorthand for a JSON body placement: `params.token` or the top-level `token` (the ticket's form).
    pub fn token_field(self, field: TokenField) -> Self {
        self.placement(Placement::JsonBody(field))
    }

    /// How a rejection is recognised. Defaults to the JSON-RPC error `-9999`.
    pub fn rejection(mut self, rule: RejectionRule) -> Self {
        self.rejection = rule;
        self
    }

    /// The JSON-RPC error code that means "token rejected". Defaults to [`PAYNET_REJECTION_CODE`].
    pub fn rejection_code(self, code: i64) -> Self {
        self.rejection(RejectionRule::JsonRpcError { code })
    }

    /// The largest request body accepted; a larger one is refused unsent. Defaults to
    /// [`DEFAULT_MAX_REQUEST_BODY`].
    pub fn max_request_body(mut self, limit: usize) -> Self {
        self.max_request_body = limit;
        self
    }

    /// Response bodies longer than this stream through without inspection. Defaults to
    /// [`DEFAULT_INSPECT_LIMIT`].
    pub fn inspect_limit(mut self, limit: usize) -> Self {
        self.inspect_limit = limit;
        self
    }

    /// Asks the gateway for uncompressed answers: every request the layer sends carries
    /// `Accept-Encoding: identity`, replacing what the caller or a `DecompressionLayer` above set. Defaults to
    /// `false`: the `Accept-Encoding` of the request is left alone, and gzip, deflate and br answers are decoded
    /// (a copy, up to the inspection limit) to look for the rejection, then handed on still compressed.
    ///
    /// Turn it on when the build has no `decompression` feature, or to spare the decoding when the answers are
    /// small anyway (a JSON-RPC answer rarely gains from compression). A gateway that compresses regardless is
    /// still read, calls and logins alike; an answer in a coding this build cannot read is handed on uninspected,
    /// counted in [`TokenManager::uninspected_responses`], and said once at WARN.
    pub fn identity_encoding(mut self, on: bool) -> Self {
        self.identity_encoding = on;
        self
    }

    /// The manager of the default credential.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The manager of the credential named `name`, the default's included.
    pub fn credential_manager(&self, name: &str) -> Option<&TokenManager> {
        std::iter::once(self)
            .chain(&self.others)
            .map(|layer| &layer.manager)
            .find(|manager| manager.name() == name)
    }

    /// The names of the credentials served, the default's first.
    pub fn credential_names(&self) -> Vec<&str> {
        std::iter::once(self)
            .chain(&self.others)
            .map(|layer| layer.manager.name())
            .collect()
    }

    /// This credential's own policy.
    fn policy(&self) -> ExchangePolicy {
        let detector = match &self.rejection {
            RejectionRule::JsonRpcError { code } => Some(RejectionDetector::new(*code)),
            RejectionRule::HttpStatus(_) => None,
        };
        ExchangePolicy {
            manager: self.manager.clone(),
            placement: self.placement.clone(),
            rejection: self.rejection.clone(),
            detector,
            max_request_body: self.max_request_body,
            inspect_limit: self.inspect_limit,
            identity_encoding: self.identity_encoding,
        }
    }

    /// The policy of every credential, made once and shared by the services and adapters made from this layer.
    pub(crate) fn credentials(&self) -> Arc<Credentials> {
        Arc::new(Credentials::new(
            self.policy(),
            self.others.iter().map(Self::policy).collect(),
        ))
    }
}

// `S: Clone` here as well as on the service: a stack whose inner service is not `Clone` then fails where the layer is
// applied, naming `Clone`, instead of at the first call with "method cannot be called".
impl<S: Clone> Layer<S> for PaynetAuthLayer {
    type Service = PaynetAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PaynetAuth::from_credentials(inner, self.credentials())
    }
}
