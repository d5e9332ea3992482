//! Where tokens and the refresh lease live: the [`TokenStore`] trait, the in-memory [`MemoryStore`], (with a
//! database feature) the diesel-async [`DieselStore`], and (with the feature `redis`) the `RedisStore`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::record::{Generation, TokenRecord};

// Gated on the backends rather than on `diesel-store`, which they all enable: without a backend there is no
// database to talk to, so none of this code could run.
#[cfg(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "redis"
))]
mod cipher;
mod counts;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod diesel;
mod memory;
pub(crate) mod op;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod schema;
mod wakeup;

pub(crate) use self::counts::Counter;
pub use self::counts::OperationCounts;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use self::diesel::{Backend, DieselStore};
pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use self::wakeup::Wakeup;
pub(crate) use self::wakeup::Wakeups;

/// Options of a database-backed store ([`connect`], `DieselStore::connect`).
///
/// ```
/// use std::time::Duration;
/// use paynet_auth::store::StoreOptions;
/// let options = StoreOptions {
///     connect_timeout: Duration::from_secs(2),
///     ..StoreOptions::default()
/// };
/// assert_eq!(options.pool_size, 8);
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Key to encrypt tokens at rest with (AES-256-GCM): standard base64 of exactly 32 bytes, for instance from
    /// `openssl rand -base64 32`. Without one, tokens are stored in plaintext (and a warning says so). Every instance
    /// sharing a database needs the same key; rows written under another key read as absent. With a key, a row
    /// that does not authenticate under it (or under a previous key) is never used: a plaintext row, a tampered
    /// one or one under an unknown key reads as absent (logged at WARN), and the next refresh replaces it.
    pub encryption_key: Option<secrecy::SecretString>,
    /// Keys that tokens were encrypted with before `encryption_key` (same format), for a key rotation: rows under
    /// them are read, and written again under `encryption_key` with the same generation. Defaults to none.
    /// Needs `encryption_key`.
    pub previous_encryption_keys: Vec<secrecy::SecretString>,
    /// Most connections the pool opens (default 8). An in-memory SQLite database always uses one.
    pub pool_size: u32,
    /// How long an operation waits for a connection before failing with [`StoreError::Unavailable`] (default 5 s).
    pub connect_timeout: Duration,
    /// How long one store operation (`load`, `save`, `try_lease` …) may take in all, from waiting for a
    /// connection to the end of its statements; `None` (the default) takes [`connect_timeout`](Self::connect_timeout):
    /// an operation may take as long as getting a connection may, so that a lease that covers the connection
    /// waits covers the whole operations too. Every connection is set up with nine tenths of this bound as its lock
    /// and statement timeouts (PostgreSQL `lock_timeout` and `statement_timeout`, MySQL/MariaDB
    /// `innodb_lock_wait_timeout` and `lock_wait_timeout` rounded up to whole seconds and
    /// `max_statement_time`/`max_execution_time`, SQLite's busy timeout), so that the database ends a wait first and
    /// says what it was; the operation gives up at the bound itself even if the database does not answer. A lock wait that runs
    /// out is [`StoreError::Conflict`] for the lease (not acquired) and [`StoreError::Unavailable`] for anything
    /// else. `migrate` waits up to a minute for another migrator instead.
    pub operation_timeout: Option<Duration>,
}

impl StoreOptions {
    /// The bound of one store operation: [`operation_timeout`](Self::operation_timeout), else
    /// [`connect_timeout`](Self::connect_timeout).
    pub fn effective_operation_timeout(&self) -> Duration {
        self.operation_timeout.unwrap_or(self.connect_timeout)
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            encryption_key: None,
            previous_encryption_keys: Vec::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: None,
        }
    }
}

/// Whether a store URL names a Redis store (`redis://` or `rediss://`), whatever the build's features.
pub(crate) fn is_redis_url(url: &str) -> bool {
    let scheme = url.trim().split_once("://").map(|(scheme, _)| scheme);
    matches!(scheme, Some(s) if s.eq_ignore_ascii_case("redis") || s.eq_ignore_ascii_case("rediss"))
}

/// Whether a store URL names a [`MemoryStore`] (`memory:` or `memory://`) rather than a database.
pub(crate) fn is_memory_url(url: &str) -> bool {
    matches!(url.trim(), "memory:" | "memory://")
}

/// Longest credential key and lease owner a store holds, in bytes: the tables' `VARCHAR(255)`. The manager keeps
/// its keys within it, and the database store checks both up front so that every backend refuses the same keys,
/// rather than PostgreSQL failing, SQLite accepting and a non-strict MySQL truncating (which would let two keys
/// share a row).
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// Refuses a credential key or lease owner longer than [`MAX_KEY_BYTES`], alike on every store that keeps them
/// outside this process.
#[cfg(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "redis"
))]
pub(crate) fn check_length(what: &str, value: &str) -> Result<(), StoreError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::Config(format!(
            "{what} is {} bytes long; the token store holds at most {MAX_KEY_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Longest lease a store records: keeps `now + ttl` far from overflowing a `BIGINT` on every SQL backend, and
/// exact in a Lua number (a double) on Redis.
#[cfg(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "redis"
))]
pub(crate) const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Opens the store a URL names: `memory:` for a [`MemoryStore`], `redis://` or `rediss://` for a `RedisStore`
/// (feature `redis`; nothing to create), otherwise a database (see `DieselStore` for the URL forms), whose tables
/// are then created if missing.
///
/// Unlike `DieselStore::connect`, this fails when the database cannot be reached now (the migrations need it). A
/// service that must start while its database is down can call `DieselStore::connect` and `migrate` later itself.
/// A Redis store needs no migration, so it opens while Redis is down, as `RedisStore::connect` does.
pub async fn connect(url: &str, options: StoreOptions) -> Result<Arc<dyn TokenStore>, StoreError> {
    if is_memory_url(url) {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if is_redis_url(url) {
        #[cfg(feature = "redis")]
        return Ok(Arc::new(RedisStore::connect(url, options).await?));
        #[cfg(not(feature = "redis"))]
        return Err(StoreError::Config(
            "the token store URL is for Redis, but paynet-auth was built without its `redis` feature".into(),
        ));
    }
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    {
        let store = DieselStore::connect(url, options).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    }
    #[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
    {
        let _ = options;
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(StoreError::Config(format!(
            "token store URL scheme `{scheme}` needs a database feature (`sqlite`, `postgres` or `mysql`); this build \
             only has memory:"
        )))
    }
}

/// The refresh lease of a credential key as the store records it, for people on call: who took it, when, and
/// until when. Times are UTC epoch milliseconds on the store's clock (the database's, for a database store).
///
/// [`TokenStore::lease`] and [`TokenManager::lease`](crate::TokenManager::lease) report it:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use paynet_auth::clock::ManualClock;
/// use paynet_auth::store::{MemoryStore, TokenStore};
///
/// # tokio_test::block_on(async {
/// let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1_000)));
/// assert!(store.try_lease("gateway-1", "host-a:4242:x7f3", Duration::from_secs(30)).await.unwrap());
/// let lease = store.lease("gateway-1").await.unwrap().unwrap();
/// assert_eq!(lease.holder, "host-a:4242:x7f3");
/// assert_eq!((lease.acquired_at_ms, lease.expires_at_ms), (1_000, 31_000));
/// assert!(lease.is_held());
/// store.release("gateway-1", "host-a:4242:x7f3").await.unwrap();
/// assert!(!store.lease("gateway-1").await.unwrap().unwrap().is_held());
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The lease owner that last took it (host, process id and a random suffix, unless configured otherwise).
    pub holder: String,
    /// When it was taken.
    pub acquired_at_ms: i64,
    /// When it runs out, or ran out (a released lease ends at the moment of its release).
    pub expires_at_ms: i64,
    /// The store's clock when it was read: the lease is held while `expires_at_ms > now_ms`.
    pub now_ms: i64,
}

impl LeaseInfo {
    /// A lease record.
    pub fn new(holder: String, acquired_at_ms: i64, expires_at_ms: i64, now_ms: i64) -> Self {
        Self {
            holder,
            acquired_at_ms,
            expires_at_ms,
            now_ms,
        }
    }

    /// Whether the holder still held it when it was read.
    pub fn is_held(&self) -> bool {
        self.expires_at_ms > self.now_ms
    }
}

/// Persistence of one token per credential key, and a ShedLock-style lease that lets one process of a fleet
/// refresh while the others wait for its token.
///
/// Implementations must be safe to share between tasks and processes: `save` never replaces a row by one of an
/// older or equal generation, `try_lease` is one atomic conditional update.
///
/// ```
/// use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
/// use paynet_auth::store::{MemoryStore, TokenStore};
///
/// # tokio_test::block_on(async {
/// let record = |generation| TokenRecord {
///     token: "T".into(),
///     generation: Generation(generation),
///     obtained_at_ms: 0,
///     expires_at_ms: None,
///     meta: LoginMeta::default(),
///     written_by: "host-a:4242:x7f3".into(),
/// };
/// let store = MemoryStore::new();
/// assert!(store.save("gateway-1", &record(2)).await.unwrap());
/// assert!(!store.save("gateway-1", &record(1)).await.unwrap()); // never an older generation
/// assert_eq!(store.load("gateway-1").await.unwrap().unwrap().generation, Generation(2));
/// store.clear("gateway-1").await.unwrap();
/// assert!(store.load("gateway-1").await.unwrap().is_none());
/// assert_eq!(store.stored_generation("gateway-1").await.unwrap(), Some(Generation(2))); // the tombstone
/// # });
/// ```
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// A description for messages and logs (a URL without its password).
    fn describe(&self) -> String;

    /// How long one operation may take before it fails, if it is bounded (for a database, the connection wait and
    /// the statements: [`StoreOptions::operation_timeout`]). The manager refuses a `lease_ttl` that does not cover
    /// a login plus the re-read and the save made under the lease. Defaults to `None`: operations take no
    /// noticeable time (an in-memory store).
    fn operation_timeout(&self) -> Option<Duration> {
        None
    }

    /// The stored token of `key`, if any. A row that cannot be read back (for instance one that does not decrypt
    /// with the configured key) is reported as absent.
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Stores `record` for `key`, unless the stored row already has the same or a newer generation. Returns
    /// whether it was written.
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError>;

    /// Takes the refresh lease of `key` for `owner` for `ttl`, if nobody holds it, the holder's lease ran out, or
    /// `owner` holds it already (a lease it could not release, say because the database went away mid-refresh).
    /// Returns whether `owner` now holds it.
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lease back, if `owner` still holds it.
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError>;

    /// Removes the stored token of `key` (the next request logs in), keeping its generation as a tombstone: after
    /// a clear, [`load`](Self::load) reports nothing, [`stored_generation`](Self::stored_generation) still reports
    /// the cleared generation, and [`save`](Self::save) still refuses a generation that is not newer. Numbering
    /// never restarts, so an instance that still holds the cleared token can never mistake a new token for it.
    async fn clear(&self, key: &str) -> Result<(), StoreError>;

    /// The refresh lease of `key` as last taken (held or not), or `None` if it was never taken. Stores that keep
    /// no lease report `None`; [`MemoryStore`] and `DieselStore` report theirs.
    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        let _ = key;
        Ok(None)
    }

    /// The generation of the stored row of `key`, whether or not [`load`](Self::load) can read it. A new token is
    /// numbered after it, so that a row this process cannot read (one encrypted with another key) is still
    /// replaced by the next save instead of refusing it as "not newer".
    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        Ok(self.load(key).await?.map(|record| record.generation))
    }

    /// A subscription to the saves of `key` made from now on, by this process or another, if the store announces
    /// them: an instance waiting on another's lease then adopts its token as soon as it is saved, and polls only as
    /// a fallback. Defaults to `None`: the waiter polls every `poll_interval`.
    ///
    /// [`MemoryStore`] announces its own saves; `DieselStore` on PostgreSQL announces every save through
    /// `NOTIFY`, heard on one `LISTEN` connection per process and database; the Redis store through pub/sub.
    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        let _ = key;
        None
    }

    /// The operations this store made so far, by kind, if it counts them (every store of this crate does).
    /// Defaults to `None`.
    fn operation_counts(&self) -> Option<OperationCounts> {
        None
    }
}

#[async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn operation_timeout(&self) -> Option<Duration> {
        (**self).operation_timeout()
    }
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        (**self).load(key).await
    }
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        (**self).save(key, record).await
    }
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        (**self).try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        (**self).release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        (**self).clear(key).await
    }
    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        (**self).stored_generation(key).await
    }
    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        (**self).lease(key).await
    }
    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        (**self).subscribe(key)
    }
    fn operation_counts(&self) -> Option<OperationCounts> {
        (**self).operation_counts()
    }
}
