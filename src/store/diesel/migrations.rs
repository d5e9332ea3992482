//! The embedded migrations (one portable folder for PostgreSQL and SQLite, one for MySQL), the dispatch of
//! `migrate` to the backend, each of which serialises concurrent runs with a lock of its own, and the check of
//! what they applied: a table whose migration is recorded but which is gone (dropped by hand, a restore of part of
//! the database) is created again.
//!
//! Every migration must therefore be idempotent (`CREATE TABLE IF NOT EXISTS`): a repair applies it again over
//! the tables that are still there.

use diesel::backend::Backend;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel_migrations::MigrationHarness;

use super::DieselStore;
use super::backend::DieselBackend;
use super::failure::{Kind, classify_message};
use super::pool::with_pool;
use crate::error::{BoxError, StoreError};

/// The tables the migrations create, which every operation needs.
const TABLES: [&str; 2] = ["paynet_tokens", "paynet_lease"];

/// How long `migrate` waits for another instance's migration (and its statements may run), rather than the
/// operation timeout: a fleet starting at once queues behind one migrator.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) const MIGRATION_WAIT_SECS: u64 = 60;

/// Runs the pending migrations (`migrations` hands out the embedded set, which is not `Clone`), then checks that every table they create exists, and applies them again if one
/// is missing although its migration is recorded; fails naming a table that is still missing after that.
pub(super) fn run_and_repair<C, DB>(
    conn: &mut C,
    migrations: fn() -> diesel_migrations::EmbeddedMigrations,
) -> Result<(), BoxError>
where
    DB: Backend,
    C: MigrationHarness<DB> + SimpleConnection,
    diesel_migrations::EmbeddedMigrations: MigrationSource<DB>,
{
    conn.run_pending_migrations(migrations())?;
    let missing = missing_tables(conn)?;
    if missing.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        tables = %missing.join(", "),
        "token store tables are missing although their migrations are recorded as applied; creating them again"
    );
    let versions = MigrationSource::<DB>::migrations(&migrations())?
        .iter()
        .map(|migration| format!("'{}'", migration.name().version()))
        .collect::<Vec<_>>()
        .join(", ");
    conn.batch_execute(&format!(
        "DELETE FROM __diesel_schema_migrations WHERE version IN ({versions})"
    ))?;
    conn.run_pending_migrations(migrations())?;
    let still = missing_tables(conn)?;
    if !still.is_empty() {
        return Err(format!(
            "table {} is still missing after the migrations ran again; create it from migrations/ by hand",
            still.join(", ")
        )
        .into());
    }
    Ok(())
}

/// The store's tables that do not exist.
fn missing_tables(conn: &mut impl SimpleConnection) -> Result<Vec<&'static str>, BoxError> {
    let mut missing = Vec::new();
    for table in TABLES {
        match conn.batch_execute(&format!("SELECT 1 FROM {table} WHERE 1 = 0")) {
            Ok(()) => {}
            Err(error) if classify_message(&error.to_string()) == Kind::MissingTable => {
                missing.push(table);
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(missing)
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(super) const PORTABLE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/portable");
#[cfg(feature = "mysql")]
pub(super) const MYSQL_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql");

impl DieselStore {
    pub(super) async fn migrate_inner(&self) -> Result<(), StoreError> {
        with_pool!(self, |pool, B| B::migrate(self, pool).await)
    }

    /// Runs a migration on a blocking thread: diesel's migration harness is synchronous, and
    /// `AsyncConnectionWrapper` blocks on the runtime from there, which (unlike diesel-async's
    /// `AsyncMigrationHarness` and its `block_in_place`) works on a current-thread runtime too.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(super) async fn run_blocking_migration(
        &self,
        migrate: impl FnOnce() -> Result<(), crate::error::BoxError> + Send + 'static,
    ) -> Result<(), StoreError> {
        match tokio::task::spawn_blocking(migrate).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.migration_error(source)),
            Err(join) => Err(self.migration_error(format!("migration task failed: {join}").into())),
        }
    }
}
