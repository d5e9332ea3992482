//! SQLite as a [`DieselBackend`]: its statements (`?` placeholders, `julianday('now')`), its save and lease in one
//! conditional upsert each, and its migration in an exclusive transaction on a pooled connection.
// Every time comes from the database's clock (UTC epoch milliseconds), so instances with skewed clocks agree on when
// a lease ends.

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use super::backend::{DieselBackend, Pool};
use super::migrations::{PORTABLE_MIGRATIONS, run_and_repair};
use super::pool::{Pools, SqliteConnection, sqlite_config};
use super::rows::{NewRow, bind_row};
use super::{Backend, DieselStore};
use crate::error::{BoxError, StoreError};
use crate::store::op;

/// Insert, or replace a row of an older generation; 1 row affected iff written. Binds as [`bind_row!`].
const SAVE: &str = "\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
ON CONFLICT (credential_key) DO UPDATE SET token = excluded.token, nonce = excluded.nonce, \
generation = excluded.generation, obtained_at = excluded.obtained_at, expires_at = excluded.expires_at, \
agent_id = excluded.agent_id, terminal_id = excluded.terminal_id, user_id = excluded.user_id, \
user_login = excluded.user_login, written_by = excluded.written_by \
WHERE paynet_tokens.generation < excluded.generation";

/// Insert the lease, or take it over if it ran out or is this owner's own (see PostgreSQL's `LEASE`); 1 row
/// affected iff taken. Binds: name, ttl ms, owner. `WHERE true` resolves the parsing ambiguity of
/// `INSERT … SELECT … ON CONFLICT`.
const LEASE: &str = "\
INSERT INTO paynet_lease AS lease (name, lock_until, locked_at, locked_by) \
SELECT ?, db.now_ms + ?, db.now_ms, ? \
FROM (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms) AS db WHERE true \
ON CONFLICT (name) DO UPDATE SET lock_until = excluded.lock_until, locked_at = excluded.locked_at, \
locked_by = excluded.locked_by \
WHERE lease.lock_until <= excluded.locked_at OR lease.locked_by = excluded.locked_by";

/// SQLite, bundled, through a blocking connection run on tokio's blocking threads.
pub(super) struct Sqlite;

impl DieselBackend for Sqlite {
    const BACKEND: Backend = Backend::Sqlite;

    type Connection = SqliteConnection;

    type Manager = AsyncDieselConnectionManager<SqliteConnection>;

    const RESEAL: &'static str = "UPDATE paynet_tokens SET token = ?, nonce = ? WHERE credential_key = ? AND generation = ? AND nonce = ?";

    const RELEASE: &'static str = "\
UPDATE paynet_lease SET lock_until = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) \
WHERE name = ? AND locked_by = ?";

    const LEASE_INFO: &'static str = "\
SELECT locked_by, locked_at, lock_until, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms \
FROM paynet_lease WHERE name = ?";

    fn manager(
        path: String,
        session_timeout: std::time::Duration,
    ) -> Result<Self::Manager, StoreError> {
        let config = sqlite_config(session_timeout);
        Ok(AsyncDieselConnectionManager::new_with_config(path, config))
    }

    /// Every connection to `:memory:` is a database of its own.
    fn single_connection(path: &str) -> bool {
        path == ":memory:"
    }

    fn pools(pool: Pool<Self>) -> Pools {
        Pools::Sqlite(pool)
    }

    /// One conditional upsert.
    async fn save(
        store: &DieselStore,
        conn: &mut SqliteConnection,
        row: &NewRow,
    ) -> Result<bool, StoreError> {
        store.count_query();
        let written = bind_row!(SAVE, row)
            .execute(conn)
            .await
            .map_err(store.query_error(op::SAVE))?;
        Ok(written > 0)
    }

    /// One statement.
    async fn try_lease(
        store: &DieselStore,
        conn: &mut SqliteConnection,
        key: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        store.count_query();
        let taken = diesel::sql_query(LEASE)
            .bind::<Text, _>(key)
            .bind::<BigInt, _>(ttl_ms)
            .bind::<Text, _>(owner)
            .execute(conn)
            .await
            .map_err(store.query_error(op::TRY_LEASE))?;
        Ok(taken > 0)
    }

    /// In an exclusive transaction, on a pooled connection rather than a new one: for `sqlite::memory:` a new
    /// connection would be another, empty database.
    async fn migrate(store: &DieselStore, pool: &Pool<Self>) -> Result<(), StoreError> {
        let mut pooled = store.checkout(pool).await?;
        let outcome = pooled
            .spawn_blocking(|conn| {
                // EXCLUSIVE waits (busy_timeout: the operation timeout; a local file's migration takes
                // milliseconds) for another process migrating the same file; diesel runs each migration in a
                // savepoint inside it.
                Ok(conn.exclusive_transaction(|conn| -> Result<(), BoxError> {
                    run_and_repair(conn, || PORTABLE_MIGRATIONS)
                }))
            })
            .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(store.migration_error(source)),
            Err(source) => Err(store.migration_error(source.into())),
        }
    }
}
