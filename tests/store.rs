//! The token stores against real servers: the diesel store on PostgreSQL (`PAYNET_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), MariaDB/MySQL (`PAYNET_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`) and SQLite in temporary directories, and the Redis store
//! (`PAYNET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`).
//!
//! These tests fail, rather than skip, when a server is unreachable. Every test uses credential keys of its own, so
//! they share the server databases safely and in parallel.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use paynet_auth::StoreError;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{self, Backend, DieselStore, StoreOptions, TokenStore};
use secrecy::ExposeSecret;
use support::db::{Fixture, Raw, encryption_key, mysql_url, on_raw, postgres_url, unique_key};
use support::logs::Captured;
use support::proxy::{Proxy, host_port};
use support::redis_db::RedisFixture;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

fn record(generation: u64, token: &str) -> TokenRecord {
    TokenRecord {
        token: token.into(),
        generation: Generation(generation),
        obtained_at_ms: 1_700_000_000_000 + i64::try_from(generation).unwrap(),
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "test-host:1:abcd".into(),
    }
}

fn assert_same(loaded: &TokenRecord, expected: &TokenRecord) {
    assert_eq!(loaded.token.expose_secret(), expected.token.expose_secret());
    assert_eq!(loaded.generation, expected.generation);
    assert_eq!(loaded.obtained_at_ms, expected.obtained_at_ms);
    assert_eq!(loaded.expires_at_ms, expected.expires_at_ms);
    assert_eq!(loaded.meta, expected.meta);
    assert_eq!(loaded.written_by, expected.written_by);
}

// ---------------------------------------------------------------------------------------------------------------
// The cases, written once and run on every backend.

/// Runs each case on every store: a module per backend (`postgres`, `mysql`, `sqlite`, `redis`) holding one test
/// per case, named after it, whose body runs with its parameter bound to that backend's fixture (a [`Fixture`], or
/// a [`RedisFixture`] with the same methods). A case is written once, with the test attribute it runs under.
macro_rules! on_every_backend {
    ($($(#[$attr:meta])* async fn $case:ident($db:ident: Fixture) $body:block)*) => {
        on_every_sql_backend!($($(#[$attr])* async fn $case($db: Fixture) $body)*);
        on_every_sql_backend!(@backend redis, RedisFixture::shared(), $($(#[$attr])* async fn $case($db) $body)*);
    };
}

/// The same over the SQL backends only, for what only a database has (migrations, statements, the diesel store's
/// own methods).
macro_rules! on_every_sql_backend {
    ($($(#[$attr:meta])* async fn $case:ident($db:ident: Fixture) $body:block)*) => {
        on_every_sql_backend!(@backend postgres, Fixture::postgres(), $($(#[$attr])* async fn $case($db) $body)*);
        on_every_sql_backend!(@backend mysql, Fixture::mysql(), $($(#[$attr])* async fn $case($db) $body)*);
        on_every_sql_backend!(@backend sqlite, Fixture::sqlite(), $($(#[$attr])* async fn $case($db) $body)*);
    };
    (@backend $backend:ident, $fixture:expr, $($(#[$attr:meta])* async fn $case:ident($db:ident) $body:block)*) => {
        mod $backend {
            use super::*;
            $(
                $(#[$attr])*
                async fn $case() {
                    let $db = $fixture;
                    $body
                }
            )*
        }
    };
}

on_every_backend! {
    /// A token with a NUL byte (PostgreSQL's `TEXT` cannot hold one) is saved and read back as it was, in
    /// plaintext and encrypted, and a later token without one replaces it as usual.
    #[tokio::test]
    async fn token_with_nul_round_trips(db: Fixture) {
        let nul = "before\0after";
        for store in [db.plain_store().await, db.encrypted_store(7).await] {
            let key = unique_key("nul_byte");
            assert!(store.save(&key, &record(1, nul)).await.unwrap());
            let loaded = store
                .load(&key)
                .await
                .unwrap()
                .expect("a row with a NUL byte");
            assert_eq!(loaded.token.expose_secret(), nul);
            assert!(store.save(&key, &record(2, "plain")).await.unwrap());
            let loaded = store.load(&key).await.unwrap().unwrap();
            assert_eq!(loaded.token.expose_secret(), "plain");
        }
    }

    #[tokio::test]
    async fn round_trip(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("round_trip");
        assert!(store.load(&key).await.unwrap().is_none());

        let mut first = record(1, "RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG");
        first.meta = LoginMeta {
            agent_id: Some("agent-7".into()),
            terminal_id: Some("T-42".into()),
            user_id: Some("1001".into()),
            user_login: Some("kassa@example.uz".into()),
        };
        assert!(store.save(&key, &first).await.unwrap());
        assert_same(&store.load(&key).await.unwrap().unwrap(), &first);

        let mut second = record(2, "second token, with \"quotes\" and ünïcode");
        second.expires_at_ms = Some(1_800_000_000_123);
        assert!(store.save(&key, &second).await.unwrap());
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_same(&loaded, &second);
        assert_eq!(
            loaded.meta,
            LoginMeta::default(),
            "metadata is replaced, not merged"
        );

        // Another store on the same database (another instance) sees it.
        let other = db.plain_store().await;
        assert_same(&other.load(&key).await.unwrap().unwrap(), &second);

        store.clear(&key).await.unwrap();
        assert!(store.load(&key).await.unwrap().is_none());
        assert!(other.load(&key).await.unwrap().is_none());
        // The cleared row stays as a tombstone that keeps its generation: numbering goes on after it.
        assert_eq!(
            store.stored_generation(&key).await.unwrap(),
            Some(Generation(2))
        );
        assert!(!store.save(&key, &first).await.unwrap());
        assert!(!store.save(&key, &record(2, "same")).await.unwrap());
        let third = record(3, "after the clear");
        assert!(store.save(&key, &third).await.unwrap());
        assert_same(&other.load(&key).await.unwrap().unwrap(), &third);
        store.clear(&key).await.unwrap();
    }

    #[tokio::test]
    async fn older_generation_refused(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("older_generation_refused");
        let current = record(5, "generation-five");
        assert!(store.save(&key, &current).await.unwrap());

        assert!(!store.save(&key, &record(4, "older")).await.unwrap());
        assert!(
            !store
                .save(&key, &record(5, "same generation"))
                .await
                .unwrap()
        );
        assert!(!store.save(&key, &record(0, "zero")).await.unwrap());
        assert_same(&store.load(&key).await.unwrap().unwrap(), &current);

        let newer = record(6, "generation-six");
        assert!(store.save(&key, &newer).await.unwrap());
        assert_same(&store.load(&key).await.unwrap().unwrap(), &newer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_saves_keep_newest(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("concurrent_saves");
        let tasks: Vec<_> = (1..=16u64)
            .map(|generation| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let saved = store
                        .save(&key, &record(generation, &format!("token-{generation}")))
                        .await
                        .unwrap();
                    (generation, saved)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert!(
            results.contains(&(16, true)),
            "the newest save must win: {results:?}"
        );
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(loaded.generation, Generation(16));
        assert_eq!(loaded.token.expose_secret(), "token-16");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lease_has_one_winner(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("concurrent_lease");
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .try_lease(&key, &format!("owner-{i}"), Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);

        // Once the row exists, a second round also has exactly one winner (after the holder releases).
        for i in 0..16 {
            store.release(&key, &format!("owner-{i}")).await.unwrap();
        }
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    store
                        .try_lease(&key, &format!("second-{i}"), Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn lease_expires(db: Fixture) {
        let store = db.plain_store().await;
        let mut raw = db.raw().await;
        let key = unique_key("lease_expires");
        assert!(
            store
                .try_lease(&key, "a", Duration::from_millis(200))
                .await
                .unwrap()
        );
        assert!(
            !store
                .try_lease(&key, "b", Duration::from_millis(200))
                .await
                .unwrap()
        );
        assert_eq!(raw.lease_span_ms(&key).await, 200, "taken for its TTL");
        // The lease runs on the database's clock: instead of waiting for it, move it 200 ms into the past.
        raw.age_lease(&key, 200).await;
        assert!(
            store
                .try_lease(&key, "b", Duration::from_secs(30))
                .await
                .unwrap()
        );
        assert!(
            !store
                .try_lease(&key, "a", Duration::from_secs(30))
                .await
                .unwrap()
        );
    }

    /// A process that could not release its lease (the database went away mid-refresh) takes it again at once
    /// instead of waiting for it to expire; others still cannot.
    #[tokio::test]
    async fn owner_retakes_its_own_unreleased_lease(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("retake");
        let ttl = Duration::from_secs(30);
        assert!(store.try_lease(&key, "a", ttl).await.unwrap());
        assert!(store.try_lease(&key, "a", ttl).await.unwrap());
        assert!(!store.try_lease(&key, "b", ttl).await.unwrap());
    }

    /// The lease as on call sees it: holder, taken at and runs out at, on the database's clock.
    #[tokio::test]
    async fn lease_status_reports_holder_and_times(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("lease-status");
        assert_eq!(store.lease(&key).await.unwrap(), None);
        assert!(
            store
                .try_lease(&key, "host-a:1:x", Duration::from_secs(30))
                .await
                .unwrap()
        );
        let held = store.lease(&key).await.unwrap().expect("a lease row");
        assert_eq!(held.holder, "host-a:1:x");
        assert_eq!(held.expires_at_ms - held.acquired_at_ms, 30_000);
        assert!(held.is_held());
        assert!(held.now_ms >= held.acquired_at_ms && held.now_ms < held.expires_at_ms);

        store.release(&key, "host-a:1:x").await.unwrap();
        let released = store.lease(&key).await.unwrap().expect("a lease row");
        assert_eq!(released.holder, "host-a:1:x");
        assert_eq!(released.acquired_at_ms, held.acquired_at_ms);
        assert!(!released.is_held());
        assert!(released.expires_at_ms < held.expires_at_ms);
    }

    #[tokio::test]
    async fn release_lets_next_owner_in(db: Fixture) {
        let store = db.plain_store().await;
        let key = unique_key("release");
        assert!(
            store
                .try_lease(&key, "a", Duration::from_secs(30))
                .await
                .unwrap()
        );

        // Not the holder: nothing happens.
        store.release(&key, "b").await.unwrap();
        assert!(
            !store
                .try_lease(&key, "b", Duration::from_secs(30))
                .await
                .unwrap()
        );

        store.release(&key, "a").await.unwrap();
        assert!(
            store
                .try_lease(&key, "b", Duration::from_secs(30))
                .await
                .unwrap()
        );
        // The former holder's late release does not free the new holder's lease.
        store.release(&key, "a").await.unwrap();
        assert!(
            !store
                .try_lease(&key, "c", Duration::from_secs(30))
                .await
                .unwrap()
        );

        // Releasing a lease nobody ever took is fine.
        store
            .release(&unique_key("release-none"), "a")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn encryption_at_rest(db: Fixture) {
        let logs = Captured::default();
        let _guard = logs.install(tracing::Level::WARN);
        let secret_token = "S3cr3t-T0ken-Value-0123456789";
        let store = db.encrypted_store(1).await;
        let key = unique_key("encryption");
        let mut saved = record(1, secret_token);
        saved.expires_at_ms = Some(1_900_000_000_000);
        assert!(store.save(&key, &saved).await.unwrap());

        let mut raw = db.raw().await;
        let (column, nonce) = raw.token_columns(&key).await;
        assert!(!column.contains(secret_token), "token stored in plaintext");
        assert!(!column.contains("S3cr3t"));
        let nonce = nonce.expect("an encrypted row has a nonce");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&nonce)
                .unwrap()
                .len(),
            12
        );

        // The right key decrypts, in this store and in another instance's.
        assert_same(&store.load(&key).await.unwrap().unwrap(), &saved);
        assert_same(
            &db.encrypted_store(1)
                .await
                .load(&key)
                .await
                .unwrap()
                .unwrap(),
            &saved,
        );

        // Each save has a fresh nonce.
        assert!(store.save(&key, &record(2, secret_token)).await.unwrap());
        let (column_2, nonce_2) = raw.token_columns(&key).await;
        assert_ne!(Some(nonce), nonce_2);
        assert_ne!(column, column_2);

        // A wrong key, or no key at all: absent, not an error, not a panic.
        assert!(
            db.encrypted_store(2)
                .await
                .load(&key)
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.plain_store().await.load(&key).await.unwrap().is_none());

        // A row copied under another credential key does not decrypt there.
        let copy = unique_key("encryption-copy");
        raw.copy_row(&key, &copy).await;
        assert!(store.load(&copy).await.unwrap().is_none());

        // A tampered ciphertext does not decrypt.
        let mut tampered = column_2.into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        raw.set_token_column(&key, std::str::from_utf8(&tampered).unwrap())
            .await;
        assert!(store.load(&key).await.unwrap().is_none());
        raw.set_token_column(&key, "not base64 at all!").await;
        assert!(store.load(&key).await.unwrap().is_none());

        let logs = logs.text();
        assert!(logs.contains("does not decrypt"), "{logs}");
        assert!(logs.contains("no encryption key is configured"), "{logs}");
        assert!(
            !logs.contains("S3cr3t"),
            "a log line shows the token: {logs}"
        );
        assert!(
            !logs.contains(encryption_key(1).expose_secret()),
            "a log line shows the key"
        );
    }

    #[tokio::test]
    async fn plaintext_without_key(db: Fixture) {
        let logs = Captured::default();
        let _guard = logs.install(tracing::Level::WARN);
        let store = db.plain_store().await;
        assert!(
            logs.text().contains("stored in plaintext"),
            "{}",
            logs.text()
        );
        let key = unique_key("plaintext");
        assert!(store.save(&key, &record(1, "plain-token")).await.unwrap());
        let mut raw = db.raw().await;
        assert_eq!(
            raw.token_columns(&key).await,
            ("plain-token".to_owned(), None)
        );

        // With a key configured, a plaintext row has no authentication: anyone who can write the table could have
        // planted it. It is never used (absent, with a warning giving the reason), and the next save replaces it.
        let encrypted = db.encrypted_store(3).await;
        assert!(encrypted.load(&key).await.unwrap().is_none());
        let warning = logs
            .text()
            .lines()
            .find(|line| line.contains("is not used"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no warning: {}", logs.text()));
        assert!(warning.contains(" WARN "), "{warning}");
        assert!(
            warning.contains("in plaintext (no nonce) although an encryption key is configured"),
            "{warning}"
        );
        assert!(!warning.contains("plain-token"), "{warning}");
        assert_eq!(
            encrypted.stored_generation(&key).await.unwrap(),
            Some(Generation(1))
        );
        assert!(
            encrypted
                .save(&key, &record(2, "plain-token-2"))
                .await
                .unwrap()
        );
        let (column, nonce) = raw.token_columns(&key).await;
        assert!(nonce.is_some());
        assert!(!column.contains("plain-token"));
    }

    #[tokio::test]
    async fn rotation_reads_previous_keys_and_reseals_in_place(db: Fixture) {
        let logs = Captured::default();
        let _guard = logs.install(tracing::Level::INFO);
        let key = unique_key("rotation");
        let old = db.encrypted_store(1).await;
        let mut saved = record(5, "Rotated-T0ken");
        saved.expires_at_ms = Some(1_900_000_000_000);
        assert!(old.save(&key, &saved).await.unwrap());
        let mut raw = db.raw().await;
        let (column, nonce) = raw.token_columns(&key).await;

        // The new key with the old one as previous reads the row, and seals it again under the new key in place:
        // same generation, same everything but the ciphertext and nonce.
        let rotated = db
            .store(StoreOptions {
                encryption_key: Some(encryption_key(2)),
                previous_encryption_keys: vec![encryption_key(7), encryption_key(1)],
                ..StoreOptions::default()
            })
            .await;
        assert_same(&rotated.load(&key).await.unwrap().unwrap(), &saved);
        let (column_2, nonce_2) = raw.token_columns(&key).await;
        assert_ne!(column, column_2);
        assert_ne!(nonce, nonce_2);
        assert_same(
            &db.encrypted_store(2)
                .await
                .load(&key)
                .await
                .unwrap()
                .unwrap(),
            &saved,
        );
        assert!(old.load(&key).await.unwrap().is_none());
        // Read again: already under the current key, nothing more is written.
        assert_same(&rotated.load(&key).await.unwrap().unwrap(), &saved);
        assert_eq!(raw.token_columns(&key).await, (column_2, nonce_2));

        let logs = logs.text();
        assert_eq!(
            logs.matches("encrypted it again with the current one")
                .count(),
            1,
            "{logs}"
        );
        assert!(!logs.contains("Rotated-T0ken"), "{logs}");
    }

}

/// Cases of what only a database has; a module of their own, beside the `postgres`, `mysql` and `sqlite` modules of
/// the cases above.
mod sql_only {
    use super::*;
    on_every_sql_backend! {
        /// On a plain (current-thread) runtime, where diesel-async's own migration harness would panic.
        #[tokio::test]
        async fn migrate_on_current_thread_runtime(server: Fixture) {
            let db = server.empty().await;
            db.plain_store().await.migrate().await.unwrap();
            db.drop_database(&server).await;
        }

        #[tokio::test]
        async fn reports_backend(db: Fixture) {
            let store = db.plain_store().await;
            assert_eq!(store.backend(), backend_of(&db));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn migrations_idempotent(db: Fixture) {
            let store = db.plain_store().await; // migrated once
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
            // Another instance migrating the same database, concurrently.
            let other = DieselStore::connect(&db.url, StoreOptions::default())
                .await
                .unwrap();
            let (a, b) = tokio::join!(store.migrate(), other.migrate());
            a.unwrap();
            b.unwrap();
            let key = unique_key("migrations");
            assert!(other.save(&key, &record(1, "t")).await.unwrap());
            assert!(store.load(&key).await.unwrap().is_some());
        }

        /// `migrate` takes the migration lock that a concurrent migrator (another instance) holds, and waits for it.
        /// (Concurrent first migrations rarely overlap in a test, since servers accept connections one at a time; this
        /// proves the serialisation deterministically.)
        #[tokio::test]
        async fn migrate_waits_for_another_migrator(db: Fixture) {
            use diesel_async::SimpleAsyncConnection;
            let store = db.plain_store().await;
            let mut raw = db.raw().await;
            let (lock, unlock) = match raw {
                // The store's advisory lock key, b"paynetmg" as a big-endian i64.
                Raw::Postgres(_) => (
                    "SELECT pg_advisory_lock(8097887120044354919)",
                    "SELECT pg_advisory_unlock(8097887120044354919)",
                ),
                Raw::Mysql(_) => (
                    "DO GET_LOCK('paynet_auth_migrations', 10)",
                    "DO RELEASE_LOCK('paynet_auth_migrations')",
                ),
                Raw::Sqlite(_) => ("BEGIN EXCLUSIVE", "COMMIT"),
            };
            on_raw!(&mut raw, |conn| conn.batch_execute(lock).await.unwrap());
            let migrating = tokio::spawn({
                let store = store.clone();
                async move { store.migrate().await }
            });
            if let Raw::Sqlite(_) = raw {
                // SQLite shows no one waiting for a lock; what shows that the migrator waited is that it gives up,
                // after the connection's busy timeout, while the lock is still held. One that did not wait would find
                // every migration applied and succeed.
                let error = tokio::time::timeout(Duration::from_secs(30), migrating)
                    .await
                    .expect("migrate gives up after the busy timeout")
                    .unwrap()
                    .expect_err("migrate cannot succeed while another migrator holds the lock");
                let message = paynet_auth::error::Chain(&error).to_string();
                assert!(message.contains("locked"), "{message}");
                on_raw!(&mut raw, |conn| conn.batch_execute(unlock).await.unwrap());
                store.migrate().await.unwrap();
                return;
            }
            // The server shows the migrator waiting for the lock: poll its lock table until it does.
            let deadline = Instant::now() + Duration::from_secs(10);
            while raw.migration_lock_waiters().await == 0 {
                assert!(
                    !migrating.is_finished(),
                    "migrate finished without waiting for the migration lock"
                );
                assert!(
                    Instant::now() < deadline,
                    "migrate never waited for the lock"
                );
                tokio::task::yield_now().await;
            }
            assert!(!migrating.is_finished());
            on_raw!(&mut raw, |conn| conn.batch_execute(unlock).await.unwrap());
            tokio::time::timeout(Duration::from_secs(10), migrating)
                .await
                .expect("migrate finishes once the lock is free")
                .unwrap()
                .unwrap();
        }

        #[tokio::test]
        async fn query_count(db: Fixture) {
            let store = db.plain_store().await;
            let mysql = store.backend() == Backend::Mysql;
            let key = unique_key("query_count");
            let before = store.query_count();
            let mut expect = before;
            let mut step = |n: u64, label: &str, store: &DieselStore| {
                expect += n;
                assert_eq!(store.query_count(), expect, "after {label}");
            };

            store.load(&key).await.unwrap();
            step(1, "load", &store);
            store.save(&key, &record(1, "a")).await.unwrap();
            // MySQL: an UPDATE that finds no row, then the INSERT.
            step(if mysql { 2 } else { 1 }, "first save", &store);
            store.save(&key, &record(2, "b")).await.unwrap();
            step(1, "newer save", &store);
            assert!(!store.save(&key, &record(2, "c")).await.unwrap());
            // MySQL: UPDATE (no), INSERT (duplicate), UPDATE again (no).
            step(if mysql { 3 } else { 1 }, "refused save", &store);
            assert!(
                store
                    .try_lease(&key, "a", Duration::from_secs(30))
                    .await
                    .unwrap()
            );
            step(if mysql { 2 } else { 1 }, "first lease", &store);
            assert!(
                !store
                    .try_lease(&key, "b", Duration::from_secs(30))
                    .await
                    .unwrap()
            );
            step(if mysql { 2 } else { 1 }, "held lease", &store);
            store.release(&key, "a").await.unwrap();
            step(1, "release", &store);
            assert!(
                store
                    .try_lease(&key, "b", Duration::from_secs(30))
                    .await
                    .unwrap()
            );
            step(1, "lease taken over", &store);
            store.clear(&key).await.unwrap();
            step(1, "clear", &store);

            // Clones share the counter; migrate is not counted.
            let clone = store.clone();
            clone.load(&key).await.unwrap();
            step(1, "load through a clone", &store);
            store.migrate().await.unwrap();
            step(0, "migrate", &store);
        }

        #[tokio::test]
        async fn unreachable(db: Fixture) {
            let url = unreachable_url(&db);
            let timeout = Duration::from_millis(800);
            let options = StoreOptions {
                connect_timeout: timeout,
                ..StoreOptions::default()
            };
            // Degraded start: connecting does not need the database.
            let store = DieselStore::connect(url, options.clone()).await.unwrap();
            assert!(!store.describe().contains("hunter2"));

            let started = Instant::now();
            let err = store.load("k").await.unwrap_err();
            let elapsed = started.elapsed();
            assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
            assert!(
                elapsed < timeout + Duration::from_secs(2),
                "took {elapsed:?}"
            );
            let message = paynet_auth::error::Chain(&err).to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains(&store.describe()), "{message}");
            // bb8 itself only says "timed out"; the store adds the connection error behind it.
            assert!(message.contains("last error"), "{message}");

            assert!(matches!(
                store.save("k", &record(1, "t")).await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.try_lease("k", "a", Duration::from_secs(1)).await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.release("k", "a").await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.clear("k").await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.migrate().await,
                Err(StoreError::Unavailable { .. })
            ));
            assert_eq!(store.query_count(), 0);

            // The dispatching `connect` migrates, so it reports the outage.
            let err = store::connect(url, options)
                .await
                .err()
                .expect("no database");
            assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        }
    }
}

/// The database goes away and comes back: calls fail with `Unavailable` meanwhile and work again after,
/// with the same store.
async fn recovers_after_outage(server_url: String) {
    let mut proxy = Proxy::start(host_port(&server_url)).await;
    let url = proxy.url_through(&server_url);
    let store = DieselStore::connect(
        &url,
        StoreOptions {
            connect_timeout: Duration::from_secs(1),
            pool_size: 2,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let key = unique_key("recovers");
    assert!(store.save(&key, &record(1, "before")).await.unwrap());

    proxy.stop().await;
    let err = store.load(&key).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store
        .try_lease(&key, "a", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");

    proxy.restart().await;
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.token.expose_secret(), "before");
    assert!(store.save(&key, &record(2, "after")).await.unwrap());
    proxy.stop().await;
}

/// The backend a fixture's URL names.
fn backend_of(db: &Fixture) -> Backend {
    match db.url.split_once(':').map(|(scheme, _)| scheme) {
        Some("postgres") => Backend::Postgres,
        Some("mysql") => Backend::Mysql,
        Some("sqlite") => Backend::Sqlite,
        _ => panic!("no backend for {}", db.url),
    }
}

/// A URL of a fixture's backend where no database answers (with a password, to check that it is hidden).
fn unreachable_url(db: &Fixture) -> &'static str {
    match backend_of(db) {
        Backend::Postgres => "postgres://postgres:hunter2@127.0.0.1:1/test",
        Backend::Mysql => "mysql://root:hunter2@127.0.0.1:1/test",
        _ => "sqlite:///nonexistent-paynet-dir/sub/tokens.db",
    }
}

/// A session defaulting to SERIALIZABLE whose lease statement waited for a concurrent update of the same row
/// gets SQLSTATE 40001: that is a `Conflict` (for a lease: not acquired), not a broken store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serialization_failure_is_a_conflict() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let url = format!(
        "{}{}options=-c%20default_transaction_isolation%3Dserializable",
        postgres_url(),
        if postgres_url().contains('?') {
            "&"
        } else {
            "?"
        }
    );
    let store = DieselStore::connect(&url, StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let key = unique_key("serialization");
    assert!(
        store
            .try_lease(&key, "a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    store.release(&key, "a").await.unwrap();

    // Another transaction updates the lease row and keeps it locked until it commits.
    let mut other = AsyncPgConnection::establish(&postgres_url()).await.unwrap();
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE paynet_lease SET locked_at = locked_at WHERE name = '{key}'"
        ))
        .await
        .unwrap();
    let lease = tokio::spawn({
        let (store, key) = (store.clone(), key.clone());
        async move { store.try_lease(&key, "b", Duration::from_secs(30)).await }
    });
    // Commit only once the store's statement waits for the row lock, so that it sees the update as concurrent.
    let mut observer = AsyncPgConnection::establish(&postgres_url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Waiting {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%paynet_lease%'",
        )
        .get_result::<Waiting>(&mut observer)
        .await
        .unwrap();
        if waiting.n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease statement never waited for the row lock"
        );
        tokio::task::yield_now().await;
    }
    other.batch_execute("COMMIT").await.unwrap();

    let error = lease.await.unwrap().unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    assert!(matches!(
        error,
        StoreError::Conflict {
            operation: "try_lease",
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("collided"), "{message}");
}

/// A SQLite file another connection holds exclusively: after the busy timeout, `database is locked` is a
/// `Conflict`, not a query error.
#[tokio::test]
async fn sqlite_busy_database_is_a_conflict() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let db = Fixture::sqlite();
    let store = db.plain_store().await;
    let path = db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let mut other = support::db::SqliteConnection::establish(&path)
        .await
        .unwrap();
    other.batch_execute("BEGIN EXCLUSIVE").await.unwrap();

    let error = store
        .try_lease(&unique_key("busy"), "a", Duration::from_secs(30))
        .await
        .unwrap_err();

    assert!(error.is_conflict(), "{error:?}");
    other.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn postgres_recovers_after_outage() {
    recovers_after_outage(postgres_url()).await;
}

#[tokio::test]
async fn mysql_recovers_after_outage() {
    recovers_after_outage(mysql_url()).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Backend-independent behaviour

#[tokio::test]
async fn connect_dispatches_on_scheme() {
    let memory = store::connect("memory:", StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(memory.describe(), "memory");
    assert!(
        memory
            .try_lease("k", "a", Duration::from_secs(1))
            .await
            .unwrap()
    );

    // Redis needs no migration: the store opens without a connection, and says where it is without the password.
    let redis = store::connect("redis://:hunter2@127.0.0.1:1/3", StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(redis.describe(), "redis://:****@127.0.0.1:1/3");

    let err = store::connect("mongodb://user:hunter2@host/0", StoreOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("`mongodb`") && !err.to_string().contains("hunter2"),
        "{err}"
    );
    assert!(matches!(
        store::connect("just-a-path.db", StoreOptions::default()).await,
        Err(StoreError::Config(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dispatch.db").display());
    let sqlite = store::connect(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(sqlite.describe(), url);
    assert!(
        sqlite.save("k", &record(1, "t")).await.unwrap(),
        "migrated by connect"
    );
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = store::connect("sqlite::memory:", StoreOptions::default())
        .await
        .unwrap();
    assert!(store.save("k", &record(1, "t")).await.unwrap());
    assert_eq!(
        store
            .load("k")
            .await
            .unwrap()
            .unwrap()
            .token
            .expose_secret(),
        "t"
    );
    assert!(
        store
            .try_lease("k", "a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease("k", "b", Duration::from_secs(30))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn previous_keys_need_a_current_key_and_are_validated_by_position() {
    let error = DieselStore::connect(
        "sqlite::memory:",
        StoreOptions {
            previous_encryption_keys: vec![encryption_key(1)],
            ..StoreOptions::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&error, StoreError::Config(m) if m.contains("encryption_key is not")),
        "{error}"
    );
    let error = DieselStore::connect(
        "sqlite::memory:",
        StoreOptions {
            encryption_key: Some(encryption_key(1)),
            previous_encryption_keys: vec![encryption_key(2), "not-a-key".into()],
            ..StoreOptions::default()
        },
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("previous_encryption_keys[1]"), "{error}");
    assert!(!error.contains("not-a-key"), "{error}");
}

#[tokio::test]
async fn encryption_key_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let with_key = |key: &str| StoreOptions {
        encryption_key: Some(key.into()),
        ..StoreOptions::default()
    };

    let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
    let err = DieselStore::connect(&url, with_key(&short))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("base64 of 32 bytes, got 16 bytes"),
        "{err}"
    );

    let err = DieselStore::connect(&url, with_key("not base64 !!"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("not base64 !!"), "{err}");

    let good = encryption_key(4);
    DieselStore::connect(&url, with_key(good.expose_secret()))
        .await
        .unwrap();
}

#[tokio::test]
async fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("opts.db").display());
    let zero_pool = StoreOptions {
        pool_size: 0,
        ..StoreOptions::default()
    };
    assert!(matches!(
        DieselStore::connect(&url, zero_pool).await,
        Err(StoreError::Config(_))
    ));
    let zero_timeout = StoreOptions {
        connect_timeout: Duration::ZERO,
        ..StoreOptions::default()
    };
    assert!(matches!(
        DieselStore::connect(&url, zero_timeout).await,
        Err(StoreError::Config(_))
    ));
}

/// A failed operation names itself alike in its error and in the `op` label of the store-error counter: the
/// `TokenStore` method's name. A store whose tables were never created fails each with an error that names it.
#[cfg(feature = "metrics")]
#[test]
fn a_failed_operation_is_named_alike_in_its_error_and_its_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = Fixture::sqlite();
    let in_errors = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            // Not migrated: every statement meets a missing table.
            let store = DieselStore::connect(&db.url, StoreOptions::default())
                .await
                .unwrap();
            let manager = support::manager_builder()
                .name("unmigrated")
                .store(store)
                .build()
                .unwrap();
            let operation = |error: StoreError| match error {
                StoreError::MissingTable { operation, .. } => operation,
                other => panic!("expected a missing table, got {other:?}"),
            };
            vec![
                operation(manager.stored().await.unwrap_err()),
                operation(manager.lease().await.unwrap_err()),
                operation(manager.clear().await.unwrap_err()),
            ]
        })
    });
    assert_eq!(in_errors, ["load", "lease", "clear"]);
    let mut in_metrics: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "paynet_auth_store_errors_total")
        .map(|(key, _, _, value)| {
            assert!(
                matches!(value, DebugValue::Counter(1)),
                "{key:?}: {value:?}"
            );
            key.key()
                .labels()
                .find(|label| label.key() == "op")
                .map(|label| label.value().to_owned())
                .unwrap()
        })
        .collect();
    in_metrics.sort();
    let mut in_errors = in_errors;
    in_errors.sort();
    assert_eq!(in_metrics, in_errors);
}

#[tokio::test]
async fn overlong_keys_are_refused_on_every_backend_alike() {
    let db = Fixture::sqlite();
    let store = db.plain_store().await;
    let long = "k".repeat(256);
    assert!(matches!(
        store.save(&long, &record(1, "t")).await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        store.load(&long).await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        store.try_lease("k", &long, Duration::from_secs(1)).await,
        Err(StoreError::Config(_))
    ));
    let longest = "k".repeat(255);
    assert!(store.save(&longest, &record(1, "t")).await.unwrap());
}

#[tokio::test]
async fn describe_hides_password() {
    let store = DieselStore::connect(
        "postgres://postgres:hunter2@127.0.0.1:1/test",
        StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        store.describe(),
        "postgres://postgres:****@127.0.0.1:1/test"
    );
    assert!(!format!("{store:?}").contains("hunter2"));
    let store = DieselStore::connect(
        "mariadb://root:hunter2@127.0.0.1:1/test",
        StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.backend(), Backend::Mysql);
    assert!(!store.describe().contains("hunter2"));
}

#[tokio::test]
async fn keys_differing_in_case_or_trailing_space_are_distinct() {
    // MySQL's default collations would merge these; the keys are VARBINARY there.
    for url in [postgres_url(), mysql_url()] {
        let store = Fixture { url, _dir: None }.plain_store().await;
        let key = unique_key("case");
        let upper = key.to_uppercase();
        let spaced = format!("{key} ");
        assert!(store.save(&key, &record(1, "lower")).await.unwrap());
        assert!(store.save(&upper, &record(1, "upper")).await.unwrap());
        assert!(store.save(&spaced, &record(1, "spaced")).await.unwrap());
        assert_eq!(
            store
                .load(&key)
                .await
                .unwrap()
                .unwrap()
                .token
                .expose_secret(),
            "lower"
        );
        assert_eq!(
            store
                .load(&upper)
                .await
                .unwrap()
                .unwrap()
                .token
                .expose_secret(),
            "upper"
        );
        assert_eq!(
            store
                .load(&spaced)
                .await
                .unwrap()
                .unwrap()
                .token
                .expose_secret(),
            "spaced"
        );
        assert!(
            store
                .try_lease(&key, "a", Duration::from_secs(30))
                .await
                .unwrap()
        );
        assert!(
            store
                .try_lease(&upper, "a", Duration::from_secs(30))
                .await
                .unwrap()
        );
    }
}
