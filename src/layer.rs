//! [`PaynetAuthLayer`]: what the layer does, and how it is configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, StatusCode, header};
use tower_layer::Layer;

use crate::body::{RejectionDetector, TokenField};
use crate::service::PaynetAuth;
use crate::token::TokenManager;

/// The largest request body the layer buffers by default (1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// Response bodies up to this size (64 KiB) are read and inspected for a rejection by default; longer ones stream
/// through untouched.
pub const DEFAULT_INSPECT_LIMIT: usize = 64 << 10;
/// Paynet's JSON-RPC error code for a rejected token.
pub const PAYNET_REJECTION_CODE: i64 = -9999;

/// Where the token goes in each request.
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionRule {
    /// A JSON-RPC response whose `error.code` is this code, whatever the HTTP status.
    JsonRpcError {
        /// The code (Paynet: `-9999`).
        code: i64,
    },
    /// A response with this HTTP status (`401 Unauthorized` for Bearer APIs). The body is not read.
    HttpStatus(StatusCode),
}

/// Settings shared by every service the layer makes.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) manager: TokenManager,
    pub(crate) placement: Placement,
    pub(crate) rejection: RejectionRule,
    pub(crate) detector: Option<RejectionDetector>,
    pub(crate) max_request_body: usize,
    pub(crate) inspect_limit: usize,
    /// Responses passed on without inspection because they were longer than `inspect_limit`; shared with the
    /// layer that made these settings.
    pub(crate) uninspected: Arc<AtomicU64>,
}

impl Settings {
    /// Counts a response passed on without inspection; off the hot path (only long responses get here).
    pub(crate) fn count_uninspected(&self) {
        self.uninspected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            inspect_limit = self.inspect_limit,
            "response longer than the inspect limit: passed on without looking for a rejection"
        );
    }
}

/// Authorises every request with the manager's token and replays it once when the gateway rejects the token.
///
/// The Paynet preset ([`new`](Self::new)) writes the token into `params.token` of the JSON-RPC body and treats the
/// JSON-RPC error `-9999` as a rejection. [`bearer`](Self::bearer) is the preset for APIs that take
/// `Authorization: Bearer` and answer `401`.
///
/// ```
/// use paynet_auth::{PaynetAuthLayer, TokenManager};
/// use paynet_auth::body::TokenField;
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
#[derive(Debug, Clone)]
pub struct PaynetAuthLayer {
    manager: TokenManager,
    placement: Placement,
    rejection: RejectionRule,
    max_request_body: usize,
    inspect_limit: usize,
    uninspected: Arc<AtomicU64>,
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
            uninspected: Arc::default(),
        }
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

    /// The manager.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// How many responses the services this layer (and its clones) made passed on without looking for a
    /// rejection, because they were longer than [`inspect_limit`](Self::inspect_limit), by `Content-Length` or
    /// as they streamed. A rejection in such a response is not recognised; a count that grows says the limit is
    /// too low for the gateway's answers.
    pub fn uninspected_responses(&self) -> u64 {
        self.uninspected.load(Ordering::Relaxed)
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        let detector = match &self.rejection {
            RejectionRule::JsonRpcError { code } => Some(RejectionDetector::new(*code)),
            RejectionRule::HttpStatus(_) => None,
        };
        Arc::new(Settings {
            manager: self.manager.clone(),
            placement: self.placement.clone(),
            rejection: self.rejection.clone(),
            detector,
            max_request_body: self.max_request_body,
            inspect_limit: self.inspect_limit,
            uninspected: Arc::clone(&self.uninspected),
        })
    }
}

impl<S> Layer<S> for PaynetAuthLayer {
    type Service = PaynetAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PaynetAuth::from_settings(inner, self.settings())
    }
}
