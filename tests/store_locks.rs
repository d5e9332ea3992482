//! Store operations against a database another session keeps locked: every operation ends within the store's
//! operation timeout, a lock wait that runs out is a `Conflict` on the lease ("not acquired") and `Unavailable`
//! elsewhere, and a call that needs a token ends within the manager's wait (a lease row locked by a session that is
//! no instance) or logs in without the store (tables locked), never waiting for the lock to be released.
//!
//! Each test works in a database of its own (a new one on the server, or a new SQLite file), so that its locks stop
//! no other test. The locks are held by an open transaction until the test releases them at its end: as long as
//! the test takes, which a lock of 60 s or more would outlast.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "hyper-client"
))]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use diesel_async::SimpleAsyncConnection;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
use paynet_auth::token::Degradation;
use paynet_auth::token::Health;
use paynet_auth::{Error, PaynetAuthLayer, StoreError, TokenError, TokenManager};
use paynet_sim::Simulator;
use support::account_at;
use support::db::{Fixture, Raw, on_raw, unique_key};
use tower::{Layer, ServiceExt};

/// The store's operation timeout in these tests (MySQL's lock wait timeouts take whole seconds).
const OPERATION: Duration = Duration::from_secs(2);
/// How long a manager waits for the lease before it gives up.
const WAIT: Duration = Duration::from_secs(3);
/// Room for a loaded machine on top of a bound.
const SLACK: Duration = Duration::from_secs(3);
const LEASE_TTL: Duration = Duration::from_secs(30);

async fn store(db: &Fixture) -> DieselStore {
    let store = DieselStore::connect(
        &db.url,
        StoreOptions {
            // Only `migrate` waits this long for a connection: an operation's deadline includes its wait.
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Some(OPERATION),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

fn record(generation: u64) -> TokenRecord {
    TokenRecord {
        token: "T".into(),
        generation: Generation(generation),
        obtained_at_ms: 1,
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "test".into(),
    }
}

/// Every message of an error's chain, joined.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether an error's chain has the database's own words for a lock wait or statement that ran out: the session
/// timeouts ended it, not only the operation's deadline.
fn said_by_the_database(message: &str) -> bool {
    [
        "canceling statement due to",
        "Lock wait timeout exceeded",
        "max_statement_time exceeded",
        "database is locked",
    ]
    .iter()
    .any(|words| message.contains(words))
}

/// Runs `operation`, checks that it ended within the operation timeout, and returns its error.
async fn bounded<T: std::fmt::Debug>(
    what: &str,
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> StoreError {
    let started = Instant::now();
    let result = operation.await;
    let took = started.elapsed();
    assert!(took < OPERATION + SLACK, "{what} took {took:?}");
    result.expect_err(what)
}

/// A caller going through the layer to the simulator, with a manager on `store` that waits `WAIT` for the lease.
fn caller(
    sim: &Simulator,
    store: &DieselStore,
    key: &str,
) -> (TokenManager, impl Fn() -> CallFuture) {
    let manager = account_at(sim.base_url())
        .store(store.clone())
        .store_key(key)
        .login_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(100))
        .wait_timeout(WAIT)
        .build()
        .unwrap();
    let service = PaynetAuthLayer::new(manager.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let url = format!("{}/v2/service", sim.base_url());
    let call = move || -> CallFuture {
        let (service, url) = (service.clone(), url.clone());
        Box::pin(async move {
            let request = http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#,
                )))
                .unwrap();
            let response = service.oneshot(request).await?;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(answer["result"]["categories"].is_array(), "{answer}");
            Ok(())
        })
    };
    (manager, call)
}

type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

/// Runs each statement on the raw connection, in order.
async fn run(raw: &mut Raw, statements: &[String]) {
    for statement in statements {
        on_raw!(&mut *raw, |conn| conn
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}")));
    }
}

/// Another session locks the lease row (`lock` holds it until `unlock`). The lease is "not acquired" within the
/// operation timeout, saying the row is locked; a cold call ends after the manager's wait with a `LeaseWait` that
/// says the same and no login; once the lock is gone, the call logs in.
async fn lease_row_locked(server: Fixture, lock: fn(&str) -> Vec<String>, unlock: &[&str]) {
    let db = server.empty().await;
    let store = store(&db).await;
    let key = unique_key("locked_lease_row");
    assert!(store.try_lease(&key, "setup", LEASE_TTL).await.unwrap());
    store.release(&key, "setup").await.unwrap();
    let mut holder = db.raw().await;
    run(&mut holder, &lock(&key)).await;

    let error = bounded("try_lease", store.try_lease(&key, "a", LEASE_TTL)).await;
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                operation: "try_lease",
                ..
            }
        ),
        "{error:?}"
    );
    let message = chain(&error);
    assert!(
        message.contains("the lease row is locked by another session"),
        "{message}"
    );
    assert!(said_by_the_database(&message), "{message}");
    assert!(!message.contains("another instance"), "{message}");

    let sim = Simulator::start().await.unwrap();
    let (manager, call) = caller(&sim, &store, &key);
    let started = Instant::now();
    let error = call().await.expect_err("no lease, no token");
    let took = started.elapsed();
    assert!(
        took < WAIT + OPERATION * 2 + SLACK,
        "the call took {took:?}"
    );
    assert!(
        matches!(
            error,
            Error::Token(TokenError::LeaseWait {
                row_locked: true,
                ..
            })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("locked by another database session"),
        "{message}"
    );
    assert!(!message.contains("another instance"), "{message}");
    assert_eq!(sim.stats().logins, 0, "no login without the lease");

    let unlock: Vec<String> = unlock.iter().map(|s| (*s).to_owned()).collect();
    run(&mut holder, &unlock).await;
    call().await.unwrap();
    assert_eq!(sim.stats().logins, 1);
    assert_eq!(
        manager.stored().await.unwrap().unwrap().generation,
        Generation(1)
    );
    drop(call);
    drop((holder, manager, store));
    db.drop_database(&server).await;
}

/// Another session locks both tables. Every operation ends within the operation timeout: `Unavailable` (timed
/// out) for reads, writes and the lease status, `Conflict` for the lease; a cold call logs in without the store
/// (degraded mode) instead of waiting for the lock, and what `token status` reads ends in time too.
async fn tables_locked(server: Fixture, lock: &[&str], unlock: &[&str]) {
    let db = server.empty().await;
    let store = store(&db).await;
    let key = unique_key("locked_tables");
    let mut holder = db.raw().await;
    let lock: Vec<String> = lock.iter().map(|s| (*s).to_owned()).collect();
    run(&mut holder, &lock).await;

    for (what, error) in [
        ("load", bounded("load", store.load(&key)).await),
        ("save", bounded("save", store.save(&key, &record(1))).await),
        ("lease", bounded("lease", store.lease(&key)).await),
    ] {
        assert!(
            matches!(error, StoreError::Unavailable { .. }),
            "{what}: {error:?}"
        );
        let message = chain(&error);
        assert!(message.contains("timed out after"), "{what}: {message}");
        assert!(said_by_the_database(&message), "{what}: {message}");
    }
    let error = bounded("try_lease", store.try_lease(&key, "a", LEASE_TTL)).await;
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                operation: "try_lease",
                ..
            }
        ),
        "{error:?}"
    );

    let sim = Simulator::start().await.unwrap();
    let (manager, call) = caller(&sim, &store, &key);
    let started = Instant::now();
    call().await.unwrap();
    let took = started.elapsed();
    assert!(took < OPERATION * 2 + SLACK, "the call took {took:?}");
    assert_eq!(sim.stats().logins, 1);
    // What `paynet-auth token status` reads.
    let error = bounded("stored", manager.stored()).await;
    assert!(error.is_unavailable(), "{error:?}");
    let error = bounded("lease", manager.lease()).await;
    assert!(error.is_unavailable(), "{error:?}");
    assert!(matches!(
        manager.health(),
        Health::Degraded(Degradation::StoreUnavailable)
    ));

    let unlock: Vec<String> = unlock.iter().map(|s| (*s).to_owned()).collect();
    run(&mut holder, &unlock).await;
    assert!(store.load(&key).await.is_ok());
    // The token obtained without the store is saved by a task of the manager's, which would connect again.
    drop(call);
    drop((holder, manager, store));
    db.drop_database(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_row_locked_is_not_acquired_within_the_operation_timeout() {
    lease_row_locked(
        Fixture::postgres(),
        |key| {
            vec![format!(
                "BEGIN; SELECT * FROM paynet_lease WHERE name = '{key}' FOR UPDATE"
            )]
        },
        &["ROLLBACK"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lease_row_locked_is_not_acquired_within_the_operation_timeout() {
    lease_row_locked(
        Fixture::mysql(),
        |key| {
            vec![
                "BEGIN".to_owned(),
                format!("SELECT * FROM paynet_lease WHERE name = '{key}' FOR UPDATE"),
            ]
        },
        &["ROLLBACK"],
    )
    .await;
}

/// SQLite locks the whole file: a write transaction in another connection (`BEGIN IMMEDIATE`) keeps the lease
/// from being taken and tokens from being saved, while reads go on (WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_locked_file_bounds_the_lease_and_the_save() {
    let db = Fixture::sqlite();
    let store = store(&db).await;
    let key = unique_key("locked_file");
    let mut holder = db.raw().await;
    run(&mut holder, &["BEGIN IMMEDIATE".to_owned()]).await;
    let error = bounded("save", store.save(&key, &record(1))).await;
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(chain(&error).contains("timed out after"), "{error}");
    run(&mut holder, &["ROLLBACK".to_owned()]).await;
    drop(holder);

    lease_row_locked(db, |_| vec!["BEGIN IMMEDIATE".to_owned()], &["ROLLBACK"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_locked_tables_bound_every_operation() {
    tables_locked(
        Fixture::postgres(),
        &["BEGIN; LOCK TABLE paynet_tokens, paynet_lease IN ACCESS EXCLUSIVE MODE"],
        &["ROLLBACK"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_locked_tables_bound_every_operation() {
    tables_locked(
        Fixture::mysql(),
        &["LOCK TABLES paynet_tokens WRITE, paynet_lease WRITE"],
        &["UNLOCK TABLES"],
    )
    .await;
}
