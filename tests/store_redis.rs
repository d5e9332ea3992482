//! What only the Redis store has, against real Redis servers: the shared one (`PAYNET_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/0`, keys of each test's own) and `redis-server`s a test starts itself on a free port
//! (to restart it, to require a password, to speak TLS). The cases every store passes are in `tests/store.rs`.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]

mod support;

use std::sync::Arc;
use std::time::Duration;

use paynet_auth::StoreError;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{RedisStore, StoreOptions, TokenStore};
use support::db::unique_key;
use support::logs::Captured;
use support::redis_db::{RedisFixture, RedisServer};
use support::{FakeLogin, manager_builder};

const TTL: Duration = Duration::from_secs(30);
/// Longest a wake-up may take in these tests before they call it lost (it comes in a few milliseconds).
const WAKEUP_WITHIN: Duration = Duration::from_secs(5);

fn record(generation: u64, token: &str) -> TokenRecord {
    TokenRecord {
        token: token.into(),
        generation: Generation(generation),
        obtained_at_ms: 1_700_000_000_000,
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "test-host:1:abcd".into(),
    }
}

/// ShedLock's `unlockingAfterExpirationShouldBeNoOp`: A's lease runs out, B takes it, and A's late release must not
/// free B's (the release compares the holder before it deletes).
#[tokio::test]
async fn unlocking_after_expiration_is_a_no_op() {
    let db = RedisFixture::shared();
    let store = db.plain_store().await;
    let mut raw = db.raw().await;
    let key = unique_key("unlock-after-expiry");
    assert!(
        store
            .try_lease(&key, "a", Duration::from_millis(200))
            .await
            .unwrap()
    );
    raw.age_lease(&key, 200).await;
    assert!(store.try_lease(&key, "b", TTL).await.unwrap());

    store.release(&key, "a").await.unwrap();

    assert!(
        !store.try_lease(&key, "c", TTL).await.unwrap(),
        "B's lease was freed by A"
    );
    let lease = store.lease(&key).await.unwrap().unwrap();
    assert_eq!(lease.holder, "b");
    assert!(lease.is_held());
}

/// ShedLock's `extendAfterExpirationShouldBeNoOp`: once B took the lease A let run out, A's extension is refused
/// and leaves B's lease as it was.
#[tokio::test]
async fn extending_after_expiration_is_a_no_op() {
    let db = RedisFixture::shared();
    let store = db.plain_store().await;
    let mut raw = db.raw().await;
    let key = unique_key("extend-after-expiry");
    assert!(
        store
            .try_lease(&key, "a", Duration::from_millis(200))
            .await
            .unwrap()
    );
    raw.age_lease(&key, 200).await;
    assert!(store.try_lease(&key, "b", TTL).await.unwrap());
    let before = store.lease(&key).await.unwrap().unwrap();

    assert!(!store.try_lease(&key, "a", TTL).await.unwrap());

    let after = store.lease(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            after.holder.as_str(),
            after.acquired_at_ms,
            after.expires_at_ms
        ),
        ("b", before.acquired_at_ms, before.expires_at_ms)
    );
    assert!(!store.try_lease(&key, "c", TTL).await.unwrap());
}

/// A save made by another instance (another store on the same Redis) wakes a subscriber of its key, through the
/// process's pub/sub connection; a save of another key does not.
#[tokio::test]
async fn a_save_wakes_the_subscribers_of_its_key() {
    let db = RedisFixture::shared();
    let (waiter, saver) = (db.plain_store().await, db.plain_store().await);
    let (key, other) = (unique_key("wakeup"), unique_key("wakeup-other"));
    let mut wakeup = waiter
        .subscribe(&key)
        .expect("the Redis store announces saves");
    let bystander = waiter.subscribe(&other).unwrap();
    // The listener wakes everyone once it is subscribed (saves before that were not heard): from then on, only
    // a published save wakes.
    tokio::time::timeout(WAKEUP_WITHIN, wakeup.saved())
        .await
        .expect("the listener subscribed");
    let mut bystander = bystander;
    bystander.saved().await;

    assert!(saver.save(&key, &record(1, "t")).await.unwrap());

    tokio::time::timeout(WAKEUP_WITHIN, wakeup.saved())
        .await
        .expect("the save was announced");
    assert!(!bystander.has_saved(), "a save of another key woke it");
    // A refused save (not newer) announces nothing.
    assert!(!saver.save(&key, &record(1, "t")).await.unwrap());
    assert!(saver.save(&other, &record(1, "t")).await.unwrap());
    tokio::time::timeout(WAKEUP_WITHIN, bystander.saved())
        .await
        .unwrap();
    assert!(!wakeup.has_saved());
}

/// Each operation is counted under its kind, with one round trip each (one command or script).
#[tokio::test]
async fn operations_are_counted_by_kind_with_one_round_trip_each() {
    let store = RedisFixture::shared().plain_store().await;
    let key = unique_key("counts");
    store.load(&key).await.unwrap();
    store.save(&key, &record(1, "t")).await.unwrap();
    store.try_lease(&key, "a", TTL).await.unwrap();
    store.lease(&key).await.unwrap();
    store.release(&key, "a").await.unwrap();
    store.stored_generation(&key).await.unwrap();
    store.clear(&key).await.unwrap();
    let counts = store.operation_counts().unwrap();
    assert_eq!(
        (
            counts.load,
            counts.save,
            counts.try_lease,
            counts.lease,
            counts.release,
            counts.stored_generation,
            counts.clear
        ),
        (1, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(counts.round_trips, 7);
    assert_eq!(
        store.clone().operation_counts(),
        Some(counts),
        "clones share the counts"
    );
}

/// Redis unreachable: `connect` still succeeds (degraded start), each operation fails with `Unavailable` within the
/// operation timeout, and the password is in no message, log line, `describe()` or `Debug`.
#[tokio::test]
async fn unreachable_redis_is_unavailable_and_never_shows_the_password() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::DEBUG);
    let store = RedisStore::connect(
        "redis://:hunter2@127.0.0.1:1/0",
        StoreOptions {
            connect_timeout: Duration::from_millis(500),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.describe(), "redis://:****@127.0.0.1:1/0");
    assert!(!format!("{store:?}").contains("hunter2"));
    let errors = [
        store.load("k").await.unwrap_err(),
        store.save("k", &record(1, "t")).await.unwrap_err(),
        store.try_lease("k", "a", TTL).await.unwrap_err(),
        store.release("k", "a").await.unwrap_err(),
        store.lease("k").await.unwrap_err(),
    ];
    for error in errors {
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        let message = paynet_auth::error::Chain(&error).to_string();
        assert!(message.contains("redis://:****@127.0.0.1:1/0"), "{message}");
        assert!(
            !message.contains("hunter2") && !format!("{error:?}").contains("hunter2"),
            "{message}"
        );
    }
    let _wakeup = store.subscribe("k");
    assert!(!logs.text().contains("hunter2"), "{}", logs.text());
}

/// `migrate` asks Redis whether it is there (a `PING`) and creates nothing: against a port nothing listens on it
/// fails with `Unavailable` naming the store without the password, against a server it succeeds and writes no key.
#[tokio::test]
async fn migrate_checks_that_redis_answers_and_creates_nothing() {
    let nobody = support::redis_db::free_port();
    let store = RedisStore::connect(
        &format!("redis://:hunter2@127.0.0.1:{nobody}/0"),
        StoreOptions {
            connect_timeout: Duration::from_millis(500),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let error = store.migrate().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    let message = paynet_auth::error::Chain(&error).to_string();
    assert!(
        message.contains(&format!("redis://:****@127.0.0.1:{nobody}/0")),
        "{message}"
    );
    assert!(
        !message.contains("hunter2") && !format!("{error:?}").contains("hunter2"),
        "{message}"
    );

    let server = RedisServer::start();
    let store = RedisFixture { url: server.url() }.plain_store().await;
    store.migrate().await.unwrap();
    let mut raw = RedisFixture { url: server.url() }.raw().await;
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut raw.0).await.unwrap();
    assert_eq!(keys, 0, "migrate wrote keys");
}

/// A wrong password is `Denied` (loud, not an outage), and says nothing of the password.
#[tokio::test]
async fn a_wrong_password_is_denied() {
    let server = RedisServer::start_with(&["--requirepass", "right-one"]);
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", server.port);
    let store = RedisStore::connect(&url, StoreOptions::default())
        .await
        .unwrap();
    let error = store.load("k").await.unwrap_err();
    assert!(error.is_denied(), "{error:?}");
    let message = paynet_auth::error::Chain(&error).to_string();
    assert!(!message.contains("hunter2"), "{message}");
    // No password at all, where one is required: denied too.
    let store = RedisStore::connect(&server.url(), StoreOptions::default())
        .await
        .unwrap();
    assert!(store.load("k").await.unwrap_err().is_denied());
    let right = format!("redis://:right-one@127.0.0.1:{}/0", server.port);
    let store = RedisStore::connect(&right, StoreOptions::default())
        .await
        .unwrap();
    assert!(store.load("k").await.unwrap().is_none());
}

/// `rediss://` with a private CA (`sslrootcert`) and a client certificate (`sslcert`, `sslkey`) against a
/// redis-server that requires one; without the client certificate the handshake fails (`Unavailable`), and an
/// unusable file is refused at connect time, naming its parameter and the file.
#[tokio::test]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = paynet_sim::tls::Authority::new("paynet test CA");
    ca.write_cert(&dir.path().join("ca.pem")).unwrap();
    ca.issue_server(&["localhost"])
        .write(dir.path(), "server")
        .unwrap();
    let (cert, key) = ca
        .issue_client("paynet-auth")
        .write(dir.path(), "client")
        .unwrap();
    let server = RedisServer::start_tls(dir.path(), true);
    let ca_file = dir.path().join("ca.pem");
    let base = format!(
        "rediss://localhost:{}/0?sslrootcert={}",
        server.port,
        ca_file.display()
    );
    let url = format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display());

    let store = RedisStore::connect(&url, StoreOptions::default())
        .await
        .unwrap();
    let k = unique_key("tls");
    assert!(store.save(&k, &record(1, "over TLS")).await.unwrap());
    assert_eq!(
        store.load(&k).await.unwrap().unwrap().generation,
        Generation(1)
    );

    let without_client = RedisStore::connect(&base, StoreOptions::default())
        .await
        .unwrap();
    let error = without_client.load(&k).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");

    let missing = format!(
        "{base}&sslcert=/nonexistent/client.crt&sslkey={}",
        key.display()
    );
    match RedisStore::connect(&missing, StoreOptions::default()).await {
        Err(StoreError::Config(message)) => assert!(
            message.contains("`sslcert`") && message.contains("/nonexistent/client.crt"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A Redis restart loses the token and the lease. Managers on it served a token, Redis is killed and started again
/// empty, then the token expires: the fleet logs in once for that expiry (at most once more for the restart), no
/// call fails, and the new token's generation is above the one before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_costs_at_most_one_login_and_generations_go_on() {
    let mut server = RedisServer::start();
    let login = FakeLogin::with_latency(Duration::from_millis(20));
    let mut managers = Vec::new();
    for _ in 0..4 {
        let store = RedisStore::connect(
            &server.url(),
            StoreOptions {
                connect_timeout: Duration::from_secs(1),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        managers.push(Arc::new(
            manager_builder()
                .store(Arc::new(store))
                .lease_ttl(Duration::from_secs(10))
                .poll_interval(Duration::from_millis(20))
                .build()
                .unwrap(),
        ));
    }
    let all = |rejected: Option<Generation>| {
        let managers = managers.clone();
        let login = login.clone();
        async move {
            let calls: Vec<_> = managers
                .iter()
                .map(|manager| {
                    let (manager, sender) = (Arc::clone(manager), login.sender());
                    tokio::spawn(async move {
                        match rejected {
                            Some(generation) => manager.token_after(generation, sender).await,
                            None => manager.token(sender).await,
                        }
                    })
                })
                .collect();
            let mut generations = Vec::new();
            for call in calls {
                generations.push(call.await.unwrap().expect("no call fails").generation());
            }
            generations
        }
    };

    let first = all(None).await;
    assert_eq!(login.issued(), 1);
    let second = all(Some(first[0])).await;
    assert_eq!(login.issued(), 2, "one login per expiry");
    let before = *second.iter().max().unwrap();

    server.restart();
    let third = all(Some(before)).await;
    let logins = login.issued();
    assert!(
        (3..=4).contains(&logins),
        "one login for the expiry, at most one more for the restart: {logins}"
    );
    let after = *third.iter().min().unwrap();
    assert!(
        after > before,
        "generation {after:?} after the restart, {before:?} before"
    );
}
