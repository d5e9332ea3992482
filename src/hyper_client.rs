//! A ready inner service: hyper-util's pooled HTTP/1 client on the tokio runtime (feature `hyper-client`).
//!
//! The layer wraps any `Service<http::Request<_>>`; this is the one most services would write first, with the
//! request body type the layer sends (`Full<Bytes>`: the layer buffers the body to write the token into it).
//! Build your own [`Client`] when you need TLS or other pool settings: the layer takes it the same way.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::{PaynetAuth, PaynetAuthLayer};

/// hyper-util's pooled client over plain HTTP, sending the bodies the layer hands on.
///
/// [`http_client`] makes one with hyper-util's defaults; one built with other pool settings has the same type:
///
/// ```
/// use std::time::Duration;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::{TokioExecutor, TokioTimer};
/// use paynet_auth::hyper_client::HttpClient;
/// use paynet_auth::token::PaynetLogin;
/// use paynet_auth::{PaynetAuth, PaynetAuthLayer, TokenManager};
/// use tower::Layer;
///
/// let client: HttpClient = Client::builder(TokioExecutor::new())
///     .pool_idle_timeout(Duration::from_secs(30))
///     .pool_timer(TokioTimer::new())
///     .pool_max_idle_per_host(4)
///     .build_http();
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// let service: PaynetAuth<HttpClient> = PaynetAuthLayer::new(manager).layer(client);
/// # let _ = service;
/// ```
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1 client on the tokio runtime. Idle connections are closed after hyper-util's default of 90 s,
/// which needs a timer: this client has tokio's.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = paynet_auth::hyper_client::http_client();
/// # let _ = client; }
/// ```
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build_http()
}

/// The layer over a new [`http_client`]: a service that calls the gateway with the token written in.
///
/// ```
/// use paynet_auth::hyper_client::authorised_http_client;
/// use paynet_auth::token::PaynetLogin;
/// use paynet_auth::{PaynetAuthLayer, TokenManager};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "https://gateway.example/gw",
///     "username_17627_56530",
///     "secret".into(),
///     4_027_096,
/// ))
/// .build()?;
/// let service = authorised_http_client(&PaynetAuthLayer::new(manager));
/// # let _ = service; Ok(()) }
/// ```
pub fn authorised_http_client(layer: &PaynetAuthLayer) -> PaynetAuth<HttpClient> {
    tower_layer::Layer::layer(layer, http_client())
}
