//! Tower middleware that keeps a gateway token for you.
//!
//! [`PaynetAuthLayer`] wraps any `Service<http::Request<_>>`. For each request it buffers the body, writes the
//! current token into it (or into a header), sends it, and looks at the answer: when the gateway says the token was
//! rejected, it obtains a newer one and replays the request once. Tokens are obtained lazily, persisted in a
//! [`TokenStore`](store::TokenStore), and refreshed by one task per process and one process per fleet.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use paynet_auth::{BoxError, PaynetAuthLayer, PaynetLogin, TokenManager};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! // A stand-in for the gateway: `login` grants `T-1`, a call with it is answered.
//! let gateway = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
//!     let path = request.uri().path().to_owned();
//!     let call: serde_json::Value = serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
//!     let answer = if path.ends_with("/v2/user") {
//!         serde_json::json!({"jsonrpc": "2.0", "id": call["id"], "result": {"token": "T-1"}})
//!     } else {
//!         assert_eq!(call["params"]["token"], "T-1"); // written in by the layer
//!         serde_json::json!({"jsonrpc": "2.0", "id": call["id"], "result": ["mobile", "utilities"]})
//!     };
//!     Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(answer.to_string()))))
//! });
//!
//! let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
//! let manager = TokenManager::builder(login).build()?; // an in-memory store; see `store` for databases
//! let service = ServiceBuilder::new()
//!     .layer(PaynetAuthLayer::new(manager.clone()))
//!     .service(gateway);
//!
//! let request = http::Request::post("https://gateway.example/gw/v2/service")
//!     .body(Full::new(Bytes::from(r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#)))?;
//! let answer = service.oneshot(request).await?.into_body().collect().await?.to_bytes();
//! let answer: serde_json::Value = serde_json::from_slice(&answer)?;
//! assert_eq!(answer["result"], serde_json::json!(["mobile", "utilities"]));
//! assert_eq!(manager.logins(), 1); // logged in lazily, once
//! # Ok(()) }
//! ```
// On docs.rs (all features on), each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]

pub mod clock;
// Public for the benches, the fuzz targets and the tests; not part of the documented API (a user names
// `policy::TokenField` and `policy::RejectionDetector`, re-exported from here).
#[doc(hidden)]
pub mod coding;
pub mod config;
pub mod deadline;
#[doc(hidden)]
pub mod envelope;
pub mod error;
#[cfg(feature = "hyper-client")]
pub mod hyper_client;
pub mod policy;
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

pub use error::{
    BoxError, ConfigError, Error, LoginError, PolicySetError, SetupError, StoreError, TokenError,
};
pub use exchange::{CredentialName, ResponseBody};
pub use middleware::{PaynetAuth, PaynetAuthLayer, ResponseFuture};
pub use policy::{AuthPolicy, PolicySet};
pub use token::{ClientCredentials, PaynetLogin, TokenManager, TokenManagerBuilder, TokenSource};

// The README's Rust snippets are compiled as doc tests, so that they keep up with the public paths.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;
