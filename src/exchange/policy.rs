//! What the layer sets for every exchange: where the token goes, how a rejection is recognised, and the limits.

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
/// use paynet_auth::token::PaynetLogin;
/// use paynet_auth::{Placement, PaynetAuthLayer, TokenManager};
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
/// ```
/// use http::StatusCode;
/// use paynet_auth::token::PaynetLogin;
/// use paynet_auth::{PAYNET_REJECTION_CODE, PaynetAuthLayer, RejectionRule, TokenManager};
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// assert_eq!(PAYNET_REJECTION_CODE, -9999); // the rule of `PaynetAuthLayer::new`
/// // A gateway that answers `403 Forbidden` to a stale token, whatever the body says.
/// let layer = PaynetAuthLayer::new(manager).rejection(RejectionRule::HttpStatus(StatusCode::FORBIDDEN));
/// # let _ = layer;
/// assert_ne!(RejectionRule::HttpStatus(StatusCode::FORBIDDEN), RejectionRule::HttpStatus(StatusCode::UNAUTHORIZED));
/// ```
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

/// What [`PaynetAuthLayer`](crate::PaynetAuthLayer) sets for every exchange it authorises: the token manager,
/// where the token goes, how a rejection is recognised (with the detector for a JSON-RPC rule, built once), how
/// much of a request and of an answer may be read, and whether to ask for uncompressed answers.
///
/// Made once by the layer and shared, behind an `Arc`, by every service it makes and by the reqwest adapter.
#[derive(Debug)]
pub(crate) struct ExchangePolicy {
    pub(crate) manager: TokenManager,
    pub(crate) placement: Placement,
    pub(crate) rejection: RejectionRule,
    pub(crate) detector: Option<RejectionDetector>,
    pub(crate) max_request_body: usize,
    pub(crate) inspect_limit: usize,
    pub(crate) identity_encoding: bool,
}
