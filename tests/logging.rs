//! What the README promises the logs say: WARN when a freshly refreshed token is rejected again, ERROR when
//! waiting for another instance's lease runs out, WARN when the store is unavailable and the refresh logs in
//! without it.

mod support;

use std::time::Duration;

use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::{Error, PaynetAuthLayer, TokenError};
use support::logs::Captured;
use support::*;
use tower::{Layer, ServiceExt};
use tower_test::mock;

const CALL: &str = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#;

/// The captured lines at `level` (`"WARN"`, `"ERROR"`) that contain `text`.
fn lines(logs: &Captured, level: &str, text: &str) -> Vec<String> {
    let marker = format!(" {level} ");
    logs.text()
        .lines()
        .filter(|line| line.contains(&marker) && line.contains(text))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn fresh_token_rejected_again_is_a_warning() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let manager = manager_builder().build().unwrap();
    let (inner, mut handle) = mock::pair::<MockRequest, MockResponse>();
    let service = PaynetAuthLayer::new(manager).layer(inner);
    let call = tokio::spawn(service.oneshot(json_request("/v2/service", CALL)));
    // Distinct from anything else a log line holds (a timestamp's `T20:` contains `T2`).
    for token in ["first-secret-token", "second-secret-token"] {
        let (_login, reply) = handle.next_request().await.unwrap();
        reply.send_response(login_ok(token));
        let (_sent, reply) = handle.next_request().await.unwrap();
        reply.send_response(json_response(UNAUTHORIZED));
    }
    let error = call.await.unwrap().unwrap_err();
    assert!(
        matches!(error, Error::RejectedAfterRefresh { generation: 2 }),
        "{error}"
    );
    let warnings = lines(&logs, "WARN", "rejected a freshly refreshed token");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(warnings[0].contains("generation=2"), "{}", warnings[0]);
    assert!(
        !logs.text().contains("second-secret-token"),
        "no token in the log"
    );
}

#[tokio::test(start_paused = true)]
async fn lease_wait_that_runs_out_is_an_error() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(store.clone())
        .wait_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Another instance holds the lease and never saves a token.
    assert!(
        store
            .try_lease(
                manager.store_key(),
                "other-instance",
                Duration::from_secs(3600)
            )
            .await
            .unwrap()
    );
    let error = manager.token(login.sender()).await.unwrap_err();
    assert!(matches!(error, TokenError::LeaseWait { .. }), "{error}");
    assert_eq!(login.attempts(), 0);
    let errors = lines(&logs, "ERROR", "token refresh failed");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(
        errors[0].contains("another instance held the refresh lease"),
        "{}",
        errors[0]
    );
}

/// The ERROR line of a failed refresh carries the whole chain, each cause once, down to the operating system's
/// `Connection refused`: a real connection to a port nothing listens on.
#[cfg(feature = "hyper-client")]
#[tokio::test]
async fn failed_refresh_error_line_has_the_whole_chain_once() {
    use paynet_auth::PaynetLogin;
    use paynet_auth::hyper_client::HttpClient;
    use paynet_auth::token::LoginSender;
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/gw");
    let manager = paynet_auth::TokenManager::builder(PaynetLogin::new(
        &base,
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    let errors = lines(&logs, "ERROR", "token refresh failed");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    let line = &errors[0];
    let chain = format!(
        "error=token endpoint {base}/v2/user is unreachable: cannot connect to the gateway: client error \
         (Connect): "
    );
    assert!(line.contains(&chain), "{line}");
    assert!(line.contains("Connection refused (os error 111)"), "{line}");
    for part in ["is unreachable", "cannot connect", "Connection refused"] {
        assert_eq!(line.matches(part).count(), 1, "`{part}` once: {line}");
    }
    assert!(!line.contains(PASSWORD), "{line}");
}

/// A real outage: a PostgreSQL store on a port nothing listens on.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn store_outage_is_a_warning_and_the_refresh_logs_in_without_it() {
    use paynet_auth::store::{DieselStore, StoreOptions};
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = DieselStore::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/paynet"),
        StoreOptions {
            connect_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let login = FakeLogin::default();
    let manager = manager_builder().store(store).build().unwrap();
    let token = manager.token(login.sender()).await.unwrap();
    assert_eq!(login.attempts(), 1);
    assert_eq!(manager.cached().unwrap().generation(), token.generation());
    let warnings = lines(&logs, "WARN", "token store unavailable");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{port}")),
        "names the store: {}",
        warnings[0]
    );
}

/// The refresh serves every caller waiting for it and runs in whichever of them polls it first: its span is a root,
/// not a child of that caller's request span; the same for a refresh started ahead of expiry.
#[tokio::test(start_paused = true)]
async fn the_refresh_span_belongs_to_no_callers_request() {
    use tracing::Instrument;
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::DEBUG);
    let login = FakeLogin::default();
    let manager = manager_builder()
        .token_ttl(Some(Duration::from_secs(60)))
        .expiry_skew(Duration::ZERO)
        .refresh_ahead(Duration::from_secs(59))
        .build()
        .unwrap();
    manager
        .token(login.sender())
        .instrument(tracing::info_span!("request", id = 1))
        .await
        .unwrap();
    let logged_in = lines(&logs, "INFO", "logged in");
    assert_eq!(logged_in.len(), 1, "{}", logs.text());
    assert!(logged_in[0].contains("token_refresh{"), "{}", logged_in[0]);
    assert!(!logged_in[0].contains("request{"), "{}", logged_in[0]);

    // Two seconds of the token's 60 s used: inside the 59 s window, refreshed in the background.
    tokio::time::advance(Duration::from_secs(2)).await;
    manager
        .token(login.sender())
        .instrument(tracing::info_span!("request", id = 2))
        .await
        .unwrap();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let logged_in = lines(&logs, "INFO", "logged in");
    assert_eq!(logged_in.len(), 2, "{}", logs.text());
    assert!(!logged_in[1].contains("request{"), "{}", logged_in[1]);
    let started = lines(&logs, "DEBUG", "refreshing in the background");
    assert_eq!(started.len(), 1, "{}", logs.text());
    assert!(started[0].contains("background_refresh{"), "{}", started[0]);
    assert!(!started[0].contains("request{"), "{}", started[0]);
}
