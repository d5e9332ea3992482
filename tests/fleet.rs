//! A fleet on real databases against a gateway that keeps one session per terminal (every extra login logs a
//! colleague out): eight instances with pools of their own, 64 callers each, the token expiring every second.
//! Whatever the database does (READ COMMITTED or SERIALIZABLE PostgreSQL, MariaDB, one SQLite file shared by
//! several processes), the fleet logs in once per expiry and no caller sees an error.
//!
//! One kind of failed call is not held against the fleet: a call that lived through two expiries (its token died,
//! and its replay's too). The layer replays once and only once, so such a call fails whatever the store does; it
//! happens only when the machine is so loaded that one call takes as long as the expiry period. The figures count
//! these separately (`errors_across_two_expiries`).
//!
//! `PAYNET_FLEET_SECS` sets how many expiries a run has (default 20, one a second, the documented full run).
//! `scripts/fleet-repeat.sh` runs every variant many times and counts the runs that broke the promise.
//!
//! Each run prints one `fleet:` line of figures (logins, expiries, calls, errors, p99 wait) on stdout; run with
//! `--nocapture` to read it.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "hyper-client"
))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::store::{DieselStore, StoreOptions};
use paynet_auth::{PaynetAuth, PaynetAuthLayer, TokenManager};
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME};
use support::db::{Fixture, unique_key};
use support::fleet::{
    Tally, assert_verdict, expire_every_second, expiries, report, single_session_sim,
};
use tower::{Layer, ServiceExt};

const INSTANCES: usize = 8;
const CALLERS_PER_INSTANCE: usize = 64;
const METHOD: &str = "getCategoriesList";

/// One fleet at a time: each one alone keeps two cores busy, and two at once would measure the machine, not the
/// protocol (refreshes slower than the expiry period merge two expiries into one login).
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One caller: calls through the layer until told to stop.
async fn caller(service: PaynetAuth<HttpClient>, url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"{METHOD}","id":7,"params":{{}}}}"#
    ));
    while !stop.load(Ordering::Relaxed) {
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let started = Instant::now();
        let outcome = match service.clone().oneshot(request).await {
            Err(e) => Err(e.to_string()),
            Ok(response) => match response.into_body().collect().await {
                Err(e) => Err(e.to_string()),
                Ok(body) => {
                    let answer: serde_json::Value =
                        serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                    if answer["result"]["categories"].is_array() {
                        Ok(())
                    } else {
                        Err(format!("not served: {answer}"))
                    }
                }
            },
        };
        tally.calls += 1;
        tally.waits.push(started.elapsed());
        if let Err(e) = outcome {
            tally.errors.push((Some((started, Instant::now())), e));
        }
    }
    tally
}

/// Eight instances with pools of their own on `url`, 64 callers each, `expiries()` expiries.
async fn in_process_fleet(url: &str, variant: &str) {
    let n = expiries();
    let sim = single_session_sim().start().await.unwrap();
    let key = unique_key("fleet");
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    let mut managers = Vec::new();
    let mut stores = Vec::new();
    for i in 0..INSTANCES {
        let store = DieselStore::connect(
            url,
            StoreOptions {
                pool_size: 2,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let manager = TokenManager::builder(PaynetLogin::new(
            sim.base_url(),
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD.into(),
            DEFAULT_TERMINAL_ID,
        ))
        .store(store.clone())
        .store_key(&key)
        .owner(format!("{variant}-instance-{i}"))
        .login_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let service = PaynetAuthLayer::new(manager.clone()).layer(client);
        for _ in 0..CALLERS_PER_INSTANCE {
            callers.push(tokio::spawn(caller(
                service.clone(),
                format!("{}/v2/service", sim.base_url()),
                Arc::clone(&stop),
            )));
        }
        managers.push(manager);
        stores.push(store);
    }

    let ticks = expire_every_second(&sim, n).await;
    // The hot path: once every instance holds the last token, calls cost no query at all.
    let live = sim.issued_tokens().last().cloned().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !managers.iter().all(|m| {
        m.cached()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t.secret()) == live.as_str())
    }) {
        assert!(
            Instant::now() < deadline,
            "{variant}: the fleet never converged on the last token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queries: Vec<u64> = stores.iter().map(DieselStore::query_count).collect();
    let served = sim.stats().calls_to(METHOD);
    sim.wait_for(|stats| stats.calls_to(METHOD) >= served + 2000)
        .await;
    let after: Vec<u64> = stores.iter().map(DieselStore::query_count).collect();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for caller in callers {
        tally.merge(caller.await.expect("a caller panicked"));
    }
    let logins = sim.stats().logins;
    report(variant, logins, n, &mut tally, &ticks);
    let by_managers: u64 = managers.iter().map(TokenManager::logins).sum();
    assert_eq!(by_managers, logins, "logins counted by the managers");
    assert_eq!(
        after, queries,
        "{variant}: 2,000 calls on a cached token queried the store"
    );
    assert_verdict(variant, logins, n, &tally, &ticks);
}

/// PostgreSQL sessions of `url` defaulting to SERIALIZABLE, through tokio-postgres's `options` parameter.
fn serializable(url: &str) -> String {
    // Written out: `Url::query_pairs_mut` would encode the space as `+`, which tokio-postgres does not decode.
    let options = "options=-c%20default_transaction_isolation%3Dserializable";
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{query}&{options}"),
        None => format!("{url}?{options}"),
    }
}

/// The isolation level a session on `url` runs at.
async fn isolation_of(url: &str) -> String {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Level {
        #[diesel(sql_type = diesel::sql_types::Text)]
        transaction_isolation: String,
    }
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query("SHOW transaction_isolation")
        .get_result::<Level>(&mut conn)
        .await
        .unwrap()
        .transaction_isolation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_committed_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = Fixture::postgres().url;
    assert_eq!(isolation_of(&url).await, "read committed");
    in_process_fleet(&url, "postgres-read-committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serializable_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = serializable(&Fixture::postgres().url);
    // The store's sessions are made from this very URL.
    assert_eq!(isolation_of(&url).await, "serializable");
    in_process_fleet(&url, "postgres-serializable").await;
}

/// The server-wide default isolation of new MariaDB/MySQL sessions (`tx_isolation`, which both spell so).
async fn mysql_default_isolation(url: &str, set: Option<&str>) -> String {
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Level {
        #[diesel(sql_type = diesel::sql_types::Text)]
        level: String,
    }
    let mut conn = AsyncMysqlConnection::establish(url).await.unwrap();
    if let Some(level) = set {
        diesel::sql_query(format!("SET GLOBAL tx_isolation = '{level}'"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // A new session, as the store's pool opens them: the global default applies to sessions opened after it.
    let mut fresh = AsyncMysqlConnection::establish(url).await.unwrap();
    diesel::sql_query("SELECT @@session.tx_isolation AS level")
        .get_result::<Level>(&mut fresh)
        .await
        .unwrap()
        .level
}

/// MariaDB has no per-connection option in its URL for the isolation level, so this variant sets the server's
/// default for new sessions while its fleet runs (the fleets run one at a time, and the other test binaries run
/// after this one), and puts the previous default back even if the fleet fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_serializable_fleet_logs_in_once_per_expiry() {
    use futures_util::FutureExt;
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = Fixture::mysql().url;
    let before = mysql_default_isolation(&url, None).await;
    assert_eq!(
        mysql_default_isolation(&url, Some("SERIALIZABLE")).await,
        "SERIALIZABLE"
    );
    let outcome = std::panic::AssertUnwindSafe(in_process_fleet(&url, "mariadb-serializable"))
        .catch_unwind()
        .await;
    assert_eq!(mysql_default_isolation(&url, Some(&before)).await, before);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    in_process_fleet(&Fixture::mysql().url, "mariadb-repeatable-read").await;
}
