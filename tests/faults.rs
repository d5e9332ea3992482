//! The fault matrix, end to end over the simulator: each way the token endpoint or the connection can fail gives a
//! typed error that names the endpoint and the cause, logged once at ERROR, and service resumes when the fault
//! goes away; a payment is never executed twice.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::{
    Error, LoginError, PaynetAuth, PaynetAuthLayer, PaynetLogin, TokenError, TokenManager,
};
use paynet_sim::{LoginFailure, Simulator};
use support::logs::Captured;
use support::{PASSWORD, TERMINAL, USERNAME};
use tower::{Layer, ServiceExt};

const BACKOFF: Duration = Duration::from_millis(20);
const LOGIN_TIMEOUT: Duration = Duration::from_millis(300);

type Service = PaynetAuth<Client<HttpConnector, Full<Bytes>>>;

fn service_for(base_url: &str) -> (Service, TokenManager) {
    let manager = TokenManager::builder(PaynetLogin::new(
        base_url,
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .login_timeout(LOGIN_TIMEOUT)
    .backoff(BACKOFF, BACKOFF)
    .build()
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    (PaynetAuthLayer::new(manager.clone()).layer(client), manager)
}

fn rpc(base_url: &str, path: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{base_url}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

const CATEGORIES: &str = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#;

async fn categories(service: &Service, base_url: &str) -> Result<serde_json::Value, Error> {
    let response = service
        .clone()
        .oneshot(rpc(base_url, "/v2/service", CATEGORIES))
        .await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

/// The row of the matrix: the endpoint fails as `failure`, the caller gets a typed error naming the endpoint and
/// `cause`, one ERROR line is logged, and once the endpoint is back the next request after the backoff succeeds.
async fn login_failure_row(failure: LoginFailure, expected: fn(&LoginError) -> bool, cause: &str) {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let sim = Simulator::builder()
        .login_failure(Some(failure))
        .start()
        .await
        .unwrap();
    let (service, manager) = service_for(sim.base_url());
    let endpoint = format!("{}/v2/user", sim.base_url());

    let error = categories(&service, sim.base_url()).await.unwrap_err();
    match &error {
        Error::Token(TokenError::Login(login)) => {
            assert!(expected(login), "unexpected cause: {login:?}")
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = paynet_auth::error::Chain(&error).to_string();
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains(cause), "{message}");
    assert_eq!(
        logs.error_lines().len(),
        1,
        "logged once at ERROR: {:?}",
        logs.error_lines()
    );
    assert!(logs.error_lines()[0].contains(&endpoint));
    assert_eq!(
        sim.stats().calls_to("getCategoriesList"),
        0,
        "nothing sent without a token"
    );

    sim.set_login_failure(None);
    tokio::time::sleep(BACKOFF).await;
    let answer = categories(&service, sim.base_url()).await.unwrap();
    assert!(answer["result"].is_object(), "{answer}");
    assert_eq!(manager.logins(), 1);
    assert_eq!(logs.error_lines().len(), 1);
}

#[tokio::test]
async fn login_503_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::ServiceUnavailable,
        |e| matches!(e, LoginError::HttpStatus { status, .. } if *status == 503),
        "HTTP 503",
    )
    .await;
}

#[tokio::test]
async fn login_html_502_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::Html502,
        |e| matches!(e, LoginError::HttpStatus { status, .. } if *status == 502),
        "HTTP 502",
    )
    .await;
}

#[tokio::test]
async fn login_truncated_json_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::TruncatedJson,
        |e| matches!(e, LoginError::NotJson { .. }),
        "not valid JSON",
    )
    .await;
}

#[tokio::test]
async fn login_wrong_credentials_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::WrongCredentials,
        |e| matches!(e, LoginError::Refused { code: -1001, .. }),
        "Invalid login or password",
    )
    .await;
}

#[tokio::test]
async fn login_result_without_token_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::ResultWithoutToken,
        |e| matches!(e, LoginError::MissingToken { .. }),
        "without a token",
    )
    .await;
}

#[tokio::test]
async fn login_hang_past_the_timeout_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::Hang,
        |e| matches!(e, LoginError::Timeout { .. }),
        "did not answer within 300ms",
    )
    .await;
}

#[tokio::test]
async fn login_dropped_connection_is_a_typed_error_and_recovers() {
    login_failure_row(
        LoginFailure::DropConnection,
        |e| matches!(e, LoginError::Unreachable { .. }),
        "unreachable",
    )
    .await;
}

#[tokio::test]
async fn login_connection_refused_is_a_typed_error() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base_url = format!("http://127.0.0.1:{port}/gw");
    let (service, _manager) = service_for(&base_url);
    let error = categories(&service, &base_url).await.unwrap_err();
    assert!(
        matches!(&error, Error::Token(TokenError::Login(login)) if matches!(**login, LoginError::Unreachable { .. })),
        "{error}"
    );
    let message = paynet_auth::error::Chain(&error).to_string();
    assert!(
        message.contains(&format!(
            "token endpoint {base_url}/v2/user is unreachable: "
        )),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");
    assert_eq!(logs.error_lines().len(), 1);
}

#[tokio::test]
async fn payment_with_dropped_connection_executes_once_and_errors() {
    let sim = Simulator::builder()
        .drop_after_execute(true)
        .start()
        .await
        .unwrap();
    let (service, _manager) = service_for(sim.base_url());
    let payment = r#"{"jsonrpc":"2.0","method":"performTransaction","id":9,"params":{"transactionId":"tx-1","amount":1000}}"#;
    let error = service
        .clone()
        .oneshot(rpc(sim.base_url(), "/v2/transaction", payment))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Inner(_)), "{error}");
    assert_eq!(
        sim.stats().executions_of("tx-1"),
        1,
        "executed once and never replayed"
    );
    assert_eq!(sim.stats().logins, 1);
}

#[tokio::test]
async fn rejected_payment_is_replayed_once_and_executes_once() {
    let sim = Simulator::builder()
        .single_session(true)
        .start()
        .await
        .unwrap();
    let (service, _manager) = service_for(sim.base_url());
    categories(&service, sim.base_url()).await.unwrap();
    sim.expire_all();
    let payment = r#"{"jsonrpc":"2.0","method":"performTransaction","id":9,"params":{"transactionId":"tx-2","amount":1000}}"#;
    let response = service
        .clone()
        .oneshot(rpc(sim.base_url(), "/v2/transaction", payment))
        .await
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["result"]["transactionId"], "tx-2", "{answer}");
    let stats = sim.stats();
    assert_eq!(
        stats.rejections, 1,
        "the first attempt was rejected before executing"
    );
    assert_eq!(stats.executions_of("tx-2"), 1);
}

/// Bodies the layer must refuse without sending anything.
#[tokio::test]
async fn malformed_request_bodies_are_refused_unsent() {
    let sim = Simulator::builder().start().await.unwrap();
    let (service, _manager) = service_for(sim.base_url());
    categories(&service, sim.base_url()).await.unwrap();
    let before = sim.stats().requests;
    let cases: [(&str, &[u8]); 5] = [
        ("non-JSON", b"token=abc"),
        (
            "invalid UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"m\xff\",\"id\":1}",
        ),
        (
            "positional params",
            br#"{"jsonrpc":"2.0","method":"m","id":1,"params":[1,2]}"#,
        ),
        (
            "duplicate params",
            br#"{"jsonrpc":"2.0","method":"m","id":1,"params":{},"params":{}}"#,
        ),
        ("empty batch", b"[]"),
    ];
    for (name, body) in cases {
        let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let error = service.clone().oneshot(request).await.unwrap_err();
        assert!(matches!(error, Error::Inject(_)), "{name}: {error}");
    }
    assert_eq!(sim.stats().requests, before, "nothing reached the gateway");
}

#[tokio::test]
async fn duplicate_token_keys_are_all_replaced() {
    let sim = Simulator::builder().start().await.unwrap();
    let (service, _manager) = service_for(sim.base_url());
    let duplicate = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{"token":"stale","token":"older"}}"#;
    let response = service
        .clone()
        .oneshot(rpc(sim.base_url(), "/v2/service", duplicate))
        .await
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(answer["result"].is_object(), "{answer}");
    assert_eq!(
        sim.stats().rejections,
        0,
        "every duplicate was replaced by the valid token"
    );
}

#[tokio::test]
async fn oversized_request_is_refused_and_oversized_response_streams_through() {
    let sim = Simulator::builder().start().await.unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = PaynetAuthLayer::new(manager)
        .max_request_body(256)
        .inspect_limit(64)
        .layer(client);
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{{"pad":"{}"}}}}"#,
        "x".repeat(300)
    );
    let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    let error = service.clone().oneshot(request).await.unwrap_err();
    assert!(
        matches!(error, Error::RequestTooLarge { limit: 256 }),
        "{error}"
    );
    assert_eq!(sim.stats().logins, 0, "refused before any login");

    // The categories answer is longer than 64 bytes: it is passed on unread, byte for byte.
    let response = service
        .clone()
        .oneshot(rpc(sim.base_url(), "/v2/service", CATEGORIES))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.len() > 64);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["result"]["categories"].is_array());
}
