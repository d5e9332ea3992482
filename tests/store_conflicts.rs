//! What the manager does with each kind of store error: a `Conflict` (serialization failure, deadlock, busy
//! SQLite) is retried or means "lease not acquired", never a login without the lease; a failed release is
//! retried; a store that does not answer leads to logins without the lease, spaced out by the backoff.
//!
//! Every case runs on a scripted store (a `MemoryStore` that fails as it is told), on no backend: no real database
//! can be made to collide on cue, and what the manager does with an error is the same whichever store sent it.
//! Redis never answers `Conflict` (its scripts run one at a time); what it does when it goes away is proven against
//! real servers in `tests/outage.rs` and `tests/store_redis.rs`.

mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paynet_auth::StoreError;
use paynet_auth::record::{Generation, TokenRecord};
use paynet_auth::store::{LeaseInfo, MemoryStore, TokenStore};
use support::*;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Conflict,
    Unavailable,
}

impl Fault {
    fn error(self, operation: &'static str) -> StoreError {
        match self {
            Fault::Conflict => StoreError::Conflict {
                store: "faulty".into(),
                operation,
                source: "could not serialize access due to concurrent update".into(),
            },
            Fault::Unavailable => StoreError::Unavailable {
                store: "faulty".into(),
                source: "connection refused".into(),
            },
        }
    }
}

/// A [`MemoryStore`] that fails the next calls of an operation as scripted, or every call while a fault is set
/// for good, and counts the calls of each operation.
#[derive(Clone, Default)]
struct FaultyStore {
    inner: MemoryStore,
    script: Arc<Mutex<HashMap<&'static str, VecDeque<Fault>>>>,
    always: Arc<Mutex<HashMap<&'static str, Fault>>>,
    calls: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl FaultyStore {
    fn fail_next(&self, operation: &'static str, faults: &[Fault]) {
        self.script
            .lock()
            .unwrap()
            .entry(operation)
            .or_default()
            .extend(faults);
    }

    fn fail_always(&self, operation: &'static str, fault: Option<Fault>) {
        let mut always = self.always.lock().unwrap();
        match fault {
            Some(fault) => always.insert(operation, fault),
            None => always.remove(operation),
        };
    }

    fn calls(&self, operation: &'static str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    fn check(&self, operation: &'static str) -> Result<(), StoreError> {
        *self.calls.lock().unwrap().entry(operation).or_default() += 1;
        if let Some(fault) = self.always.lock().unwrap().get(operation) {
            return Err(fault.error(operation));
        }
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get_mut(operation)
            .and_then(VecDeque::pop_front);
        match scripted {
            Some(fault) => Err(fault.error(operation)),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl TokenStore for FaultyStore {
    fn describe(&self) -> String {
        "faulty memory".into()
    }
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.check("load")?;
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        self.check("save")?;
        self.inner.save(key, record).await
    }
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.check("try_lease")?;
        self.inner.try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.check("release")?;
        self.inner.release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.inner.clear(key).await
    }
    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        self.inner.lease(key).await
    }
}

/// Instance B holds the lease and logs in slowly; every lease attempt of instance A collides with another
/// transaction. A waits for B's token and adopts it: one login, not two.
#[tokio::test(start_paused = true)]
async fn lease_conflict_is_not_acquired_and_never_a_login_without_the_lease() {
    let shared = MemoryStore::new();
    let faulty = FaultyStore {
        inner: shared.clone(),
        ..FaultyStore::default()
    };
    faulty.fail_always("try_lease", Some(Fault::Conflict));
    let login = FakeLogin::with_latency(Duration::from_secs(1));
    let b = manager_builder()
        .store(shared.clone())
        .owner("b")
        .build()
        .unwrap();
    let a = manager_builder()
        .store(faulty.clone())
        .owner("a")
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();

    let b_refresh = tokio::spawn({
        let (b, sender) = (b.clone(), login.sender());
        async move { b.token(sender).await }
    });
    // B holds the lease and is logging in.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        shared
            .lease(a.store_key())
            .await
            .unwrap()
            .unwrap()
            .is_held()
    );
    let token = a.token(login.sender()).await.unwrap();

    assert_eq!(token.generation(), Generation(1));
    assert_eq!(token.record().written_by, "b");
    assert_eq!(
        b_refresh.await.unwrap().unwrap().generation(),
        Generation(1)
    );
    assert_eq!(login.attempts(), 1, "A logged in without the lease");
    assert_eq!(a.logins(), 0);
    assert!(
        faulty.calls("try_lease") >= 2,
        "A kept asking for the lease"
    );
}

/// Reads that collide are retried after a short pause and then adopt the stored token: no lease, no login.
#[tokio::test(start_paused = true)]
async fn load_conflict_is_retried_and_adopts_without_a_login() {
    let faulty = FaultyStore::default();
    let login = FakeLogin::default();
    let writer = manager_builder()
        .store(faulty.inner.clone())
        .owner("writer")
        .build()
        .unwrap();
    writer.token(login.sender()).await.unwrap();
    let reader = manager_builder()
        .store(faulty.clone())
        .owner("reader")
        .build()
        .unwrap();
    faulty.fail_next("load", &[Fault::Conflict, Fault::Conflict]);

    let started = Instant::now();
    let token = reader.token(login.sender()).await.unwrap();

    assert_eq!(token.generation(), Generation(1));
    assert_eq!(login.attempts(), 1, "only the writer logged in");
    assert_eq!(faulty.calls("load"), 3);
    assert_eq!(
        faulty.calls("try_lease"),
        0,
        "adopted on the first successful read"
    );
    // Without jitter: 10 ms, then 20 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(30));
}

/// Reads keep colliding past the retries: that is still "nothing new yet", and the instance takes the lease and
/// reads again under it, where it finds the stored token. No login.
#[tokio::test(start_paused = true)]
async fn load_conflicts_past_the_retries_never_log_in_without_the_lease() {
    let faulty = FaultyStore::default();
    let login = FakeLogin::default();
    let writer = manager_builder()
        .store(faulty.inner.clone())
        .owner("writer")
        .build()
        .unwrap();
    writer.token(login.sender()).await.unwrap();
    let reader = manager_builder()
        .store(faulty.clone())
        .owner("reader")
        .build()
        .unwrap();
    // Five for the first read (all its attempts), one for the read under the lease.
    faulty.fail_next("load", &[Fault::Conflict; 6]);

    let token = reader.token(login.sender()).await.unwrap();

    assert_eq!(token.record().written_by, "writer");
    assert_eq!(login.attempts(), 1, "only the writer logged in");
    assert_eq!(faulty.calls("load"), 7);
    assert_eq!(faulty.calls("try_lease"), 1);
}

/// A save that collides is retried at once: the token is in the store when the refresh ends, not seconds later.
#[tokio::test(start_paused = true)]
async fn save_conflict_is_retried_before_the_refresh_ends() {
    let faulty = FaultyStore::default();
    faulty.fail_next("save", &[Fault::Conflict, Fault::Conflict]);
    let login = FakeLogin::default();
    let manager = manager_builder().store(faulty.clone()).build().unwrap();

    manager.token(login.sender()).await.unwrap();

    assert_eq!(faulty.calls("save"), 3);
    let stored = faulty.inner.load(manager.store_key()).await.unwrap();
    assert_eq!(stored.map(|r| r.generation), Some(Generation(1)));
}

/// A release that collides is retried: the lease is free when the refresh ends, so another instance's next
/// refresh does not wait a whole lease TTL.
#[tokio::test(start_paused = true)]
async fn release_conflict_is_retried_and_the_lease_is_free() {
    let faulty = FaultyStore::default();
    faulty.fail_next("release", &[Fault::Conflict]);
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(faulty.clone())
        .owner("holder")
        .build()
        .unwrap();

    manager.token(login.sender()).await.unwrap();

    assert_eq!(faulty.calls("release"), 2);
    let lease = faulty.inner.lease(manager.store_key()).await.unwrap();
    assert!(!lease.unwrap().is_held(), "the lease is still held");
}

/// A release that fails because the store went away is retried in the background once it is back, well within
/// the lease TTL.
#[tokio::test(start_paused = true)]
async fn release_while_the_store_is_away_is_retried_when_it_is_back() {
    let faulty = FaultyStore::default();
    faulty.fail_next("release", &[Fault::Unavailable; 3]);
    let login = FakeLogin::default();
    let manager = manager_builder()
        .store(faulty.clone())
        .owner("holder")
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    manager.token(login.sender()).await.unwrap();
    let key = manager.store_key().to_owned();
    assert!(faulty.inner.lease(&key).await.unwrap().unwrap().is_held());

    // Background attempts after 100 ms and 200 ms fail; the one after 400 more succeeds.
    tokio::time::sleep(Duration::from_millis(750)).await;

    assert!(!faulty.inner.lease(&key).await.unwrap().unwrap().is_held());
    assert_eq!(faulty.calls("release"), 4);
}

/// Another instance saved its token but has not released the lease yet (or cannot): a waiter adopts the token
/// when the store announces the save instead of waiting for the release.
#[tokio::test(start_paused = true)]
async fn waiter_adopts_a_fresh_token_while_the_lease_is_still_held() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let waiter = manager_builder()
        .store(store.clone())
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let key = waiter.store_key().to_owned();
    assert!(
        store
            .try_lease(&key, "slow-holder", Duration::from_secs(30))
            .await
            .unwrap()
    );
    let holder = manager_builder()
        .store(MemoryStore::new())
        .owner("slow-holder")
        .build()
        .unwrap();
    let record = holder.token(login.sender()).await.unwrap().record().clone();

    let started = Instant::now();
    let wait = tokio::spawn({
        let (waiter, sender) = (waiter.clone(), login.sender());
        async move { waiter.token(sender).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(store.save(&key, &record).await.unwrap());
    let token = wait.await.unwrap().unwrap();

    assert_eq!(token.record().written_by, "slow-holder");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(150),
        "at the save's announcement"
    );
    assert!(store.lease(&key).await.unwrap().unwrap().is_held());
    assert_eq!(login.attempts(), 1);
}

/// The store is unreachable and every new token is rejected at once (a single-session gateway where other
/// instances log in too): the instance logs in without the lease at most once per pause, the pause doubling
/// from `backoff_initial` (1 s here) to `backoff_max` (8 s): at 0, 1, 3 and 7 s in a 10 s outage, the bound
/// 1 + log2(T / initial + 1) of the README, then at 15 s. When the store is back, the lease decides again.
#[tokio::test(start_paused = true)]
async fn logins_without_the_store_are_spaced_out_by_the_backoff() {
    let faulty = FaultyStore::default();
    for operation in ["load", "try_lease", "save", "release"] {
        faulty.fail_always(operation, Some(Fault::Unavailable));
    }
    let login = FakeLogin::default();
    let manager = manager_builder().store(faulty.clone()).build().unwrap();
    let started = Instant::now();
    let mut logged_in_at = Vec::new();
    let mut newest = None;
    // Callers every 100 ms, each finding the newest token rejected.
    while started.elapsed() < Duration::from_secs(10) {
        let token = match newest {
            None => manager.token(login.sender()).await.unwrap(),
            Some(rejected) => manager.token_after(rejected, login.sender()).await.unwrap(),
        };
        if newest != Some(token.generation()) {
            logged_in_at.push(started.elapsed().as_millis());
            newest = Some(token.generation());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The call made at 7.1 s waited for the pause to end: the fifth login is at 15 s, past the outage.
    assert_eq!(logged_in_at, [0, 1000, 3000, 7000, 15000]);
    assert_eq!(login.attempts(), 5);

    // The store is back: the next refresh takes the lease and saves.
    for operation in ["load", "try_lease", "save", "release"] {
        faulty.fail_always(operation, None);
    }
    let leases = faulty.calls("try_lease");
    let token = manager
        .token_after(newest.unwrap(), login.sender())
        .await
        .unwrap();
    assert_eq!(faulty.calls("try_lease"), leases + 1);
    let stored = faulty.inner.load(manager.store_key()).await.unwrap();
    assert_eq!(stored.map(|r| r.generation), Some(token.generation()));
}
