//! [`PaynetAuthLayer`]: what the layer does, where it goes in a stack, and the policies it holds.

use std::sync::Arc;

use tower_layer::Layer;

use super::service::PaynetAuth;
use crate::envelope::TokenField;
use crate::exchange::{AuthPolicy, Placement, PolicySet, RejectionRule};
use crate::token::TokenManager;

/// Authorises every request with the manager's token and replays it once when the gateway rejects the token.
///
/// The Paynet preset ([`new`](Self::new)) writes the token into `params.token` of the JSON-RPC body and treats the
/// JSON-RPC error `-9999` as a rejection. [`bearer`](Self::bearer) is the preset for APIs that take
/// `Authorization: Bearer` and answer `401`.
///
/// The layer is plumbing around a [`PolicySet`]: what each exchange follows is an [`AuthPolicy`], and the set
/// holds the default one and one per other credential. The layer keeps the set behind an `Arc`, and every service
/// it makes shares that `Arc`: making a service builds nothing. The builder methods below change the default
/// policy; [`from_policies`](Self::from_policies) takes a set built beforehand.
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
/// # use paynet_auth::{PaynetAuthLayer, PaynetLogin, TokenManager};
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
/// use paynet_auth::{PaynetAuthLayer, PaynetLogin, TokenManager};
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
/// use paynet_auth::policy::TokenField;
/// use paynet_auth::PaynetLogin;
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
/// token, store row, lease and backoff: add each with [`credential`](Self::credential) (or build a [`PolicySet`]),
/// and name the one a request uses with a [`CredentialName`](crate::CredentialName) in its extensions. A request
/// without one uses the layer's own credential, the default.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::{ClientCredentials, CredentialName, PaynetAuthLayer, PaynetLogin, TokenManager};
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
/// request.extensions_mut().insert(CredentialName::new("merchant-42"));
/// ```
#[derive(Debug, Clone)]
pub struct PaynetAuthLayer {
    /// Shared with every service made from this layer. The builder methods change it through `Arc::make_mut`,
    /// which copies it only if a service already shares it.
    policies: Arc<PolicySet>,
}

impl PaynetAuthLayer {
    /// The Paynet preset ([`AuthPolicy::paynet`]): token in `params.token`, rejection is the JSON-RPC error
    /// `-9999`.
    pub fn new(manager: TokenManager) -> Self {
        Self::from_policies(PolicySet::new(AuthPolicy::paynet(manager)))
    }

    /// The Bearer preset ([`AuthPolicy::bearer`]): `Authorization: Bearer <token>`, rejection is HTTP `401`.
    pub fn bearer(manager: TokenManager) -> Self {
        Self::from_policies(PolicySet::new(AuthPolicy::bearer(manager)))
    }

    /// A layer serving the policies of `policies`: its default for requests without a
    /// [`CredentialName`](crate::CredentialName), the others by name.
    pub fn from_policies(policies: impl Into<Arc<PolicySet>>) -> Self {
        Self {
            policies: policies.into(),
        }
    }

    /// Serves the credentials of `layer` too, each with its policy (preset, placement, rejection rule, limits), for
    /// requests whose [`CredentialName`](crate::CredentialName) names its manager ([`TokenManager::name`]): the
    /// policies of `layer`'s set join this layer's with [`PolicySet::insert`].
    ///
    /// # Panics
    ///
    /// If a credential of that name is already served: each name selects one credential. (A configuration file
    /// with a name twice is refused when it is loaded; [`PolicySet::insert`] says it as an error.)
    pub fn credential(mut self, layer: PaynetAuthLayer) -> Self {
        let policies = Arc::make_mut(&mut self.policies);
        for policy in layer.policies.iter() {
            if policies.insert(policy.clone()).is_err() {
                panic!(
                    "PaynetAuthLayer::credential: a credential named `{}` is already served; give each manager \
                     its own name (TokenManagerBuilder::name)",
                    policy.name()
                );
            }
        }
        self
    }

    fn default_policy(mut self, edit: impl FnOnce(AuthPolicy) -> AuthPolicy) -> Self {
        let policy = Arc::make_mut(&mut self.policies).default_mut();
        *policy = edit(policy.clone());
        self
    }

    /// Where the token goes. Defaults to `params.token` ([`AuthPolicy::placement`]).
    pub fn placement(self, placement: Placement) -> Self {
        self.default_policy(|policy| policy.placement(placement))
    }

    /// Shorthand for a JSON body placement: `params.token` or the top-level `token`.
    pub fn token_field(self, field: TokenField) -> Self {
        self.placement(Placement::JsonBody(field))
    }

    /// How a rejection is recognised. Defaults to the JSON-RPC error `-9999` ([`AuthPolicy::rejection`]).
    pub fn rejection(self, rule: RejectionRule) -> Self {
        self.default_policy(|policy| policy.rejection(rule))
    }

    /// The JSON-RPC error code that means "token rejected". Defaults to
    /// [`PAYNET_REJECTION_CODE`](crate::policy::PAYNET_REJECTION_CODE).
    pub fn rejection_code(self, code: i64) -> Self {
        self.rejection(RejectionRule::json_rpc_error(code))
    }

    /// The largest request body accepted; a larger one is refused unsent. Defaults to
    /// [`DEFAULT_MAX_REQUEST_BODY`](crate::policy::DEFAULT_MAX_REQUEST_BODY).
    pub fn max_request_body(self, limit: usize) -> Self {
        self.default_policy(|policy| policy.max_request_body(limit))
    }

    /// Response bodies longer than this stream through without inspection. Defaults to
    /// [`DEFAULT_INSPECT_LIMIT`](crate::policy::DEFAULT_INSPECT_LIMIT).
    pub fn inspect_limit(self, limit: usize) -> Self {
        self.default_policy(|policy| policy.inspect_limit(limit))
    }

    /// Asks the gateway for uncompressed answers ([`AuthPolicy::identity_encoding`], which says when to). Defaults
    /// to `false`.
    pub fn identity_encoding(self, on: bool) -> Self {
        self.default_policy(|policy| policy.identity_encoding(on))
    }

    /// The policies served: the default and one per other credential.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The manager of the default credential.
    pub fn manager(&self) -> &TokenManager {
        self.policies.default_policy().manager()
    }

    /// The manager of the credential named `name`, the default's included.
    pub fn credential_manager(&self, name: &str) -> Option<&TokenManager> {
        self.policies.get(name).map(AuthPolicy::manager)
    }

    /// The names of the credentials served, the default's first.
    pub fn credential_names(&self) -> Vec<&str> {
        self.policies.names()
    }
}

impl From<PolicySet> for PaynetAuthLayer {
    fn from(policies: PolicySet) -> Self {
        Self::from_policies(policies)
    }
}

impl From<AuthPolicy> for PaynetAuthLayer {
    /// A layer of one policy.
    fn from(policy: AuthPolicy) -> Self {
        Self::from_policies(PolicySet::new(policy))
    }
}

impl From<PaynetAuthLayer> for PolicySet {
    /// The layer's policies (copied only if a service made from the layer still shares them).
    fn from(layer: PaynetAuthLayer) -> Self {
        Arc::unwrap_or_clone(layer.policies)
    }
}

impl From<PaynetAuthLayer> for Arc<PolicySet> {
    /// The layer's policies, still shared with the services made from it.
    fn from(layer: PaynetAuthLayer) -> Self {
        layer.policies
    }
}

impl From<&PaynetAuthLayer> for Arc<PolicySet> {
    /// The layer's policies, shared with it.
    fn from(layer: &PaynetAuthLayer) -> Self {
        Arc::clone(&layer.policies)
    }
}

// `S: Clone` here as well as on the service: a stack whose inner service is not `Clone` then fails where the layer is
// applied, naming `Clone`, instead of at the first call with "method cannot be called".
impl<S: Clone> Layer<S> for PaynetAuthLayer {
    type Service = PaynetAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PaynetAuth::with_policies(inner, Arc::clone(&self.policies))
    }
}
