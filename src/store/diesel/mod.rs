//! The diesel-async token store over PostgreSQL, SQLite or MySQL/MariaDB, chosen at run time from the URL.
// With `diesel-store` but no backend feature there is nothing to connect to, and the query code is unused.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(unused)
)]

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::cipher::{KeyRing, Opened};
use super::{LeaseInfo, StoreOptions, TokenStore};
use crate::error::{BoxError, StoreError};
use crate::record::{Generation, LoginMeta, TokenRecord};

#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::AsyncPgConnection;

#[cfg(feature = "sqlite")]
type SqliteConnection =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
const PORTABLE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/portable");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql");

/// Longest credential key and lease owner the tables hold (`VARCHAR(255)`). Checked up front so that every backend
/// refuses the same keys, rather than PostgreSQL failing, SQLite accepting and a non-strict MySQL truncating (which
/// would let two keys share a row).
const MAX_KEY_BYTES: usize = 255;

/// The `token` column of a cleared row. No login hands out an empty token (the sources refuse one), and with
/// encryption a real row holds base64 of at least the 16-byte tag.
const TOMBSTONE: &str = "";

/// Longest lease the store records: keeps `now + ttl` far from overflowing a `BIGINT` on every backend.
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Which database a [`DieselStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL, over tokio-postgres (no libpq).
    Postgres,
    /// SQLite, bundled, through a blocking connection run on tokio's blocking threads.
    Sqlite,
    /// MySQL or MariaDB, over mysql_async.
    Mysql,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
            Backend::Mysql => "MySQL",
        })
    }
}

/// A [`TokenStore`] in a PostgreSQL, SQLite or MySQL/MariaDB database, shared by every instance of a service.
///
/// The backend is chosen from the URL:
///
/// | URL | backend | cargo feature |
/// |-----|---------|---------------|
/// | `postgres://user:pass@host:5432/db`, `postgresql://…` | PostgreSQL | `postgres` |
/// | `sqlite://path/to/file.db`, `sqlite:///absolute/path.db`, `sqlite:path.db` | SQLite file | `sqlite` |
/// | `sqlite::memory:` | SQLite in memory (one connection; for tests) | `sqlite` |
/// | `mysql://user:pass@host:3306/db`, `mariadb://…` | MySQL / MariaDB | `mysql` |
///
/// Connections come from a bb8 pool that is created empty: [`connect`](Self::connect) succeeds while the database
/// is down, so that a service can start and serve from memory (degraded mode). Each call then waits at most
/// [`StoreOptions::connect_timeout`] for a connection and fails with [`StoreError::Unavailable`]; once the
/// database is back, calls succeed again without a restart. PostgreSQL connections are made without TLS.
///
/// With [`StoreOptions::encryption_key`], tokens are stored encrypted with AES-256-GCM, the credential key being
/// the associated data, so that a row copied under another key does not decrypt. Rows that do not decrypt are
/// reported as absent (and logged at WARN), which makes the next request log in again.
///
/// The lease runs on the database's clock, not the instances', so instances with skewed clocks agree on when a
/// lease ends.
///
/// Cloning is cheap: clones share the pool and the query counter.
///
/// ```no_run
/// # async fn example() -> Result<(), paynet_auth::StoreError> {
/// use std::time::Duration;
/// use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
///
/// let options = StoreOptions {
///     encryption_key: Some(std::env::var("PAYNET_TOKEN_KEY").unwrap().into()),
///     ..StoreOptions::default()
/// };
/// let store = DieselStore::connect("postgres://paynet:secret@db.internal/paynet", options).await?;
/// store.migrate().await?;
/// assert_eq!(store.describe(), "postgres://paynet:****@db.internal/paynet");
///
/// if store.try_lease("gateway-1", "host-a:4242:x7f3", Duration::from_secs(30)).await? {
///     // … log in, then save the token with the next generation …
///     store.release("gateway-1", "host-a:4242:x7f3").await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DieselStore {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    describe: String,
    cipher: Option<KeyRing>,
    queries: AtomicU64,
    connect_timeout: Duration,
    last_connect_error: LastError,
}

enum Pools {
    #[cfg(feature = "postgres")]
    Postgres(bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(bb8::Pool<AsyncDieselConnectionManager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(bb8::Pool<AsyncDieselConnectionManager<AsyncMysqlConnection>>),
}

/// Where a URL points, before any feature is consulted.
enum Target {
    Postgres(String),
    Sqlite { path: String },
    Mysql(String),
}

impl Target {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(unsupported_scheme(url));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Target::Postgres(url.to_owned())),
            // mysql_async only knows `mysql://`; MariaDB users tend to write what they run.
            "mysql" => Ok(Target::Mysql(url.to_owned())),
            "mariadb" => Ok(Target::Mysql(format!("mysql:{rest}"))),
            "sqlite" => {
                // `sqlite::memory:` and `sqlite:path` are sqlx's spellings, `sqlite://path` the URL-like one; a
                // `file:` URI after the scheme reaches SQLite as it is (diesel opens with SQLITE_OPEN_URI).
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(StoreError::Config(
                        "SQLite store URL has no path (use sqlite://path/to/file.db or sqlite::memory:)".into(),
                    ));
                }
                Ok(Target::Sqlite {
                    path: path.to_owned(),
                })
            }
            _ => Err(unsupported_scheme(url)),
        }
    }
}

fn unsupported_scheme(url: &str) -> StoreError {
    // Only the scheme: the rest of the URL may hold a password.
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    StoreError::Config(format!(
        "unsupported token store URL scheme `{scheme}` (expected memory:, sqlite://, postgres://, postgresql://, \
         mysql:// or mariadb://)"
    ))
}

#[cfg(any(
    not(feature = "postgres"),
    not(feature = "sqlite"),
    not(feature = "mysql")
))]
fn not_compiled(backend: Backend, feature: &str) -> StoreError {
    StoreError::Config(format!(
        "the token store URL is for {backend}, but paynet-auth was built without its `{feature}` feature"
    ))
}

/// The URL with its password (in the user info or a `password` query parameter) replaced by `****`.
fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not reachable for the schemes `connect` accepts, but never echo what might be a password.
        return url.split_once(':').map_or_else(
            || "<token store>".to_owned(),
            |(scheme, _)| format!("{scheme}:****"),
        );
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password at all.
        let _ = parsed.set_password(Some("****"));
    }
    let secret_param = |name: &str| name.to_ascii_lowercase().contains("pass");
    if parsed.query_pairs().any(|(name, _)| secret_param(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret_param(&name) {
                    "****".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Keeps the pool's last connection error: bb8 reports only "timed out" to the caller and hands the cause to its
/// error sink, and "connection refused" is what an operator needs to read.
#[derive(Debug, Clone, Default)]
struct LastError(Arc<Mutex<Option<(Instant, String)>>>);

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
        tracing::debug!(error = %error, "token store connection attempt failed");
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), error.to_string()));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

fn build_pool<C>(
    url: String,
    config: ManagerConfig<C>,
    size: u32,
    options: &StoreOptions,
    keep_connections: bool,
    sink: &LastError,
) -> bb8::Pool<AsyncDieselConnectionManager<C>>
where
    C: diesel_async::AsyncConnection + 'static,
    AsyncDieselConnectionManager<C>: bb8::ManageConnection,
    LastError: bb8::ErrorSink<<AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error>,
{
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
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

#[cfg(feature = "sqlite")]
fn sqlite_config() -> ManagerConfig<SqliteConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use futures_util::FutureExt;

    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|path: &str| {
        let path = path.to_owned();
        async move {
            let mut conn = <SqliteConnection as AsyncConnection>::establish(&path).await?;
            // Without a busy timeout, concurrent writers fail at once with "database is locked"; WAL lets readers
            // proceed while one instance writes.
            conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    config
}

/// A token as written to `paynet_tokens`.
struct NewRow {
    credential_key: String,
    token: Zeroizing<String>,
    nonce: Option<String>,
    generation: i64,
    obtained_at: i64,
    expires_at: Option<i64>,
    agent_id: Option<String>,
    terminal_id: Option<String>,
    user_id: Option<String>,
    user_login: Option<String>,
    written_by: String,
}

/// A token as read from `paynet_tokens`.
#[derive(diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = super::schema::paynet_tokens)]
struct StoredRow {
    token: String,
    nonce: Option<String>,
    generation: i64,
    obtained_at: i64,
    expires_at: Option<i64>,
    agent_id: Option<String>,
    terminal_id: Option<String>,
    user_id: Option<String>,
    user_login: Option<String>,
    written_by: String,
}

/// Binds a [`NewRow`] to the `?`/`$n` placeholders of `$sql`, in the order token, nonce, generation, obtained_at,
/// expires_at, agent_id, terminal_id, user_id, user_login, written_by, credential_key.
macro_rules! bind_row {
    ($sql:expr, $row:expr) => {
        diesel::sql_query($sql)
            .bind::<Text, _>(&*$row.token)
            .bind::<Nullable<Text>, _>($row.nonce.as_deref())
            .bind::<BigInt, _>($row.generation)
            .bind::<BigInt, _>($row.obtained_at)
            .bind::<Nullable<BigInt>, _>($row.expires_at)
            .bind::<Nullable<Text>, _>($row.agent_id.as_deref())
            .bind::<Nullable<Text>, _>($row.terminal_id.as_deref())
            .bind::<Nullable<Text>, _>($row.user_id.as_deref())
            .bind::<Nullable<Text>, _>($row.user_login.as_deref())
            .bind::<Text, _>(&$row.written_by)
            .bind::<Text, _>(&$row.credential_key)
    };
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the store uses. The body is
/// compiled once per backend, so it may use anything every connection type supports.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match $store.inner.pools {
            #[cfg(feature = "postgres")]
            Pools::Postgres(ref pool) => {
                let mut pooled = $store.checkout(pool).await?;
                let $conn = &mut *pooled;
                $body
            }
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(ref pool) => {
                let mut pooled = $store.checkout(pool).await?;
                let $conn = &mut *pooled;
                $body
            }
            #[cfg(feature = "mysql")]
            Pools::Mysql(ref pool) => {
                let mut pooled = $store.checkout(pool).await?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

// The SQL of each operation, per backend. Every time comes from the database's clock (UTC epoch milliseconds), so
// instances with skewed clocks agree on when a lease ends.

/// Insert, or replace a row of an older generation; 1 row affected iff written.
#[cfg(feature = "postgres")]
const PG_SAVE: &str = "\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
ON CONFLICT (credential_key) DO UPDATE SET token = excluded.token, nonce = excluded.nonce, \
generation = excluded.generation, obtained_at = excluded.obtained_at, expires_at = excluded.expires_at, \
agent_id = excluded.agent_id, terminal_id = excluded.terminal_id, user_id = excluded.user_id, \
user_login = excluded.user_login, written_by = excluded.written_by \
WHERE paynet_tokens.generation < excluded.generation";

/// [`PG_SAVE`] with SQLite's placeholders.
#[cfg(feature = "sqlite")]
const SQLITE_SAVE: &str = "\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
ON CONFLICT (credential_key) DO UPDATE SET token = excluded.token, nonce = excluded.nonce, \
generation = excluded.generation, obtained_at = excluded.obtained_at, expires_at = excluded.expires_at, \
agent_id = excluded.agent_id, terminal_id = excluded.terminal_id, user_id = excluded.user_id, \
user_login = excluded.user_login, written_by = excluded.written_by \
WHERE paynet_tokens.generation < excluded.generation";

/// MySQL, step 1: replace a row of an older generation (binds as [`bind_row!`], then the generation again).
/// diesel-async connects with CLIENT_FOUND_ROWS, so `INSERT … ON DUPLICATE KEY UPDATE` reports 1 both for an
/// insert and for a row left as it was; a plain conditional UPDATE reports exactly whether it wrote.
#[cfg(feature = "mysql")]
const MYSQL_SAVE_UPDATE: &str = "\
UPDATE paynet_tokens SET token = ?, nonce = ?, generation = ?, obtained_at = ?, expires_at = ?, agent_id = ?, \
terminal_id = ?, user_id = ?, user_login = ?, written_by = ? WHERE credential_key = ? AND generation < ?";

/// MySQL, step 2 (when step 1 wrote nothing): insert; a duplicate key means a row exists.
#[cfg(feature = "mysql")]
const MYSQL_SAVE_INSERT: &str = "\
INSERT INTO paynet_tokens (token, nonce, generation, obtained_at, expires_at, agent_id, terminal_id, user_id, \
user_login, written_by, credential_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Insert the lease, or take it over if it ran out or is this owner's own; 1 row affected iff taken. Binds: name,
/// ttl ms, owner. An owner may re-take its own lease: a process runs one refresh per key at a time, so a lease it
/// still holds is one it failed to release (the database went away mid-refresh), and waiting for it to expire
/// would stall every caller of that process for the whole TTL.
const PG_LEASE: &str = "\
INSERT INTO paynet_lease AS lease (name, lock_until, locked_at, locked_by) \
SELECT $1, db.now_ms + $2, db.now_ms, $3 \
FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms) AS db \
ON CONFLICT (name) DO UPDATE SET lock_until = excluded.lock_until, locked_at = excluded.locked_at, \
locked_by = excluded.locked_by \
WHERE lease.lock_until <= excluded.locked_at OR lease.locked_by = excluded.locked_by";

/// [`PG_LEASE`] for SQLite (`WHERE true` resolves the parsing ambiguity of `INSERT … SELECT … ON CONFLICT`).
const SQLITE_LEASE: &str = "\
INSERT INTO paynet_lease AS lease (name, lock_until, locked_at, locked_by) \
SELECT ?, db.now_ms + ?, db.now_ms, ? \
FROM (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms) AS db WHERE true \
ON CONFLICT (name) DO UPDATE SET lock_until = excluded.lock_until, locked_at = excluded.locked_at, \
locked_by = excluded.locked_by \
WHERE lease.lock_until <= excluded.locked_at OR lease.locked_by = excluded.locked_by";

/// MySQL, step 1: take over a lease that ran out or is this owner's own; 1 row matched iff taken. Binds: ttl ms,
/// owner, name, owner.
/// `TIMESTAMPDIFF` from the epoch in UTC avoids `UNIX_TIMESTAMP(NOW(3))`'s detour through the session time zone.
const MYSQL_LEASE_UPDATE: &str = "\
UPDATE paynet_lease SET \
lock_until = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + ?, \
locked_at = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000, \
locked_by = ? \
WHERE name = ? AND (lock_until <= TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 \
OR locked_by = ?)";

/// MySQL, step 2 (when step 1 took nothing): create the lease; a duplicate key means someone holds it.
/// Binds: name, ttl ms, owner.
const MYSQL_LEASE_INSERT: &str = "\
INSERT INTO paynet_lease (name, lock_until, locked_at, locked_by) VALUES (?, \
TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + ?, \
TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000, ?)";

/// Seal one exact row (same generation, same nonce) again under the current key, keeping its generation.
/// Binds: token, nonce, credential key, generation, old nonce.
const PG_RESEAL: &str = "UPDATE paynet_tokens SET token = $1, nonce = $2 \
WHERE credential_key = $3 AND generation = $4 AND nonce = $5";
/// [`PG_RESEAL`] with `?` placeholders (SQLite, MySQL).
const RESEAL: &str = "UPDATE paynet_tokens SET token = ?, nonce = ? WHERE credential_key = ? AND generation = ? AND nonce = ?";

/// End the lease now if `owner` holds it. Binds: name, owner.
const PG_RELEASE: &str = "\
UPDATE paynet_lease SET lock_until = (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
WHERE name = $1 AND locked_by = $2";
const SQLITE_RELEASE: &str = "\
UPDATE paynet_lease SET lock_until = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) \
WHERE name = ? AND locked_by = ?";
const MYSQL_RELEASE: &str = "\
UPDATE paynet_lease SET lock_until = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 \
WHERE name = ? AND locked_by = ?";

/// The lease row of a name and the database's clock. Binds: name.
const PG_LEASE_INFO: &str = "\
SELECT locked_by, locked_at, lock_until, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms \
FROM paynet_lease WHERE name = $1";
const SQLITE_LEASE_INFO: &str = "\
SELECT locked_by, locked_at, lock_until, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms \
FROM paynet_lease WHERE name = ?";
const MYSQL_LEASE_INFO: &str = "\
SELECT locked_by, locked_at, lock_until, \
CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED) AS now_ms \
FROM paynet_lease WHERE name = ?";

/// A row of [`PG_LEASE_INFO`] and its siblings.
#[derive(diesel::QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = Text)]
    locked_by: String,
    #[diesel(sql_type = BigInt)]
    locked_at: i64,
    #[diesel(sql_type = BigInt)]
    lock_until: i64,
    #[diesel(sql_type = BigInt)]
    now_ms: i64,
}

/// Serialises concurrent `migrate()` calls of a fleet that starts at once (PostgreSQL advisory lock key,
/// MySQL named lock).
#[cfg(feature = "postgres")]
const PG_MIGRATION_LOCK: i64 = 0x7061_796e_6574_6d67; // "paynetmg"
#[cfg(feature = "mysql")]
const MYSQL_MIGRATION_LOCK: &str = "paynet_auth_migrations";

impl DieselStore {
    /// Creates the store for `url` (see the table above). No connection is made yet: this fails only for a wrong
    /// URL or wrong options ([`StoreError::Config`]), never because the database is down; the first operation
    /// (typically [`migrate`](Self::migrate)) reports that.
    ///
    /// Without an encryption key, logs once at WARN that tokens are stored in plaintext.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        if options.pool_size == 0 {
            return Err(StoreError::Config(
                "token store pool_size must be at least 1".into(),
            ));
        }
        if options.connect_timeout.is_zero() {
            return Err(StoreError::Config(
                "token store connect_timeout must be more than zero".into(),
            ));
        }
        let cipher = match &options.encryption_key {
            Some(current) => Some(KeyRing::from_base64(
                current,
                &options.previous_encryption_keys,
            )?),
            None if !options.previous_encryption_keys.is_empty() => {
                return Err(StoreError::Config(
                    "previous_encryption_keys are set but encryption_key is not: rows under a previous key \
                     would be read and new ones written in plaintext"
                        .into(),
                ));
            }
            None => None,
        };
        let describe = redact(url);
        let sink = LastError::default();

        let pools = match target {
            Target::Postgres(url) => {
                #[cfg(feature = "postgres")]
                {
                    Pools::Postgres(build_pool(
                        url,
                        ManagerConfig::default(),
                        options.pool_size,
                        &options,
                        false,
                        &sink,
                    ))
                }
                #[cfg(not(feature = "postgres"))]
                {
                    let _ = url;
                    return Err(not_compiled(Backend::Postgres, "postgres"));
                }
            }
            Target::Sqlite { path } => {
                #[cfg(feature = "sqlite")]
                {
                    // Every connection to `:memory:` is a database of its own: one connection, kept forever.
                    let memory = path == ":memory:";
                    let size = if memory { 1 } else { options.pool_size };
                    Pools::Sqlite(build_pool(
                        path,
                        sqlite_config(),
                        size,
                        &options,
                        memory,
                        &sink,
                    ))
                }
                #[cfg(not(feature = "sqlite"))]
                {
                    let _ = path;
                    return Err(not_compiled(Backend::Sqlite, "sqlite"));
                }
            }
            Target::Mysql(url) => {
                #[cfg(feature = "mysql")]
                {
                    Pools::Mysql(build_pool(
                        url,
                        ManagerConfig::default(),
                        options.pool_size,
                        &options,
                        false,
                        &sink,
                    ))
                }
                #[cfg(not(feature = "mysql"))]
                {
                    let _ = url;
                    return Err(not_compiled(Backend::Mysql, "mysql"));
                }
            }
        };

        if cipher.is_none() {
            tracing::warn!(
                store = %describe,
                "no token store encryption key configured: tokens are stored in plaintext"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pools,
                describe,
                cipher,
                queries: AtomicU64::new(0),
                connect_timeout: options.connect_timeout,
                last_connect_error: sink,
            }),
        })
    }

    /// Creates the tables if they are missing (embedded diesel migrations; idempotent). Safe to call from every
    /// instance at once: concurrent calls are serialised by a database lock (PostgreSQL advisory lock, MySQL
    /// `GET_LOCK`, SQLite exclusive transaction). Works on any tokio runtime flavour.
    ///
    /// The migrations are recorded in diesel's `__diesel_schema_migrations` table, which an application using diesel
    /// migrations of its own on the same database shares.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let this = self.clone();
        self.spawned("migrate", async move { this.migrate_inner().await })
            .await
    }

    async fn migrate_inner(&self) -> Result<(), StoreError> {
        match self.inner.pools {
            #[cfg(feature = "postgres")]
            Pools::Postgres(ref pool) => {
                let conn = self.dedicated(pool).await?;
                self.run_blocking_migration(move || {
                    use diesel::connection::SimpleConnection;
                    use diesel_migrations::MigrationHarness;
                    let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                        AsyncPgConnection,
                    >::from(conn);
                    // Session-level lock: also released when this dedicated connection is dropped.
                    conn.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))?;
                    let result = conn.run_pending_migrations(PORTABLE_MIGRATIONS).map(drop);
                    let _ = conn
                        .batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"));
                    result
                })
                .await
            }
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(ref pool) => {
                // On a pooled connection, not a new one: for `sqlite::memory:` a new connection would be another,
                // empty database.
                let mut pooled = self.checkout(pool).await?;
                let outcome = pooled
                    .spawn_blocking(|conn| {
                        use diesel_migrations::MigrationHarness;
                        // EXCLUSIVE waits (busy_timeout) for another process migrating the same file; diesel runs
                        // each migration in a savepoint inside it.
                        Ok(conn.exclusive_transaction(|conn| -> Result<(), BoxError> {
                            conn.run_pending_migrations(PORTABLE_MIGRATIONS)?;
                            Ok(())
                        }))
                    })
                    .await;
                match outcome {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(source)) => Err(self.migration_error(source)),
                    Err(source) => Err(self.migration_error(source.into())),
                }
            }
            #[cfg(feature = "mysql")]
            Pools::Mysql(ref pool) => {
                let conn = self.dedicated(pool).await?;
                self.run_blocking_migration(move || {
                    use diesel::RunQueryDsl;
                    use diesel_migrations::MigrationHarness;
                    let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                        AsyncMysqlConnection,
                    >::from(conn);
                    let locked: Option<i64> = diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(
                        &format!("GET_LOCK('{MYSQL_MIGRATION_LOCK}', 60)"),
                    ))
                    .get_result(&mut conn)?;
                    if locked != Some(1) {
                        return Err("another instance held the migration lock for 60 s".into());
                    }
                    let result = conn.run_pending_migrations(MYSQL_MIGRATIONS).map(drop);
                    let _ = diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(&format!(
                        "RELEASE_LOCK('{MYSQL_MIGRATION_LOCK}')"
                    )))
                    .get_result::<Option<i64>>(&mut conn);
                    result
                })
                .await
            }
        }
    }

    /// Runs a migration on a blocking thread: diesel's migration harness is synchronous, and
    /// `AsyncConnectionWrapper` blocks on the runtime from there, which (unlike diesel-async's
    /// `AsyncMigrationHarness` and its `block_in_place`) works on a current-thread runtime too.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    async fn run_blocking_migration(
        &self,
        migrate: impl FnOnce() -> Result<(), BoxError> + Send + 'static,
    ) -> Result<(), StoreError> {
        match tokio::task::spawn_blocking(migrate).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.migration_error(source)),
            Err(join) => Err(self.migration_error(format!("migration task failed: {join}").into())),
        }
    }

    fn migration_error(&self, source: BoxError) -> StoreError {
        StoreError::Migration {
            store: self.describe(),
            source,
        }
    }

    /// How many SQL statements this store has sent for `load`, `save`, `try_lease`, `release` and `clear` (shared
    /// by clones). Not counted: the pool's health check of a connection before each use, and `migrate`.
    ///
    /// Tests use it to prove that serving requests from a cached token costs no query.
    pub fn query_count(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// The database this store talks to.
    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "mysql")]
            Pools::Mysql(_) => Backend::Mysql,
        }
    }

    fn count_query(&self) {
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// A pooled connection, within the connect timeout.
    async fn checkout<'a, M>(
        &self,
        pool: &'a bb8::Pool<M>,
    ) -> Result<bb8::PooledConnection<'a, M>, StoreError>
    where
        M: bb8::ManageConnection,
        M::Error: std::error::Error + Send + Sync + 'static,
    {
        pool.get().await.map_err(|error| match error {
            bb8::RunError::User(source) => self.unavailable(Box::new(source)),
            bb8::RunError::TimedOut => self.unavailable(self.timeout_cause()),
        })
    }

    /// A connection of the pool's configuration outside the pool, within the connect timeout.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    async fn dedicated<M>(&self, pool: &bb8::Pool<M>) -> Result<M::Connection, StoreError>
    where
        M: bb8::ManageConnection,
        M::Error: std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.inner.connect_timeout, pool.dedicated_connection()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(self.unavailable(Box::new(source))),
            Err(_) => Err(self.unavailable(
                format!("no connection within {:?}", self.inner.connect_timeout).into(),
            )),
        }
    }

    fn timeout_cause(&self) -> BoxError {
        let timeout = self.inner.connect_timeout;
        match self.inner.last_connect_error.recent(timeout * 2) {
            Some(last) => format!("no connection within {timeout:?} (last error: {last})").into(),
            None => format!("no connection within {timeout:?}").into(),
        }
    }

    fn unavailable(&self, source: BoxError) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            source,
        }
    }

    fn query_error(
        &self,
        operation: &'static str,
    ) -> impl Fn(diesel::result::Error) -> StoreError + '_ {
        move |source| {
            let store = self.describe();
            let source: BoxError = Box::new(source);
            match classify(&*source) {
                Kind::Conflict => StoreError::Conflict {
                    store,
                    operation,
                    source,
                },
                Kind::Unavailable => StoreError::Unavailable { store, source },
                Kind::Query => StoreError::Query {
                    store,
                    operation,
                    source,
                },
            }
        }
    }

    /// Runs an operation as a task of its own, so that a caller that gives up (a timeout, a dropped request) does
    /// not cancel it halfway: that would leave a lease taken without anyone knowing, and would drop a SQLite
    /// query's blocking task, which diesel-async then waits for with `block_in_place` (a panic on a current-thread
    /// runtime). A panic inside the task comes back as an error, not as a panic.
    async fn spawned<T: Send + 'static>(
        &self,
        operation: &'static str,
        task: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        match tokio::spawn(task).await {
            Ok(result) => result,
            Err(join) => Err(StoreError::Query {
                store: self.describe(),
                operation,
                source: format!("store task failed: {join}").into(),
            }),
        }
    }

    async fn read_row(&self, key: &str) -> Result<Option<StoredRow>, StoreError> {
        use super::schema::paynet_tokens::dsl::{credential_key, paynet_tokens};
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
        use diesel_async::RunQueryDsl;

        Ok(with_conn!(self, |conn| {
            self.count_query();
            paynet_tokens
                .filter(credential_key.eq(key))
                .select(StoredRow::as_select())
                .get_result::<StoredRow>(conn)
                .await
                .optional()
                .map_err(self.query_error("load"))?
        }))
    }

    async fn load_inner(&self, key: String) -> Result<Option<TokenRecord>, StoreError> {
        let Some(row) = self.read_row(&key).await? else {
            return Ok(None);
        };
        let (record, reseal) = self.decode(&key, row);
        if let (Some(record), Some(old_nonce)) = (&record, reseal) {
            match self.reseal(&key, record, &old_nonce).await {
                Ok(true) => tracing::info!(
                    store = %self.describe(),
                    credential_key = %key,
                    generation = record.generation.0,
                    "stored token was encrypted with a previous key; encrypted it again with the current one"
                ),
                // A newer token, or the same one re-sealed by another instance, replaced the row meanwhile.
                Ok(false) => {}
                // The token read is still good; the next read tries again.
                Err(error) => tracing::warn!(
                    store = %self.describe(),
                    credential_key = %key,
                    error = %error,
                    "could not encrypt the stored token again with the current key"
                ),
            }
        }
        Ok(record)
    }

    /// Turns a row into a record, or `None` (with a warning) for a row that cannot be used. The second value is
    /// the row's nonce when it opened only under a previous key, so that it is sealed again under the current one.
    fn decode(&self, key: &str, row: StoredRow) -> (Option<TokenRecord>, Option<String>) {
        if row.token == TOMBSTONE {
            return (None, None);
        }
        let store = self.describe();
        // Why a row is not used. Never the token, the nonce or a key.
        let unusable = |reason: &str| {
            tracing::warn!(
                store = %store,
                credential_key = %key,
                generation = row.generation,
                reason,
                "stored token is not used; treating it as absent, the next refresh replaces it"
            );
        };
        let (token, reseal) = match (&row.nonce, &self.inner.cipher) {
            (Some(nonce), Some(ring)) => match ring.open(key, &row.token, nonce) {
                Opened::Current(token) => (token, None),
                Opened::Previous(token) => (token, Some(nonce.clone())),
                Opened::Unauthenticated => {
                    unusable(
                        "it does not decrypt with the encryption key or a previous one (another key, a tampered \
                         row, or a row copied from another credential key)",
                    );
                    return (None, None);
                }
            },
            (Some(_), None) => {
                unusable("it is encrypted but no encryption key is configured");
                return (None, None);
            }
            // With a key configured, a row without a nonce has no authentication at all: anyone able to write the
            // table could plant a token this way, so it is never trusted.
            (None, Some(_)) => {
                unusable(
                    "it is in plaintext (no nonce) although an encryption key is configured, so nothing \
                     authenticates it",
                );
                return (None, None);
            }
            (None, None) => (SecretString::from(row.token), None),
        };
        let Ok(generation) = u64::try_from(row.generation) else {
            tracing::warn!(
                store = %store,
                credential_key = %key,
                generation = row.generation,
                "stored token has a negative generation; treating it as absent"
            );
            return (None, None);
        };
        let record = TokenRecord {
            token,
            generation: Generation(generation),
            obtained_at_ms: row.obtained_at,
            expires_at_ms: row.expires_at,
            meta: LoginMeta {
                agent_id: row.agent_id,
                terminal_id: row.terminal_id,
                user_id: row.user_id,
                user_login: row.user_login,
            },
            written_by: row.written_by,
        };
        (Some(record), reseal)
    }

    /// Seals a row read under a previous key again under the current one. Only that exact row is replaced (same
    /// generation, same nonce), and its generation is kept: a re-write never competes with a login, and a
    /// concurrent save of a newer token is never overwritten by it.
    async fn reseal(
        &self,
        key: &str,
        record: &TokenRecord,
        old_nonce: &str,
    ) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let mut row = self.encode(key, record)?;
        let Some(nonce) = row.nonce.take() else {
            return Ok(false);
        };
        let sql = match self.backend() {
            Backend::Postgres => PG_RESEAL,
            Backend::Sqlite | Backend::Mysql => RESEAL,
        };
        let written = with_conn!(self, |conn| {
            self.count_query();
            diesel::sql_query(sql)
                .bind::<Text, _>(&*row.token)
                .bind::<Text, _>(&nonce)
                .bind::<Text, _>(key)
                .bind::<BigInt, _>(row.generation)
                .bind::<Text, _>(old_nonce)
                .execute(conn)
                .await
                .map_err(self.query_error("re-encrypt"))?
        });
        Ok(written > 0)
    }

    fn encode(&self, key: &str, record: &TokenRecord) -> Result<NewRow, StoreError> {
        let generation = i64::try_from(record.generation.0).map_err(|_| StoreError::Query {
            store: self.describe(),
            operation: "save",
            source: format!("generation {} does not fit a BIGINT", record.generation).into(),
        })?;
        let plaintext = record.token.expose_secret();
        let (token, nonce) = match &self.inner.cipher {
            Some(cipher) => {
                let sealed = cipher.seal(key, plaintext).map_err(|_| StoreError::Query {
                    store: self.describe(),
                    operation: "save",
                    source: "token encryption failed".into(),
                })?;
                (sealed.ciphertext, Some(sealed.nonce))
            }
            None => (plaintext.to_owned(), None),
        };
        Ok(NewRow {
            credential_key: key.to_owned(),
            token: Zeroizing::new(token),
            nonce,
            generation,
            obtained_at: record.obtained_at_ms,
            expires_at: record.expires_at_ms,
            agent_id: record.meta.agent_id.clone(),
            terminal_id: record.meta.terminal_id.clone(),
            user_id: record.meta.user_id.clone(),
            user_login: record.meta.user_login.clone(),
            written_by: record.written_by.clone(),
        })
    }

    async fn save_inner(&self, row: NewRow) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let error = self.query_error("save");
        match self.inner.pools {
            #[cfg(feature = "postgres")]
            Pools::Postgres(ref pool) => {
                let mut conn = self.checkout(pool).await?;
                self.count_query();
                let written = bind_row!(PG_SAVE, row)
                    .execute(&mut *conn)
                    .await
                    .map_err(error)?;
                Ok(written > 0)
            }
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(ref pool) => {
                let mut conn = self.checkout(pool).await?;
                self.count_query();
                let written = bind_row!(SQLITE_SAVE, row)
                    .execute(&mut *conn)
                    .await
                    .map_err(error)?;
                Ok(written > 0)
            }
            #[cfg(feature = "mysql")]
            Pools::Mysql(ref pool) => {
                let mut conn = self.checkout(pool).await?;
                let conn = &mut *conn;
                // Each statement is atomic on its own; the sequence needs no transaction (and so no gap locks,
                // which deadlock concurrent first inserts of one key under REPEATABLE READ).
                let update = || bind_row!(MYSQL_SAVE_UPDATE, row).bind::<BigInt, _>(row.generation);
                self.count_query();
                if update().execute(&mut *conn).await.map_err(&error)? > 0 {
                    return Ok(true);
                }
                self.count_query();
                match bind_row!(MYSQL_SAVE_INSERT, row).execute(&mut *conn).await {
                    Ok(_) => return Ok(true),
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => {}
                    Err(other) => return Err(error(other)),
                }
                // A row appeared between the two statements. It may be older than ours (another instance saving
                // an older generation at the same moment), so ask once more.
                self.count_query();
                Ok(update().execute(&mut *conn).await.map_err(&error)? > 0)
            }
        }
    }

    async fn lease_inner(
        &self,
        key: String,
        owner: String,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let error = self.query_error("lease");
        // PostgreSQL and SQLite take or create the lease in one statement. MySQL has no conditional upsert that
        // says whether it wrote (diesel-async connects with CLIENT_FOUND_ROWS), so it updates, then inserts.
        let upsert = match self.backend() {
            Backend::Postgres => Some(PG_LEASE),
            Backend::Sqlite => Some(SQLITE_LEASE),
            Backend::Mysql => None,
        };
        with_conn!(self, |conn| {
            self.count_query();
            if let Some(sql) = upsert {
                let taken = diesel::sql_query(sql)
                    .bind::<Text, _>(&key)
                    .bind::<BigInt, _>(ttl_ms)
                    .bind::<Text, _>(&owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(&error)?;
                return Ok(taken > 0);
            }
            // The row exists after a key's first lease, so the UPDATE alone is the usual case.
            let taken = diesel::sql_query(MYSQL_LEASE_UPDATE)
                .bind::<BigInt, _>(ttl_ms)
                .bind::<Text, _>(&owner)
                .bind::<Text, _>(&key)
                .bind::<Text, _>(&owner)
                .execute(&mut *conn)
                .await
                .map_err(&error)?;
            if taken > 0 {
                return Ok(true);
            }
            self.count_query();
            match diesel::sql_query(MYSQL_LEASE_INSERT)
                .bind::<Text, _>(&key)
                .bind::<BigInt, _>(ttl_ms)
                .bind::<Text, _>(&owner)
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
        })
    }

    async fn release_inner(&self, key: String, owner: String) -> Result<(), StoreError> {
        use diesel_async::RunQueryDsl;
        with_conn!(self, |conn| {
            let sql = match self.backend() {
                Backend::Postgres => PG_RELEASE,
                Backend::Sqlite => SQLITE_RELEASE,
                Backend::Mysql => MYSQL_RELEASE,
            };
            self.count_query();
            diesel::sql_query(sql)
                .bind::<Text, _>(&key)
                .bind::<Text, _>(&owner)
                .execute(conn)
                .await
                .map_err(self.query_error("release"))?;
        });
        Ok(())
    }

    async fn generation_inner(&self, key: String) -> Result<Option<Generation>, StoreError> {
        use super::schema::paynet_tokens::dsl::{credential_key, generation, paynet_tokens};
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
        use diesel_async::RunQueryDsl;

        let stored: Option<i64> = with_conn!(self, |conn| {
            self.count_query();
            paynet_tokens
                .filter(credential_key.eq(&key))
                .select(generation)
                .get_result::<i64>(conn)
                .await
                .optional()
                .map_err(self.query_error("load"))?
        });
        Ok(stored.map(|g| Generation(u64::try_from(g).unwrap_or(0))))
    }

    async fn lease_info_inner(&self, key: String) -> Result<Option<LeaseInfo>, StoreError> {
        use diesel::OptionalExtension;
        use diesel_async::RunQueryDsl;

        let sql = match self.backend() {
            Backend::Postgres => PG_LEASE_INFO,
            Backend::Sqlite => SQLITE_LEASE_INFO,
            Backend::Mysql => MYSQL_LEASE_INFO,
        };
        let row: Option<LeaseRow> = with_conn!(self, |conn| {
            self.count_query();
            diesel::sql_query(sql)
                .bind::<Text, _>(&key)
                .get_result::<LeaseRow>(conn)
                .await
                .optional()
                .map_err(self.query_error("lease status"))?
        });
        Ok(row.map(|row| LeaseInfo::new(row.locked_by, row.locked_at, row.lock_until, row.now_ms)))
    }

    async fn clear_inner(&self, key: String) -> Result<(), StoreError> {
        use super::schema::paynet_tokens::dsl::{
            credential_key, expires_at, nonce, paynet_tokens, token,
        };
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;

        // A tombstone rather than a delete: the row keeps its generation, so the next token is numbered after the
        // cleared one (see `TokenStore::clear`). The empty token marks it; `expires_at = 0` makes older versions of
        // this library, which do not know the mark, see an expired token they never use.
        with_conn!(self, |conn| {
            self.count_query();
            diesel::update(paynet_tokens.filter(credential_key.eq(&key)))
                .set((
                    token.eq(TOMBSTONE),
                    nonce.eq(None::<String>),
                    expires_at.eq(Some(0_i64)),
                ))
                .execute(conn)
                .await
                .map_err(self.query_error("clear"))?;
        });
        Ok(())
    }
}

/// What a failed statement means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A concurrent statement won: retry.
    Conflict,
    /// The database or the connection to it is gone, or the statement timed out: degraded mode.
    Unavailable,
    /// Retrying will not help: schema or bug.
    Query,
}

/// Sorts a diesel error by what the caller should do.
///
/// diesel gives PostgreSQL's 40001 its own kind, but neither diesel nor diesel-async keep the SQLSTATE of
/// 40P01, MySQL's error number or SQLite's result code: those errors arrive as `Unknown` with the server's
/// message, so they are recognised by the message the server sends (the English one; PostgreSQL's
/// `lc_messages` and MariaDB's `lc_messages` default to it, and a translated message falls back to `Query`,
/// the loud side).
fn classify(error: &(dyn std::error::Error + 'static)) -> Kind {
    use diesel::result::{DatabaseErrorKind, Error};
    match error.downcast_ref::<Error>() {
        Some(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => Kind::Conflict,
        // diesel-async's PostgreSQL backend reports a connection that broke mid-statement this way.
        Some(Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)) => Kind::Unavailable,
        Some(Error::DatabaseError(_, info)) => classify_message(info.message()),
        Some(Error::BrokenTransactionManager) => Kind::Unavailable,
        _ => Kind::Query,
    }
}

/// The part of [`classify`] that reads the server's message.
fn classify_message(message: &str) -> Kind {
    let message = message.to_ascii_lowercase();
    const CONFLICT: &[&str] = &[
        // PostgreSQL 40P01; 40001 when it comes without its code.
        "deadlock detected",
        "could not serialize access",
        // MySQL/MariaDB 1213 and 1205.
        "deadlock found when trying to get lock",
        "lock wait timeout exceeded",
        // MariaDB 1020 (innodb_snapshot_isolation): a row changed under a REPEATABLE READ snapshot.
        "record has changed since last read",
        // SQLite BUSY and LOCKED (after busy_timeout ran out).
        "database is locked",
        "database table is locked",
        "database schema is locked",
    ];
    const UNAVAILABLE: &[&str] = &[
        // PostgreSQL 57014 (statement_timeout) and 55P03 (lock_timeout), 57P01 (server shutting down).
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "terminating connection",
        // MySQL 3024, MariaDB 1969: max_execution_time / max_statement_time.
        "maximum statement execution time exceeded",
        "max_statement_time exceeded",
        // mysql_async's I/O and driver errors (connection lost, server gone away).
        "input/output error",
        "driver error",
        "connection to the server is closed",
        "connection reset",
        "broken pipe",
        "server has gone away",
        "lost connection",
        "connection closed",
        "connection refused",
        // SQLite: the file cannot be opened or written (disk full, permissions, a vanished directory).
        "unable to open database file",
        "disk i/o error",
        "database or disk is full",
    ];
    if CONFLICT.iter().any(|needle| message.contains(needle)) {
        Kind::Conflict
    } else if UNAVAILABLE.iter().any(|needle| message.contains(needle)) {
        Kind::Unavailable
    } else {
        Kind::Query
    }
}

fn check_length(what: &str, value: &str) -> Result<(), StoreError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::Config(format!(
            "{what} is {} bytes long; the token store holds at most {MAX_KEY_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

impl fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselStore")
            .field("store", &self.inner.describe)
            .field("backend", &self.backend())
            .field("encrypted", &self.inner.cipher.is_some())
            .field("query_count", &self.query_count())
            .finish()
    }
}

#[async_trait]
impl TokenStore for DieselStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn operation_timeout(&self) -> Option<Duration> {
        Some(self.inner.connect_timeout)
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned("load", async move { this.load_inner(key).await })
            .await
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        let row = self.encode(key, record)?;
        let this = self.clone();
        self.spawned("save", async move { this.save_inner(row).await })
            .await
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        let ttl_ms = i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS));
        let (this, key, owner) = (self.clone(), key.to_owned(), owner.to_owned());
        self.spawned("lease", async move {
            this.lease_inner(key, owner, ttl_ms).await
        })
        .await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        let (this, key, owner) = (self.clone(), key.to_owned(), owner.to_owned());
        self.spawned(
            "release",
            async move { this.release_inner(key, owner).await },
        )
        .await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned("clear", async move { this.clear_inner(key).await })
            .await
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned(
            "lease status",
            async move { this.lease_info_inner(key).await },
        )
        .await
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned("load", async move { this.generation_inner(key).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row read under a previous key is sealed again only if it is still the row that was read: a newer token
    /// saved meanwhile (a concurrent login) is neither overwritten nor refused, and the generation never moves.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn reseal_keeps_the_generation_and_never_overwrites_a_newer_token() {
        use base64::Engine as _;
        let key = |byte: u8| -> SecretString {
            base64::engine::general_purpose::STANDARD
                .encode([byte; 32])
                .into()
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = |current: u8, previous: Vec<SecretString>| StoreOptions {
            encryption_key: Some(key(current)),
            previous_encryption_keys: previous,
            ..StoreOptions::default()
        };
        let old = DieselStore::connect(&url, options(1, vec![]))
            .await
            .unwrap();
        old.migrate().await.unwrap();
        let new = DieselStore::connect(&url, options(2, vec![key(1)]))
            .await
            .unwrap();
        let record = |generation: u64, token: &str| TokenRecord {
            token: token.into(),
            generation: Generation(generation),
            obtained_at_ms: 1,
            expires_at_ms: None,
            meta: LoginMeta::default(),
            written_by: "test".into(),
        };

        // Read under the previous key; a concurrent login saves generation 6 before the re-seal.
        assert!(old.save("k", &record(5, "old-token")).await.unwrap());
        let row = new.read_row("k").await.unwrap().unwrap();
        let (read, old_nonce) = new.decode("k", row);
        let (read, old_nonce) = (
            read.unwrap(),
            old_nonce.expect("opened under a previous key"),
        );
        assert!(new.save("k", &record(6, "new-token")).await.unwrap());
        assert!(!new.reseal("k", &read, &old_nonce).await.unwrap());
        let stored = new.load("k").await.unwrap().unwrap();
        assert_eq!(
            (stored.generation, stored.token.expose_secret()),
            (Generation(6), "new-token")
        );

        // Without a concurrent save, the re-seal keeps generation 7, and a login numbered 8 is still accepted.
        assert!(old.save("k", &record(7, "seven")).await.unwrap());
        let stored = new.load("k").await.unwrap().unwrap();
        assert_eq!(stored.generation, Generation(7));
        assert_eq!(
            new.stored_generation("k").await.unwrap(),
            Some(Generation(7))
        );
        assert!(
            old.load("k").await.unwrap().is_none(),
            "sealed under the new key now"
        );
        let new_only = DieselStore::connect(&url, options(2, vec![]))
            .await
            .unwrap();
        assert_eq!(
            new_only
                .load("k")
                .await
                .unwrap()
                .unwrap()
                .token
                .expose_secret(),
            "seven"
        );
        assert!(new.save("k", &record(8, "eight")).await.unwrap());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://user:hunter2@db:5432/x"),
            "postgres://user:****@db:5432/x"
        );
        assert_eq!(redact("mysql://root@db/x"), "mysql://root@db/x");
        let redacted = redact("postgres://db/x?user=a&password=hunter2&sslmode=disable");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("sslmode=disable"), "{redacted}");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    /// The messages the servers send for each kind (MySQL/MariaDB errors arrive without their number).
    #[test]
    fn classifies_server_messages() {
        for conflict in [
            "deadlock detected",
            "could not serialize access due to read/write dependencies among transactions",
            "Deadlock found when trying to get lock; try restarting transaction",
            "Lock wait timeout exceeded; try restarting transaction",
            "Record has changed since last read in table 'paynet_lease'",
            "database is locked",
            "database table is locked: paynet_lease",
        ] {
            assert_eq!(classify_message(conflict), Kind::Conflict, "{conflict}");
        }
        for unavailable in [
            "canceling statement due to statement timeout",
            "terminating connection due to administrator command",
            "Query execution was interrupted, maximum statement execution time exceeded",
            "Query execution was interrupted (max_statement_time exceeded)",
            "Input/output error: Connection reset by peer (os error 104)",
            "Driver error: `Connection to the server is closed.'",
        ] {
            assert_eq!(
                classify_message(unavailable),
                Kind::Unavailable,
                "{unavailable}"
            );
        }
        for query in [
            "relation \"paynet_lease\" does not exist",
            "Table 'test.paynet_lease' doesn't exist",
            "no such table: paynet_lease",
        ] {
            assert_eq!(classify_message(query), Kind::Query, "{query}");
        }
    }

    #[test]
    fn parses_targets() {
        assert!(
            matches!(Target::parse("sqlite::memory:"), Ok(Target::Sqlite { path }) if path == ":memory:")
        );
        assert!(
            matches!(Target::parse("sqlite://:memory:"), Ok(Target::Sqlite { path }) if path == ":memory:")
        );
        assert!(
            matches!(Target::parse("sqlite:///tmp/a.db"), Ok(Target::Sqlite { path }) if path == "/tmp/a.db")
        );
        assert!(
            matches!(Target::parse("sqlite://a.db"), Ok(Target::Sqlite { path }) if path == "a.db")
        );
        assert!(
            matches!(Target::parse("sqlite:a.db"), Ok(Target::Sqlite { path }) if path == "a.db")
        );
        assert!(matches!(
            Target::parse("sqlite://"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            Target::parse("PostgreSQL://h/d"),
            Ok(Target::Postgres(_))
        ));
        assert!(
            matches!(Target::parse("mariadb://h/d"), Ok(Target::Mysql(url)) if url == "mysql://h/d")
        );
        let err = Target::parse("redis://:secret@h")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`redis`") && !err.contains("secret"), "{err}");
        assert!(Target::parse("no scheme").is_err());
    }
}
