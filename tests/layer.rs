//! The layer over a `tower-test` mock: exact requests sent, replays, and what is never sent.

mod support;

use std::time::Duration;

use http::StatusCode;
use paynet_auth::envelope::TokenField;
use paynet_auth::error::InjectError;
use paynet_auth::record::Generation;
use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::{Error, PaynetAuthLayer, TokenError};
use support::*;
use tower::{Layer, ServiceExt};
use tower_test::mock;

fn layer_over_mock(
    layer: PaynetAuthLayer,
) -> (
    paynet_auth::PaynetAuth<mock::Mock<MockRequest, MockResponse>>,
    mock::Handle<MockRequest, MockResponse>,
) {
    let (service, handle) = mock::pair::<MockRequest, MockResponse>();
    (layer.layer(service), handle)
}

/// Fails if a request is waiting at the mock: either the channel is idle or every sender is gone.
fn assert_nothing_more_sent(handle: &mut mock::Handle<MockRequest, MockResponse>) {
    let mut next = tokio_test::task::spawn(handle.next_request());
    if let std::task::Poll::Ready(Some((request, _))) = next.poll() {
        panic!("unexpected request to {}", request.uri());
    }
}

async fn request_body(request: MockRequest) -> serde_json::Value {
    body_json(request.into_body()).await
}

const CALL: &str =
    r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{"lang":"ru"}}"#;

#[tokio::test]
async fn first_call_logs_in_then_sends_with_token() {
    let (service, mut handle) =
        layer_over_mock(PaynetAuthLayer::new(manager_builder().build().unwrap()));
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", CALL)));

    let (login, reply) = handle.next_request().await.unwrap();
    assert_eq!(login.method(), "POST");
    assert_eq!(login.uri(), "http://gateway.test/gw/v2/user");
    assert_eq!(
        request_body(login).await,
        serde_json::json!({"jsonrpc":"2.0","method":"login","id":1,"params":{
            "username":"username_17627_56530","password":"password_17627_56530","terminal_id":4027096}})
    );
    reply.send_response(login_ok("TOKEN-1"));

    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(sent.uri().path(), "/gw/v2/service");
    assert_eq!(sent.headers()["content-type"], "application/json");
    let expected = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{"token":"TOKEN-1","lang":"ru"}}"#;
    // The caller's Content-Length no longer fits; the body's exact size gives the length on the wire.
    assert!(sent.headers().get("content-length").is_none());
    assert_eq!(
        http_body::Body::size_hint(sent.body()).exact(),
        Some(expected.len() as u64)
    );
    // The token is spliced in as the first member of params; every other byte is the caller's.
    assert_eq!(body_bytes(sent.into_body()).await, expected);
    reply.send_response(json_response(r#"{"jsonrpc":"2.0","id":7,"result":[]}"#));

    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_bytes(response.into_body()).await,
        r#"{"jsonrpc":"2.0","id":7,"result":[]}"#
    );
}

#[tokio::test]
async fn rejection_refreshes_and_replays_once_with_the_new_token() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) =
        layer_over_mock(PaynetAuthLayer::new(manager.clone()).token_field(TokenField::TopLevel));
    let ticket_body = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":123,"token":"{{token}}","params":{}}"#;
    let call = tokio::spawn(
        service
            .clone()
            .oneshot(json_request("/v2/service", ticket_body)),
    );

    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("OLD"));
    let (first, reply) = handle.next_request().await.unwrap();
    let first = body_bytes(first.into_body()).await;
    assert_eq!(
        first,
        r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":123,"token":"OLD","params":{}}"#
    );
    reply.send_response(json_response(UNAUTHORIZED));

    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    reply.send_response(login_ok("NEW"));
    let (replay, reply) = handle.next_request().await.unwrap();
    // The replay is the same bytes but for the token.
    let replay = body_bytes(replay.into_body()).await;
    assert_eq!(
        replay,
        String::from_utf8_lossy(&first).replace("\"OLD\"", "\"NEW\"")
    );
    reply.send_response(json_response(
        r#"{"jsonrpc":"2.0","id":123,"result":{"ok":true}}"#,
    ));

    let response = call.await.unwrap().unwrap();
    assert_eq!(body_json(response.into_body()).await["result"]["ok"], true);
    assert_eq!(manager.logins(), 2);
    assert_eq!(manager.cached().unwrap().generation(), Generation(2));
}

#[tokio::test]
async fn second_rejection_is_a_typed_error_without_another_replay() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("A"));
    let (_first, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(UNAUTHORIZED));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("B"));
    let (_replay, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(UNAUTHORIZED));

    let error = call.await.unwrap().unwrap_err();
    assert!(
        matches!(error, Error::RejectedAfterRefresh { generation: 2 }),
        "{error}"
    );
    // Nothing else was sent: no third attempt, no third login.
    assert_nothing_more_sent(&mut handle);
    assert_eq!(manager.logins(), 2);
}

#[tokio::test]
async fn rejection_of_older_token_replays_without_login() {
    let store = MemoryStore::new();
    let manager = manager_builder().store(store.clone()).build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));

    // Request A obtains generation 1 and is sent with it.
    let a = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("G1"));
    let (sent_a, reply_a) = handle.next_request().await.unwrap();
    assert_eq!(request_body(sent_a).await["params"]["token"], "G1");

    // Meanwhile request B is rejected, which refreshes to generation 2.
    let b = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_sent_b, reply_b) = handle.next_request().await.unwrap();
    reply_b.send_response(json_response(UNAUTHORIZED));
    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    reply.send_response(login_ok("G2"));
    let (replay_b, reply) = handle.next_request().await.unwrap();
    assert_eq!(request_body(replay_b).await["params"]["token"], "G2");
    reply.send_response(json_response(r#"{"result":"b"}"#));
    b.await.unwrap().unwrap();

    // A's late rejection names generation 1: it replays with generation 2 and does not log in.
    reply_a.send_response(json_response(UNAUTHORIZED));
    let (replay_a, reply) = handle.next_request().await.unwrap();
    assert!(!is_login(&replay_a));
    assert_eq!(request_body(replay_a).await["params"]["token"], "G2");
    reply.send_response(json_response(r#"{"result":"a"}"#));
    a.await.unwrap().unwrap();
    assert_eq!(manager.logins(), 2);
    assert_eq!(
        store
            .load(manager.store_key())
            .await
            .unwrap()
            .unwrap()
            .generation,
        Generation(2)
    );
}

#[tokio::test]
async fn transport_error_is_returned_and_never_replayed() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    let call = tokio::spawn(service.oneshot(json_request("/v2/transaction", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("T"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset",
    ));
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Inner(_)), "{error}");
    assert!(
        paynet_auth::error::Chain(&error)
            .to_string()
            .contains("connection reset")
    );
    assert_nothing_more_sent(&mut handle);
    assert_eq!(manager.logins(), 1);
}

#[tokio::test(start_paused = true)]
async fn timeout_of_the_call_is_returned_and_never_replayed() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = mock::pair::<MockRequest, MockResponse>();
    let service = tower::ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager.clone()))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
        .service(service.map_err(|e| e as paynet_auth::BoxError));
    let call = tokio::spawn(service.oneshot(json_request("/v2/transaction", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("T"));
    let (_sent, _never_answered) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Inner(_)), "{error}");
    assert!(
        paynet_auth::error::Chain(&error)
            .to_string()
            .contains("timed out"),
        "{error}"
    );
    assert_nothing_more_sent(&mut handle);
}

#[tokio::test]
async fn bad_bodies_are_refused_and_not_sent() {
    let manager = manager_builder().build().unwrap();
    let cases = [
        ("not json", "{\"jsonrpc\":\"2.0\",", "not valid JSON"),
        ("a string", "\"hello\"", "not a JSON-RPC call"),
        (
            "positional params",
            r#"{"jsonrpc":"2.0","method":"m","id":1,"params":[1,2]}"#,
            "not an object",
        ),
    ];
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    // Log in once so that every case reaches the body.
    let warm = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("T"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(r#"{"result":1}"#));
    warm.await.unwrap().unwrap();

    for (name, body, message) in cases {
        let error = service
            .clone()
            .oneshot(json_request("/v2/service", body))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Inject(_)), "{name}: {error}");
        assert!(
            paynet_auth::error::Chain(&error)
                .to_string()
                .contains(message),
            "{name}: {error}"
        );
        assert!(error.to_string().contains("not sent"), "{name}: {error}");
    }
    let error = service
        .clone()
        .oneshot(json_request(
            "/v2/service",
            r#"{"jsonrpc":"2.0","method":"m","id":1,"params":[1]}"#,
        ))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        Error::Inject(InjectError::ParamsNotObject { .. })
    ));
    assert_nothing_more_sent(&mut handle);
}

#[tokio::test]
async fn oversized_request_is_refused_before_login() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) =
        layer_over_mock(PaynetAuthLayer::new(manager.clone()).max_request_body(64));
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"m","id":1,"params":{{"pad":"{}"}}}}"#,
        "x".repeat(100)
    );
    let error = service
        .oneshot(json_request("/v2/service", &big))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::RequestTooLarge { limit: 64 }),
        "{error}"
    );
    assert_nothing_more_sent(&mut handle);
    assert_eq!(manager.login_attempts(), 0);
}

#[tokio::test]
async fn long_response_streams_through_uninspected() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager).inspect_limit(32));
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("T"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    // Longer than the inspection limit, so even a rejection inside it is passed on as it is.
    let long = format!(
        r#"{{"error":{{"code":-9999,"message":"unauthorized"}},"pad":"{}"}}"#,
        "y".repeat(64)
    );
    reply.send_response(json_response(&long));
    let response = call.await.unwrap().unwrap();
    assert_eq!(body_bytes(response.into_body()).await, long.as_bytes());
}

#[tokio::test]
async fn failed_login_is_a_typed_error_and_nothing_is_sent() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    let call = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1001,"message":"Invalid login or password"}}"#,
    ));
    let error = call.await.unwrap().unwrap_err();
    match &error {
        Error::Token(TokenError::Login(cause)) => {
            assert!(matches!(
                **cause,
                paynet_auth::LoginError::Refused { code: -1001, .. }
            ));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        paynet_auth::error::Chain(&error).to_string(),
        "token refresh failed: token endpoint http://gateway.test/gw/v2/user refused the login: error -1001 \"Invalid login or password\""
    );
    assert!(!error.to_string().contains(PASSWORD));
    // Within the backoff a new request fails at once with the same cause, without a login attempt.
    let error = service
        .oneshot(json_request("/v2/service", CALL))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Token(TokenError::Backoff { .. })),
        "{error}"
    );
    assert!(
        paynet_auth::error::Chain(&error)
            .to_string()
            .contains("Invalid login or password")
    );
    assert_eq!(manager.login_attempts(), 1);
    assert_nothing_more_sent(&mut handle);
}

#[tokio::test(start_paused = true)]
async fn rejected_token_is_not_sent_again_while_login_backs_off() {
    let clock = paynet_auth::clock::ManualClock::new(1_800_000_000_000);
    let manager = manager_builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .build()
        .unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));

    // A token that works, then is rejected; the login that should replace it is refused.
    let call = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("DEAD"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(UNAUTHORIZED));
    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    reply.send_response(json_response(
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1001,"message":"Invalid login or password"}}"#,
    ));
    let error = call.await.unwrap().unwrap_err();
    assert!(
        matches!(error, Error::Token(TokenError::Login(_))),
        "{error}"
    );

    // During the backoff (1 s) a new call fails at once, naming when the next login may happen, and the dead
    // token is not sent.
    tokio::time::advance(Duration::from_millis(400)).await;
    // The timeout only fires if the call waits for the gateway, that is if something was sent.
    let error = tokio::time::timeout(
        Duration::from_millis(100),
        service.clone().oneshot(json_request("/v2/service", CALL)),
    )
    .await
    .expect("the call fails at once instead of waiting for the gateway")
    .unwrap_err();
    match &error {
        Error::Token(TokenError::Backoff {
            retry_in, retry_at, ..
        }) => {
            assert_eq!(*retry_in, Duration::from_millis(600));
            assert_eq!(
                *retry_at,
                std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_001_000)
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        error
            .to_string()
            .contains("backing off until 2027-01-15T08:00:01.000Z (in 600ms)"),
        "{error}"
    );
    assert_nothing_more_sent(&mut handle);
    assert_eq!(manager.login_attempts(), 2);
    assert!(
        manager.cached().is_none(),
        "the rejected token is not handed out"
    );

    // After the backoff the next call logs in and sends the new token.
    tokio::time::advance(Duration::from_millis(600)).await;
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", CALL)));
    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    reply.send_response(login_ok("ALIVE"));
    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(request_body(sent).await["params"]["token"], "ALIVE");
    reply.send_response(json_response(r#"{"jsonrpc":"2.0","id":7,"result":[]}"#));
    call.await.unwrap().unwrap();
    assert_eq!(manager.cached().unwrap().generation(), Generation(2));
}

/// A manager for a Bearer API with an OAuth client-credentials endpoint, like the Acquiring integration.
fn acquiring_manager() -> paynet_auth::TokenManager {
    paynet_auth::TokenManager::builder(paynet_auth::token::source::ClientCredentials::new(
        "http://auth.test/oauth/token",
        "acquiring",
        "client-secret".into(),
    ))
    .build()
    .unwrap()
}

#[tokio::test]
async fn bearer_preset_puts_the_token_in_the_header_and_replays_on_401() {
    let manager = acquiring_manager();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::bearer(manager.clone()));
    let payment = r#"{"amount":1000,"currency":"UZS"}"#;
    let call = tokio::spawn(
        service.oneshot(
            http::Request::post("http://acquiring.test/v1/payments")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    payment.as_bytes(),
                )))
                .unwrap(),
        ),
    );

    let (login, reply) = handle.next_request().await.unwrap();
    assert_eq!(login.uri(), "http://auth.test/oauth/token");
    assert_eq!(
        login.headers()["authorization"],
        "Basic YWNxdWlyaW5nOmNsaWVudC1zZWNyZXQ="
    );
    assert_eq!(
        body_bytes(login.into_body()).await,
        "grant_type=client_credentials"
    );
    reply.send_response(json_response(
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#,
    ));

    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()["authorization"], "Bearer at-1");
    assert!(sent.headers()["authorization"].is_sensitive());
    assert_eq!(body_bytes(sent.into_body()).await, payment.as_bytes());
    reply.send_response(
        http::Response::builder()
            .status(401)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    );

    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(
        r#"{"access_token":"at-2","expires_in":3600}"#,
    ));
    let (replay, reply) = handle.next_request().await.unwrap();
    assert_eq!(replay.headers()["authorization"], "Bearer at-2");
    assert_eq!(body_bytes(replay.into_body()).await, payment.as_bytes());
    reply.send_response(json_response(r#"{"status":"paid"}"#));

    let response = call.await.unwrap().unwrap();
    assert_eq!(
        body_bytes(response.into_body()).await,
        r#"{"status":"paid"}"#
    );
    assert_eq!(manager.logins(), 2);
    // expires_in becomes the record's expiry.
    let record = manager.cached().unwrap().record().clone();
    assert_eq!(
        record.expires_at_ms.unwrap() - record.obtained_at_ms,
        3_600_000
    );
}

#[tokio::test]
async fn bearer_preset_passes_other_statuses_through() {
    let manager = acquiring_manager();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::bearer(manager.clone()));
    let call = tokio::spawn(
        service.oneshot(
            http::Request::post("http://acquiring.test/v1/payments")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .unwrap(),
        ),
    );
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(r#"{"access_token":"at-1"}"#));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(
        http::Response::builder()
            .status(403)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"forbidden",
            )))
            .unwrap(),
    );
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(body_bytes(response.into_body()).await, "forbidden");
    assert_eq!(manager.logins(), 1);
}

const BATCH: &str = r#"[{"jsonrpc":"2.0","method":"getCategoriesList","id":1},{"jsonrpc":"2.0","method":"getProvidersList","id":2,"params":{}}]"#;

#[tokio::test]
async fn batch_gets_the_token_in_every_call_and_a_fully_rejected_batch_is_replayed() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", BATCH)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("B1"));
    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        body_bytes(sent.into_body()).await,
        r#"[{"params":{"token":"B1"},"jsonrpc":"2.0","method":"getCategoriesList","id":1},{"jsonrpc":"2.0","method":"getProvidersList","id":2,"params":{"token":"B1"}}]"#
    );
    // Every call of the batch was rejected, so nothing executed: the batch is replayed.
    reply.send_response(json_response(&format!("[{UNAUTHORIZED},{UNAUTHORIZED}]")));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("B2"));
    let (replay, reply) = handle.next_request().await.unwrap();
    let replay = request_body(replay).await;
    assert_eq!(replay[0]["params"]["token"], "B2");
    assert_eq!(replay[1]["params"]["token"], "B2");
    reply.send_response(json_response(
        r#"[{"id":1,"result":[]},{"id":2,"result":[]}]"#,
    ));
    let response = call.await.unwrap().unwrap();
    assert_eq!(
        body_json(response.into_body()).await[1]["result"],
        serde_json::json!([])
    );
    assert_eq!(manager.logins(), 2);
}

#[tokio::test]
async fn partly_rejected_batch_is_returned_without_a_replay() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", BATCH)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("B1"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    // One call went through and may have executed; replaying the batch would execute it again.
    let partial = format!(r#"[{{"id":1,"result":[]}},{UNAUTHORIZED}]"#);
    reply.send_response(json_response(&partial));
    let response = call.await.unwrap().unwrap();
    assert_eq!(body_bytes(response.into_body()).await, partial.as_bytes());
    assert_nothing_more_sent(&mut handle);
    assert_eq!(manager.logins(), 1);
}

/// Something a caller put in the request's extensions, to see it reach the inner service on the replay too.
#[derive(Debug, Clone, PartialEq)]
struct Marker(u32);

fn request_with_a_rich_head(body: &str) -> MockRequest {
    let mut request = json_request("/v2/service?trace=1", body);
    let headers = request.headers_mut();
    headers.append("x-trace", "first".parse().unwrap());
    headers.append("x-trace", "second".parse().unwrap());
    headers.insert("x-request-id", "r-42".parse().unwrap());
    request.extensions_mut().insert(Marker(7));
    request
}

fn assert_rich_head(sent: &MockRequest) {
    assert_eq!(sent.method(), "POST");
    assert_eq!(sent.uri(), "http://gateway.test/gw/v2/service?trace=1");
    assert_eq!(sent.version(), http::Version::HTTP_11);
    let traces: Vec<_> = sent.headers().get_all("x-trace").iter().collect();
    assert_eq!(traces, ["first", "second"]);
    assert_eq!(sent.headers()["x-request-id"], "r-42");
    assert_eq!(sent.headers()["content-type"], "application/json");
    assert_eq!(sent.extensions().get::<Marker>(), Some(&Marker(7)));
}

#[tokio::test]
async fn replay_with_a_cached_token_resends_the_callers_head_unchanged() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager.clone()));
    // Warm the cache, so the call below takes the path where the token is already there.
    let warm = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("OLD"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(r#"{"result":[]}"#));
    warm.await.unwrap().unwrap();

    let call = tokio::spawn(service.oneshot(request_with_a_rich_head(CALL)));
    let (first, reply) = handle.next_request().await.unwrap();
    assert_rich_head(&first);
    assert!(first.headers().get("content-length").is_none());
    let first = body_bytes(first.into_body()).await;
    reply.send_response(json_response(UNAUTHORIZED));
    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    reply.send_response(login_ok("NEW"));
    let (replay, reply) = handle.next_request().await.unwrap();
    assert_rich_head(&replay);
    assert!(replay.headers().get("content-length").is_none());
    assert_eq!(
        body_bytes(replay.into_body()).await,
        String::from_utf8_lossy(&first).replace("\"OLD\"", "\"NEW\"")
    );
    reply.send_response(json_response(r#"{"result":{"ok":true}}"#));

    let response = call.await.unwrap().unwrap();
    assert_eq!(body_json(response.into_body()).await["result"]["ok"], true);
    assert_eq!(manager.logins(), 2);
    assert_nothing_more_sent(&mut handle);
}

#[tokio::test]
async fn bearer_replay_with_a_cached_token_resends_the_callers_head_unchanged() {
    let manager = acquiring_manager();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::bearer(manager.clone()));
    let warm = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#,
    ));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response("{}"));
    warm.await.unwrap().unwrap();

    let call = tokio::spawn(service.oneshot(request_with_a_rich_head(CALL)));
    let (first, reply) = handle.next_request().await.unwrap();
    assert_rich_head(&first);
    assert_eq!(first.headers()["authorization"], "Bearer at-1");
    // The body is not touched, so the caller's Content-Length stays.
    assert_eq!(first.headers()["content-length"], CALL.len().to_string());
    let mut unauthorised = json_response("{}");
    *unauthorised.status_mut() = StatusCode::UNAUTHORIZED;
    reply.send_response(unauthorised);
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(
        r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600}"#,
    ));
    let (replay, reply) = handle.next_request().await.unwrap();
    assert_rich_head(&replay);
    assert_eq!(replay.headers()["authorization"], "Bearer at-2");
    assert_eq!(replay.headers().get_all("authorization").iter().count(), 1);
    assert_eq!(body_bytes(replay.into_body()).await, CALL);
    reply.send_response(json_response(r#"{"ok":true}"#));

    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(manager.logins(), 2);
    assert_nothing_more_sent(&mut handle);
}

/// Counts the clones of the service it wraps.
struct Counted<S> {
    inner: S,
    clones: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: Clone> Clone for Counted<S> {
    fn clone(&self) -> Self {
        self.clones
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            inner: self.inner.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl<S: tower::Service<R>, R> tower::Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}

#[tokio::test]
async fn a_call_with_a_cached_token_clones_the_inner_service_once() {
    use tower::Service as _;

    let clones = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (mock, mut handle) = mock::pair::<MockRequest, MockResponse>();
    let mut service = PaynetAuthLayer::new(manager_builder().build().unwrap()).layer(Counted {
        inner: mock,
        clones: clones.clone(),
    });
    let gateway = tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            reply.send_response(if is_login(&request) {
                login_ok("TOKEN-1")
            } else {
                json_response(r#"{"jsonrpc":"2.0","id":7,"result":[]}"#)
            });
        }
    });
    // The first call logs in; the clones the login takes are not the hot path's.
    let first = ServiceExt::<MockRequest>::ready(&mut service)
        .await
        .unwrap();
    first.call(json_request("/v2/service", CALL)).await.unwrap();

    for _ in 0..3 {
        clones.store(0, std::sync::atomic::Ordering::SeqCst);
        let ready = ServiceExt::<MockRequest>::ready(&mut service)
            .await
            .unwrap();
        let response = ready.call(json_request("/v2/service", CALL)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The one clone tower requires, so that the readied service sends the call; a replay clones
        // only when it happens.
        assert_eq!(clones.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    drop(service);
    gateway.await.unwrap();
}

/// A login answered in a coding the build cannot read fails with a cause that says so in one readable sentence.
#[tokio::test]
async fn a_login_answer_in_an_unreadable_coding_says_which_and_what_to_do() {
    let manager = manager_builder().build().unwrap();
    let (service, mut handle) = layer_over_mock(PaynetAuthLayer::new(manager));
    let call = tokio::spawn(service.oneshot(json_request(
        "/v2/service",
        r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
    )));
    let (_, reply) = handle.next_request().await.unwrap();
    let mut answer = login_ok("TOKEN");
    answer.headers_mut().insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("zstd"),
    );
    reply.send_response(answer);
    let error = call.await.unwrap().unwrap_err();
    let mut chain = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        chain.push(e.to_string());
        cause = e.source();
    }
    let chain = chain.join(": ");
    assert!(
        chain.contains(
            "`Content-Encoding: zstd` and could not be decoded (this build reads gzip, deflate and br with the \
             `decompression` feature; or put tower-http's DecompressionLayer below the layer)"
        ),
        "{chain}"
    );
    assert!(!chain.contains("  "), "{chain}");
}
