//! MySQL and MariaDB as a [`DieselBackend`]: their statements (`?` placeholders, `UTC_TIMESTAMP(6)`), a save and a
//! lease in two steps each, and the migration under a named lock.
//!
//! There is no conditional upsert that says whether it wrote: diesel-async connects with CLIENT_FOUND_ROWS, so
//! `INSERT … ON DUPLICATE KEY UPDATE` reports 1 both for an insert and for a row left as it was. A conditional
//! UPDATE reports exactly whether it wrote, so each write is an UPDATE, then an INSERT when there was no row.
// Every time comes from the database's clock (UTC epoch milliseconds), so instances with skewed clocks agree on when
// a lease ends.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::AsyncMysqlConnection;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;

use super::backend::{DieselBackend, Pool};
use super::migrations::{MIGRATION_WAIT_SECS, MYSQL_MIGRATIONS, run_and_repair};
use super::pool::{Pools, mysql_config};
use super::rows::{NewRow, bind_row};
use super::tls::MysqlConnector;
use super::{Backend, DieselStore};
use crate::error::StoreError;
use crate::store::op;

/// Save, step 1: replace a row of an older generation (binds as [`bind_row!`], then the generation again).
const SAVE_UPDATE: &str = "\
UPDATE paynet_tokens SET token = ?, nonce = ?, generation = ?, obtained_at = ?, expires_at = ?, agent_id = ?, \
terminal_id = ?, user_id = ?, user_login = ?, written_by = ? WHERE credential_key = ? AND generation < ?";

/// Save, step 2 (when step 1 wrote nothing): insert; a duplicate key means a row exists.
const SAVE_INSERT: &str = "\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Lease, step 1: take over a lease that ran out or is this owner's own (see PostgreSQL's `LEASE`); 1 row matched
/// iff taken. Binds: ttl ms, owner, name, owner.
/// `TIMESTAMPDIFF` from the epoch in UTC avoids `UNIX_TIMESTAMP(NOW(3))`'s detour through the session time zone.
const LEASE_UPDATE: &str = "\
UPDATE paynet_lease SET \
lock_until = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + ?, \
locked_at = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000, \
locked_by = ? \
WHERE name = ? AND (lock_until <= TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 \
OR locked_by = ?)";

/// Lease, step 2 (when step 1 took nothing): create the lease; a duplicate key means someone holds it.
/// Binds: name, ttl ms, owner.
const LEASE_INSERT: &str = "\
INSERT INTO paynet_lease (name, lock_until, locked_at, locked_by) VALUES (?, \
TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + ?, \
TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000, ?)";

/// Serialises concurrent `migrate()` calls of a fleet that starts at once (named lock).
const MIGRATION_LOCK: &str = "paynet_auth_migrations";

/// MySQL or MariaDB, over mysql_async with rustls.
pub(super) struct Mysql;

impl DieselBackend for Mysql {
    const BACKEND: Backend = Backend::Mysql;

    type Connection = AsyncMysqlConnection;

    type Manager = AsyncDieselConnectionManager<AsyncMysqlConnection>;

    const RESEAL: &'static str = "UPDATE paynet_tokens SET token = ?, nonce = ? WHERE credential_key = ? AND generation = ? AND nonce = ?";

    const RELEASE: &'static str = "\
UPDATE paynet_lease SET lock_until = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 \
WHERE name = ? AND locked_by = ?";

    const LEASE_INFO: &'static str = "\
SELECT locked_by, locked_at, lock_until, \
CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED) AS now_ms \
FROM paynet_lease WHERE name = ?";

    fn manager(
        address: String,
        session_timeout: std::time::Duration,
    ) -> Result<Self::Manager, StoreError> {
        let config = mysql_config(MysqlConnector::from_url(&address)?, session_timeout);
        Ok(AsyncDieselConnectionManager::new_with_config(
            address, config,
        ))
    }

    fn pools(pool: Pool<Self>) -> Pools {
        Pools::Mysql(pool)
    }

    /// An UPDATE, then an INSERT when there was no row (see the module's documentation).
    async fn save(
        store: &DieselStore,
        conn: &mut AsyncMysqlConnection,
        row: &NewRow,
    ) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let error = store.query_error(op::SAVE);
        // Each statement is atomic on its own; the sequence needs no transaction (and so no gap locks, which deadlock
        // concurrent first inserts of one key under REPEATABLE READ).
        let update = || bind_row!(SAVE_UPDATE, row).bind::<BigInt, _>(row.generation);
        store.count_query();
        if update().execute(&mut *conn).await.map_err(&error)? > 0 {
            return Ok(true);
        }
        store.count_query();
        match bind_row!(SAVE_INSERT, row).execute(&mut *conn).await {
            Ok(_) => return Ok(true),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(other) => return Err(error(other)),
        }
        // A row appeared between the two statements. It may be older than ours (another instance saving an older
        // generation at the same moment), so ask once more.
        store.count_query();
        Ok(update().execute(&mut *conn).await.map_err(&error)? > 0)
    }

    /// An UPDATE, then an INSERT when there was no row.
    async fn try_lease(
        store: &DieselStore,
        conn: &mut AsyncMysqlConnection,
        key: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let error = store.query_error(op::TRY_LEASE);
        store.count_query();
        // The row exists after a key's first lease, so the UPDATE alone is the usual case.
        let taken = diesel::sql_query(LEASE_UPDATE)
            .bind::<BigInt, _>(ttl_ms)
            .bind::<Text, _>(owner)
            .bind::<Text, _>(key)
            .bind::<Text, _>(owner)
            .execute(&mut *conn)
            .await
            .map_err(&error)?;
        if taken > 0 {
            return Ok(true);
        }
        store.count_query();
        match diesel::sql_query(LEASE_INSERT)
            .bind::<Text, _>(key)
            .bind::<BigInt, _>(ttl_ms)
            .bind::<Text, _>(owner)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(true),
            // Held by someone (who may just have inserted it).
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(false),
            Err(other) => Err(error(other)),
        }
    }

    /// On a dedicated connection, holding the named lock.
    async fn migrate(store: &DieselStore, pool: &Pool<Self>) -> Result<(), StoreError> {
        let conn = store.dedicated(pool).await?;
        store
            .run_blocking_migration(move || {
                use diesel::RunQueryDsl;
                let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                    AsyncMysqlConnection,
                >::from(conn);
                // This dedicated connection waits for another migrator longer than an operation may: no statement
                // timeout (MariaDB's or MySQL's, whichever the server knows), GET_LOCK bounds the wait.
                use diesel::connection::SimpleConnection;
                if conn
                    .batch_execute("SET SESSION max_statement_time = 0")
                    .is_err()
                {
                    conn.batch_execute("SET SESSION max_execution_time = 0")?;
                }
                conn.batch_execute(&format!(
                    "SET SESSION innodb_lock_wait_timeout = {MIGRATION_WAIT_SECS}, \
                     SESSION lock_wait_timeout = {MIGRATION_WAIT_SECS}"
                ))?;
                let locked: Option<i64> = diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(
                    &format!("GET_LOCK('{MIGRATION_LOCK}', {MIGRATION_WAIT_SECS})"),
                ))
                .get_result(&mut conn)?;
                if locked != Some(1) {
                    return Err(format!(
                        "another instance held the migration lock for {MIGRATION_WAIT_SECS} s"
                    )
                    .into());
                }
                let result = run_and_repair(&mut conn, || MYSQL_MIGRATIONS);
                let _ = diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(&format!(
                    "RELEASE_LOCK('{MIGRATION_LOCK}')"
                )))
                .get_result::<Option<i64>>(&mut conn);
                result
            })
            .await
    }
}
