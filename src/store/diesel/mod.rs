//! The diesel-async token store over PostgreSQL, SQLite or MySQL/MariaDB, chosen at run time from the URL: the
//! public [`DieselStore`] and [`Backend`], and the [`TokenStore`] entry points, which check their arguments and run
//! each operation as a task of its own.
//!
//! The rest is split by concern: `url` reads the URL, `tls` its TLS parameters (and connects with them), `pool`
//! holds the connections, `rows` maps records to rows, `operations` runs the statements, `backend` is the contract
//! of a database (its connection, statements and the steps that differ), which `postgres`, `sqlite` and `mysql`
//! implement, `migrations` creates the tables, `failure` sorts errors by what the caller should do, and `listener`
//! (PostgreSQL) turns the notifications of saves into wake-ups.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use self::backend::open;
use self::pool::{LastError, Pools, with_pool};
use self::url::Target;
use super::cipher::{KeyRing, key_ring};
use super::{Counter, LeaseInfo, OperationCounts, StoreOptions, TokenStore, Wakeup, op};
use super::{MAX_TTL_MS, check_length};
use crate::error::StoreError;
use crate::record::{Generation, TokenRecord};
use crate::redact::url as redact;

mod backend;
mod failure;
#[cfg(feature = "postgres")]
mod listener;
mod migrations;
#[cfg(feature = "mysql")]
mod mysql;
mod operations;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod tls;
mod url;

/// Which database a [`DieselStore`] talks to, as [`DieselStore::backend`] reports it.
///
/// ```
/// use paynet_auth::store::Backend;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(Backend::Postgres.to_string(), "PostgreSQL");
/// #[cfg(feature = "sqlite")]
/// {
///     use paynet_auth::store::{DieselStore, StoreOptions};
///     // The URL decides; no connection is made yet.
///     let store = DieselStore::connect("sqlite::memory:", StoreOptions::default()).await.unwrap();
///     assert_eq!(store.backend(), Backend::Sqlite);
/// }
/// # }
/// ```
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
/// database is back, calls succeed again without a restart.
///
/// Connections to PostgreSQL and MySQL/MariaDB use TLS as the URL asks (rustls, ring provider), and the
/// migrations run over the same connections:
///
/// - PostgreSQL takes libpq's parameters, with libpq's meaning: `sslmode` = `disable`, `prefer` (the default:
///   TLS when the server offers it), `require`, `verify-ca` or `verify-full`; `sslrootcert` (the CA file;
///   `prefer` and `require` then verify the chain too, as libpq does; libpq's default `~/.postgresql/root.crt`
///   is used when it exists); `sslcert` and `sslkey` (a client certificate, both or neither).
/// - MySQL/MariaDB takes the MySQL client's `ssl-mode` = `DISABLED`, `PREFERRED` (the default), `REQUIRED`,
///   `VERIFY_CA` or `VERIFY_IDENTITY`, `ssl-ca`, `ssl-cert` and `ssl-key` (an RSA key), or mysql_async's own
///   `require_ssl`, `verify_ca`, `verify_identity` and `built_in_roots`.
///
/// `connect` reads the certificate files and fails with [`StoreError::Config`], naming the parameter and the
/// file, when one is missing or unusable. A failed handshake makes operations fail with
/// [`StoreError::Unavailable`], whose message starts with what went wrong (an unknown issuer, a certificate for
/// another host name …) and the parameter to change.
///
/// ```no_run
/// # async fn example() -> Result<(), paynet_auth::StoreError> {
/// use paynet_auth::store::{DieselStore, StoreOptions};
///
/// let store = DieselStore::connect(
///     "postgres://paynet@db.internal/paynet?sslmode=verify-full&sslrootcert=/etc/paynet/db-ca.pem",
///     StoreOptions::default(),
/// )
/// .await?; // a StoreError::Config if /etc/paynet/db-ca.pem cannot be read
/// # Ok(())
/// # }
/// ```
///
/// With [`StoreOptions::encryption_key`], tokens are stored encrypted with AES-256-GCM, the store key being
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
    /// Operations by kind, and the statements they sent.
    counter: Counter,
    connect_timeout: Duration,
    /// The bound of one operation ([`StoreOptions::operation_timeout`]).
    operation_timeout: Duration,
    /// The lock and statement timeouts set on every connection, a little shorter.
    session_timeout: Duration,
    last_connect_error: LastError,
    /// PostgreSQL's way to its process-wide listener, for wake-ups; other databases have none (their waiters poll).
    #[cfg(feature = "postgres")]
    listening: Option<listener::Listening>,
}

/// Options that can only misbehave, refused before anything is opened.
fn check_options(options: &StoreOptions) -> Result<(), StoreError> {
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
    if options.operation_timeout.is_some_and(|t| t.is_zero()) {
        return Err(StoreError::Config(
            "token store operation_timeout must be more than zero".into(),
        ));
    }
    Ok(())
}

impl DieselStore {
    /// Creates the store for `url` (see the table above). No connection is made yet: this fails only for a wrong
    /// URL, wrong options or an unusable TLS certificate file ([`StoreError::Config`]), never because the
    /// database is down; the first operation (typically [`migrate`](Self::migrate)) reports that.
    ///
    /// Without an encryption key, logs once at WARN that tokens are stored in plaintext.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        check_options(&options)?;
        let operation_timeout = options.effective_operation_timeout();
        // The database's own lock and statement timeouts end a wait a tenth before the operation's deadline, so
        // that the caller reads what the database says (a lock wait, a statement timeout) rather than the bare
        // deadline, which stays for a database that does not answer at all.
        let session_timeout = operation_timeout - operation_timeout / 10;
        let cipher = key_ring(&options)?;
        let describe = redact(url);
        let sink = LastError::default();
        #[cfg(feature = "postgres")]
        let listening = (target.backend == Backend::Postgres).then(|| {
            listener::Listening::new(
                target.address.clone(),
                describe.clone(),
                options.connect_timeout,
            )
        });

        let pools = match target.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                open::<postgres::Postgres>(target.address, &options, session_timeout, &sink)?
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                open::<sqlite::Sqlite>(target.address, &options, session_timeout, &sink)?
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                open::<mysql::Mysql>(target.address, &options, session_timeout, &sink)?
            }
            #[cfg(not(all(feature = "postgres", feature = "sqlite", feature = "mysql")))]
            left_out => return Err(url::not_compiled(left_out)),
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
                counter: Counter::default(),
                connect_timeout: options.connect_timeout,
                operation_timeout,
                session_timeout,
                last_connect_error: sink,
                #[cfg(feature = "postgres")]
                listening,
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
        // Not bounded by the operation timeout: a migration waits up to a minute for another instance's.
        self.spawned_within(None, "migrate", async move { this.migrate_inner().await })
            .await
    }

    /// How many SQL statements this store has sent for `load`, `save`, `try_lease`, `release` and `clear` (shared
    /// by clones). Not counted: the pool's health check of a connection before each use, and `migrate`.
    ///
    /// Tests use it to prove that serving requests from a cached token costs no query.
    pub fn query_count(&self) -> u64 {
        self.inner.counter.round_trips()
    }

    /// The database this store talks to.
    pub fn backend(&self) -> Backend {
        use self::backend::DieselBackend;
        with_pool!(self, |_pool, B| B::BACKEND)
    }

    fn count_query(&self) {
        self.inner.counter.round_trip();
    }

    /// Runs an operation as a task of its own, so that a caller that gives up (a timeout, a dropped request) does
    /// not cancel it halfway: that would leave a lease taken without anyone knowing, and would drop a SQLite
    /// query's blocking task, which diesel-async then waits for with `block_in_place` (a panic on a current-thread
    /// runtime). A panic inside the task comes back as an error, not as a panic.
    ///
    /// The caller gets an answer within the operation timeout even when the database stops answering mid-statement
    /// (the session timeouts only work while it answers): a [`StoreError::Conflict`] for the lease (not acquired;
    /// the statement is cancelled by the database's own timeout, and a lease it took anyway is this owner's to take
    /// again), else [`StoreError::Unavailable`].
    async fn spawned<T: Send + 'static>(
        &self,
        operation: &'static str,
        task: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.inner.counter.operation(operation);
        self.spawned_within(Some(self.inner.operation_timeout), operation, task)
            .await
    }

    async fn spawned_within<T: Send + 'static>(
        &self,
        deadline: Option<Duration>,
        operation: &'static str,
        task: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let task = tokio::spawn(task);
        let joined = match deadline {
            Some(deadline) => match tokio::time::timeout(deadline, task).await {
                Ok(joined) => joined,
                Err(_) => return Err(self.deadline_passed(operation, deadline)),
            },
            None => task.await,
        };
        match joined {
            Ok(result) => result,
            Err(join) => Err(StoreError::Query {
                store: self.describe(),
                operation,
                source: format!("store task failed: {join}").into(),
            }),
        }
    }
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
        Some(self.inner.operation_timeout)
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned(op::LOAD, async move { this.load_inner(key).await })
            .await
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        let row = self.encode(key, record)?;
        let this = self.clone();
        self.spawned(op::SAVE, async move { this.save_inner(row).await })
            .await
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        let ttl_ms = i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS));
        let (this, key, owner) = (self.clone(), key.to_owned(), owner.to_owned());
        self.spawned(op::TRY_LEASE, async move {
            this.lease_inner(key, owner, ttl_ms).await
        })
        .await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        let (this, key, owner) = (self.clone(), key.to_owned(), owner.to_owned());
        self.spawned(
            op::RELEASE,
            async move { this.release_inner(key, owner).await },
        )
        .await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned(op::CLEAR, async move { this.clear_inner(key).await })
            .await
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned(op::LEASE, async move { this.lease_info_inner(key).await })
            .await
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        check_length("credential key", key)?;
        let (this, key) = (self.clone(), key.to_owned());
        self.spawned(op::STORED_GENERATION, async move {
            this.generation_inner(key).await
        })
        .await
    }

    fn operation_counts(&self) -> Option<OperationCounts> {
        Some(self.inner.counter.snapshot())
    }

    /// On PostgreSQL, a subscription to the `NOTIFY` every save sends, heard on one `LISTEN` connection per
    /// process and URL (made by the first subscription, shared by every store on that URL, closed with the last
    /// of them). `None` on MySQL/MariaDB and SQLite, which have no notifications: their waiters poll.
    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        #[cfg(feature = "postgres")]
        if let Some(listening) = &self.inner.listening {
            return listening.subscribe(key);
        }
        let _ = key;
        None
    }
}
