//! The token manager: a lock-free cache for the hot path, one coalesced refresh per stale generation inside the
//! process, and the store's lease across processes.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::clock::{Clock, Jitter, RandomJitter, SystemClock};
use crate::error::{BoxError, ConfigError, LoginError, StoreError, TokenError};
use crate::store::{MemoryStore, TokenStore};
use crate::token::coalesce::{Coalesce, Join};
use crate::token::source::{LoginResponse, TokenSource};
use crate::token::{ActiveToken, Generation, Grant, TokenRecord};

/// Defaults for [`TokenManagerBuilder`].
pub mod defaults {
    use std::time::Duration;

    /// How long a login may take before it counts as failed.
    pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a refresh lease lasts if its holder never releases it. Must exceed the login timeout.
    pub const LEASE_TTL: Duration = Duration::from_secs(30);
    /// How often an instance waiting for another's refresh reads the store (plus up to as much jitter).
    pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
    /// How long an instance waits for another's refresh before it gives up with an error.
    pub const WAIT_TIMEOUT: Duration = Duration::from_secs(45);
    /// How long before its expiry a token stops being used.
    pub const EXPIRY_SKEW: Duration = Duration::from_secs(30);
    /// The first pause after a failed login.
    pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
    /// The longest pause after repeated failed logins.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// The largest login answer read.
    pub const MAX_LOGIN_RESPONSE: usize = 1 << 20;
}

/// The future a [`LoginSender`] returns.
pub type LoginFuture = BoxFuture<'static, Result<LoginResponse, BoxError>>;

/// Sends one login request. The layer makes one from a clone of the service it wraps, so the login goes through
/// the same client, TLS settings, timeouts and proxies as the calls it authorises.
pub struct LoginSender(Box<dyn FnOnce(Request<Full<Bytes>>) -> LoginFuture + Send>);

impl LoginSender {
    /// A sender from a function.
    pub fn new(send: impl FnOnce(Request<Full<Bytes>>) -> LoginFuture + Send + 'static) -> Self {
        Self(Box::new(send))
    }

    /// A sender that calls `service` once and reads its answer (up to 1 MiB).
    pub fn from_service<S, B>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Self::new(move |request| {
            async move {
                let response = service.oneshot(request).await.map_err(Into::into)?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, defaults::MAX_LOGIN_RESPONSE)
                    .collect()
                    .await?
                    .to_bytes();
                Ok(LoginResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            .boxed()
        })
    }

    fn send(self, request: Request<Full<Bytes>>) -> LoginFuture {
        (self.0)(request)
    }
}

impl fmt::Debug for LoginSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSender")
    }
}

type FlightResult = Result<Arc<ActiveToken>, TokenError>;

#[derive(Debug, Clone)]
struct Settings {
    token_ttl: Option<Duration>,
    expiry_skew: Duration,
    login_timeout: Duration,
    lease_ttl: Duration,
    poll_interval: Duration,
    wait_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

struct Failure {
    cause: Arc<LoginError>,
    until: Instant,
    /// `until` on the injected wall clock, for the error's `retry_at`.
    retry_at: SystemTime,
    consecutive: u32,
}

/// Logins without the lease since the store last answered.
struct Degraded {
    /// No further login without the lease before this.
    next_login: Instant,
    consecutive: u32,
}

/// How often a statement refused because of a concurrent one ([`StoreError::Conflict`]) is tried in all.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The pause after the first conflict, doubled after each further one, plus up to as much jitter: 10, 20, 40 and
/// 80 ms, at most 300 ms in all.
const CONFLICT_PAUSE: Duration = Duration::from_millis(10);

/// What a read of the store said.
enum Read {
    /// A token newer than the stale one: adopt it.
    Adopt(TokenRecord),
    /// Nothing to adopt; the newest generation seen, if any.
    Nothing(Option<Generation>),
    /// The store did not answer (unreachable, or a query error): degraded mode.
    Down(StoreError),
}

struct Inner {
    key: String,
    owner: String,
    source: Arc<dyn TokenSource>,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    settings: Settings,
    current: ArcSwapOption<ActiveToken>,
    flights: Coalesce<Option<Generation>, FlightResult>,
    failure: Mutex<Option<Failure>>,
    /// One more than the newest generation the gateway rejected (0: none). The hot path reads it with the cache, so
    /// that a token known to be dead is never sent again, even while a failed login backs off; an atomic rather
    /// than a field of the cached token so that marking it needs no lock and no new `ActiveToken`.
    rejected: AtomicU64,
    /// A hash of `owner`, mixed into generations numbered without the store (see [`Numbering`]).
    owner_salt: u64,
    /// Spacing of logins made without the lease while the store is unreachable.
    degraded: Mutex<Option<Degraded>>,
    /// Serialises taking the lease with a late release of an earlier one, and numbers the leases taken, so that
    /// a release retried after the store came back never gives up a lease taken since.
    lease_gate: Arc<tokio::sync::Mutex<u64>>,
    logins: AtomicU64,
    login_attempts: AtomicU64,
    uninspected: AtomicU64,
    unreadable_coding_seen: AtomicBool,
    /// Whether the expiry skew was said to be scaled down for a short `expires_in`, so that it is said once.
    skew_scaled_logged: AtomicBool,
}

/// Caches the token of one credential and refreshes it when it is missing, expired or rejected.
///
/// Cheap to clone; clones share the cache. Reading the cached token takes no lock and touches no database.
/// A refresh is coalesced twice: every task of this process that needs a token newer than generation `g` waits
/// for one refresh task, and of all processes sharing the store only the one holding the lease logs in; the
/// others adopt its token from the store.
///
/// ```
/// use paynet_auth::TokenManager;
/// use paynet_auth::store::MemoryStore;
/// use paynet_auth::token::PaynetLogin;
///
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "https://gateway.example/gw",
///     "username_17627_56530",
///     "password_17627_56530".into(),
///     4027096,
/// ))
/// .store(MemoryStore::new())
/// .token_ttl(Some(std::time::Duration::from_secs(12 * 3600)))
/// .build()
/// .unwrap();
/// assert!(manager.cached().is_none());
/// ```
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("key", &self.inner.key)
            .field("endpoint", &self.inner.source.endpoint())
            .field("store", &self.inner.store.describe())
            .field(
                "generation",
                &self.inner.current.load().as_ref().map(|t| t.generation()),
            )
            .finish()
    }
}

/// Builds a [`TokenManager`].
pub struct TokenManagerBuilder {
    source: Arc<dyn TokenSource>,
    store: Option<Arc<dyn TokenStore>>,
    clock: Option<Arc<dyn Clock>>,
    jitter: Arc<dyn Jitter>,
    key: Option<String>,
    owner: Option<String>,
    settings: Settings,
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("endpoint", &self.source.endpoint())
            .field("settings", &self.settings)
            .finish()
    }
}

impl TokenManagerBuilder {
    /// Where tokens are persisted and the lease lives. Defaults to a fresh [`MemoryStore`].
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Like [`store`](Self::store), for a store already behind an `Arc`.
    pub fn shared_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Stops using a token this long after it was obtained, before the gateway rejects it. Defaults to `None`:
    /// a token is used until it is rejected.
    pub fn token_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.settings.token_ttl = ttl;
        self
    }

    /// How long before its expiry a token stops being used. Defaults to [`defaults::EXPIRY_SKEW`].
    pub fn expiry_skew(mut self, skew: Duration) -> Self {
        self.settings.expiry_skew = skew;
        self
    }

    /// How long a login may take. Defaults to [`defaults::LOGIN_TIMEOUT`].
    pub fn login_timeout(mut self, timeout: Duration) -> Self {
        self.settings.login_timeout = timeout;
        self
    }

    /// How long the refresh lease lasts if its holder dies. Must exceed the login timeout. Defaults to
    /// [`defaults::LEASE_TTL`].
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl;
        self
    }

    /// How often an instance waiting for another's refresh reads the store. Defaults to
    /// [`defaults::POLL_INTERVAL`].
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = interval;
        self
    }

    /// How long to wait for another instance's refresh. Defaults to [`defaults::WAIT_TIMEOUT`].
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.settings.wait_timeout = timeout;
        self
    }

    /// The pause after a failed login, doubled after each further failure up to `max`. Defaults to
    /// [`defaults::BACKOFF_INITIAL`] and [`defaults::BACKOFF_MAX`].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings.backoff_initial = initial;
        self.settings.backoff_max = max;
        self
    }

    /// The wall clock for expiry. Defaults to [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The jitter added to lease polling. Defaults to [`RandomJitter`].
    pub fn jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// The store key of this credential. Defaults to the source's [`TokenSource::credential_key`].
    pub fn credential_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// How this manager names itself as a lease holder. Defaults to host name, process id and a random suffix,
    /// so that two processes on one host never share a name. It must be unique per manager: a holder may re-take
    /// its own lease (one it could not release), so two managers sharing a name would not exclude each other.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Checks the settings and builds the manager.
    ///
    /// Refused with [`ConfigError::Refused`], naming the settings by their builder names:
    /// - a `token_ttl` not longer than `expiry_skew` (the token would expire before it may be used, and every
    ///   call would log in);
    /// - a `lease_ttl` not longer than `login_timeout` plus twice the store's
    ///   [`operation_timeout`](TokenStore::operation_timeout) (the re-read before and the save after the login
    ///   happen under the lease too; a shorter lease lets a second instance log in while the first still
    ///   holds a login in flight).
    pub fn build(self) -> Result<TokenManager, ConfigError> {
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(SystemClock::new()) as Arc<dyn Clock>);
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(Arc::clone(&clock))));
        let s = &self.settings;
        if let Some(ttl) = s.token_ttl
            && ttl <= s.expiry_skew
        {
            return Err(refused(
                &["token_ttl", "expiry_skew"],
                format!(
                    "token_ttl ({ttl:?}) must be longer than expiry_skew ({:?}): a token is not used during its \
                     last expiry_skew, so it would never be used and every call would log in",
                    s.expiry_skew
                ),
            ));
        }
        let store_timeout = store.operation_timeout().unwrap_or(Duration::ZERO);
        let lease_needs = s
            .login_timeout
            .saturating_add(store_timeout.saturating_mul(2));
        if s.lease_ttl <= lease_needs {
            let (fields, store_part): (&[&str], String) = if store_timeout.is_zero() {
                (&["lease_ttl", "login_timeout"], String::new())
            } else {
                (
                    &[
                        "lease_ttl",
                        "login_timeout",
                        "StoreOptions::connect_timeout",
                    ],
                    format!(
                        " plus twice the operation timeout of {} ({store_timeout:?}, StoreOptions::connect_timeout: \
                         the re-read before and the save after the login are made under the lease too)",
                        store.describe()
                    ),
                )
            };
            return Err(refused(
                fields,
                format!(
                    "lease_ttl ({:?}) must be longer than login_timeout ({:?}){store_part}, or a second instance \
                     could log in while the first is still logging in",
                    s.lease_ttl, s.login_timeout
                ),
            ));
        }
        if s.login_timeout.is_zero() || s.poll_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "login_timeout and poll_interval must be positive".into(),
            ));
        }
        if s.backoff_initial > s.backoff_max {
            return Err(ConfigError::Invalid(format!(
                "backoff initial ({:?}) exceeds its maximum ({:?})",
                s.backoff_initial, s.backoff_max
            )));
        }
        let owner = self.owner.unwrap_or_else(default_owner);
        Ok(TokenManager {
            inner: Arc::new(Inner {
                key: bounded_key(self.key.unwrap_or_else(|| self.source.credential_key())),
                owner_salt: owner_salt(&owner),
                owner,
                source: self.source,
                store,
                clock,
                jitter: self.jitter,
                settings: self.settings,
                current: ArcSwapOption::empty(),
                flights: Coalesce::new(),
                failure: Mutex::new(None),
                rejected: AtomicU64::new(0),
                degraded: Mutex::new(None),
                lease_gate: Arc::default(),
                logins: AtomicU64::new(0),
                login_attempts: AtomicU64::new(0),
                uninspected: AtomicU64::new(0),
                unreadable_coding_seen: AtomicBool::new(false),
                skew_scaled_logged: AtomicBool::new(false),
            }),
        })
    }
}

fn refused(fields: &[&str], reason: String) -> ConfigError {
    ConfigError::Refused {
        origin: "TokenManagerBuilder".to_owned(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        reason,
    }
}

/// The longest credential key every store accepts as a primary key.
const MAX_KEY_LEN: usize = 255;

/// Keeps a credential key within [`MAX_KEY_LEN`] bytes: a longer one (a long gateway URL) keeps a readable prefix
/// and ends with a digest of the whole, so distinct credentials still get distinct rows.
fn bounded_key(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(key.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut prefix_len = MAX_KEY_LEN - digest.len() - 1;
    while !key.is_char_boundary(prefix_len) {
        prefix_len -= 1;
    }
    format!("{}~{digest}", &key[..prefix_len])
}

fn default_owner() -> String {
    use rand::Rng;
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{host}:{}:{suffix:08x}", std::process::id())
}

impl TokenManager {
    /// Starts building a manager for the credential `source` logs in with.
    pub fn builder(source: impl TokenSource) -> TokenManagerBuilder {
        TokenManagerBuilder {
            source: Arc::new(source),
            store: None,
            clock: None,
            jitter: Arc::new(RandomJitter),
            key: None,
            owner: None,
            settings: Settings {
                token_ttl: None,
                expiry_skew: defaults::EXPIRY_SKEW,
                login_timeout: defaults::LOGIN_TIMEOUT,
                lease_ttl: defaults::LEASE_TTL,
                poll_interval: defaults::POLL_INTERVAL,
                wait_timeout: defaults::WAIT_TIMEOUT,
                backoff_initial: defaults::BACKOFF_INITIAL,
                backoff_max: defaults::BACKOFF_MAX,
            },
        }
    }

    /// The cached token, if there is one and it has not expired. No lock, no I/O.
    pub fn cached(&self) -> Option<Arc<ActiveToken>> {
        self.fresh().map(FreshToken::into_shared)
    }

    /// The cached token while it is fresh and not rejected, borrowed from the cache: unlike
    /// [`cached`](Self::cached) it touches no reference count, which every call on every thread would otherwise
    /// contend on. Hold it briefly.
    pub(crate) fn fresh(&self) -> Option<FreshToken> {
        let guard = self.inner.current.load();
        // Relaxed: a request that reads a stale value sends the rejected token once more, which the gateway
        // rejects again; no ordering with other memory is needed.
        let rejected = self.inner.rejected.load(Ordering::Relaxed);
        let fresh = guard.as_ref().is_some_and(|token| {
            token.generation().0 >= rejected && self.inner.is_fresh(token.record())
        });
        fresh.then_some(FreshToken(guard))
    }

    /// A usable token: the cached one, or a refreshed one when there is none or it expired.
    pub async fn token(&self, login: LoginSender) -> Result<Arc<ActiveToken>, TokenError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let stale = self.inner.current.load().as_ref().map(|t| t.generation());
        self.refresh(stale, login).await
    }

    /// A token newer than `rejected`, which the gateway refused. When another task or instance has already
    /// refreshed, that token is returned without a login.
    pub async fn token_after(
        &self,
        rejected: Generation,
        login: LoginSender,
    ) -> Result<Arc<ActiveToken>, TokenError> {
        // From now on the cache does not hand out `rejected` or anything older: callers wait for the refresh, or
        // fail fast while a failed login backs off, instead of sending a token known to be dead.
        self.inner
            .rejected
            .fetch_max(rejected.0.saturating_add(1), Ordering::Relaxed);
        self.refresh(Some(rejected), login).await
    }

    /// Logs in now (or adopts a newer stored token), whatever the cache holds.
    pub async fn force_refresh(&self, login: LoginSender) -> Result<Arc<ActiveToken>, TokenError> {
        let cached = self.inner.current.load().as_ref().map(|t| t.generation());
        let stored = match self.inner.store.load(&self.inner.key).await {
            Ok(record) => record.map(|r| r.generation),
            Err(e) => {
                warn!(key = %self.inner.key, error = %e, "token store unavailable while forcing a refresh");
                None
            }
        };
        self.refresh(cached.max(stored).or(Some(Generation(0))), login)
            .await
    }

    /// The token row of this credential in the store.
    pub async fn stored(&self) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.store.load(&self.inner.key).await
    }

    /// The refresh lease of this credential in the store: who took it last, when, until when.
    pub async fn lease(&self) -> Result<Option<crate::store::LeaseInfo>, StoreError> {
        self.inner.store.lease(&self.inner.key).await
    }

    /// Forgets the token, in this process and in the store: the next request logs in.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.inner.current.store(None);
        self.inner.store.clear(&self.inner.key).await
    }

    /// The store key of this credential.
    pub fn credential_key(&self) -> &str {
        &self.inner.key
    }

    /// The token endpoint.
    pub fn endpoint(&self) -> &str {
        self.inner.source.endpoint()
    }

    /// The store's description.
    pub fn store_description(&self) -> String {
        self.inner.store.describe()
    }

    /// How many logins this manager performed successfully.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// How many logins this manager attempted, failed ones included.
    pub fn login_attempts(&self) -> u64 {
        self.inner.login_attempts.load(Ordering::Relaxed)
    }

    /// How many responses the layers and adapters on this manager handed on without looking for a rejection:
    /// longer than the inspection limit (declared or as they streamed), or compressed in a coding that could not
    /// be read. A rejection in such an answer would reach the caller as it is, so a count that grows is worth a
    /// look at the limit or the encodings.
    pub fn uninspected_responses(&self) -> u64 {
        self.inner.uninspected.load(Ordering::Relaxed)
    }

    pub(crate) fn note_uninspected(&self) {
        self.inner.uninspected.fetch_add(1, Ordering::Relaxed);
    }

    /// True the first time it is asked: an answer in an unreadable content coding is worth one WARN, not one per
    /// answer.
    pub(crate) fn first_unreadable_coding(&self) -> bool {
        !self
            .inner
            .unreadable_coding_seen
            .swap(true, Ordering::Relaxed)
    }

    async fn refresh(
        &self,
        stale: Option<Generation>,
        login: LoginSender,
    ) -> Result<Arc<ActiveToken>, TokenError> {
        let mut login = Some(login);
        loop {
            if let Some(token) = self.cached()
                && stale.is_none_or(|g| token.generation() > g)
            {
                return Ok(token);
            }
            let inner = &self.inner;
            let join = inner.flights.join_or_start(
                stale,
                |started_for| *started_for >= stale,
                || {
                    inner.check_backoff()?;
                    let login = login
                        .take()
                        .expect("a flight is started at most once per call");
                    Ok(Arc::clone(inner).run_refresh(stale, login).boxed())
                },
                Err(TokenError::Aborted),
            );
            match join {
                Join::Answered(answer) => return answer,
                Join::Flight {
                    flight,
                    covers: true,
                } => return flight.await,
                Join::Flight {
                    flight,
                    covers: false,
                } => {
                    // An older refresh is finishing; its token may already satisfy us, else start our own.
                    let _ = flight.await;
                }
            }
        }
    }
}

/// A fresh token borrowed from the cache; see [`TokenManager::fresh`].
pub(crate) struct FreshToken(arc_swap::Guard<Option<Arc<ActiveToken>>>);

impl FreshToken {
    fn into_shared(self) -> Arc<ActiveToken> {
        arc_swap::Guard::into_inner(self.0).expect("a FreshToken holds a token")
    }
}

impl std::ops::Deref for FreshToken {
    type Target = ActiveToken;

    fn deref(&self) -> &ActiveToken {
        self.0.as_deref().expect("a FreshToken holds a token")
    }
}

enum Outcome {
    Adopted,
    LoggedIn,
    LoggedInUnsaved,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Adopted => "adopted",
            Outcome::LoggedIn => "logged_in",
            Outcome::LoggedInUnsaved => "logged_in_unsaved",
        }
    }
}

impl Inner {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn is_fresh(&self, record: &TokenRecord) -> bool {
        record.is_fresh(self.now_ms(), self.skew_ms(record))
    }

    /// The margin before `record`'s expiry: `expiry_skew`, but never more than half the token's lifetime. A
    /// source's `expires_in` shorter than the skew would otherwise make every token stale on arrival, and every
    /// call would log in. Integer arithmetic only: this runs on the hot path.
    fn skew_ms(&self, record: &TokenRecord) -> i64 {
        let skew = duration_ms(self.settings.expiry_skew);
        match record.expires_at_ms {
            Some(expires) => skew.min(expires.saturating_sub(record.obtained_at_ms) / 2),
            None => skew,
        }
    }

    fn adoptable(&self, record: &TokenRecord, stale: Option<Generation>) -> bool {
        stale.is_none_or(|g| record.generation > g) && self.is_fresh(record)
    }

    fn check_backoff(&self) -> Result<(), FlightResult> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(failure) = failure.as_ref() {
            let now = Instant::now();
            if now < failure.until {
                return Err(Err(TokenError::Backoff {
                    retry_in: failure.until - now,
                    retry_at: failure.retry_at,
                    cause: Arc::clone(&failure.cause),
                }));
            }
        }
        Ok(())
    }

    fn record_failure(&self, cause: &Arc<LoginError>) -> (Duration, SystemTime) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        let consecutive = failure.as_ref().map_or(1, |f| f.consecutive + 1);
        let factor = 2u32.saturating_pow(consecutive - 1);
        let pause = self
            .settings
            .backoff_initial
            .saturating_mul(factor)
            .min(self.settings.backoff_max);
        let retry_at = wall_time(self.now_ms().saturating_add(duration_ms(pause)));
        *failure = Some(Failure {
            cause: Arc::clone(cause),
            until: Instant::now() + pause,
            retry_at,
            consecutive,
        });
        (pause, retry_at)
    }

    fn clear_failure(&self) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn run_refresh(
        self: Arc<Self>,
        stale: Option<Generation>,
        login: LoginSender,
    ) -> FlightResult {
        let span = info_span!(
            "token_refresh",
            key = %self.key,
            stale_generation = stale.map(|g| g.0),
            generation = tracing::field::Empty,
            outcome = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .refresh_protocol(stale, login)
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        span.record("elapsed_ms", started.elapsed().as_millis() as u64);
        match result {
            Ok((token, outcome)) => {
                span.record("generation", token.generation().0);
                span.record("outcome", outcome.as_str());
                self.clear_failure();
                // Never move the cache backwards: a slower refresh must not replace a newer token.
                self.current.rcu(|current| match current {
                    Some(current) if current.generation() > token.generation() => {
                        Some(Arc::clone(current))
                    }
                    _ => Some(Arc::clone(&token)),
                });
                Ok(token)
            }
            Err(error) => {
                span.record("outcome", "failed");
                if let TokenError::Login(cause) = &error {
                    let (pause, retry_at) = self.record_failure(cause);
                    error!(
                        endpoint = %self.source.endpoint(),
                        error = %cause,
                        retry_in_ms = pause.as_millis() as u64,
                        retry_at = %humantime::format_rfc3339_millis(retry_at),
                        "token refresh failed"
                    );
                } else {
                    error!(error = %error, "token refresh failed");
                }
                Err(error)
            }
        }
    }

    /// The refresh protocol of one stale generation (see the crate's README, "How the refresh works").
    ///
    /// A [`StoreError::Conflict`] never leads to a login without the lease: on a read it is retried and then
    /// counts as "nothing new yet", on the lease it means "not acquired". Only a store that does not answer
    /// (unreachable, or a query error) leads to a login without the lease, spaced out by [`Inner::degraded_wait`].
    async fn refresh_protocol(
        self: &Arc<Self>,
        stale: Option<Generation>,
        login: LoginSender,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        let mut newest = stale.max(self.current.load().as_ref().map(|t| t.generation()));
        let mut waited_since = Instant::now();
        let mut down = None;
        match self.read(stale).await {
            Read::Adopt(record) => return Ok(self.adopt(record)),
            Read::Nothing(generation) => newest = newest.max(generation),
            Read::Down(error) => down = Some(error),
        }
        loop {
            if let Some(error) = down.take() {
                let Some(wait) = self.degraded_wait() else {
                    return self.login_without_store(newest, login, &error).await;
                };
                // A login without the lease was made recently: no other before the pause ends. Meanwhile ask the
                // store again every poll interval, so that once it is back the lease decides at once rather than
                // after the rest of a pause that may be long.
                debug!(wait_ms = wait.as_millis() as u64, error = %error, "token store unavailable; spacing out logins without the lease");
                tokio::time::sleep(wait.min(self.settings.poll_interval)).await;
                waited_since = Instant::now();
            } else {
                match self.take_lease().await {
                    Ok(true) => return self.refresh_holding_lease(stale, newest, login).await,
                    Ok(false) => {}
                    Err(error) if error.is_conflict() => {
                        debug!(error = %error, "refresh lease contended: not acquired");
                    }
                    Err(error) => {
                        down = Some(error);
                        continue;
                    }
                }
                if waited_since.elapsed() >= self.settings.wait_timeout {
                    return Err(TokenError::LeaseWait {
                        store: self.store.describe(),
                        waited: waited_since.elapsed(),
                    });
                }
                let pause =
                    self.settings.poll_interval + self.jitter.jitter(self.settings.poll_interval);
                tokio::time::sleep(pause).await;
            }
            match self.read(stale).await {
                Read::Adopt(record) => return Ok(self.adopt(record)),
                Read::Nothing(generation) => newest = newest.max(generation),
                Read::Down(error) => down = Some(error),
            }
        }
    }

    /// Reads the stored token, retrying conflicts.
    async fn read(&self, stale: Option<Generation>) -> Read {
        match self.retry_conflicts(|| self.store.load(&self.key)).await {
            Ok(record) => {
                self.store_answered();
                match record {
                    Some(record) if self.adoptable(&record, stale) => Read::Adopt(record),
                    record => Read::Nothing(record.map(|r| r.generation)),
                }
            }
            // The store answers, it is only busy: nothing new seen yet, the next poll asks again.
            Err(error) if error.is_conflict() => {
                debug!(error = %error, "token store read collided with another transaction");
                Read::Nothing(None)
            }
            Err(error) => Read::Down(error),
        }
    }

    /// Tries the lease once, and numbers it when taken (see `lease_gate`).
    async fn take_lease(&self) -> Result<bool, StoreError> {
        let mut taken = self.lease_gate.lock().await;
        let result = self
            .store
            .try_lease(&self.key, &self.owner, self.settings.lease_ttl)
            .await;
        match &result {
            Ok(true) => {
                *taken += 1;
                self.store_answered();
            }
            Ok(false) => self.store_answered(),
            Err(_) => {}
        }
        result
    }

    /// Runs a store operation again while it fails with [`StoreError::Conflict`], after a doubling, jittered
    /// pause, at most [`CONFLICT_ATTEMPTS`] times in all.
    async fn retry_conflicts<T, F, Fut>(&self, mut operation: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut pause = CONFLICT_PAUSE;
        let mut attempt = 1;
        loop {
            match operation().await {
                Err(error) if error.is_conflict() && attempt < CONFLICT_ATTEMPTS => {
                    debug!(attempt, error = %error, "token store conflict; retrying");
                    tokio::time::sleep(pause + self.jitter.jitter(pause)).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn refresh_holding_lease(
        self: &Arc<Self>,
        stale: Option<Generation>,
        mut newest: Option<Generation>,
        login: LoginSender,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        // Re-read after taking the lease: the previous holder may have saved just before releasing it. A read that
        // fails here is no reason to wait: holding the lease, this instance is the one that logs in.
        let mut numbering = Numbering::AfterStored;
        let adopted = match self.retry_conflicts(|| self.store.load(&self.key)).await {
            Ok(Some(record)) if self.adoptable(&record, stale) => Some(self.adopt(record)),
            Ok(Some(record)) => {
                newest = newest.max(Some(record.generation));
                None
            }
            Ok(None) => {
                // Absent, cleared, or present but unusable here (another encryption key, no valid authentication):
                // number past it either way.
                match self
                    .retry_conflicts(|| self.store.stored_generation(&self.key))
                    .await
                {
                    Ok(stored) => newest = newest.max(stored),
                    Err(error) => {
                        numbering = Numbering::Unordered;
                        self.store_failed("read under the lease", "logging in", &error);
                    }
                }
                None
            }
            Err(error) => {
                numbering = Numbering::Unordered;
                self.store_failed("read under the lease", "logging in", &error);
                None
            }
        };
        let result = match adopted {
            Some(adopted) => Ok(adopted),
            None => match self.login(login).await {
                Ok(grant) => {
                    let record = self.new_record(newest, grant, numbering);
                    let saved = self
                        .retry_conflicts(|| self.store.save(&self.key, &record))
                        .await;
                    let outcome = match saved {
                        Ok(true) => Outcome::LoggedIn,
                        Ok(false) => {
                            warn!(
                                generation = record.generation.0,
                                "the store already holds this or a newer generation; keeping the new token in memory"
                            );
                            Outcome::LoggedInUnsaved
                        }
                        Err(error) => {
                            self.store_failed("save", "serving the new token from memory", &error);
                            self.persist_later(record.clone());
                            Outcome::LoggedInUnsaved
                        }
                    };
                    Ok((Arc::new(ActiveToken::new(record)), outcome))
                }
                Err(error) => Err(TokenError::Login(Arc::new(error))),
            },
        };
        self.release_lease().await;
        result
    }

    /// Gives the lease back. Conflicts are retried at once; if the store does not answer, a task keeps trying
    /// until the lease would have run out anyway, so that the fleet does not wait a whole lease TTL for this
    /// instance's next refresh to start.
    async fn release_lease(self: &Arc<Self>) {
        let released = self
            .retry_conflicts(|| self.store.release(&self.key, &self.owner))
            .await;
        let Err(error) = released else { return };
        warn!(store = %self.store.describe(), error = %error, "could not release the refresh lease; retrying in the background until it runs out");
        let inner = Arc::downgrade(self);
        let gate = Arc::clone(&self.lease_gate);
        let lease = *self.lease_gate.lock().await;
        let give_up = Instant::now() + self.settings.lease_ttl;
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            while Instant::now() < give_up {
                tokio::time::sleep(pause).await;
                let Some(inner) = inner.upgrade() else { return };
                let taken = gate.lock().await;
                if *taken != lease {
                    // This instance took the lease again since: that lease is not this task's to give back.
                    return;
                }
                match inner.store.release(&inner.key, &inner.owner).await {
                    Ok(()) => {
                        info!(key = %inner.key, "released the refresh lease after the store came back");
                        return;
                    }
                    Err(error) => debug!(error = %error, "refresh lease release failed again"),
                }
                drop(taken);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Logs a store failure the refresh works around: a query error (schema, bug) at ERROR, since retrying will
    /// not cure it; an unreachable or busy store at WARN.
    fn store_failed(&self, op: &str, then: &str, error: &StoreError) {
        match error {
            StoreError::Unavailable { .. } => {
                warn!(store = %self.store.describe(), error = %error, "token store unavailable ({op}): {then}");
            }
            StoreError::Conflict { .. } => {
                warn!(store = %self.store.describe(), error = %error, "token store conflict past its retries ({op}): {then}");
            }
            _ => {
                error!(store = %self.store.describe(), error = %error, "token store {op} failed: {then}")
            }
        }
    }

    /// How long until the next login without the lease is allowed, if that is not yet.
    fn degraded_wait(&self) -> Option<Duration> {
        let degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        degraded
            .as_ref()
            .filter(|d| now < d.next_login)
            .map(|d| d.next_login - now)
    }

    /// Counts a login without the lease: the next one waits `backoff_initial`, doubled after each further one up
    /// to `backoff_max`, until the store answers again.
    fn degraded_login(&self) -> Duration {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let consecutive = degraded.as_ref().map_or(1, |d| d.consecutive + 1);
        let pause = self
            .settings
            .backoff_initial
            .saturating_mul(2u32.saturating_pow(consecutive - 1))
            .min(self.settings.backoff_max);
        *degraded = Some(Degraded {
            next_login: Instant::now() + pause,
            consecutive,
        });
        pause
    }

    fn store_answered(&self) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.is_some() {
            *degraded = None;
        }
    }

    async fn login_without_store(
        self: &Arc<Self>,
        newest: Option<Generation>,
        login: LoginSender,
        cause: &StoreError,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        self.store_failed(
            "refresh",
            "logging in without the lease, the new token is served from memory",
            cause,
        );
        let result = self.login(login).await;
        // Counted whether or not the login succeeded: both cost the gateway a login attempt.
        let pause = self.degraded_login();
        debug!(
            next_in_ms = pause.as_millis() as u64,
            "next login without the lease spaced out"
        );
        let grant = result.map_err(|e| TokenError::Login(Arc::new(e)))?;
        let record = self.new_record(newest, grant, Numbering::Unordered);
        self.persist_later(record.clone());
        Ok((Arc::new(ActiveToken::new(record)), Outcome::LoggedInUnsaved))
    }

    /// Writes a token obtained while the store was down once the store is back, unless a newer one replaced it.
    fn persist_later(self: &Arc<Self>, record: TokenRecord) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            loop {
                tokio::time::sleep(pause).await;
                let Some(inner) = inner.upgrade() else { return };
                let superseded = inner
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|t| t.generation() > record.generation);
                if superseded {
                    return;
                }
                match inner.store.save(&inner.key, &record).await {
                    Ok(_) => {
                        info!(key = %inner.key, generation = record.generation.0, "token store is back: saved the token obtained while it was down");
                        return;
                    }
                    Err(error) => {
                        debug!(error = %error, "token store still unavailable");
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    fn adopt(&self, record: TokenRecord) -> (Arc<ActiveToken>, Outcome) {
        info!(generation = record.generation.0, written_by = %record.written_by, "adopted a newer token from the store");
        (Arc::new(ActiveToken::new(record)), Outcome::Adopted)
    }

    fn new_record(
        &self,
        newest: Option<Generation>,
        grant: Grant,
        numbering: Numbering,
    ) -> TokenRecord {
        let now = self.now_ms();
        if let Some(expires_in) = grant.expires_in
            && expires_in / 2 < self.settings.expiry_skew
            && !self.skew_scaled_logged.swap(true, Ordering::Relaxed)
        {
            warn!(
                endpoint = %self.source.endpoint(),
                expires_in_ms = expires_in.as_millis() as u64,
                expiry_skew_ms = self.settings.expiry_skew.as_millis() as u64,
                "the token endpoint's expires_in leaves less than twice expiry_skew: a token is used until half \
                 its lifetime is left instead (said once)"
            );
        }
        let ttl = match (self.settings.token_ttl, grant.expires_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TokenRecord {
            token: grant.token,
            generation: self.next_generation(newest, numbering),
            obtained_at_ms: now,
            expires_at_ms: ttl.map(|ttl| now.saturating_add(duration_ms(ttl))),
            meta: grant.meta,
            written_by: self.owner.clone(),
        }
    }

    /// The generation of a token this instance just obtained; see [`Numbering`].
    fn next_generation(&self, newest: Option<Generation>, numbering: Numbering) -> Generation {
        let after = newest.map_or(0, |g| g.0).saturating_add(1);
        match numbering {
            Numbering::AfterStored => Generation(after),
            Numbering::Unordered => {
                let ms = u64::try_from(self.now_ms()).unwrap_or(0);
                let random = u64::try_from(
                    self.jitter
                        .jitter(Duration::from_micros(SALT_MASK))
                        .as_micros(),
                )
                .unwrap_or(0);
                let salt = (random ^ self.owner_salt) & SALT_MASK;
                let timed = ms.min(MAX_TIMED_MS) << SALT_BITS | salt;
                Generation(after.max(timed))
            }
        }
    }

    async fn login(&self, login: LoginSender) -> Result<Grant, LoginError> {
        let request = self.source.login_request()?;
        self.login_attempts.fetch_add(1, Ordering::Relaxed);
        let endpoint = self.source.endpoint();
        let response =
            match tokio::time::timeout(self.settings.login_timeout, login.send(request)).await {
                Err(_) => {
                    return Err(LoginError::Timeout {
                        endpoint: endpoint.to_owned(),
                        after: self.settings.login_timeout,
                    });
                }
                Ok(Err(source)) => {
                    return Err(LoginError::Unreachable {
                        endpoint: endpoint.to_owned(),
                        source,
                    });
                }
                Ok(Ok(response)) => response,
            };
        let response = decoded(response, endpoint)?;
        let grant = self.source.parse_response(response)?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        info!(endpoint = %endpoint, fingerprint = %crate::token::fingerprint(secrecy::ExposeSecret::expose_secret(&grant.token)), "logged in");
        Ok(grant)
    }
}

/// The login answer with its body decoded, when a gateway or a proxy compressed it (some compress whatever the
/// request asked for). The sources then read plain JSON.
fn decoded(mut response: LoginResponse, endpoint: &str) -> Result<LoginResponse, LoginError> {
    use crate::coding::{ContentCoding, decode_bounded};
    let coding = ContentCoding::of(&response.headers);
    if coding == ContentCoding::Identity || response.body.is_empty() {
        return Ok(response);
    }
    let Some(plain) = decode_bounded(coding, &response.body, defaults::MAX_LOGIN_RESPONSE) else {
        let encoding = response
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        return Err(LoginError::NotJson {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "the answer is `Content-Encoding: {encoding}` and could not be decoded (this build reads gzip,                  deflate and br with the `decompression` feature; or put tower-http's DecompressionLayer below the                  layer)"
            ),
        });
    };
    response.body = Bytes::from(plain);
    response.headers.remove(http::header::CONTENT_ENCODING);
    response.headers.remove(http::header::CONTENT_LENGTH);
    Ok(response)
}

/// Epoch milliseconds of the injected clock as a `SystemTime`.
fn wall_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// How a new token is numbered.
///
/// Generations must be unique across the fleet (a waiter adopts, and a rejection invalidates, by generation) and
/// monotone: a later token gets a higher number, across `token clear` and across logins made while the store was
/// unreachable.
///
/// - Under the lease, with the stored generation known, a token is numbered right after it. That is unique: one
///   holder at a time writes, and the store refuses a generation that is not newer than its row. A cleared row
///   stays as a tombstone that keeps its generation ([`TokenStore::clear`]), so numbering never restarts.
/// - Without the store (it is unreachable, or could not be read under the lease), nothing orders two instances.
///   The number then comes from time: the clock's milliseconds shifted left by [`SALT_BITS`], with that many low
///   bits of the injected randomness mixed with a hash of the owner's name, and never below the newest
///   generation this instance knows plus one. Two instances logging in during one outage collide only in the same
///   millisecond *and* with the same 20 bits; the later login gets the higher number, which is the token a
///   single-session gateway keeps alive, so the store converges on it when it returns; and the number is far
///   above any sequential one handed out before (those count logins; these count milliseconds times 2^20).
///
/// Time alone is not used under the lease, so that an instance whose clock runs behind still numbers after the
/// stored row; counting alone is not used without the store, since two instances that knew the same row would
/// pick the same next number.
#[derive(Debug, Clone, Copy)]
enum Numbering {
    AfterStored,
    Unordered,
}

/// Low bits of an unordered generation that tell instances apart within one millisecond.
const SALT_BITS: u32 = 20;
const SALT_MASK: u64 = (1 << SALT_BITS) - 1;
/// Keeps `ms << SALT_BITS` within a `BIGINT` column (until the year 2248).
const MAX_TIMED_MS: u64 = (i64::MAX as u64) >> SALT_BITS;

fn owner_salt(owner: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(owner.as_bytes());
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::{MAX_KEY_LEN, bounded_key};

    #[test]
    fn short_keys_are_kept_and_long_keys_are_bounded_and_distinct() {
        assert_eq!(bounded_key("paynet:key".into()), "paynet:key");
        let a = bounded_key(format!("paynet:{}:a", "h".repeat(400)));
        let b = bounded_key(format!("paynet:{}:b", "h".repeat(400)));
        assert_eq!(a.len(), MAX_KEY_LEN);
        assert_ne!(a, b);
        let multibyte = bounded_key("ключ".repeat(100));
        assert!(multibyte.len() <= MAX_KEY_LEN);
    }
}
