//! The store's tables dropped under a running manager: `health()` says a table is missing (not `Ready`, not "does
//! not answer") once an operation meets it, calls still get a token (from memory), and opening the store again
//! (`store::connect`, which migrates, as `paynet-auth migrate` does) creates the tables again although their
//! migration is recorded as applied.
//!
//! Each test works in a database of its own, since it drops tables.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "hyper-client"
))]

mod support;

use std::time::Duration;

use bytes::Bytes;
use diesel_async::SimpleAsyncConnection;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetAuthLayer;
use paynet_auth::store::{self, DieselStore, StoreOptions, TokenStore};
use paynet_auth::token::Degradation;
use paynet_auth::token::Health;
use paynet_sim::Simulator;
use support::account_at;
use support::db::{Fixture, on_raw, unique_key};
use tower::{Layer, ServiceExt};

async fn dropped_tables_are_reported_and_recreated(server: Fixture) {
    let db = server.empty().await;
    let options = || StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let store = DieselStore::connect(&db.url, options()).await.unwrap();
    store.migrate().await.unwrap();
    let key = unique_key("dropped_tables");
    let sim = Simulator::start().await.unwrap();
    let manager = account_at(sim.base_url())
        .store(store.clone())
        .store_key(&key)
        .login_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let service = PaynetAuthLayer::new(manager.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let url = format!("{}/v2/service", sim.base_url());
    let call = || {
        let (service, url) = (service.clone(), url.clone());
        async move {
            let request = http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#,
                )))
                .unwrap();
            let response = service.oneshot(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(answer["result"]["categories"].is_array(), "{answer}");
        }
    };
    call().await;
    assert!(matches!(manager.health(), Health::Ready));
    assert!(manager.stored().await.unwrap().is_some());

    on_raw!(&mut db.raw().await, |conn| conn
        .batch_execute("DROP TABLE paynet_tokens")
        .await
        .unwrap());
    // What `paynet-auth token status` reads, and then reports.
    let error = manager.stored().await.unwrap_err();
    assert!(error.is_missing_table(), "{error:?}");
    let health = manager.health();
    assert!(
        matches!(health, Health::Degraded(Degradation::StoreTableMissing)),
        "{health:?}"
    );
    assert!(
        health
            .to_string()
            .contains("table of the token store is missing"),
        "{health}"
    );

    // The gateway drops the token: the refresh cannot use the store, and logs in without it.
    sim.expire_all();
    call().await;
    assert_eq!(sim.stats().logins, 2);
    assert!(matches!(
        manager.health(),
        Health::Degraded(Degradation::StoreTableMissing)
    ));

    on_raw!(&mut db.raw().await, |conn| conn
        .batch_execute("DROP TABLE paynet_lease")
        .await
        .unwrap());
    let repaired = store::connect(&db.url, options()).await.unwrap();
    assert!(repaired.load(&key).await.unwrap().is_none());
    assert!(repaired.lease(&key).await.unwrap().is_none());
    assert!(
        repaired
            .try_lease(&key, "a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    // Both are back for the running manager too.
    let _ = manager.stored().await.unwrap();
    assert!(!matches!(
        manager.health(),
        Health::Degraded(Degradation::StoreTableMissing)
    ));
    // A second run finds nothing to repair.
    store::connect(&db.url, options()).await.unwrap();
    db.drop_database(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropped_tables_are_reported_and_recreated() {
    dropped_tables_are_reported_and_recreated(Fixture::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_dropped_tables_are_reported_and_recreated() {
    dropped_tables_are_reported_and_recreated(Fixture::mysql()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dropped_tables_are_reported_and_recreated() {
    dropped_tables_are_reported_and_recreated(Fixture::sqlite()).await;
}
