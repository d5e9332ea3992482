//! PostgreSQL as a [`DieselBackend`]: its statements (`$n` placeholders, `clock_timestamp()`), its save (which also
//! announces the save with `pg_notify`) and lease in one conditional upsert each, and its migration under an
//! advisory lock.
// Every time comes from the database's clock (UTC epoch milliseconds), so instances with skewed clocks agree on when
// a lease ends.

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use super::backend::{DieselBackend, Pool};
use super::migrations::{MIGRATION_WAIT_SECS, PORTABLE_MIGRATIONS, run_and_repair};
use super::pool::{Pools, postgres_config};
use super::rows::{NewRow, bind_row};
use super::tls::PgConnector;
use super::{Backend, DieselStore};
use crate::error::StoreError;
use crate::store::op;

/// Insert, or replace a row of an older generation, and announce the key on [`SAVED_CHANNEL`] only when the row was
/// written; 1 row (the `pg_notify` call's) iff written. Binds as [`bind_row!`]. One statement, so one implicit
/// transaction: the notification is delivered when the row is committed, never before (a listener that reads the
/// store on it finds the row) and never for a save that was refused or rolled back (an older generation, a
/// serialization failure).
const SAVE: &str = "\
WITH saved AS (\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
ON CONFLICT (credential_key) DO UPDATE SET token = excluded.token, nonce = excluded.nonce, \
generation = excluded.generation, obtained_at = excluded.obtained_at, expires_at = excluded.expires_at, \
agent_id = excluded.agent_id, terminal_id = excluded.terminal_id, user_id = excluded.user_id, \
user_login = excluded.user_login, written_by = excluded.written_by \
WHERE paynet_tokens.generation < excluded.generation \
RETURNING credential_key) \
SELECT pg_notify('paynet_auth_token_saved', credential_key) FROM saved";

/// The channel every save is announced on, with the credential key as its payload; the listener
/// (`listener.rs`) `LISTEN`s on it. One channel for every key, so that one listening connection serves every
/// credential of a process; written out in [`SAVE`], which a test keeps in step with this.
pub(super) const SAVED_CHANNEL: &str = "paynet_auth_token_saved";

/// Take the lease over if it ran out or is this owner's own, else insert it if there is none; 1 row iff taken.
/// Binds: name, ttl ms, owner. An owner may re-take its own lease: a process runs one refresh per key at a time, so a
/// lease it still holds is one it failed to release (the database went away mid-refresh), and waiting for it to
/// expire would stall every caller of that process for the whole TTL.
///
/// A conditional `UPDATE` and an `INSERT … ON CONFLICT DO NOTHING`, not one `INSERT … ON CONFLICT DO UPDATE …
/// WHERE`: the upsert locks the existing row even when its `WHERE` refuses, so every refused attempt would write
/// WAL, wait for its flush and queue behind the others on one row. A fleet's waiters all make refused attempts at
/// once, each expiry; refused this way, they only read.
const LEASE: &str = "\
WITH db AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms), \
taken AS (UPDATE paynet_lease AS lease SET lock_until = db.now_ms + $2, locked_at = db.now_ms, locked_by = $3 \
FROM db WHERE lease.name = $1 AND (lease.lock_until <= db.now_ms OR lease.locked_by = $3) RETURNING 1), \
inserted AS (INSERT INTO paynet_lease (name, lock_until, locked_at, locked_by) \
SELECT $1, db.now_ms + $2, db.now_ms, $3 FROM db \
WHERE NOT EXISTS (SELECT 1 FROM paynet_lease WHERE name = $1) \
ON CONFLICT (name) DO NOTHING RETURNING 1) \
SELECT 1 FROM taken UNION ALL SELECT 1 FROM inserted";

/// Serialises concurrent `migrate()` calls of a fleet that starts at once (advisory lock key).
const MIGRATION_LOCK: i64 = 0x7061_796e_6574_6d67; // "paynetmg"

/// PostgreSQL, over tokio-postgres with rustls.
pub(super) struct Postgres;

impl DieselBackend for Postgres {
    const BACKEND: Backend = Backend::Postgres;

    type Connection = AsyncPgConnection;

    type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

    const RESEAL: &'static str = "UPDATE paynet_tokens SET token = $1, nonce = $2 \
WHERE credential_key = $3 AND generation = $4 AND nonce = $5";

    const RELEASE: &'static str = "\
UPDATE paynet_lease SET lock_until = (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
WHERE name = $1 AND locked_by = $2";

    const LEASE_INFO: &'static str = "\
SELECT locked_by, locked_at, lock_until, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms \
FROM paynet_lease WHERE name = $1";

    fn manager(
        address: String,
        session_timeout: std::time::Duration,
    ) -> Result<Self::Manager, StoreError> {
        let config = postgres_config(PgConnector::from_url(&address)?, session_timeout);
        Ok(AsyncDieselConnectionManager::new_with_config(
            address, config,
        ))
    }

    fn pools(pool: Pool<Self>) -> Pools {
        Pools::Postgres(pool)
    }

    /// One conditional upsert.
    async fn save(
        store: &DieselStore,
        conn: &mut AsyncPgConnection,
        row: &NewRow,
    ) -> Result<bool, StoreError> {
        store.count_query();
        // `execute` answers the rows the final SELECT returned: one `pg_notify` per row written.
        let written = bind_row!(SAVE, row)
            .execute(conn)
            .await
            .map_err(store.query_error(op::SAVE))?;
        Ok(written > 0)
    }

    /// One statement; `execute` answers the rows its final `SELECT` returned.
    async fn try_lease(
        store: &DieselStore,
        conn: &mut AsyncPgConnection,
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

    /// On a dedicated connection, holding the advisory lock.
    async fn migrate(store: &DieselStore, pool: &Pool<Self>) -> Result<(), StoreError> {
        let conn = store.dedicated(pool).await?;
        store
            .run_blocking_migration(move || {
                use diesel::connection::SimpleConnection;
                let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                    AsyncPgConnection,
                >::from(conn);
                // This dedicated connection waits for another migrator longer than an operation may.
                conn.batch_execute(&format!(
                    "SET lock_timeout = '{MIGRATION_WAIT_SECS}s'; SET statement_timeout = '{MIGRATION_WAIT_SECS}s'"
                ))?;
                // Session-level lock: also released when this dedicated connection is dropped.
                conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
                let result = run_and_repair(&mut conn, || PORTABLE_MIGRATIONS);
                let _ = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
                result
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_save_announces_on_the_channel_the_listener_listens_on() {
        assert!(SAVE.contains(&format!("pg_notify('{SAVED_CHANNEL}', credential_key)")));
    }
}
