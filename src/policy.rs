//! What the layer does in each exchange: where the token goes ([`Placement`], [`TokenField`]), how a rejection is
//! recognised ([`RejectionRule`]), how much of a request and of an answer may be read, and which policy a request
//! gets when one layer serves several credentials ([`PolicySet`]).
//!
//! [`AuthPolicy`] and [`PolicySet`] are at the crate root too; the rest is what a gateway other than Paynet's, or
//! a limit other than the default, needs.
//!
//! ```
//! use paynet_auth::policy::{AuthPolicy, DEFAULT_MAX_REQUEST_BODY, Placement, TokenField};
//! use paynet_auth::{PaynetLogin, TokenManager};
//!
//! let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
//! let policy = AuthPolicy::paynet(TokenManager::builder(login).build().unwrap())
//!     .token_field(TokenField::TopLevel)
//!     .max_request_body(4 * DEFAULT_MAX_REQUEST_BODY);
//! # let _ = (policy, Placement::bearer());
//! ```

pub use crate::envelope::{RejectionDetector, TokenField};
pub use crate::exchange::{
    AuthPolicy, DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, PAYNET_REJECTION_CODE, Placement,
    PolicySet, RejectionRule,
};
