//! A database that refuses the store's credentials or permissions: the store says `Denied` (not `Unavailable`),
//! and a call that needs a token fails with `TokenError::Store` and an ERROR line, without a login (no degraded
//! mode, which is for outages); `health()` says so.
//!
//! Real users on the real servers: a PostgreSQL role that may only read the token table, one that does not
//! exist; a MariaDB user that may only read the token table, one with no grant on the database, and root with a
//! wrong password. (The machine's PostgreSQL trusts local connections, so a wrong password cannot be tried there:
//! an unknown role is its refusal at connection time.) Each test works in a database of its own.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "hyper-client"
))]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
use paynet_auth::token::Degradation;
use paynet_auth::token::Health;
use paynet_auth::{Error, PaynetAuthLayer, StoreError, TokenError};
use paynet_sim::Simulator;
use support::account_at;
use support::db::Fixture;
use support::logs::Captured;
use tower::{Layer, ServiceExt};

const TIMEOUT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_secs(2);

fn options() -> StoreOptions {
    StoreOptions {
        connect_timeout: TIMEOUT,
        ..StoreOptions::default()
    }
}

fn record() -> TokenRecord {
    TokenRecord {
        token: "T".into(),
        generation: Generation(1),
        obtained_at_ms: 1,
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "test".into(),
    }
}

/// `url` with another user and password.
fn as_user(url: &str, user: &str, password: Option<&str>) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_username(user).unwrap();
    url.set_password(password).unwrap();
    url.to_string()
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A store whose user may read the token table and nothing else: the read works, the lease and the save are
/// `Denied`; a cold call fails loudly without a login.
async fn read_only_user_is_denied_and_fails_the_call(url: String) {
    let store = DieselStore::connect(&url, options()).await.unwrap();
    assert!(store.load("k").await.unwrap().is_none());
    let error = store
        .try_lease("k", "a", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Denied {
                operation: "try_lease",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_denied() && !error.is_unavailable());
    assert!(error.to_string().contains("access denied"), "{error}");
    let error = store.save("k", &record()).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Denied {
                operation: "save",
                ..
            }
        ),
        "{error:?}"
    );

    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let sim = Simulator::start().await.unwrap();
    let manager = account_at(sim.base_url())
        .store(store)
        .store_key("k")
        .login_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let service = PaynetAuthLayer::new(manager.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#,
        )))
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    match &error {
        Error::Token(TokenError::Store(cause)) => assert!(cause.is_denied(), "{cause:?}"),
        other => panic!("expected a store refusal, got {other:?}"),
    }
    assert!(!matches!(&error, Error::Token(e) if e.is_outage()));
    assert_eq!(
        sim.stats().logins,
        0,
        "no login without the store for a refusal"
    );
    let errors = logs.error_lines();
    assert!(
        errors
            .iter()
            .any(|line| line.contains("token refresh failed")),
        "{errors:?}"
    );
    assert!(matches!(
        manager.health(),
        Health::Degraded(Degradation::StoreDenied)
    ));
}

/// A user the database refuses at connection time: `Denied` for the connection, within the connect timeout,
/// without the password.
async fn refused_at_connect(url: String, password: Option<&str>) {
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let started = Instant::now();
    let error = store.load("k").await.unwrap_err();
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            error,
            StoreError::Denied {
                operation: "connect",
                ..
            }
        ),
        "{error:?}"
    );
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if let Some(password) = password {
        assert!(!chain.contains(password), "{chain}");
    }
}

#[tokio::test]
async fn postgres_role_that_may_only_read_is_denied() {
    let server = Fixture::postgres();
    let db = server.empty().await;
    let store = DieselStore::connect(&db.url, options()).await.unwrap();
    store.migrate().await.unwrap();
    let role = format!("paynet_reader_{}", suffix());
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.admin(&format!("GRANT SELECT ON paynet_tokens TO {role}"))
        .await;

    read_only_user_is_denied_and_fails_the_call(as_user(&db.url, &role, None)).await;

    db.drop_database(&server).await;
    server.admin(&format!("DROP ROLE {role}")).await;
}

#[tokio::test]
async fn postgres_unknown_role_is_denied_at_connect() {
    let url = as_user(
        &Fixture::postgres().url,
        &format!("paynet_nobody_{}", suffix()),
        Some("hunter2"),
    );
    refused_at_connect(url, Some("hunter2")).await;
}

#[tokio::test]
async fn mysql_user_that_may_only_read_is_denied() {
    let server = Fixture::mysql();
    let db = server.empty().await;
    let store = DieselStore::connect(&db.url, options()).await.unwrap();
    store.migrate().await.unwrap();
    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let user = format!("paynet_reader_{}", suffix());
    server
        .admin(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'reader-pw'"
        ))
        .await;
    server
        .admin(&format!(
            "GRANT SELECT ON {name}.paynet_tokens TO '{user}'@'%'"
        ))
        .await;

    read_only_user_is_denied_and_fails_the_call(as_user(&db.url, &user, Some("reader-pw"))).await;

    db.drop_database(&server).await;
    server.admin(&format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test]
async fn mysql_user_without_grants_and_wrong_password_are_denied_at_connect() {
    let server = Fixture::mysql();
    let user = format!("paynet_nogrant_{}", suffix());
    server
        .admin(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'nogrant-pw'"
        ))
        .await;
    refused_at_connect(
        as_user(&server.url, &user, Some("nogrant-pw")),
        Some("nogrant-pw"),
    )
    .await;
    refused_at_connect(
        as_user(&server.url, "root", Some("wrong-pw")),
        Some("wrong-pw"),
    )
    .await;
    server.admin(&format!("DROP USER '{user}'@'%'")).await;
}
