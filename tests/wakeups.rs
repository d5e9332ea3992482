//! Wake-ups on PostgreSQL: a save announces itself with `NOTIFY` in its own statement, one `LISTEN` connection per
//! process and database hears it for every store and key, and a waiting instance adopts the new token at once
//! rather than at its next poll. A listening connection that drops is made again; meanwhile the waiters poll.
//!
//! Each test works in a database of its own: the listener is shared per URL in the process, so its own URL gives
//! each test a listener of its own, made by its first subscription, and `pg_stat_activity` tells that listener from
//! the other tests' by its database.
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "mysql"))]

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paynet_auth::StoreError;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{DieselStore, LeaseInfo, StoreOptions, TokenStore, Wakeup};
use paynet_auth::token::{LoginResponse, LoginSender};
use support::db::{Fixture, unique_key};
use support::logs::Captured;
use support::{FakeLogin, login_ok, manager_builder};
use tokio::sync::Semaphore;

/// What the listening connection calls itself in `pg_stat_activity`.
const LISTENER: &str = "paynet-auth listener";

/// How long an awaited event may take before the test fails: far more than it takes.
const WITHIN: Duration = Duration::from_secs(20);

/// Waits for `event`, failing the test after [`WITHIN`].
async fn within<T>(what: &str, event: impl Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, event)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WITHIN:?}"))
}

/// Polls `condition` until it holds, failing the test after [`WITHIN`].
async fn until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A database of this test's own on the test server, dropped by [`Database::drop`].
struct Database {
    server: Fixture,
    own: Fixture,
    name: String,
}

impl Database {
    async fn new() -> Self {
        let server = Fixture::postgres();
        let own = server.empty().await;
        let name = url::Url::parse(&own.url)
            .unwrap()
            .path()
            .trim_start_matches('/')
            .to_owned();
        Self { server, own, name }
    }

    /// A migrated store with a pool of its own, of at most `pool_size` connections.
    async fn store(&self, pool_size: u32) -> DieselStore {
        self.own
            .store(StoreOptions {
                pool_size,
                ..StoreOptions::default()
            })
            .await
    }

    /// The server processes of this database's listening connections.
    async fn listeners(&self) -> Vec<i32> {
        let (client, connection) = tokio_postgres::connect(&self.server.url, tokio_postgres::NoTls)
            .await
            .expect("connection to look at pg_stat_activity");
        tokio::spawn(connection);
        client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                &[&self.name, &LISTENER],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    async fn drop(self) {
        self.own.drop_database(&self.server).await;
    }
}

fn record(generation: u64) -> TokenRecord {
    TokenRecord {
        token: format!("token-{generation}").into(),
        generation: Generation(generation),
        obtained_at_ms: 0,
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "another-instance".into(),
    }
}

/// A store that notes when a save of its own was written, to measure adoptions from.
struct SaveClock {
    store: DieselStore,
    written_at: Mutex<Option<Instant>>,
}

#[async_trait::async_trait]
impl TokenStore for SaveClock {
    fn describe(&self) -> String {
        self.store.describe()
    }
    fn operation_timeout(&self) -> Option<Duration> {
        self.store.operation_timeout()
    }
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.store.load(key).await
    }
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        let written = self.store.save(key, record).await?;
        if written {
            *self.written_at.lock().unwrap() = Some(Instant::now());
        }
        Ok(written)
    }
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.store.release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.store.clear(key).await
    }
    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        self.store.lease(key).await
    }
    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        self.store.subscribe(key)
    }
}

/// A login that answers once the test adds a permit to `gate`.
fn gated_login(gate: Arc<Semaphore>) -> LoginSender {
    LoginSender::new(move |_request| {
        Box::pin(async move {
            let _permit = gate.acquire().await?;
            let body = http_body_util::BodyExt::collect(login_ok("gated-token").into_body())
                .await?
                .to_bytes();
            Ok(LoginResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body,
            })
        })
    })
}

#[tokio::test]
async fn a_save_by_another_store_wakes_its_keys_subscribers_and_a_refused_save_wakes_nobody() {
    let db = Database::new().await;
    let listening = db.store(2).await;
    let saving = db.store(2).await;
    let (key, witness_key) = (unique_key("woken"), unique_key("witness"));
    let mut woken = listening
        .subscribe(&key)
        .expect("PostgreSQL announces its saves");
    let mut witness = listening.subscribe(&witness_key).unwrap();
    // The listener wakes every subscriber once it listens (saves announced before were missed): from here on,
    // every announced save reaches it.
    within("the listener to listen", woken.saved()).await;
    within("the listener to listen", witness.saved()).await;

    assert!(saving.save(&key, &record(2)).await.unwrap());
    within("the wake-up of a save", woken.saved()).await;
    assert!(
        !witness.has_saved(),
        "a save woke another key's subscribers"
    );

    // Refused: an older generation. The witness's save comes after it, and notifications arrive in the order
    // their transactions committed: once the witness is woken, a notification of the refused save would be in.
    assert!(!saving.save(&key, &record(1)).await.unwrap());
    assert!(saving.save(&witness_key, &record(1)).await.unwrap());
    within("the wake-up of the witness's save", witness.saved()).await;
    assert!(
        !woken.has_saved(),
        "a refused save woke its key's subscribers"
    );

    drop((listening, saving));
    db.drop().await;
}

#[tokio::test]
async fn the_stores_of_a_process_on_one_database_share_one_listener_which_ends_with_the_last() {
    let db = Database::new().await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.store(1).await);
    }
    let (key, other_key) = (unique_key("shared"), unique_key("shared-other"));
    let mut wakeups = Vec::new();
    for store in &stores {
        wakeups.push(store.subscribe(&key).unwrap());
        let _also = store.subscribe(&other_key).unwrap();
    }
    // Every subscriber woken means every listener there is listens (it was woken by the save, or by its
    // listener's first `LISTEN`).
    let saving = db.store(1).await;
    assert!(saving.save(&key, &record(1)).await.unwrap());
    for wakeup in &mut wakeups {
        within("a wake-up of every subscriber", wakeup.saved()).await;
    }
    assert_eq!(
        db.listeners().await.len(),
        1,
        "listening connections of 4 stores on one database in one process"
    );
    assert!(
        saving.subscribe(&key).is_some(),
        "a fifth store shares the listener too"
    );
    assert_eq!(db.listeners().await.len(), 1);

    drop((stores, saving, wakeups));
    until("the listener to close with the last store", || async {
        db.listeners().await.is_empty()
    })
    .await;
    db.drop().await;
}

/// Three instances wait on a fourth's lease with a poll interval of 2 s: all three adopt its token within a small
/// part of that interval after its save, woken by the notification.
#[tokio::test]
async fn waiting_instances_adopt_the_winners_token_when_its_save_is_announced() {
    const POLL: Duration = Duration::from_secs(2);
    let db = Database::new().await;
    let key = unique_key("adopt");
    let winner_store = db.store(2).await;
    let clock = Arc::new(SaveClock {
        store: winner_store.clone(),
        written_at: Mutex::new(None),
    });
    let winner = manager_builder()
        .store(Arc::clone(&clock))
        .store_key(&key)
        .owner("winner")
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let winning = tokio::spawn({
        let (winner, login) = (winner.clone(), gated_login(Arc::clone(&gate)));
        async move { winner.token(login).await }
    });
    until("the winner to hold the lease", || async {
        winner_store
            .lease(&key)
            .await
            .unwrap()
            .is_some_and(|lease| lease.is_held())
    })
    .await;

    let waiters_login = FakeLogin::default();
    let mut waiting = Vec::new();
    let mut waiter_stores = Vec::new();
    for n in 0..3 {
        let store = db.store(2).await;
        let waiter = manager_builder()
            .store(store.clone())
            .store_key(&key)
            .owner(format!("waiter-{n}"))
            .poll_interval(POLL)
            .wait_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let login = waiters_login.sender();
        waiting.push(tokio::spawn({
            let waiter = waiter.clone();
            async move {
                let token = waiter.token(login).await;
                (token, Instant::now())
            }
        }));
        waiter_stores.push((store, waiter));
    }
    // Each waiter found the lease taken: it waits for a wake-up or its next poll, 2 s away.
    for (store, _) in &waiter_stores {
        until("every waiter to try the lease", || async {
            store.operation_counts().unwrap().try_lease >= 1
        })
        .await;
    }

    gate.add_permits(1);
    assert_eq!(winning.await.unwrap().unwrap().generation(), Generation(1));
    let saved_by = clock.written_at.lock().unwrap().expect("the winner saved");
    for (handle, (_, waiter)) in waiting.into_iter().zip(&waiter_stores) {
        let (token, adopted_at) = handle.await.unwrap();
        assert_eq!(token.unwrap().generation(), Generation(1));
        let after_save = adopted_at.saturating_duration_since(saved_by);
        println!(
            "wakeups: adopted {after_save:?} after the winner's save (poll interval {POLL:?})"
        );
        assert!(
            after_save < POLL / 4,
            "adopted {after_save:?} after the save: by polling, not by the wake-up"
        );
        assert_eq!(waiter.stats().adoptions, 1);
    }
    assert_eq!(waiters_login.attempts(), 0);
    assert_eq!(winner.logins(), 1);

    drop((winner, clock, winner_store, waiter_stores));
    db.drop().await;
}

/// The listening connection is killed and no new connection to the database is allowed for a while: the outage
/// is said once at WARN however many attempts fail, a refresh completes meanwhile by polling, and once connections
/// are allowed again the listener is back (said at INFO), wakes every waiter, and wakes them on saves again.
#[tokio::test]
async fn a_dropped_listener_is_said_once_polling_carries_on_and_it_comes_back() {
    let captured = Captured::default();
    let _guard = captured.install(tracing::Level::DEBUG);
    let db = Database::new().await;
    let key = unique_key("dropped");
    // Pools of one connection each, opened now: the refresh below runs while no new connection is allowed.
    let holder_store = db.store(1).await;
    let waiter_store = db.store(1).await;
    let watcher = db.store(1).await;
    for store in [&holder_store, &waiter_store, &watcher] {
        store.load(&key).await.unwrap();
    }
    let mut wakeup = watcher.subscribe(&key).unwrap();
    within("the listener to listen", wakeup.saved()).await;
    let listeners = db.listeners().await;
    assert_eq!(listeners.len(), 1);

    db.server
        .admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.name
        ))
        .await;
    db.server
        .admin(&format!("SELECT pg_terminate_backend({})", listeners[0]))
        .await;
    let outage_lines = |captured: &Captured| {
        captured
            .text()
            .lines()
            .filter(|line| line.contains("token store listener") && line.contains(" down"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    until("three failed attempts of the listener", || {
        let lines = outage_lines(&captured);
        async move { lines.len() >= 3 }
    })
    .await;
    // Its loss woke every waiter once, so that each polls at its usual interval again.
    within("the wake-up that says the listener is down", wakeup.saved()).await;
    assert!(!wakeup.is_live());

    // Meanwhile a refresh completes by polling: the waiter adopts the holder's token.
    let login = FakeLogin::with_latency(Duration::from_millis(200));
    let holder = manager_builder()
        .store(holder_store.clone())
        .store_key(&key)
        .owner("holder")
        .build()
        .unwrap();
    let waiter = manager_builder()
        .store(waiter_store.clone())
        .store_key(&key)
        .owner("waiter")
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let holding = tokio::spawn({
        let (holder, login) = (holder.clone(), login.sender());
        async move { holder.token(login).await }
    });
    until("the holder to hold the lease", || async {
        holder_store
            .lease(&key)
            .await
            .unwrap()
            .is_some_and(|lease| lease.is_held())
    })
    .await;
    let adopted = within("the waiter's refresh", waiter.token(login.sender()))
        .await
        .unwrap();
    assert_eq!(adopted.generation(), Generation(1));
    assert_eq!(holding.await.unwrap().unwrap().generation(), Generation(1));
    assert_eq!(login.attempts(), 1);
    assert_eq!(waiter.stats().adoptions, 1);
    assert!(!wakeup.has_saved(), "a wake-up while the listener was down");

    db.server
        .admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await;
    // Back: the saves missed meanwhile are announced to every waiter as one wake-up.
    within("the listener's return", wakeup.saved()).await;
    assert!(wakeup.is_live());
    let text = captured.text();
    let warnings: Vec<_> = outage_lines(&captured)
        .into_iter()
        .filter(|line| line.contains(" WARN "))
        .collect();
    assert_eq!(warnings.len(), 1, "one WARN per outage: {warnings:#?}");
    assert!(
        warnings[0].contains(&format!("store={}", watcher.describe())),
        "the WARN names the store: {}",
        warnings[0]
    );
    assert_eq!(
        text.lines()
            .filter(|line| line.contains(" INFO ") && line.contains("token store listener is back"))
            .count(),
        1,
        "the return said at INFO"
    );
    assert_eq!(db.listeners().await.len(), 1);

    // And wakes on saves again.
    assert!(holder_store.save(&key, &record(2)).await.unwrap());
    within("a wake-up after the return", wakeup.saved()).await;

    drop((holder, waiter, holder_store, waiter_store, watcher));
    db.drop().await;
}
