//! The two checks of the refresh protocol that keep a fleet at one login per expiry: a refresh adopts only a
//! stored token newer than the one rejected, and the lease holder reads the store again before it logs in.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use paynet_auth::error::StoreError;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{MemoryStore, TokenStore};
use secrecy::ExposeSecret;
use support::*;

/// Two instances share a store. B adopted A's token; the gateway rejects it on B. The stored row is that same
/// generation, fresh by its expiry but rejected: adopting it would replay with the token just refused, so B
/// logs in. A, rejected on the same generation afterwards, adopts B's newer token without a login.
#[tokio::test]
async fn rejected_generation_is_not_adopted_again_from_the_store() {
    let store = MemoryStore::new();
    let login = FakeLogin::default();
    let a = manager_builder()
        .store(store.clone())
        .owner("a")
        .build()
        .unwrap();
    let b = manager_builder()
        .store(store.clone())
        .owner("b")
        .build()
        .unwrap();
    assert_eq!(
        a.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    assert_eq!(
        b.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    assert_eq!(login.attempts(), 1, "B adopted A's token");

    let fresh = b.token_after(Generation(1), login.sender()).await.unwrap();
    assert_eq!(fresh.generation(), Generation(2));
    assert_eq!(login.attempts(), 2);

    let adopted = a.token_after(Generation(1), login.sender()).await.unwrap();
    assert_eq!(adopted.generation(), Generation(2));
    assert_eq!(
        adopted.secret().expose_secret(),
        fresh.secret().expose_secret()
    );
    assert_eq!(login.attempts(), 2);
}

/// A store in which another instance saves `newer` right after this instance's first read, once armed: the
/// moment between a refresh's first read and its taking the lease, when the other instance finished its refresh
/// and released the lease.
struct SavedMeanwhile {
    inner: MemoryStore,
    armed: AtomicBool,
    newer: TokenRecord,
}

#[async_trait]
impl TokenStore for SavedMeanwhile {
    fn describe(&self) -> String {
        "saved-meanwhile".to_owned()
    }
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        let loaded = self.inner.load(key).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            assert!(self.inner.save(key, &self.newer).await.unwrap());
        }
        loaded
    }
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        self.inner.save(key, record).await
    }
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.inner.clear(key).await
    }
}

/// The other instance's token lands after this instance's first read but before it takes the lease. Holding
/// the lease, the instance reads again and adopts that token: no second login (on a single-session gateway it
/// would log the other instance out).
#[tokio::test]
async fn lease_holder_reads_the_store_again_and_adopts_a_token_saved_meanwhile() {
    let store = Arc::new(SavedMeanwhile {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(false),
        newer: TokenRecord {
            token: "token-of-the-other-instance".into(),
            generation: Generation(2),
            obtained_at_ms: 0,
            expires_at_ms: None,
            meta: LoginMeta::default(),
            written_by: "other-instance".to_owned(),
        },
    });
    let login = FakeLogin::default();
    let manager = manager_builder()
        .shared_store(store.clone())
        .owner("this-instance")
        .build()
        .unwrap();
    assert_eq!(
        manager.token(login.sender()).await.unwrap().generation(),
        Generation(1)
    );
    assert_eq!(login.attempts(), 1);

    store.armed.store(true, Ordering::SeqCst);
    let token = manager
        .token_after(Generation(1), login.sender())
        .await
        .unwrap();
    assert!(
        !store.armed.load(Ordering::SeqCst),
        "the first read happened"
    );
    assert_eq!(token.generation(), Generation(2));
    assert_eq!(
        token.secret().expose_secret(),
        "token-of-the-other-instance"
    );
    assert_eq!(
        login.attempts(),
        1,
        "no login: the re-read found the newer token"
    );
}
