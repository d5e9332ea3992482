//! The Redis token store: the public [`RedisStore`] and its [`TokenStore`] operations, each one command or script
//! on one multiplexed connection, re-established by the redis crate's `ConnectionManager` after a failure.
//!
//! `address` reads the URL and its TLS files, `scripts` holds the Lua scripts (the atomic steps), `listener` the
//! pub/sub connection that brings wake-ups, and `failure` sorts the redis crate's errors by what the caller should do.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;

use self::listener::Listener;
use super::cipher::{KeyRing, TOMBSTONE, key_ring, open_column, seal_column};
use super::{
    Counter, LeaseInfo, MAX_TTL_MS, OperationCounts, StoreOptions, TokenStore, Wakeup,
    check_length, op,
};
use crate::error::StoreError;
use crate::record::{Generation, LoginMeta, TokenRecord};

mod address;
mod failure;
mod listener;
mod scripts;

/// The name [`RedisStore::migrate`] gives its check in errors: `DieselStore::migrate`'s.
const MIGRATE: &str = "migrate";

/// A [`TokenStore`] in Redis, shared by every instance of a service: `redis://[user:password@]host:port/N` or
/// `rediss://…` (TLS).
///
/// Per credential key `K` it keeps three keys, whose `{K}` hash tag puts them in one Redis Cluster slot (the
/// scripts touch several at once):
///
/// | key | type | what |
/// |-----|------|------|
/// | `paynet-auth:{K}:token` | hash | the token record and its `generation` (a cleared one keeps its generation as a tombstone) |
/// | `paynet-auth:{K}:lease` | string with a TTL | the refresh lease: its holder, taken with `SET … NX PX ttl` |
/// | `paynet-auth:{K}:lease-info` | hash | the last lease taken (holder, taken at, runs out at), for `token status` |
///
/// A save is one script that writes only over an older generation and publishes the key on the channel
/// `paynet-auth:saved:N` (N: the database number), which wakes the instances waiting on the lease
/// ([`subscribe`](TokenStore::subscribe)); the lease is extended and released by compare-and-expire and
/// compare-and-delete scripts, so that an instance whose lease ran out never extends or frees the next holder's.
/// Times are the server's (`TIME`), never the instances'.
///
/// [`connect`](Self::connect) makes no connection: the first operation does, and each operation fails within
/// [`StoreOptions::effective_operation_timeout`] with [`StoreError::Unavailable`] while Redis cannot be reached;
/// once it is back, operations succeed again with the same store. [`StoreOptions::pool_size`] is not used: the store
/// sends everything over one multiplexed connection, as the redis crate advises.
///
/// Tokens are encrypted at rest as on SQL with [`StoreOptions::encryption_key`] (AES-256-GCM, the store key as
/// associated data, previous keys read and sealed again); a row that does not decrypt reads as absent (WARN).
///
/// Redis keeps the token and the lease in memory: a Redis restart without persistence loses both. The fleet then
/// logs in once more (one instance takes the new lease) and converges; meanwhile each instance serves the token it
/// has cached, and the new token's generation follows the ones instances cached, never repeats one.
///
/// ```no_run
/// # async fn example() -> Result<(), paynet_auth::StoreError> {
/// use std::time::Duration;
/// use paynet_auth::store::{RedisStore, StoreOptions, TokenStore};
///
/// let store = RedisStore::connect("redis://:secret@cache.internal:6379/2", StoreOptions::default()).await?;
/// assert_eq!(store.describe(), "redis://:****@cache.internal:6379/2");
/// if store.try_lease("gateway-1", "host-a:4242:x7f3", Duration::from_secs(30)).await? {
///     // … log in, then save the token with the next generation …
///     store.release("gateway-1", "host-a:4242:x7f3").await?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// With `rediss://`, the server's certificate is checked against the system's roots, or against the CA file of
/// `sslrootcert`; `sslcert` and `sslkey` give a client certificate (both or neither). [`connect`](Self::connect)
/// reads these files and fails with [`StoreError::Config`], naming the parameter and the file, when one is unusable.
///
/// Cloning is cheap: clones share the connection and the counts.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    client: redis::Client,
    /// The URL as given: the key of the process's pub/sub listener. Never shown.
    url: String,
    /// The channel saves are announced on.
    channel: String,
    describe: String,
    cipher: Option<KeyRing>,
    counter: Counter,
    connect_timeout: Duration,
    operation_timeout: Duration,
    listener: Mutex<Option<Arc<Listener>>>,
}

impl RedisStore {
    /// Creates the store for `url` (`redis://` or `rediss://`). No connection is made yet: this fails only for a
    /// wrong URL, wrong options or an unusable TLS file ([`StoreError::Config`]), never because Redis is down.
    ///
    /// Without an encryption key, logs once at WARN that tokens are stored in plaintext.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let address = address::parse(url)?;
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
        let cipher = key_ring(&options)?;
        let describe = crate::redact::url(url);
        let operation_timeout = options.effective_operation_timeout();
        // One attempt per operation: while Redis is away, each operation fails at once (and the next one tries
        // again) rather than retrying past its deadline.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(operation_timeout))
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(address.client.clone(), config)
            .map_err(|e| StoreError::Config(format!("Redis store {describe}: {e}")))?;
        if cipher.is_none() {
            tracing::warn!(
                store = %describe,
                "no token store encryption key configured: tokens are stored in plaintext"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                client: address.client,
                url: url.to_owned(),
                channel: format!("paynet-auth:saved:{}", address.database),
                describe,
                cipher,
                counter: Counter::default(),
                connect_timeout: options.connect_timeout,
                operation_timeout,
                listener: Mutex::new(None),
            }),
        })
    }

    /// Checks that Redis answers (one `PING`, within the operation timeout) and creates nothing: Redis needs no
    /// schema. There for parity with `DieselStore::migrate`, so that a deployment step that migrates works whatever
    /// the store, and fails as it would on SQL when the store cannot be reached, rather than reporting a success
    /// that the first refresh would contradict.
    ///
    /// Fails with [`StoreError::Unavailable`] (naming the store, password hidden) when Redis does not answer, and
    /// with [`StoreError::Denied`] when it refuses the credentials. The `PING` is one round trip in
    /// [`operation_counts`](TokenStore::operation_counts), under no operation: it is none of the protocol's.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let command = &redis::cmd("PING");
        let answer: String = self
            .run(MIGRATE, |mut connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        // Anything but PONG is not a Redis server we can use (a proxy answering for it, say).
        if answer != "PONG" {
            return Err(StoreError::Query {
                store: self.describe(),
                operation: MIGRATE,
                source: format!("PING was answered with {answer:?}, not PONG").into(),
            });
        }
        Ok(())
    }

    /// Runs one operation (one command or script, sent by `attempt` on the connection it is given) within the
    /// operation timeout, counting it, and sorts its error.
    ///
    /// An attempt that finds the connection broken (Redis restarted, or the network dropped it since the last
    /// operation) is made once more: the `ConnectionManager` starts connecting again when it sees the failure, and
    /// the second attempt waits for that connection. Every operation is safe to repeat: a save that did reach
    /// the server is refused the second time (same generation), a lease is retaken by its own owner, a release and a
    /// clear find nothing more to do.
    async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.inner.counter.operation(operation);
        let attempts = async {
            self.inner.counter.round_trip();
            match attempt(self.connection()).await {
                Err(error) if error.is_connection_dropped() || error.is_io_error() => {
                    self.inner.counter.round_trip();
                    attempt(self.connection()).await
                }
                done => done,
            }
        };
        let deadline = self.inner.operation_timeout;
        match tokio::time::timeout(deadline, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failure::sort(&self.inner.describe, operation, error)),
            Err(_) => Err(StoreError::Unavailable {
                store: self.inner.describe.clone(),
                source: format!(
                    "{operation} got no answer within the operation timeout ({deadline:?})"
                )
                .into(),
            }),
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }

    fn decode(
        &self,
        key: &str,
        mut fields: HashMap<String, String>,
    ) -> Option<(TokenRecord, Option<String>)> {
        let token = fields.remove("token")?;
        if token == TOMBSTONE {
            return None;
        }
        let generation = fields.get("generation").cloned().unwrap_or_default();
        let unusable = |reason: &str| {
            tracing::warn!(
                store = %self.inner.describe,
                store_key = %key,
                generation = %generation,
                reason,
                "stored token is not used; treating it as absent, the next refresh replaces it"
            );
        };
        let (token, reseal) = match open_column(
            self.inner.cipher.as_ref(),
            key,
            token,
            fields.get("nonce").map(String::as_str),
        ) {
            Ok(opened) => opened,
            Err(reason) => {
                unusable(reason);
                return None;
            }
        };
        let number = |name: &str| fields.get(name).and_then(|value| value.parse::<i64>().ok());
        let (Ok(generation_number), Some(obtained_at)) =
            (generation.parse::<u64>(), number("obtained_at"))
        else {
            unusable("its generation or time is not a number");
            return None;
        };
        let record = TokenRecord {
            token,
            generation: Generation(generation_number),
            obtained_at_ms: obtained_at,
            expires_at_ms: number("expires_at"),
            meta: LoginMeta {
                agent_id: fields.remove("agent_id"),
                terminal_id: fields.remove("terminal_id"),
                user_id: fields.remove("user_id"),
                user_login: fields.remove("user_login"),
            },
            written_by: fields.remove("written_by").unwrap_or_default(),
        };
        Some((record, reseal))
    }

    /// The record as the field, value pairs of its hash (the generation apart), sealed if the store has a key.
    fn encode(
        &self,
        key: &str,
        record: &TokenRecord,
    ) -> Result<Vec<(&'static str, Zeroizing<String>)>, StoreError> {
        let (token, nonce) = seal_column(
            self.inner.cipher.as_ref(),
            key,
            record.token.expose_secret(),
        )
        .map_err(|_| StoreError::Query {
            store: self.describe(),
            operation: op::SAVE,
            source: "token encryption failed".into(),
        })?;
        let mut fields = vec![
            ("token", Zeroizing::new(token)),
            (
                "obtained_at",
                Zeroizing::new(record.obtained_at_ms.to_string()),
            ),
            ("written_by", Zeroizing::new(record.written_by.clone())),
        ];
        let optional = [
            ("nonce", nonce),
            ("expires_at", record.expires_at_ms.map(|ms| ms.to_string())),
            ("agent_id", record.meta.agent_id.clone()),
            ("terminal_id", record.meta.terminal_id.clone()),
            ("user_id", record.meta.user_id.clone()),
            ("user_login", record.meta.user_login.clone()),
        ];
        fields.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.map(|value| (name, Zeroizing::new(value)))),
        );
        Ok(fields)
    }

    /// Seals a row read under a previous key again under the current one, if it is still that row.
    async fn reseal(&self, key: &str, record: &TokenRecord, old_nonce: &str) {
        let Ok(fields) = self.encode(key, record) else {
            return;
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| *field == name)
                .map(|(_, value)| value.as_str().to_owned())
        };
        let (Some(token), Some(nonce)) = (field("token"), field("nonce")) else {
            return;
        };
        let generation = record.generation.0.to_string();
        let mut invocation = scripts::RESEAL.key(token_key(key));
        invocation
            .arg(&generation)
            .arg(old_nonce)
            .arg(&token)
            .arg(&nonce);
        let invocation = &invocation;
        let resealed = self
            .run(op::LOAD, |mut connection| async move {
                invocation.invoke_async::<i64>(&mut connection).await
            })
            .await;
        match resealed {
            Ok(1) => tracing::info!(
                store = %self.inner.describe,
                store_key = %key,
                generation = record.generation.0,
                "stored token was encrypted with a previous key; encrypted it again with the current one"
            ),
            // A newer token, or the same one sealed again by another instance, replaced the row meanwhile.
            Ok(_) => {}
            // The token read is still good; the next read tries again.
            Err(error) => tracing::warn!(
                store = %self.inner.describe,
                store_key = %key,
                error = %crate::error::Chain(&error),
                "could not encrypt the stored token again with the current key"
            ),
        }
    }
}

fn token_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:token")
}

fn lease_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:lease")
}

fn lease_info_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:lease-info")
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.inner.describe)
            .field("encrypted", &self.inner.cipher.is_some())
            .field("operation_counts", &self.inner.counter.snapshot())
            .finish()
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn operation_timeout(&self) -> Option<Duration> {
        Some(self.inner.operation_timeout)
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        check_length("credential key", key)?;
        let command = &redis::cmd("HGETALL").arg(token_key(key)).to_owned();
        let fields: HashMap<String, String> = self
            .run(op::LOAD, |mut connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        let Some((record, reseal)) = self.decode(key, fields) else {
            return Ok(None);
        };
        if let Some(old_nonce) = reseal {
            self.reseal(key, &record, &old_nonce).await;
        }
        Ok(Some(record))
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        // As on SQL, whose generation column is a BIGINT: every store refuses the same records.
        if i64::try_from(record.generation.0).is_err() {
            return Err(StoreError::Query {
                store: self.describe(),
                operation: op::SAVE,
                source: format!("generation {} does not fit a BIGINT", record.generation).into(),
            });
        }
        let fields = self.encode(key, record)?;
        let mut invocation = scripts::SAVE.key(token_key(key));
        invocation
            .arg(record.generation.0.to_string())
            .arg(&self.inner.channel)
            .arg(key);
        for (name, value) in &fields {
            invocation.arg(*name).arg(value.as_str());
        }
        let invocation = &invocation;
        let written: i64 = self
            .run(op::SAVE, |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(written == 1)
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        // At least a millisecond: `PX 0` is refused by Redis.
        let ttl_ms =
            i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.clamp(1, MAX_TTL_MS));
        let mut invocation = scripts::TRY_LEASE.key(lease_key(key));
        invocation.key(lease_info_key(key)).arg(owner).arg(ttl_ms);
        let invocation = &invocation;
        let taken: i64 = self
            .run(op::TRY_LEASE, |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(taken == 1)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        check_length("lease owner", owner)?;
        let mut invocation = scripts::RELEASE.key(lease_key(key));
        invocation.key(lease_info_key(key)).arg(owner);
        let invocation = &invocation;
        self.run(op::RELEASE, |mut connection| async move {
            invocation.invoke_async::<i64>(&mut connection).await
        })
        .await?;
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        check_length("credential key", key)?;
        let invocation = &scripts::CLEAR.key(token_key(key));
        self.run(op::CLEAR, |mut connection| async move {
            invocation.invoke_async::<i64>(&mut connection).await
        })
        .await?;
        Ok(())
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        check_length("credential key", key)?;
        let invocation = &scripts::LEASE.key(lease_info_key(key));
        let info: Option<(String, i64, i64, i64)> = self
            .run(op::LEASE, |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(info.map(|(holder, acquired_at, expires_at, now)| {
            LeaseInfo::new(holder, acquired_at, expires_at, now)
        }))
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        check_length("credential key", key)?;
        let command = &redis::cmd("HGET")
            .arg(token_key(key))
            .arg("generation")
            .to_owned();
        let stored: Option<u64> = self
            .run(op::STORED_GENERATION, |mut connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        Ok(stored.map(Generation))
    }

    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        let mut held = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !held.as_ref().is_some_and(|listener| listener.is_running()) {
            *held = listener::shared(listener::Target {
                url: &self.inner.url,
                client: &self.inner.client,
                channel: &self.inner.channel,
                describe: &self.inner.describe,
                connect_timeout: self.inner.connect_timeout,
            });
        }
        held.as_ref()
            .map(|listener| listener.wakeups().subscribe(key))
    }

    fn operation_counts(&self) -> Option<OperationCounts> {
        Some(self.inner.counter.snapshot())
    }
}
