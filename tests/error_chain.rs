//! Every error of the crate follows one convention: its `Display` says what it adds and leaves its cause to
//! `source()`, so a chain printer (anyhow's `{:#}`, eyre, [`Chain`]) shows each cause once, down to the root.
//! Checked on one instance of every variant, and on real failures: a refused connection, a refused login, a store
//! that cannot open its file, a configuration file that does not exist, a certificate file that does not exist.

#![cfg(all(feature = "hyper-client", feature = "sqlite"))]

mod support;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use paynet_auth::PaynetLogin;
use paynet_auth::config::Config;
use paynet_auth::error::InjectError;
use paynet_auth::error::{Chain, ConfigError};
use paynet_auth::hyper_client::{HttpClient, HttpErrorKind};
use paynet_auth::store::StoreOptions;
use paynet_auth::tls::read_certificates;
use paynet_auth::token::LoginSender;
use paynet_auth::{Error, LoginError, SetupError, StoreError, TokenError, TokenManager};
use paynet_sim::{LoginFailure, Simulator};
use support::{PASSWORD, TERMINAL, USERNAME, account_at};
use tower::ServiceExt;

const ROOT: &str = "ROOT-CAUSE-7f3a";

/// Walks `error`'s chain: no level's `Display` holds its cause's text. Returns the chain on one line, where each
/// level's text appears.
fn assert_each_cause_once(error: &(dyn StdError + 'static)) -> String {
    let mut levels = vec![error.to_string()];
    let mut parent = error;
    while let Some(cause) = parent.source() {
        let (outer, inner) = (parent.to_string(), cause.to_string());
        assert!(
            inner.is_empty() || !outer.contains(&inner),
            "`{outer}` repeats its cause `{inner}`"
        );
        levels.push(inner);
        parent = cause;
    }
    let line = Chain(error).to_string();
    let mut rest = line.as_str();
    for level in &levels {
        let at = rest
            .find(level.as_str())
            .unwrap_or_else(|| panic!("`{level}` is not in order in `{line}`"));
        rest = &rest[at + level.len()..];
    }
    assert_eq!(line, levels.join(": "));
    line
}

fn root() -> std::io::Error {
    std::io::Error::other(ROOT)
}

/// The chain of `error` holds [`ROOT`] exactly once, at its end.
fn assert_root_once(error: &(dyn StdError + 'static)) {
    let line = assert_each_cause_once(error);
    assert_eq!(line.matches(ROOT).count(), 1, "{line}");
    assert!(line.ends_with(ROOT), "{line}");
}

fn endpoint() -> String {
    "https://gateway.example/gw/v2/user".to_owned()
}

fn login_errors() -> Vec<LoginError> {
    vec![
        LoginError::Unreachable {
            endpoint: endpoint(),
            source: root().into(),
        },
        LoginError::Timeout {
            endpoint: endpoint(),
            after: Duration::from_secs(10),
        },
        LoginError::HttpStatus {
            endpoint: endpoint(),
            status: http::StatusCode::BAD_GATEWAY,
        },
        LoginError::TooLarge {
            endpoint: endpoint(),
            limit: 1 << 20,
        },
        LoginError::NotJson {
            endpoint: endpoint(),
            reason: "expected value at line 1 column 1".into(),
        },
        LoginError::Refused {
            endpoint: endpoint(),
            code: -1001,
            message: "Invalid login or password".into(),
        },
        LoginError::OAuthRefused {
            endpoint: endpoint(),
            status: http::StatusCode::UNAUTHORIZED,
            error: "invalid_client".into(),
            description: Some("bad secret".into()),
        },
        LoginError::UnsupportedTokenType {
            endpoint: endpoint(),
            token_type: "mac".into(),
        },
        LoginError::MissingToken {
            endpoint: endpoint(),
        },
        LoginError::InvalidRequest {
            endpoint: endpoint(),
            reason: "bad header".into(),
        },
        LoginError::RejectedAtOnce {
            endpoint: endpoint(),
            generation: 3,
        },
    ]
}

fn store_errors() -> Vec<StoreError> {
    let store = || "postgres://app:****@db/pay".to_owned();
    vec![
        StoreError::Unavailable {
            store: store(),
            source: root().into(),
        },
        StoreError::Conflict {
            store: store(),
            operation: "lease",
            source: root().into(),
        },
        StoreError::Query {
            store: store(),
            operation: "load",
            source: root().into(),
        },
        StoreError::Migration {
            store: store(),
            source: root().into(),
        },
        StoreError::Denied {
            store: store(),
            operation: "connect",
            source: root().into(),
        },
        StoreError::MissingTable {
            store: store(),
            operation: "load",
            source: root().into(),
        },
    ]
}

#[test]
fn every_variant_leaves_its_cause_to_source() {
    for error in login_errors() {
        assert_each_cause_once(&error);
        let token = TokenError::Login(Arc::new(error));
        assert_each_cause_once(&token);
        assert_each_cause_once(&Error::Token(token));
    }
    let unreachable = Arc::new(login_errors().remove(0));
    let with_root: Vec<Box<dyn StdError + 'static>> = vec![
        Box::new(login_errors().remove(0)),
        Box::new(TokenError::Login(Arc::clone(&unreachable))),
        Box::new(TokenError::Backoff {
            retry_in: Duration::from_millis(500),
            retry_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            cause: Arc::clone(&unreachable),
        }),
        Box::new(Error::Inner(root().into())),
        Box::new(Error::RequestBody(root().into())),
        Box::new(Error::ResponseBody(root().into())),
        Box::new(Error::Token(TokenError::Login(unreachable))),
        Box::new(ConfigError::Read {
            path: "paynet.yaml".into(),
            source: root(),
        }),
    ];
    for error in &with_root {
        assert_root_once(error.as_ref());
    }
    for error in store_errors() {
        assert_root_once(&TokenError::Store(Arc::new(store_errors().remove(0))));
        assert_root_once(&error);
        assert_root_once(&SetupError::Store {
            url: "postgres://app:****@db/pay".into(),
            source: error,
        });
    }
    let without_source: Vec<Box<dyn StdError + 'static>> = vec![
        Box::new(StoreError::Config("unknown scheme".into())),
        Box::new(SetupError::Store {
            url: "redis://cache".into(),
            source: StoreError::Config("unknown scheme".into()),
        }),
        Box::new(TokenError::LeaseWait {
            store: "memory:".into(),
            waited: Duration::from_secs(45),
            row_locked: true,
        }),
        Box::new(TokenError::Aborted),
        Box::new(Error::RequestTooLarge { limit: 64 }),
        Box::new(Error::Inject(InjectError::EmptyBatch)),
        Box::new(Error::RejectedAfterRefresh { generation: 2 }),
        Box::new(Error::TokenNotHeaderSafe {
            header: http::header::AUTHORIZATION,
        }),
        Box::new(Error::UnknownCredential {
            name: "north".into(),
            known: vec!["south".into()],
        }),
        Box::new(ConfigError::Invalid("pool_size: 0".into())),
        Box::new(SetupError::Config(ConfigError::Invalid(
            "pool_size: 0".into(),
        ))),
    ];
    for error in &without_source {
        assert_each_cause_once(error.as_ref());
    }
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_says_what_failed_and_its_chain_ends_in_the_os_error() {
    let base = format!("http://127.0.0.1:{}/gw", closed_port());
    let request = http::Request::post(format!("{base}/v2/user"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = HttpClient::new().oneshot(request).await.unwrap_err();
    assert_eq!(error.kind(), &HttpErrorKind::Connect);
    assert_eq!(error.to_string(), "cannot connect to the gateway");
    let line = assert_each_cause_once(&error);
    assert!(
        line.ends_with("Connection refused (os error 111)"),
        "{line}"
    );

    // The same failure as a login, then as the backoff after it, then as the layer's error.
    let manager =
        TokenManager::builder(PaynetLogin::new(&base, USERNAME, PASSWORD.into(), TERMINAL))
            .backoff(Duration::from_secs(60), Duration::from_secs(60))
            .build()
            .unwrap();
    let login = || LoginSender::from_service(HttpClient::new());
    let error = manager.token(login()).await.unwrap_err();
    let line = assert_each_cause_once(&error);
    let expected = format!(
        "token refresh failed: token endpoint {base}/v2/user is unreachable: cannot connect to the gateway: "
    );
    assert!(line.starts_with(&expected), "{line}");
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
    let backoff = manager.token(login()).await.unwrap_err();
    assert!(matches!(backoff, TokenError::Backoff { .. }), "{backoff}");
    let line = assert_each_cause_once(&Error::Token(backoff));
    assert!(
        line.contains("after a failed login: token endpoint "),
        "{line}"
    );
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
}

#[tokio::test]
async fn a_refused_login_a_broken_store_and_missing_files_print_each_cause_once() {
    let sim = Simulator::builder().start().await.unwrap();
    sim.set_login_failure(Some(LoginFailure::WrongCredentials));
    let manager = account_at(sim.base_url()).build().unwrap();
    let error = manager
        .token(LoginSender::from_service(HttpClient::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Login(cause) if cause.is_refused()),
        "{error}"
    );
    let line = assert_each_cause_once(&error);
    assert!(line.contains("refused the login: error "), "{line}");

    // A SQLite file in a directory that does not exist: the store says which, SQLite says why.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/tokens.db", dir.path().display());
    let error = paynet_auth::store::connect(&url, StoreOptions::default())
        .await
        .err()
        .expect("no file can be made there");
    assert!(error.source().is_some(), "{error:?}");
    let line = assert_each_cause_once(&error);
    assert!(line.contains("unable to open database file"), "{line}");

    let error = Config::from_yaml_file(dir.path().join("absent.yaml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    let line = assert_each_cause_once(&error);
    assert!(
        line.ends_with("No such file or directory (os error 2)"),
        "{line}"
    );

    let error = read_certificates(&dir.path().join("ca.pem")).unwrap_err();
    assert_each_cause_once(&error);
    let tls: paynet_auth::config::TlsConfig =
        serde_json::from_value(serde_json::json!({ "ca_file": dir.path().join("ca.pem") }))
            .unwrap();
    let error = HttpClient::builder().tls(&tls).build().unwrap_err();
    assert_each_cause_once(&error);
}
