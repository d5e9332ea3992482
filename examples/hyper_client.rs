//! The layer over the built-in HTTPS client (hyper-util + rustls), composed with `ServiceBuilder` and timeouts, in
//! the shape production has: the gateway speaks HTTPS with a certificate from a private CA, which the client
//! trusts through `ca_file` (YAML: `tls.ca_file`).
//!
//! Runs against the gateway simulator (`paynet-sim`, serving HTTPS) and an in-memory SQLite store:
//! `cargo run --example hyper_client --features sqlite,hyper-client`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use paynet_auth::PaynetLogin;
use paynet_auth::hyper_client::HttpClient;
use paynet_auth::store::{self, StoreOptions};
use paynet_auth::{BoxError, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use paynet_sim::tls::ServerTls;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A certificate for 127.0.0.1 signed by a CA made now; the CA is written where the client reads it.
    let (tls, ca) = ServerTls::generated();
    let gateway = Simulator::builder()
        .single_session(true)
        .tls(tls)
        .start()
        .await?;
    let ca_file =
        std::env::temp_dir().join(format!("paynet-example-ca-{}.pem", std::process::id()));
    ca.write_cert(&ca_file)?;

    let store = store::connect("sqlite::memory:", StoreOptions::default()).await?;
    let manager = TokenManager::builder(PaynetLogin::new(
        gateway.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .shared_store(store)
    .login_timeout(Duration::from_secs(5))
    .build()?;

    // Mozilla's roots plus the private CA; HTTPS_PROXY / NO_PROXY would be honoured (`.proxy(url)` sets one).
    let client = HttpClient::builder()
        .ca_file(&ca_file)
        .pool_idle_timeout(Some(Duration::from_secs(30)))
        .build()?;
    // The timeout sits inside the layer, so it bounds each call and the login (which goes through the same stack),
    // but a refresh and its replay are not cut short by the first call's budget.
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager.clone()))
        .timeout(Duration::from_secs(10))
        .service(client);

    for (i, method) in ["getCategoriesList", "getProvidersList"]
        .into_iter()
        .enumerate()
    {
        let body = format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":{i},"params":{{}}}}"#);
        let request = http::Request::post(format!("{}/v2/service", gateway.base_url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = service.clone().oneshot(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        println!("{method}: {}", String::from_utf8_lossy(&body));
        if i == 0 {
            // The gateway forgets every token: the next call is rejected, refreshed and replayed transparently.
            gateway.expire_all();
        }
    }
    let stats = gateway.stats();
    println!(
        "logins: {}, rejections: {}, token generation: {}, TLS handshakes: {}",
        stats.logins,
        stats.rejections,
        manager.cached().map_or(0, |t| t.generation().0),
        stats.tls_handshakes,
    );
    let _ = std::fs::remove_file(&ca_file);
    Ok(())
}
