//! The refresh protocol over real databases, end to end: callers go through `PaynetAuthLayer` over hyper-util's
//! client to the gateway simulator, and the managers keep their tokens and lease in PostgreSQL, MariaDB or SQLite
//! (see `support::db` for the URLs). Every case is written once and run on each backend.
//!
//! The server databases are shared with other tests: every test works under a credential key of its own. A server
//! that cannot be reached fails the tests; nothing is skipped.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "hyper-client"
))]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::record::{Generation, TokenRecord};
use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
use paynet_auth::token::TokenManagerBuilder;
use paynet_auth::{Error, PaynetAuth, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use secrecy::ExposeSecret;
use support::db::{Fixture, unique_key};
use support::proxy::{Proxy, host_port};
use support::{PASSWORD, TERMINAL, USERNAME};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};

/// The gateway method every caller uses: any method that needs a token would do.
const METHOD: &str = "getCategoriesList";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A manager for the simulator's account, keeping its token under `key` in `store`.
fn manager_for(sim: &Simulator, store: &DieselStore, key: &str) -> TokenManagerBuilder {
    TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .store(store.clone())
    .store_key(key)
    .login_timeout(Duration::from_secs(5))
}

/// The client side of one service instance: the layer around a hyper-util client of its own.
#[derive(Clone)]
struct Caller {
    service: PaynetAuth<HttpClient>,
    url: String,
}

impl Caller {
    fn new(sim: &Simulator, manager: &TokenManager) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            service: PaynetAuthLayer::new(manager.clone()).layer(client),
            url: format!("{}/v2/service", sim.base_url()),
        }
    }

    /// One call, which succeeds only if the gateway served it.
    async fn call(self) -> Result<(), String> {
        let request = http::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","method":"{METHOD}","id":7,"params":{{}}}}"#
            ))))
            .unwrap();
        let response = self
            .service
            .oneshot(request)
            .await
            .map_err(|e: Error| e.to_string())?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())?;
        if answer["result"]["categories"].is_array() {
            Ok(())
        } else {
            Err(format!("not served: {answer}"))
        }
    }

    async fn call_ok(&self) {
        if let Err(e) = self.clone().call().await {
            panic!("call failed: {e}");
        }
    }

    /// Starts `n` calls at once.
    fn spawn_calls(&self, n: usize) -> Vec<JoinHandle<Result<(), String>>> {
        (0..n).map(|_| tokio::spawn(self.clone().call())).collect()
    }

    async fn calls_ok(&self, n: usize) {
        all_ok(self.spawn_calls(n)).await;
    }
}

/// Waits for every call and fails with a count of the failures and the first of them.
async fn all_ok(calls: Vec<JoinHandle<Result<(), String>>>) {
    let total = calls.len();
    let mut failures = Vec::new();
    for call in calls {
        if let Err(e) = call.await.expect("a call panicked") {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} calls failed, the first: {}",
        failures.len(),
        failures[0]
    );
}

async fn stored(store: &DieselStore, key: &str) -> TokenRecord {
    store
        .load(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no token stored under {key}"))
}

/// An instance with a pool of its own, storing under `key` with encryption key number `key_byte`, after its first
/// call.
async fn served_instance(
    db: &Fixture,
    sim: &Simulator,
    key: &str,
    key_byte: u8,
) -> (DieselStore, TokenManager) {
    let store = db.encrypted_store(key_byte).await;
    let manager = manager_for(sim, &store, key).build().unwrap();
    Caller::new(sim, &manager).call_ok().await;
    (store, manager)
}

fn generation(manager: &TokenManager) -> Generation {
    manager.cached().expect("a cached token").generation()
}

mod cases {
    use super::*;

    pub(super) async fn stored_token_survives_a_restart(db: Fixture) {
        let sim = Simulator::start().await.unwrap();
        let key = unique_key("survives_restart");
        let first = served_instance(&db, &sim, &key, 1).await;
        assert_eq!(sim.stats().logins, 1);
        drop(first);

        // A restarted process: new pool, new manager, empty cache.
        let (store, restarted) = served_instance(&db, &sim, &key, 1).await;

        let stats = sim.stats();
        assert_eq!(stats.logins, 1, "the stored token was used, no new login");
        assert_eq!(stats.rejections, 0);
        assert_eq!(stats.calls_to(METHOD), 2);
        assert_eq!(restarted.logins(), 0);
        assert_eq!(
            store.query_count(),
            1,
            "a newer stored token is adopted after one read, without the lease"
        );
        assert_eq!(generation(&restarted), Generation(1));
        assert_eq!(
            restarted.cached().unwrap().secret().expose_secret(),
            sim.issued_tokens()[0]
        );
    }

    /// Criterion 4 across a fleet: four instances with pools of their own on one database, one credential, a
    /// gateway that keeps one session per terminal (a second login would log the others out).
    pub(super) async fn instances_converge_with_one_login_per_expiry(db: Fixture) {
        const INSTANCES: usize = 4;
        const CALLERS_PER_INSTANCE: usize = 250;
        const EXPIRY_EVENTS: u64 = 3;
        let sim = Simulator::builder()
            .single_session(true)
            .login_latency(Duration::from_millis(50))
            .start()
            .await
            .unwrap();
        let key = unique_key("converge");
        let mut managers = Vec::new();
        let mut callers = Vec::new();
        for i in 0..INSTANCES {
            let manager = manager_for(&sim, &db.plain_store().await, &key)
                .owner(format!("instance-{i}"))
                .poll_interval(Duration::from_millis(10))
                .build()
                .unwrap();
            callers.push(Caller::new(&sim, &manager));
            managers.push(manager);
        }
        let observer = db.plain_store().await;

        // Round 0 starts from no token at all; each later round follows an expiry event.
        for round in 0..=EXPIRY_EVENTS {
            if round > 0 {
                sim.expire_all();
            }
            let calls = callers
                .iter()
                .flat_map(|caller| caller.spawn_calls(CALLERS_PER_INSTANCE))
                .collect();
            all_ok(calls).await;

            let stats = sim.stats();
            assert_eq!(stats.logins, round + 1, "logins after round {round}");
            assert_eq!(
                stats.calls_to(METHOD),
                (round + 1) * (INSTANCES * CALLERS_PER_INSTANCE) as u64,
                "every call served exactly once, round {round}"
            );
            for (i, manager) in managers.iter().enumerate() {
                assert_eq!(
                    generation(manager),
                    Generation(round + 1),
                    "instance {i} after round {round}"
                );
            }
            assert_eq!(
                stored(&observer, &key).await.generation,
                Generation(round + 1)
            );
        }
        assert_eq!(sim.stats().max_concurrent_logins, 1);
        let logins: u64 = managers.iter().map(TokenManager::logins).sum();
        assert_eq!(logins, EXPIRY_EVENTS + 1);
    }

    /// An instance that took the lease and died: the lease runs out on the database's clock, and only then does
    /// another instance log in.
    pub(super) async fn dead_lease_holder_is_taken_over(db: Fixture) {
        let lease_ttl = Duration::from_secs(2);
        let sim = Simulator::start().await.unwrap();
        // The lease must cover the 1 s login and two store operations; 400 ms each keeps this test short.
        let store = db
            .store(StoreOptions {
                connect_timeout: Duration::from_millis(400),
                ..StoreOptions::default()
            })
            .await;
        let key = unique_key("dead_lease");
        // Taken before the lease, so that `waited` is at least what the database counts.
        let started = Instant::now();
        assert!(
            store
                .try_lease(&key, "dead-instance", lease_ttl)
                .await
                .unwrap()
        );
        let manager = manager_for(&sim, &store, &key)
            .owner("survivor")
            .login_timeout(Duration::from_secs(1))
            .lease_ttl(lease_ttl)
            .poll_interval(Duration::from_millis(20))
            .build()
            .unwrap();

        Caller::new(&sim, &manager).call_ok().await;
        let waited = started.elapsed();

        // The database counts whole milliseconds: the takeover may come a millisecond early by this clock.
        assert!(
            waited >= lease_ttl - Duration::from_millis(5),
            "took the lease over after {waited:?}"
        );
        assert!(
            waited < lease_ttl + Duration::from_secs(3),
            "waited {waited:?}"
        );
        assert_eq!(sim.stats().logins, 1);
        assert_eq!(manager.logins(), 1);
        let row = stored(&store, &key).await;
        assert_eq!(row.generation, Generation(1));
        assert_eq!(row.written_by, "survivor");
    }

    pub(super) async fn wrong_encryption_key_means_a_new_login(db: Fixture) {
        let sim = Simulator::start().await.unwrap();
        let key = unique_key("wrong_key");
        let (store_a, _a) = served_instance(&db, &sim, &key, 1).await;
        assert_eq!(stored(&store_a, &key).await.generation, Generation(1));

        let (store_b, b) = served_instance(&db, &sim, &key, 2).await;

        assert_eq!(sim.stats().logins, 2);
        assert_eq!(b.logins(), 1);
        // B's token replaced the row it could not read, so it is numbered past it and readable with key B.
        assert_eq!(stored(&store_b, &key).await.generation, Generation(2));
        let (_restarted_b, restarted) = served_instance(&db, &sim, &key, 2).await;
        assert_eq!(restarted.logins(), 0, "a restart on key B adopts B's token");
        assert_eq!(sim.stats().logins, 2);
        let (column, nonce) = db.raw().await.token_columns(&key).await;
        assert!(nonce.is_some(), "the row is encrypted");
        for token in sim.issued_tokens() {
            assert!(!column.contains(&token), "a token is stored in plaintext");
        }
    }

    /// Zero database queries per request in steady state.
    pub(super) async fn hot_path_issues_no_queries(db: Fixture) {
        let sim = Simulator::start().await.unwrap();
        let store = db.plain_store().await;
        let manager = manager_for(&sim, &store, &unique_key("hot_path"))
            .build()
            .unwrap();
        let caller = Caller::new(&sim, &manager);
        caller.call_ok().await;
        let after_login = store.query_count();
        assert!(after_login > 0, "the first token went through the store");

        caller.calls_ok(200).await;

        assert_eq!(
            store.query_count(),
            after_login,
            "calls with a cached token queried the database"
        );
        let stats = sim.stats();
        assert_eq!(stats.logins, 1);
        assert_eq!(stats.calls_to(METHOD), 201);
    }

    /// The database goes away (a proxy in front of it stops): the cached token keeps serving, an expiry is
    /// handled by a login without the lease, and the new token reaches the database once it is back.
    pub(super) async fn database_outage_keeps_cached_token_and_refreshes_from_memory(db: Fixture) {
        let connect_timeout = Duration::from_millis(300);
        let sim = Simulator::start().await.unwrap();
        let mut proxy = Proxy::start(host_port(&db.url)).await;
        let store = DieselStore::connect(
            &proxy.url_through(&db.url),
            StoreOptions {
                connect_timeout,
                pool_size: 2,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        // Straight to the server, around the proxy.
        let observer = db.plain_store().await;
        let key = unique_key("outage");
        let manager = manager_for(&sim, &store, &key).build().unwrap();
        let caller = Caller::new(&sim, &manager);
        caller.call_ok().await;
        assert_eq!(stored(&observer, &key).await.generation, Generation(1));

        proxy.stop().await;
        caller.calls_ok(20).await;
        assert_eq!(sim.stats().logins, 1, "the cached token served the outage");

        sim.expire_all();
        let started = Instant::now();
        caller.call_ok().await;
        let took = started.elapsed();
        assert!(
            took < connect_timeout + Duration::from_secs(2),
            "the refresh waited {took:?} for the database"
        );
        assert_eq!(sim.stats().logins, 2);
        // Numbered from the clock without the store, above the stored generation.
        let outage_generation = generation(&manager);
        assert!(outage_generation > Generation(1), "{outage_generation}");
        assert_eq!(
            stored(&observer, &key).await.generation,
            Generation(1),
            "nothing reached the database during the outage"
        );

        proxy.restart().await;
        // The manager retries the save in the background, 1 s after the login and then with a doubling pause.
        let deadline = Instant::now() + Duration::from_secs(10);
        let saved = loop {
            let row = stored(&observer, &key).await;
            if row.generation == outage_generation {
                break row;
            }
            assert!(
                Instant::now() < deadline,
                "the token obtained during the outage never reached the database (still generation {})",
                row.generation
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(saved.token.expose_secret(), sim.issued_tokens()[1]);
        caller.call_ok().await;
        assert_eq!(sim.stats().logins, 2);
        proxy.stop().await;
    }
}

/// The tests of one backend: every case, plus `$extra` cases (the outage, for the backends behind a network
/// connection).
macro_rules! backend_tests {
    ($backend:ident, $fixture:expr $(, $extra:ident)*) => {
        mod $backend {
            use super::*;

            tests_of!($fixture, ();
                stored_token_survives_a_restart,
                dead_lease_holder_is_taken_over,
                wrong_encryption_key_means_a_new_login
            );
            tests_of!($fixture, (flavor = "multi_thread", worker_threads = 2);
                instances_converge_with_one_login_per_expiry,
                hot_path_issues_no_queries
                $(, $extra)*
            );
        }
    };
}

/// One test per case, named after it, on a tokio runtime made with `$runtime`.
macro_rules! tests_of {
    ($fixture:expr, $runtime:tt; $($case:ident),+) => {
        $(
            #[tokio::test $runtime]
            async fn $case() {
                cases::$case($fixture).await;
            }
        )+
    };
}

backend_tests!(
    postgres,
    Fixture::postgres(),
    database_outage_keeps_cached_token_and_refreshes_from_memory
);
backend_tests!(
    mysql,
    Fixture::mysql(),
    database_outage_keeps_cached_token_and_refreshes_from_memory
);
backend_tests!(sqlite, Fixture::sqlite());
