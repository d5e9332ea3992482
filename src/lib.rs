//! Tower middleware that keeps a gateway token for you.
//!
//! [`PaynetAuthLayer`] wraps any `Service<http::Request<_>>`. For each request it buffers the body, writes the
//! current token into it (or into a header), sends it, and looks at the answer: when the gateway says the token was
//! rejected, it obtains a newer one and replays the request once. Tokens are obtained lazily, persisted in a
//! [`TokenStore`](store::TokenStore), and refreshed by one task per process and one process per fleet.
// On docs.rs (all features on), each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]

pub mod clock;
pub mod coding;
pub mod config;
pub mod deadline;
pub mod envelope;
pub mod error;
#[cfg(feature = "hyper-client")]
pub mod hyper_client;
pub mod record;
pub mod redact;
#[cfg(feature = "reqwest")]
pub mod reqwest_adapter;
pub mod setup;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;

mod exchange;
mod middleware;

pub use error::{BoxError, Error, InjectError, LoginError, SetupError, StoreError, TokenError};
pub use exchange::{
    Credential, DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, PAYNET_REJECTION_CODE, Placement,
    RejectionRule, ResponseBody,
};
pub use middleware::{PaynetAuth, PaynetAuthLayer, ResponseFuture};
pub use token::{Health, Stats, TokenManager, TokenManagerBuilder};
