//! Rotating the store's encryption key across a fleet, and rows that must never be trusted: several managers, each
//! with its own store (its own pool or connection), on one real store (a SQLite file, PostgreSQL:
//! `PAYNET_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`, and Redis:
//! `PAYNET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`).
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use paynet_auth::TokenManager;
use paynet_auth::clock::{Clock, ManualClock};
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{StoreOptions, TokenStore};
use secrecy::{ExposeSecret, SecretString};
use support::db::{Fixture, encryption_key, unique_key};
use support::logs::Captured;
use support::redis_db::RedisFixture;
use support::*;

const TTL: Duration = Duration::from_secs(60);

/// The keys of one instance: the current one, then the previous ones.
fn keys(current: u8, previous: &[u8]) -> StoreOptions {
    StoreOptions {
        encryption_key: Some(encryption_key(current)),
        previous_encryption_keys: previous.iter().map(|&b| encryption_key(b)).collect(),
        ..StoreOptions::default()
    }
}

/// Where the fleet keeps its token: a SQL database or Redis, each opened as its tests open it.
trait Backend {
    async fn store(&self, options: StoreOptions) -> Arc<dyn TokenStore>;

    async fn plain_store(&self) -> Arc<dyn TokenStore> {
        self.store(StoreOptions::default()).await
    }
}

impl Backend for Fixture {
    async fn store(&self, options: StoreOptions) -> Arc<dyn TokenStore> {
        Arc::new(Fixture::store(self, options).await)
    }
}

impl Backend for RedisFixture {
    async fn store(&self, options: StoreOptions) -> Arc<dyn TokenStore> {
        Arc::new(RedisFixture::store(self, options).await)
    }
}

struct Fleet<B> {
    db: B,
    key: String,
    clock: ManualClock,
    login: FakeLogin,
}

impl<B: Backend> Fleet<B> {
    fn new(db: B, test: &str) -> Self {
        Self {
            db,
            key: unique_key(test),
            clock: ManualClock::new(1_800_000_000_000),
            login: FakeLogin::default(),
        }
    }

    /// An instance (re)started with `options`: a new process, so an empty cache and a pool of its own.
    async fn start(&self, name: &str, options: StoreOptions) -> TokenManager {
        manager_builder()
            .shared_store(self.db.store(options).await)
            .clock(Arc::new(self.clock.clone()))
            .token_ttl(Some(TTL))
            .expiry_skew(Duration::ZERO)
            .store_key(self.key.clone())
            .owner(format!("{name}:{}", rand::random::<u32>()))
            .build()
            .unwrap()
    }

    /// Every instance asks for a token at once; returns how many logins that took.
    async fn all_need_a_token(&self, fleet: &[&TokenManager]) -> usize {
        let before = self.login.attempts();
        let tokens = join_all(fleet.iter().map(|m| m.token(self.login.sender()))).await;
        for token in tokens {
            token.unwrap();
        }
        self.login.attempts() - before
    }

    fn expire(&self) {
        self.clock.advance(TTL + Duration::from_secs(1));
    }
}

fn refs(members: &[TokenManager]) -> Vec<&TokenManager> {
    members.iter().collect()
}

/// The rotation done in one step per instance: some instances still run the old key only while others run the new
/// key with the old one as previous. Restarts cost no login; an expiry in the middle of the rotation costs at most
/// one login beyond its own, even in the worst order (an instance on the new key logs in first, so the old-key
/// instances cannot read its token).
async fn rolling_rotation_costs_at_most_one_login(db: impl Backend) {
    let fleet = Fleet::new(db, "rolling_rotation");
    let (old, new) = (|| keys(1, &[]), || keys(2, &[1]));
    let a = fleet.start("a", old()).await;
    let b = fleet.start("b", old()).await;
    let c = fleet.start("c", old()).await;
    let d = fleet.start("d", old()).await;
    assert_eq!(fleet.all_need_a_token(&[&a, &b, &c, &d]).await, 1);

    // c and d restart on the new key: they read the old key's row through the previous key.
    let c = fleet.start("c", new()).await;
    let d = fleet.start("d", new()).await;
    assert_eq!(fleet.all_need_a_token(&[&c, &d]).await, 0);

    // The token expires mid-rotation. c refreshes first and writes under the new key; a and b cannot read that
    // row, so one of them logs in once more, under the old key; d reads that one.
    fleet.expire();
    assert_eq!(fleet.all_need_a_token(&[&c]).await, 1);
    assert_eq!(fleet.all_need_a_token(&[&a, &b]).await, 1);
    assert_eq!(fleet.all_need_a_token(&[&d]).await, 0);
    assert_eq!(
        a.cached().unwrap().generation(),
        b.cached().unwrap().generation()
    );
    assert_eq!(
        d.cached().unwrap().generation(),
        a.cached().unwrap().generation()
    );

    // a and b restart on the new key: no login.
    let a = fleet.start("a", new()).await;
    let b = fleet.start("b", new()).await;
    assert_eq!(fleet.all_need_a_token(&[&a, &b]).await, 0);

    // Everyone on the new key: one login per expiry again.
    fleet.expire();
    assert_eq!(fleet.all_need_a_token(&[&a, &b, &c, &d]).await, 1);

    // The old key is dropped everywhere: the row is under the new key, no login.
    let fleet_members = [
        fleet.start("a", keys(2, &[])).await,
        fleet.start("b", keys(2, &[])).await,
        fleet.start("c", keys(2, &[])).await,
        fleet.start("d", keys(2, &[])).await,
    ];
    assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 0);
    // 1 first login + 2 for the expiry mid-rotation + 1 for the next expiry: the rotation cost one login.
    assert_eq!(fleet.login.attempts(), 4);
}

/// The README's procedure: first every instance learns the new key as a previous one, then every instance switches
/// to it with the old one as previous, then the old key is dropped. Every instance can read every row at every
/// step, so even an expiry in the middle costs exactly one login.
async fn three_step_rotation_costs_no_login(db: impl Backend) {
    let fleet = Fleet::new(db, "three_step_rotation");
    let mut fleet_members = Vec::new();
    for name in ["a", "b", "c", "d"] {
        fleet_members.push(fleet.start(name, keys(1, &[])).await);
    }
    assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 1);

    // Step 1, half done: a and b already know the new key as previous.
    fleet_members[0] = fleet.start("a", keys(1, &[2])).await;
    fleet_members[1] = fleet.start("b", keys(1, &[2])).await;
    // Step 1 done, step 2 half done: c and d write under the new key, a and b still under the old one.
    fleet_members[2] = fleet.start("c", keys(2, &[1])).await;
    fleet_members[3] = fleet.start("d", keys(2, &[1])).await;
    assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 0);
    for first in [2, 0] {
        // Whoever refreshes first, under whichever key, the others read its token.
        fleet.expire();
        assert_eq!(fleet.all_need_a_token(&[&fleet_members[first]]).await, 1);
        assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 0);
    }
    // Step 2 done, then step 3.
    fleet_members[0] = fleet.start("a", keys(2, &[1])).await;
    fleet_members[1] = fleet.start("b", keys(2, &[1])).await;
    assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 0);
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        fleet_members[i] = fleet.start(name, keys(2, &[])).await;
    }
    assert_eq!(fleet.all_need_a_token(&refs(&fleet_members)).await, 0);
    assert_eq!(fleet.login.attempts(), 3);
}

/// Someone with write access to the table plants a plaintext token. With a key configured it is never sent: it
/// reads as absent (a WARN says why, without the token), a fresh login replaces it, numbered after it, and the
/// replacement is encrypted.
async fn planted_plaintext_row_is_not_used_and_is_replaced(db: impl Backend) {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let fleet = Fleet::new(db, "planted_plaintext");
    let planted = TokenRecord {
        token: SecretString::from("PLANTED-token-value"),
        generation: Generation(3),
        obtained_at_ms: fleet.clock.now_ms(),
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "attacker".into(),
    };
    let plain = fleet.db.plain_store().await;
    assert!(plain.save(&fleet.key, &planted).await.unwrap());

    let manager = fleet.start("a", keys(1, &[])).await;
    let token = manager.token(fleet.login.sender()).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "token-1");
    assert_eq!(token.generation(), Generation(4));
    assert_eq!(fleet.login.attempts(), 1);

    // The row now holds the new token, encrypted: a store without the key cannot read it, another instance with
    // the key adopts it without a login.
    assert!(plain.load(&fleet.key).await.unwrap().is_none());
    let other = fleet.start("b", keys(1, &[])).await;
    let adopted = other.token(fleet.login.sender()).await.unwrap();
    assert_eq!(adopted.secret().expose_secret(), "token-1");
    assert_eq!(fleet.login.attempts(), 1);

    let logs = logs.text();
    assert!(
        logs.lines().any(|line| line.contains(" WARN ")
            && line.contains("is not used")
            && line.contains("in plaintext (no nonce)")),
        "{logs}"
    );
    assert!(!logs.contains("PLANTED"), "{logs}");
}

macro_rules! on_backends {
    ($($case:ident),*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Fixture::sqlite()).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Fixture::postgres()).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(RedisFixture::shared()).await;
                }
            )*
        }
    };
}

on_backends!(
    rolling_rotation_costs_at_most_one_login,
    three_step_rotation_costs_no_login,
    planted_plaintext_row_is_not_used_and_is_replaced
);
