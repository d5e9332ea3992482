//! The reqwest-middleware adapter: a `reqwest_middleware::ClientWithMiddleware` whose calls carry the token.
//!
//! `cargo run --example reqwest_middleware --features reqwest` runs it against the gateway simulator (`paynet-sim`).

use paynet_auth::reqwest_adapter::PaynetAuthMiddleware;
use paynet_auth::token::PaynetLogin;
use paynet_auth::{BoxError, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let gateway = Simulator::builder().start().await?;
    let manager = TokenManager::builder(PaynetLogin::new(
        gateway.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .build()?;

    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(PaynetAuthMiddleware::new(
            PaynetAuthLayer::new(manager.clone()),
            http,
        ))
        .build();

    let answer = client
        .post(format!("{}/v2/user", gateway.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"getDepositInfo","id":1,"params":{}}"#)
        .send()
        .await?
        .text()
        .await?;
    println!("getDepositInfo: {answer}");
    println!("logins: {}", manager.logins());
    Ok(())
}
