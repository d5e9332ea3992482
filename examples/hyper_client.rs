//! The layer over hyper-util's client, composed with `ServiceBuilder` and timeouts.
//!
//! Runs against the gateway simulator (`paynet-sim`) and an in-memory SQLite store:
//! `cargo run --example hyper_client --features sqlite,hyper-client`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::store::{self, StoreOptions};
use paynet_auth::token::PaynetLogin;
use paynet_auth::{BoxError, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let gateway = Simulator::builder().single_session(true).start().await?;

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

    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http::<Full<Bytes>>();
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
        "logins: {}, rejections: {}, token generation: {}",
        stats.logins,
        stats.rejections,
        manager.cached().map_or(0, |t| t.generation().0)
    );
    Ok(())
}
