//! The manager's refresh protocol: coalescing, generations, expiry, backoff, cancellation, several instances.

mod support;

use std::sync::Arc;
use std::time::Duration;

use paynet_auth::clock::{Clock, ManualClock, SystemClock};
use paynet_auth::record::Generation;
use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::token::ActiveToken;
use paynet_auth::{TokenError, TokenManager};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_share_one_login() {
    let login = FakeLogin::with_latency(Duration::from_millis(20));
    let manager = manager_builder().build().unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let manager = manager.clone();
            let sender = login.sender();
            tokio::spawn(async move { manager.token(sender).await.map(|t| t.generation()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Generation(1));
    }
    assert_eq!(login.attempts(), 1);
    assert_eq!(manager.logins(), 1);
    assert_logins_agree(&manager);
}

#[tokio::test(start_paused = true)]
async fn first_caller_dropped_mid_refresh_does_not_cancel_it() {
    let login = FakeLogin::with_latency(Duration::from_secs(1));
    let manager = manager_builder().build().unwrap();
    let first = spawn_token(&manager, &login);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = spawn_token(&manager, &login);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(second.await.unwrap().unwrap().generation(), Generation(1));
    assert_eq!(login.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_same_login_error() {
    let login = FakeLogin::with_latency(Duration::from_millis(100));
    login.set_mode(FakeMode::Refuse);
    let manager = manager_builder().build().unwrap();
    let tasks: Vec<_> = (0..50).map(|_| spawn_token(&manager, &login)).collect();
    for task in tasks {
        match task.await.unwrap() {
            Err(TokenError::Login(cause)) => {
                assert!(cause.to_string().contains("Invalid login or password"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(login.attempts(), 1);
    assert_eq!(manager.login_attempts(), 1);
    assert_logins_agree(&manager);
}

#[tokio::test(start_paused = true)]
async fn login_timeout_is_a_typed_error() {
    let login = FakeLogin::default();
    login.set_mode(FakeMode::Hang);
    let manager = manager_builder()
        .login_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = manager.token(login.sender()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(
        paynet_auth::error::Chain(&error).to_string(),
        "token refresh failed: token endpoint http://gateway.test/gw/v2/user did not answer within 3s"
    );
    assert_eq!(manager.login_attempts(), 1);
    assert_logins_agree(&manager);
}

/// 200 callers keep calling for 10 s against a dead endpoint. With the default backoff (0.5 s, doubling, at most
/// 30 s) the attempts start at 0, 0.5, 1.5, 3.5 and 7.5 s: five, however many callers there are; every caller
/// gets a typed error at once, without waiting for a login.
#[tokio::test(start_paused = true)]
async fn backoff_bounds_login_attempts_against_a_dead_endpoint() {
    use paynet_auth::token::defaults;
    let login = FakeLogin::default();
    login.set_mode(FakeMode::Unavailable);
    let manager = manager_builder()
        .backoff(defaults::BACKOFF_INITIAL, defaults::BACKOFF_MAX)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let (manager, sender) = (manager.clone(), login.sender());
                tokio::spawn(async move {
                    let asked = tokio::time::Instant::now();
                    let outcome = manager.token(sender).await;
                    (outcome, asked.elapsed())
                })
            })
            .collect();
        for caller in callers {
            let (outcome, waited) = caller.await.unwrap();
            assert!(
                matches!(
                    outcome,
                    Err(TokenError::Backoff { .. } | TokenError::Login(_))
                ),
                "{outcome:?}"
            );
            assert_eq!(waited, Duration::ZERO, "a caller waited for its error");
            calls += 1;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(calls, 200 * 100);
    assert_eq!(login.attempts(), 5);
    // The endpoint comes back: the next request after the pause succeeds.
    login.set_mode(FakeMode::Ok);
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(
        manager.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    assert_eq!((manager.logins(), manager.login_attempts()), (1, 6));
    assert_logins_agree(&manager);
}

/// A store whose every operation takes a while, so that a refresh has many points at which a caller can give up;
/// with `saved_while_reading`, a record another instance saves (and the store announces) while the first read's
/// answer is on its way.
#[derive(Clone)]
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
    saved_while_reading: Arc<std::sync::Mutex<Option<paynet_auth::record::TokenRecord>>>,
}

#[async_trait::async_trait]
impl TokenStore for SlowStore {
    fn describe(&self) -> String {
        "slow memory".into()
    }
    async fn load(
        &self,
        key: &str,
    ) -> Result<Option<paynet_auth::record::TokenRecord>, paynet_auth::StoreError> {
        tokio::time::sleep(self.delay).await;
        let found = self.inner.load(key).await;
        let saved = self.saved_while_reading.lock().unwrap().take();
        if let Some(record) = saved {
            assert!(self.inner.save(key, &record).await.unwrap());
        }
        found
    }
    async fn save(
        &self,
        key: &str,
        record: &paynet_auth::record::TokenRecord,
    ) -> Result<bool, paynet_auth::StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.save(key, record).await
    }
    async fn try_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, paynet_auth::StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), paynet_auth::StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), paynet_auth::StoreError> {
        self.inner.clear(key).await
    }
    fn subscribe(&self, key: &str) -> Option<paynet_auth::store::Wakeup> {
        self.inner.subscribe(key)
    }
    fn operation_counts(&self) -> Option<paynet_auth::store::OperationCounts> {
        self.inner.operation_counts()
    }
}

/// The first caller gives up at every moment of a refresh (reading the store, taking the lease, re-reading, logging
/// in, saving, releasing): the next caller still gets the token, nobody logs in twice, and the lease is free.
#[tokio::test(start_paused = true)]
async fn caller_cancelled_at_any_point_of_a_refresh_leaves_no_stuck_waiter_or_lease() {
    // load 10 + lease 10 + re-read 10 + login 20 + save 10 + release 10 = 70 ms of refresh.
    for cut_ms in (0..=75).step_by(5) {
        let store = SlowStore {
            inner: MemoryStore::new(),
            delay: Duration::from_millis(10),
            saved_while_reading: Default::default(),
        };
        let login = FakeLogin::with_latency(Duration::from_millis(20));
        let manager = manager_builder().store(store.clone()).build().unwrap();
        let first = spawn_token(&manager, &login);
        tokio::time::sleep(Duration::from_millis(cut_ms)).await;
        first.abort();
        let _ = first.await;

        let token = tokio::time::timeout(Duration::from_secs(1), manager.token(login.sender()))
            .await
            .unwrap_or_else(|_| panic!("cut at {cut_ms} ms: the next caller is stuck"))
            .unwrap();
        assert_eq!(token.generation(), Generation(1), "cut at {cut_ms} ms");
        assert_eq!(login.attempts(), 1, "cut at {cut_ms} ms: logged in twice");
        // Let the refresh task finish releasing, then the lease must be free for anyone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store
                .inner
                .try_lease(manager.store_key(), "another", Duration::from_secs(30))
                .await
                .unwrap(),
            "cut at {cut_ms} ms: the lease was left held"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn proactive_expiry_refreshes_before_the_gateway_rejects() {
    let clock = ManualClock::new(1_700_000_000_000);
    let login = FakeLogin::default();
    let manager = manager_builder()
        .clock(Arc::new(clock.clone()))
        .store(MemoryStore::with_clock(Arc::new(clock.clone())))
        .token_ttl(Some(Duration::from_secs(3600)))
        .expiry_skew(Duration::from_secs(60))
        .build()
        .unwrap();
    let first = manager.token(login.sender()).await.unwrap();
    assert_eq!(
        first.record().expires_at_ms,
        Some(1_700_000_000_000 + 3_600_000)
    );
    clock.advance(Duration::from_secs(3600 - 61));
    assert_eq!(
        manager.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    clock.advance(Duration::from_secs(2));
    assert!(
        manager.cached().is_none(),
        "within the skew margin the token is no longer used"
    );
    assert_eq!(
        manager.token(login.sender()).await.unwrap().generation(),
        Generation(2)
    );
    assert_eq!(login.attempts(), 2);
}

#[tokio::test]
async fn stored_token_is_used_after_a_restart_without_login() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let before = manager_builder().store(store.clone()).build().unwrap();
    let token = before.token(login.sender()).await.unwrap();
    drop(before);
    let after = manager_builder().store(store.clone()).build().unwrap();
    let adopted = after.token(login.sender()).await.unwrap();
    assert_eq!(adopted.generation(), token.generation());
    assert_eq!(login.attempts(), 1);
    assert_eq!(after.logins(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_store_log_in_once_per_expiry() {
    let store = MemoryStore::new();
    let login = FakeLogin::with_latency(Duration::from_millis(30));
    let managers: Vec<_> = (0..4)
        .map(|i| {
            manager_builder()
                .store(store.clone())
                .owner(format!("instance-{i}"))
                .poll_interval(Duration::from_millis(5))
                .build()
                .unwrap()
        })
        .collect();
    let mut newest = None;
    for event in 0..3 {
        let tasks: Vec<_> = managers
            .iter()
            .flat_map(|m| std::iter::repeat_n(m.clone(), 50))
            .map(|manager| {
                let sender = login.sender();
                tokio::spawn(async move {
                    match newest {
                        None => manager.token(sender).await,
                        Some(rejected) => manager.token_after(rejected, sender).await,
                    }
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(
                task.await.unwrap().unwrap().generation(),
                Generation(event + 1)
            );
        }
        newest = Some(Generation(event + 1));
    }
    assert_eq!(login.attempts(), 3);
    assert_eq!(
        login
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn dead_lease_holder_is_taken_over_after_the_lease_ttl() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(store.clone())
        .lease_ttl(Duration::from_secs(20))
        .poll_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    // Another instance took the lease and died without releasing it.
    assert!(
        store
            .try_lease(
                manager.store_key(),
                "dead-instance",
                Duration::from_secs(20)
            )
            .await
            .unwrap()
    );
    let started = tokio::time::Instant::now();
    let token = manager.token(login.sender()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(token.generation(), Generation(1));
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
        "{waited:?}"
    );
    assert_eq!(login.attempts(), 1);
}

/// The lease left behind by this very process (its release failed while the database was away) does not make it
/// wait for itself until the lease expires.
/// An instance waiting on another's lease adopts its token as soon as the store announces the save, not at its
/// next poll: here the poll is a minute away, the holder's login takes a second.
#[tokio::test(start_paused = true)]
async fn a_waiting_instance_adopts_when_the_store_announces_the_save() {
    let store = MemoryStore::new();
    let login = FakeLogin::with_latency(Duration::from_secs(1));
    let holder = manager_builder()
        .store(store.clone())
        .owner("holder")
        .build()
        .unwrap();
    let waiter = manager_builder()
        .store(store.clone())
        .owner("waiter")
        .poll_interval(Duration::from_secs(60))
        .wait_timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let holding = spawn_token(&holder, &login);
    while !store
        .lease(holder.store_key())
        .await
        .unwrap()
        .is_some_and(|lease| lease.is_held())
    {
        tokio::task::yield_now().await;
    }
    let adopted = waiter.token(login.sender()).await.unwrap();
    assert_eq!(adopted.generation(), Generation(1));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(holding.await.unwrap().unwrap().generation(), Generation(1));
    assert_eq!(login.attempts(), 1);
    assert_eq!(waiter.stats().adoptions, 1);
}

/// An instance that read nothing new but hears of a save before it asks for the lease reads the new token rather
/// than taking a free lease only to find it under it: two reads, no lease, no release, no login.
#[tokio::test(start_paused = true)]
async fn a_save_announced_after_the_read_is_read_rather_than_leased() {
    let store = Arc::new(SlowStore {
        inner: MemoryStore::new(),
        delay: Duration::ZERO,
        saved_while_reading: Arc::new(std::sync::Mutex::new(Some(
            paynet_auth::record::TokenRecord {
                token: "saved-by-another-instance".into(),
                generation: Generation(1),
                obtained_at_ms: SystemClock::new().now_ms(),
                expires_at_ms: None,
                meta: Default::default(),
                written_by: "another".into(),
            },
        ))),
    });
    let login = FakeLogin::default();
    let manager = manager_builder().store(Arc::clone(&store)).build().unwrap();
    let token = manager.token(login.sender()).await.unwrap();
    assert_eq!(token.generation(), Generation(1));
    assert_eq!(login.attempts(), 0);
    let counts = store.operation_counts().unwrap();
    assert_eq!(
        (counts.load, counts.try_lease, counts.release),
        (2, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn own_unreleased_lease_does_not_stall_the_next_refresh() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(store.clone())
        .owner("this-process")
        .build()
        .unwrap();
    assert!(
        store
            .try_lease(manager.store_key(), "this-process", Duration::from_secs(30))
            .await
            .unwrap()
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        manager.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(login.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_on_a_stuck_lease_gives_up_with_a_typed_error() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(store.clone())
        .lease_ttl(Duration::from_secs(20))
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        store
            .try_lease(manager.store_key(), "stuck", Duration::from_secs(20))
            .await
            .unwrap()
    );
    let error = manager.token(login.sender()).await.unwrap_err();
    assert!(matches!(error, TokenError::LeaseWait { .. }), "{error}");
    assert_eq!(login.attempts(), 0);
}

#[test]
fn lease_shorter_than_login_timeout_is_refused() {
    let error = manager_builder()
        .login_timeout(Duration::from_secs(10))
        .lease_ttl(Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("lease_ttl"), "{error}");
}

/// A call that needs a newer token than the refresh in flight will give (here a forced refresh during a first
/// login) waits that refresh out and asks again: the first login's token satisfies it, and no second login is made.
#[tokio::test(start_paused = true)]
async fn a_call_asking_past_the_refresh_in_flight_waits_it_out_and_asks_again() {
    let login = FakeLogin::with_latency(Duration::from_secs(1));
    let manager = manager_builder().build().unwrap();
    let first = spawn_token(&manager, &login);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let forced = manager.force_refresh(login.sender()).await.unwrap();
    assert_eq!(forced.generation(), Generation(1));
    assert_eq!(first.await.unwrap().unwrap().generation(), Generation(1));
    assert_eq!(login.attempts(), 1);
}

/// A caller asking `manager` for a token in a task of its own, with `login`'s sender.
fn spawn_token(
    manager: &TokenManager,
    login: &FakeLogin,
) -> tokio::task::JoinHandle<Result<Arc<ActiveToken>, TokenError>> {
    let (manager, sender) = (manager.clone(), login.sender());
    tokio::spawn(async move { manager.token(sender).await })
}
