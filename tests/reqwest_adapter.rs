//! The reqwest-middleware adapter end to end against the simulator: same token manager, same replay rule.

mod support;

use paynet_auth::reqwest_adapter::PaynetAuthMiddleware;
use paynet_auth::token::{Generation, PaynetLogin};
use paynet_auth::{PaynetAuthLayer, TokenManager};
use paynet_sim::{LoginFailure, Simulator};
use support::{PASSWORD, TERMINAL, USERNAME};

fn client(manager: &TokenManager) -> reqwest_middleware::ClientWithMiddleware {
    let http = reqwest::Client::new();
    reqwest_middleware::ClientBuilder::new(http.clone())
        .with(PaynetAuthMiddleware::new(
            PaynetAuthLayer::new(manager.clone()),
            http,
        ))
        .build()
}

async fn categories(
    client: &reqwest_middleware::ClientWithMiddleware,
    sim: &Simulator,
) -> reqwest_middleware::Result<serde_json::Value> {
    let text = client
        .post(format!("{}/v2/service", sim.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":5,"params":{}}"#)
        .send()
        .await?
        .text()
        .await?;
    Ok(serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn adapter_logs_in_injects_and_replays_after_a_rejection() {
    let sim = Simulator::builder()
        .single_session(true)
        .start()
        .await
        .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    let client = client(&manager);

    let answer = categories(&client, &sim).await.unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    assert_eq!(sim.stats().logins, 1);

    sim.expire_all();
    let answer = categories(&client, &sim).await.unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let stats = sim.stats();
    assert_eq!(stats.rejections, 1);
    assert_eq!(stats.logins, 2);
    assert_eq!(stats.calls_to("getCategoriesList"), 2);
    assert_eq!(manager.cached().unwrap().generation(), Generation(2));
}

#[tokio::test]
async fn adapter_reports_a_failed_login_as_a_middleware_error() {
    let sim = Simulator::builder()
        .login_failure(Some(LoginFailure::WrongCredentials))
        .start()
        .await
        .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    let error = categories(&client(&manager), &sim).await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Middleware(_)),
        "{error}"
    );
    let message = format!("{error:#}");
    assert!(message.contains("Invalid login or password"), "{message}");
    assert!(!message.contains(PASSWORD));
    assert_eq!(sim.stats().calls_to("getCategoriesList"), 0);
}
