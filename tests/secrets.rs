//! Passwords, tokens and the encryption key never appear in logs or in `Debug` output.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::config::Config;
use paynet_auth::store::{StoreOptions, TokenStore};
use paynet_auth::{PaynetAuthLayer, TokenManager};
use paynet_sim::{LoginFailure, Simulator};
use support::logs::Captured;
use support::{PASSWORD, TERMINAL, USERNAME};
use tower::{Layer, ServiceExt};

/// base64 of 32 bytes of 0x2a.
const ENCRYPTION_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

fn assert_free_of_secrets(what: &str, text: &str, tokens: &[String]) {
    assert!(!text.contains(PASSWORD), "{what} shows the password");
    assert!(
        !text.contains(ENCRYPTION_KEY),
        "{what} shows the encryption key"
    );
    for token in tokens {
        assert!(
            !text.contains(token.as_str()),
            "{what} shows the token {token}"
        );
    }
}

// A current-thread runtime, so that the thread-local subscriber sees every task: the layer's, the refresh
// task's, the store's and the simulator's.
#[tokio::test]
async fn no_secret_in_trace_logs_through_logins_rejections_and_failures() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);

    let sim = Simulator::builder()
        .single_session(true)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = paynet_auth::store::connect(
        &format!("sqlite://{}/tokens.db", dir.path().display()),
        StoreOptions {
            encryption_key: Some(ENCRYPTION_KEY.into()),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .shared_store(Arc::clone(&store))
    .backoff(Duration::from_millis(1), Duration::from_millis(1))
    .build()
    .unwrap();
    let service = PaynetAuthLayer::new(manager.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let call = || {
        let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
            .body(Full::new(Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
            )))
            .unwrap();
        service.clone().oneshot(request)
    };
    let mut debug_output = String::new();

    // Login, rejection, refresh, replay.
    call().await.unwrap().into_body().collect().await.unwrap();
    sim.expire_all();
    call().await.unwrap().into_body().collect().await.unwrap();
    // Failures of every kind the endpoint can produce.
    for failure in [
        LoginFailure::WrongCredentials,
        LoginFailure::TruncatedJson,
        LoginFailure::Html502,
        LoginFailure::ResultWithoutToken,
        LoginFailure::ServiceUnavailable,
    ] {
        sim.set_login_failure(Some(failure));
        sim.expire_all();
        let error = call().await.unwrap_err();
        debug_output.push_str(&format!("{error}\n{error:?}\n"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sim.set_login_failure(None);
    call().await.unwrap().into_body().collect().await.unwrap();

    let record = store.load(manager.store_key()).await.unwrap().unwrap();
    debug_output.push_str(&format!(
        "{record:?}\n{:?}\n{manager:?}\n{:?}\n",
        manager.cached(),
        store.describe()
    ));
    let tokens = sim.issued_tokens();
    assert_eq!(tokens.len(), 3, "three successful logins");
    let logs = logs.text();
    assert!(
        logs.contains("token refresh failed"),
        "the failures were logged"
    );
    assert!(logs.contains("logged in"), "the logins were logged");
    assert_free_of_secrets("the TRACE log", &logs, &tokens);
    assert_free_of_secrets("Debug and Display output", &debug_output, &tokens);
}

#[test]
fn debug_of_configuration_redacts_password_and_key() {
    let yaml = format!(
        "paynet:\n  base_url: http://127.0.0.1:1/gw\n  username: {USERNAME}\n  password: {PASSWORD}\n  terminal_id: 1\n  store:\n    url: postgres://app:dbsecret@db/payments\n    encryption_key: {ENCRYPTION_KEY}\n"
    );
    let config = Config::from_yaml_str(&yaml, "inline", &|_| None).unwrap();
    let debug = format!(
        "{config:?} {:?} {:?}",
        config.default_credential().login(),
        config.default_credential().store_options()
    );
    assert_free_of_secrets("Debug of the configuration", &debug, &[]);
    assert!(
        !debug.contains("dbsecret"),
        "Debug shows the database password: {debug}"
    );
    assert!(debug.contains(USERNAME));
}
