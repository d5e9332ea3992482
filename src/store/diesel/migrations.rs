//! The embedded migrations (one portable folder for PostgreSQL and SQLite, one for MySQL) and the dispatch of
//! `migrate` to the backend, each of which serialises concurrent runs with a lock of its own.

use super::DieselStore;
use super::pool::Pools;
use crate::error::StoreError;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(super) const PORTABLE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/portable");
#[cfg(feature = "mysql")]
pub(super) const MYSQL_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql");

impl DieselStore {
    pub(super) async fn migrate_inner(&self) -> Result<(), StoreError> {
        match self.inner.pools {
            #[cfg(feature = "postgres")]
            Pools::Postgres(ref pool) => super::postgres::migrate(self, pool).await,
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(ref pool) => super::sqlite::migrate(self, pool).await,
            #[cfg(feature = "mysql")]
            Pools::Mysql(ref pool) => super::mysql::migrate(self, pool).await,
        }
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
