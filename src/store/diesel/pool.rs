//! Pooling: one bb8 pool per store, of the backend the URL names, created empty so that a service starts while
//! its database is down; the connection set-up SQLite needs under concurrency; the connect timeout; and the last
//! connection error, kept to explain a timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::{ManagerConfig, PoolError};

use super::DieselStore;
use super::backend::Pool;
#[cfg(feature = "mysql")]
use super::mysql::Mysql;
#[cfg(feature = "postgres")]
use super::postgres::Postgres;
#[cfg(feature = "sqlite")]
use super::sqlite::Sqlite;
use crate::error::{BoxError, StoreError};
use crate::store::StoreOptions;

#[cfg(feature = "sqlite")]
pub(super) type SqliteConnection =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

/// The pool of the backend a store talks to.
pub(super) enum Pools {
    #[cfg(feature = "postgres")]
    Postgres(Pool<Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(Pool<Sqlite>),
    #[cfg(feature = "mysql")]
    Mysql(Pool<Mysql>),
}

/// Runs `$body` with `$pool` bound to the store's pool and `$backend` to its backend's type (a
/// [`DieselBackend`](super::backend::DieselBackend)). The body is compiled once per backend.
macro_rules! with_pool {
    ($store:expr, |$pool:ident, $backend:ident| $body:expr) => {
        match $store.inner.pools {
            #[cfg(feature = "postgres")]
            $crate::store::diesel::pool::Pools::Postgres(ref $pool) => {
                #[allow(unused)]
                type $backend = $crate::store::diesel::postgres::Postgres;
                $body
            }
            #[cfg(feature = "sqlite")]
            $crate::store::diesel::pool::Pools::Sqlite(ref $pool) => {
                #[allow(unused)]
                type $backend = $crate::store::diesel::sqlite::Sqlite;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::store::diesel::pool::Pools::Mysql(ref $pool) => {
                #[allow(unused)]
                type $backend = $crate::store::diesel::mysql::Mysql;
                $body
            }
        }
    };
}
pub(super) use with_pool;

/// Runs `$body` with `$conn` bound to a pooled connection of the store's backend and `$backend` (if named) to
/// that backend's type, for its statements and the operations whose steps differ. The body is compiled once per
/// backend, so it may use anything every connection type supports.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        $crate::store::diesel::pool::with_conn!($store, |$conn, _Backend| $body)
    };
    ($store:expr, |$conn:ident, $backend:ident| $body:expr) => {
        $crate::store::diesel::pool::with_pool!($store, |pool, $backend| {
            let mut pooled = $store.checkout(pool).await?;
            let $conn = &mut *pooled;
            $body
        })
    };
}
pub(super) use with_conn;

/// Keeps the pool's last connection error: bb8 reports only "timed out" to the caller and hands the cause to its
/// error sink, and "connection refused" is what an operator needs to read.
#[derive(Debug, Clone, Default)]
pub(super) struct LastError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastError {
    fn recent(&self, within: Duration) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, message)| message.clone())
    }
}

impl bb8::ErrorSink<PoolError> for LastError {
    fn sink(&self, error: PoolError) {
        if is_tls_failure(&error.to_string()) {
            // Not an outage that passes by itself: a certificate or TLS setting to fix.
            tracing::warn!(error = %error, "token store connection attempt failed");
        } else {
            tracing::debug!(error = %error, "token store connection attempt failed");
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), error.to_string()));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

/// A pool of at most `size` connections made by `manager`; with `keep_connections`, never closed.
pub(super) fn build_pool<M>(
    manager: M,
    size: u32,
    options: &StoreOptions,
    keep_connections: bool,
    sink: &LastError,
) -> bb8::Pool<M>
where
    M: bb8::ManageConnection<Error = PoolError>,
{
    let mut builder = bb8::Pool::builder()
        .max_size(size)
        .connection_timeout(options.connect_timeout)
        .error_sink(Box::new(sink.clone()));
    if keep_connections {
        // The only connection of an in-memory SQLite database *is* the database: never reap it.
        builder = builder.idle_timeout(None).max_lifetime(None);
    }
    // Unchecked: no connection is made now, so that a service can start while the database is down.
    builder.build_unchecked(manager)
}

/// Whether a connection error is a failed TLS handshake (the messages of `tls.rs`).
fn is_tls_failure(message: &str) -> bool {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    {
        message.starts_with(super::tls::HANDSHAKE_FAILED)
    }
    #[cfg(not(any(feature = "postgres", feature = "mysql")))]
    {
        let _ = message;
        false
    }
}

/// PostgreSQL connections made by `connector` (TLS as the URL asks) rather than by diesel-async's `establish`,
/// which knows no TLS, each with `session_timeout` as its lock and statement timeouts. The URL the manager
/// passes is the one `connector` was read from.
#[cfg(feature = "postgres")]
pub(super) fn postgres_config(
    connector: super::tls::PgConnector,
    session_timeout: Duration,
) -> ManagerConfig<diesel_async::AsyncPgConnection> {
    use diesel_async::SimpleAsyncConnection;
    use futures_util::FutureExt;

    let ms = session_timeout.as_millis().max(1);
    let setup: Arc<str> = format!("SET lock_timeout = {ms}; SET statement_timeout = {ms}").into();
    connecting_with(connector, move |connector| {
        let setup = Arc::clone(&setup);
        async move {
            let mut conn = connector.connect().await?;
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    })
}

/// MySQL/MariaDB connections made by `connector` (TLS as the URL asks, and the options diesel-async's
/// `establish` sets), each with `session_timeout` as its lock wait timeouts (row and metadata locks; whole
/// seconds, rounded up, as the server takes them) and statement timeout (MariaDB's `max_statement_time` in seconds, else MySQL's
/// `max_execution_time` in milliseconds, which covers only SELECTs; InnoDB's lock wait bounds the writes there).
#[cfg(feature = "mysql")]
pub(super) fn mysql_config(
    connector: super::tls::MysqlConnector,
    session_timeout: Duration,
) -> ManagerConfig<diesel_async::AsyncMysqlConnection> {
    use diesel_async::SimpleAsyncConnection;
    use futures_util::FutureExt;

    let ms = session_timeout.as_millis().max(1);
    // `lock_wait_timeout` bounds the wait for a table's metadata lock (a `LOCK TABLES` elsewhere), which InnoDB's
    // row lock timeout does not cover.
    let secs = ms.div_ceil(1000);
    let lock_wait = format!(
        "SET SESSION innodb_lock_wait_timeout = {secs}, SESSION lock_wait_timeout = {secs}"
    );
    let mariadb = format!(
        "SET SESSION max_statement_time = {}",
        session_timeout.as_secs_f64().max(0.001)
    );
    let mysql = format!("SET SESSION max_execution_time = {ms}");
    let setup: Arc<[String; 3]> = Arc::new([lock_wait, mariadb, mysql]);
    connecting_with(connector, move |connector| {
        let setup = Arc::clone(&setup);
        async move {
            let mut conn = connector.connect().await?;
            let [lock_wait, mariadb, mysql] = &*setup;
            conn.batch_execute(lock_wait)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            // MariaDB does not know MySQL's variable and MySQL not MariaDB's: the one the server refuses is not
            // its own.
            if conn.batch_execute(mariadb).await.is_err() {
                conn.batch_execute(mysql)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    })
}

/// A pool configuration whose connections `connect` makes with `connector`, shared by every connection.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn connecting_with<C, K>(
    connector: K,
    connect: impl for<'a> Fn(&'a K) -> futures_util::future::BoxFuture<'a, diesel::ConnectionResult<C>>
    + Send
    + Sync
    + 'static,
) -> ManagerConfig<C>
where
    C: diesel_async::AsyncConnection + 'static,
    K: Send + Sync + 'static,
{
    use futures_util::FutureExt;

    let connector = Arc::new(connector);
    let connect = Arc::new(connect);
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_url: &str| {
        let (connector, connect) = (Arc::clone(&connector), Arc::clone(&connect));
        async move { connect(&connector).await }.boxed()
    });
    config
}

/// SQLite connections with `session_timeout` as their busy timeout.
#[cfg(feature = "sqlite")]
pub(super) fn sqlite_config(session_timeout: Duration) -> ManagerConfig<SqliteConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use futures_util::FutureExt;

    let setup: Arc<str> = format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
        session_timeout.as_millis().clamp(1, i32::MAX as u128)
    )
    .into();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |path: &str| {
        let (path, setup) = (path.to_owned(), Arc::clone(&setup));
        async move {
            let mut conn = <SqliteConnection as AsyncConnection>::establish(&path).await?;
            // Without a busy timeout, concurrent writers fail at once with "database is locked"; with one, a lock
            // held past it ends the wait (the operation's bound). WAL lets readers proceed while one instance
            // writes.
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    config
}

impl DieselStore {
    /// A pooled connection, within the connect timeout.
    pub(super) async fn checkout<'a, M>(
        &self,
        pool: &'a bb8::Pool<M>,
    ) -> Result<bb8::PooledConnection<'a, M>, StoreError>
    where
        M: bb8::ManageConnection,
        M::Error: std::error::Error + Send + Sync + 'static,
    {
        pool.get().await.map_err(|error| match error {
            bb8::RunError::User(source) => self.connection_error(Box::new(source)),
            bb8::RunError::TimedOut => {
                self.connection_error(self.timeout_cause(self.inner.connect_timeout))
            }
        })
    }

    /// A connection of the pool's configuration outside the pool, within the connect timeout.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(super) async fn dedicated<M>(
        &self,
        pool: &bb8::Pool<M>,
    ) -> Result<M::Connection, StoreError>
    where
        M: bb8::ManageConnection,
        M::Error: std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.inner.connect_timeout, pool.dedicated_connection()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(self.connection_error(Box::new(source))),
            Err(_) => Err(self.unavailable(
                format!("no connection within {:?}", self.inner.connect_timeout).into(),
            )),
        }
    }

    /// The pool's last connection error, if it is recent.
    pub(super) fn recent_connect_error(&self) -> Option<String> {
        self.inner
            .last_connect_error
            .recent(self.inner.connect_timeout * 2)
    }

    /// Why no connection came within `timeout`: the pool's last connection error, if it is recent.
    pub(super) fn timeout_cause(&self, timeout: Duration) -> BoxError {
        match self.recent_connect_error() {
            // The handshake failure first: it is the cause, and what the operator has to fix.
            Some(last) if is_tls_failure(&last) => {
                format!("{last} (the last error; no connection within {timeout:?})").into()
            }
            Some(last) => format!("no connection within {timeout:?} (last error: {last})").into(),
            None => format!("no connection within {timeout:?}").into(),
        }
    }
}
