//! A token endpoint that misbehaves on purpose: its refusals echo the password with terminal escapes and 200 KB
//! of padding, its login answer is larger than the manager reads. Nothing it says reaches an error or a log raw,
//! and an answer too large is its own kind of failure, not an outage.

#![cfg(feature = "hyper-client")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use paynet_auth::error::Chain;
use paynet_auth::hyper_client::HttpClient;
use paynet_auth::record::Generation;
use paynet_auth::redact::MAX_GATEWAY_TEXT;
use paynet_auth::token::Health;
use paynet_auth::token::LoginSender;
use paynet_auth::{ClientCredentials, LoginError, PaynetLogin, TokenError, TokenManager};
use support::logs::Captured;
use support::{PASSWORD, TERMINAL, USERNAME, json_response, login_ok, manager_builder};

const LIMIT: usize = 1 << 20;

/// A gateway on a real socket that answers `status` and `body` to every request; its base URL.
async fn stub(status: http::StatusCode, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let body = Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/gw")
}

/// What a hostile gateway says: `secret` whole, `secret` split by a BEL, a screen clear, a window-title escape
/// ended by BEL, line breaks, and 200 KB of padding.
fn hostile_text(secret: &str) -> String {
    let (head, tail) = secret.split_at(secret.len() / 2);
    format!(
        "wrong password {secret} (or {head}\u{7}{tail})\u{1b}[2J\u{1b}]0;owned\u{7}\r\nFAKE LOG LINE\u{9b}31m{}",
        "A".repeat(200 * 1024)
    )
}

/// `text` shows neither `secret` nor a control character, and is no longer than `bound` characters.
fn assert_clean(what: &str, text: &str, secret: &str, bound: usize) {
    assert!(!text.contains(secret), "{what} shows the secret: {text}");
    let (head, tail) = secret.split_at(secret.len() / 2);
    assert!(
        !text.contains(&format!("{head}\u{7}{tail}")),
        "{what} shows the split secret"
    );
    assert!(
        !text.chars().any(char::is_control),
        "{what} has a control character: {text:?}"
    );
    assert!(
        text.chars().count() <= bound,
        "{what} is {} characters long",
        text.chars().count()
    );
}

fn assert_clean_logs(logs: &Captured, secret: &str) {
    let text = logs.text();
    assert!(text.contains("token refresh failed"), "{text}");
    for line in text.lines() {
        assert_clean("a log line", line, secret, 1200);
    }
}

#[tokio::test]
async fn a_paynet_refusal_echoing_the_password_reaches_no_output_raw() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "error": { "code": -1001, "message": hostile_text(PASSWORD) },
    });
    let base = stub(http::StatusCode::OK, answer.to_string()).await;
    let manager =
        TokenManager::builder(PaynetLogin::new(&base, USERNAME, PASSWORD.into(), TERMINAL))
            .build()
            .unwrap();
    let error = manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    let TokenError::Login(cause) = &error else {
        panic!("{error}");
    };
    let LoginError::Refused { code, message, .. } = &**cause else {
        panic!("{cause}");
    };
    assert_eq!(*code, -1001);
    assert!(
        message.starts_with("wrong password **** (or ****)[2J]0;owned  FAKE LOG LINE31mAAAA"),
        "{message}"
    );
    assert_eq!(message.chars().count(), MAX_GATEWAY_TEXT + 1, "{message}");
    assert!(message.ends_with("A…"), "{message}");
    for (what, text) in [
        ("Display", error.to_string()),
        ("the chain", Chain(&error).to_string()),
        ("Debug", format!("{error:?}")),
        ("health", manager.health().to_string()),
    ] {
        assert_clean(what, &text, PASSWORD, 600);
    }
    assert_clean_logs(&logs, PASSWORD);
}

#[tokio::test]
async fn a_paynet_answer_whose_parse_error_quotes_the_password_is_sanitised() {
    // Every test of this file captures: a log callsite first reached without a subscriber on one thread may be
    // cached as uninteresting while another test's subscriber is being installed.
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);
    // A code that is not a number: the parser's message quotes the string it found.
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "error": { "code": format!("{PASSWORD}\u{1b}[2J"), "message": "x" },
    });
    let base = stub(http::StatusCode::OK, answer.to_string()).await;
    let manager =
        TokenManager::builder(PaynetLogin::new(&base, USERNAME, PASSWORD.into(), TERMINAL))
            .build()
            .unwrap();
    let error = manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Login(cause) if matches!(&**cause, LoginError::NotJson { reason, .. } if reason.contains("invalid type: string \"****"))),
        "{error}"
    );
    assert_clean("the chain", &Chain(&error).to_string(), PASSWORD, 600);
    assert_clean_logs(&logs, PASSWORD);
}

#[tokio::test]
async fn an_oauth_refusal_echoing_the_client_secret_reaches_no_output_raw() {
    const SECRET: &str = "client-secret-91b2e";
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let answer = serde_json::json!({
        "error": format!("invalid_client\u{1b}[2J {SECRET}"),
        "error_description": hostile_text(SECRET),
    });
    let base = stub(http::StatusCode::UNAUTHORIZED, answer.to_string()).await;
    let manager = TokenManager::builder(ClientCredentials::new(
        format!("{base}/oauth/token"),
        "client",
        SECRET.into(),
    ))
    .build()
    .unwrap();
    let error = manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Login(cause) if matches!(&**cause, LoginError::OAuthRefused { error, .. } if error == "invalid_client[2J ****")),
        "{error}"
    );
    for (what, text) in [
        ("Display", error.to_string()),
        ("the chain", Chain(&error).to_string()),
        ("Debug", format!("{error:?}")),
    ] {
        assert_clean(what, &text, SECRET, 800);
    }
    assert_clean_logs(&logs, SECRET);
}

fn oversized_answer() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"token":"{}"}}}}"#,
        "T".repeat(LIMIT)
    )
}

const LIFETIME: Duration = Duration::from_secs(60);
const SERVE: u8 = 0;
const OVERSIZED: u8 = 1;
const DOWN: u8 = 2;

#[tokio::test(start_paused = true)]
async fn a_login_answer_past_the_limit_is_too_large_and_not_an_outage() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let mode = Arc::new(AtomicU8::new(SERVE));
    let gateway = {
        let mode = Arc::clone(&mode);
        tower::service_fn(move |_: http::Request<Full<Bytes>>| {
            let mode = mode.load(Ordering::SeqCst);
            async move {
                match mode {
                    SERVE => Ok(login_ok("T-1")),
                    OVERSIZED => Ok(json_response(&oversized_answer())),
                    _ => Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connection refused",
                    )),
                }
            }
        })
    };
    let login = || LoginSender::from_service(gateway.clone());
    let manager = manager_builder()
        .token_ttl(Some(LIFETIME))
        .expiry_skew(Duration::ZERO)
        .refresh_ahead(Duration::ZERO)
        .static_stability(true)
        .build()
        .unwrap();
    assert_eq!(
        manager.token(login()).await.unwrap().generation(),
        Generation(1)
    );

    // Past the token's lifetime, the login answers 1 MiB of token.
    mode.store(OVERSIZED, Ordering::SeqCst);
    tokio::time::advance(LIFETIME).await;
    let error = manager.token(login()).await.unwrap_err();
    let TokenError::Login(cause) = &error else {
        panic!("the expired token is not served through an oversized answer: {error:?}");
    };
    assert!(
        matches!(**cause, LoginError::TooLarge { limit: LIMIT, .. }),
        "{cause:?}"
    );
    assert!(!error.is_outage());
    assert_eq!(
        cause.to_string(),
        "token endpoint http://gateway.test/gw/v2/user answered with more than the 1048576-byte limit of a \
         login answer"
    );
    assert!(matches!(manager.health(), Health::Failing { .. }));
    let errors = logs.error_lines();
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(
        errors[0].contains("more than the 1048576-byte limit"),
        "{}",
        errors[0]
    );
    assert_eq!(manager.stats().logins_refused, 0);

    // The same expired token is served through an outage: static stability is on, only the classification
    // differs.
    mode.store(DOWN, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        manager.token(login()).await.unwrap().generation(),
        Generation(1)
    );
}

#[tokio::test]
async fn an_oversized_login_answer_over_http_is_too_large() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let base = stub(http::StatusCode::OK, oversized_answer()).await;
    let manager =
        TokenManager::builder(PaynetLogin::new(&base, USERNAME, PASSWORD.into(), TERMINAL))
            .build()
            .unwrap();
    let error = manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Login(cause) if matches!(**cause, LoginError::TooLarge { limit: LIMIT, .. })),
        "{error:?}"
    );
}
