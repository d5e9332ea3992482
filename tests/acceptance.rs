//! The ticket's four acceptance criteria, end to end: hyper-util's client, the layer, the gateway simulator.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::clock::NoJitter;
use paynet_auth::record::Generation;
use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::{Error, LoginError, PaynetAuth, PaynetAuthLayer, TokenError, TokenManager};
use paynet_sim::{LoginFailure, Simulator};
use support::{PASSWORD, TERMINAL, USERNAME};
use tower::{Layer, ServiceExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn manager(sim: &Simulator, store: MemoryStore) -> TokenManager {
    TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .store(store)
    .jitter(Arc::new(NoJitter))
    .login_timeout(Duration::from_secs(5))
    .build()
    .unwrap()
}

fn service(manager: &TokenManager) -> PaynetAuth<HttpClient> {
    PaynetAuthLayer::new(manager.clone()).layer(http_client())
}

fn categories_request(sim: &Simulator) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}/v2/service", sim.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":123,"params":{}}"#,
        )))
        .unwrap()
}

async fn call(
    service: PaynetAuth<HttpClient>,
    sim: &Simulator,
) -> Result<serde_json::Value, Error> {
    let response = service.oneshot(categories_request(sim)).await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn acceptance_1_first_acquisition() {
    let sim = Simulator::builder().start().await.unwrap();
    let store = MemoryStore::new();
    let manager = manager(&sim, store.clone());
    assert!(
        store.load(manager.store_key()).await.unwrap().is_none(),
        "no token in the store"
    );

    let answer = call(service(&manager), &sim).await.unwrap();

    assert!(answer["result"]["categories"].is_array(), "{answer}");
    assert_eq!(answer["id"], 123);
    let stats = sim.stats();
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.rejections, 0);
    assert_eq!(stats.calls_to("getCategoriesList"), 1);
    let stored = store.load(manager.store_key()).await.unwrap().unwrap();
    assert_eq!(stored.generation, Generation(1));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&stored.token),
        sim.issued_tokens()[0]
    );
    assert_eq!(stored.meta.user_login.as_deref(), Some(USERNAME));
    assert_eq!(stored.meta.terminal_id.as_deref(), Some("4027096"));
}

#[tokio::test]
async fn acceptance_2_expired_token_refresh() {
    let sim = Simulator::builder().start().await.unwrap();
    let store = MemoryStore::new();
    let manager = manager(&sim, store.clone());
    call(service(&manager), &sim).await.unwrap();
    // The store holds a token, but the gateway no longer accepts it.
    sim.expire_all();

    let answer = call(service(&manager), &sim).await.unwrap();

    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let stats = sim.stats();
    assert_eq!(stats.rejections, 1, "the old token was rejected once");
    assert_eq!(stats.logins, 2, "one new login");
    assert_eq!(
        stats.calls_to("getCategoriesList"),
        2,
        "the replay succeeded"
    );
    let stored = store.load(manager.store_key()).await.unwrap().unwrap();
    assert_eq!(stored.generation, Generation(2));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&stored.token),
        sim.issued_tokens()[1]
    );
}

#[tokio::test]
async fn acceptance_3_token_endpoint_unavailable() {
    let sim = Simulator::builder().start().await.unwrap();
    let manager = manager(&sim, MemoryStore::new());

    // Unavailable: the endpoint answers 503.
    sim.set_login_failure(Some(LoginFailure::ServiceUnavailable));
    let error = call(service(&manager), &sim).await.unwrap_err();
    let endpoint = format!("{}/v2/user", sim.base_url());
    match &error {
        Error::Token(TokenError::Login(cause)) => {
            assert!(
                matches!(**cause, LoginError::HttpStatus { status, .. } if status == 503),
                "{cause}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        paynet_auth::error::Chain(&error).to_string(),
        format!(
            "token refresh failed: token endpoint {endpoint} answered HTTP 503 Service Unavailable"
        )
    );
    assert_eq!(
        sim.stats().calls_to("getCategoriesList"),
        0,
        "nothing was sent without a token"
    );

    // Unreachable: nothing listens on the port any more.
    let base = sim.base_url().to_owned();
    sim.shutdown().await;
    let manager =
        TokenManager::builder(PaynetLogin::new(&base, USERNAME, PASSWORD.into(), TERMINAL))
            .build()
            .unwrap();
    let request = http::Request::post(format!("{base}/v2/service"))
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1}"#,
        )))
        .unwrap();
    let error = service(&manager).oneshot(request).await.unwrap_err();
    match &error {
        Error::Token(TokenError::Login(cause)) => {
            assert!(matches!(**cause, LoginError::Unreachable { .. }), "{cause}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        paynet_auth::error::Chain(&error)
            .to_string()
            .starts_with(&format!(
                "token refresh failed: token endpoint {base}/v2/user is unreachable"
            )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_4_concurrent_callers() {
    const CALLERS: usize = 1000;
    let sim = Simulator::builder()
        .single_session(true)
        .login_latency(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let manager = manager(&sim, MemoryStore::new());
    call(service(&manager), &sim).await.unwrap();
    sim.expire_all();
    sim.reset_stats();

    let service = service(&manager);
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let service = service.clone();
            let request = categories_request(&sim);
            tokio::spawn(async move {
                let response = service.oneshot(request).await?;
                let body = response.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Error>(serde_json::from_slice::<serde_json::Value>(&body).unwrap())
            })
        })
        .collect();
    let mut successes = 0;
    for call in calls {
        let answer = call.await.unwrap().unwrap();
        assert!(answer["result"]["categories"].is_array(), "{answer}");
        successes += 1;
    }

    let stats = sim.stats();
    assert_eq!(successes, CALLERS);
    assert_eq!(stats.logins, 1, "exactly one login for all callers");
    assert_eq!(stats.max_concurrent_logins, 1);
    // One active session per terminal: a call is served only with the newest token, so every one of the
    // 1,000 served calls carried it.
    assert_eq!(stats.calls_to("getCategoriesList"), CALLERS as u64);
    assert!(stats.rejections <= CALLERS as u64);
    assert_eq!(manager.cached().unwrap().generation(), Generation(2));
}
