//! [`AuthPolicy`], what an exchange follows: the token manager, where the token goes, how a rejection is
//! recognised, and the limits.

use http::{HeaderName, StatusCode, header};

use crate::envelope::{RejectionDetector, TokenField};
use crate::token::TokenManager;

/// The largest request body the layer buffers by default (1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// Response bodies up to this size (64 KiB) are read and inspected for a rejection by default; longer ones stream
/// through untouched.
pub const DEFAULT_INSPECT_LIMIT: usize = 64 << 10;
/// Paynet's JSON-RPC error code for a rejected token.
pub const PAYNET_REJECTION_CODE: i64 = -9999;

/// Where the token goes in each request.
///
/// ```
/// use http::HeaderName;
/// use http::header::AUTHORIZATION;
/// use paynet_auth::{PaynetAuthLayer, PaynetLogin, TokenManager};
/// use paynet_auth::policy::Placement;
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// // A gateway that takes the bare token in a header of its own.
/// let header = Placement::Header { name: HeaderName::from_static("x-session-token"), prefix: String::new() };
/// let layer = PaynetAuthLayer::new(manager).placement(header);
/// # let _ = layer;
/// assert_eq!(Placement::bearer(), Placement::Header { name: AUTHORIZATION, prefix: "Bearer ".into() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Into the JSON-RPC body, at `params.token` or the top-level `token`.
    JsonBody(TokenField),
    /// Into a header, as `prefix` followed by the token (`Authorization: Bearer …`).
    Header {
        /// The header.
        name: HeaderName,
        /// What precedes the token.
        prefix: String,
    },
}

impl Placement {
    /// `Authorization: Bearer <token>`.
    pub fn bearer() -> Self {
        Placement::Header {
            name: header::AUTHORIZATION,
            prefix: "Bearer ".to_owned(),
        }
    }
}

/// How the layer recognises that the gateway rejected the token.
///
/// The JSON-RPC rule holds its [`RejectionDetector`], made once when the rule is: the code it looks for is the
/// detector's own ([`RejectionDetector::code`]), so the rule states it once. Build it with
/// [`json_rpc_error`](Self::json_rpc_error); two rules are equal when they look for the same code or status.
///
/// ```
/// use http::StatusCode;
/// use paynet_auth::{AuthPolicy, PaynetLogin, TokenManager};
/// use paynet_auth::policy::{PAYNET_REJECTION_CODE, RejectionRule};
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// // The rule of `AuthPolicy::paynet`.
/// assert_eq!(AuthPolicy::paynet(manager.clone()).rejection_rule(), &RejectionRule::json_rpc_error(PAYNET_REJECTION_CODE));
/// // A gateway that answers `403 Forbidden` to a stale token, whatever the body says.
/// let policy = AuthPolicy::paynet(manager).rejection(RejectionRule::HttpStatus(StatusCode::FORBIDDEN));
/// # let _ = policy;
/// assert_ne!(RejectionRule::HttpStatus(StatusCode::FORBIDDEN), RejectionRule::HttpStatus(StatusCode::UNAUTHORIZED));
/// assert!(matches!(RejectionRule::json_rpc_error(-32001), RejectionRule::JsonRpcError(d) if d.code() == -32001));
/// ```
// The detector's prepared search makes the JSON-RPC variant large. A rule is made once per policy and then lives in
// the shared set; calls borrow it and never move it, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionRule {
    /// A JSON-RPC response whose `error.code` is the detector's code, whatever the HTTP status. The body is read
    /// up to the inspection limit.
    JsonRpcError(RejectionDetector),
    /// A response with this HTTP status (`401 Unauthorized` for Bearer APIs). The body is not read.
    HttpStatus(StatusCode),
}

impl RejectionRule {
    /// A JSON-RPC response whose `error.code` is `code` (Paynet: [`PAYNET_REJECTION_CODE`]).
    pub fn json_rpc_error(code: i64) -> Self {
        RejectionRule::JsonRpcError(RejectionDetector::new(code))
    }

    /// What the answer's head alone says: `Some(rejected)` for a status rule, `None` when the body must be read.
    pub(crate) fn judge_head(&self, status: StatusCode) -> Option<bool> {
        match self {
            RejectionRule::JsonRpcError(_) => None,
            RejectionRule::HttpStatus(rejected) => Some(status == *rejected),
        }
    }

    /// Whether the answer's `body` holds a rejection. A status rule finds none there: it looks at the head only.
    pub(crate) fn rejects_body(&self, body: &[u8]) -> bool {
        match self {
            RejectionRule::JsonRpcError(detector) => detector.is_rejection(body),
            RejectionRule::HttpStatus(_) => false,
        }
    }
}

/// What an exchange follows: the token manager, where the token goes, how a rejection is recognised, how much of
/// a request and of an answer may be read, and whether to ask for uncompressed answers.
///
/// It is the policy of the layer, apart from the plumbing, as tower's `retry` keeps its `Policy` apart from the
/// service: [`PaynetAuthLayer`](crate::PaynetAuthLayer) holds a [`PolicySet`](crate::PolicySet) of these (one, or
/// one per credential), and so do the reqwest adapter and `hyper_client::authorised_http_client`. The presets
/// are [`paynet`](Self::paynet) and [`bearer`](Self::bearer); each setting has a builder method that says its
/// default.
///
/// ```
/// use paynet_auth::policy::TokenField;
/// use paynet_auth::{AuthPolicy, PaynetAuthLayer, PaynetLogin, TokenManager};
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// let policy = AuthPolicy::paynet(manager).token_field(TokenField::TopLevel).max_request_body(64 << 10);
/// let layer = PaynetAuthLayer::from(policy);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    pub(crate) manager: TokenManager,
    pub(crate) placement: Placement,
    pub(crate) rejection: RejectionRule,
    pub(crate) max_request_body: usize,
    pub(crate) inspect_limit: usize,
    pub(crate) identity_encoding: bool,
}

impl AuthPolicy {
    /// The Paynet preset: token in `params.token`, rejection is the JSON-RPC error `-9999`.
    pub fn paynet(manager: TokenManager) -> Self {
        Self {
            manager,
            placement: Placement::JsonBody(TokenField::Params),
            rejection: RejectionRule::json_rpc_error(PAYNET_REJECTION_CODE),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            inspect_limit: DEFAULT_INSPECT_LIMIT,
            identity_encoding: false,
        }
    }

    /// The Bearer preset: `Authorization: Bearer <token>`, rejection is HTTP `401`.
    pub fn bearer(manager: TokenManager) -> Self {
        Self::paynet(manager)
            .placement(Placement::bearer())
            .rejection(RejectionRule::HttpStatus(StatusCode::UNAUTHORIZED))
    }

    /// Where the token goes. Defaults to `params.token`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Shorthand for a JSON body placement: `params.token` or the top-level `token`.
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
        self.rejection(RejectionRule::json_rpc_error(code))
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

    /// Asks the gateway for uncompressed answers: every request sent under this policy carries
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

    /// The token manager.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The policy's name: its manager's ([`TokenManager::name`]), which a request's
    /// [`CredentialName`](crate::CredentialName) names.
    pub fn name(&self) -> &str {
        self.manager.name()
    }

    /// How a rejection is recognised.
    pub fn rejection_rule(&self) -> &RejectionRule {
        &self.rejection
    }
}
