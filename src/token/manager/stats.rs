//! What the manager did and how it stands: counts kept in atomics (read with [`TokenManager::stats`], no recorder
//! needed), the same events reported through the `metrics` facade with the `metrics` feature, and the health a
//! readiness probe asks for ([`TokenManager::health`]).
//!
//! Nothing here is on the hot path: a call that finds its token counts nothing. Events are logins, rejections,
//! replays, adoptions, lease waits, backoff refusals, store errors and uninspected answers, each rare next to calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Standing, TokenManager};
use crate::error::{LoginError, StoreError};
use crate::record::{Generation, TokenRecord};
use crate::store::{LeaseInfo, OperationCounts, TokenStore, Wakeup, op};

/// The names of the series reported with the `metrics` feature. Every series carries the label `credential`.
pub mod names {
    /// Counter: logins attempted, by `outcome`: `ok`, `refused` (credentials or request refused), `unavailable`
    /// (endpoint unreachable, HTTP 5xx, 408, 429, an answer that is not the expected JSON) or `timeout`.
    pub const LOGINS: &str = "paynet_auth_logins_total";
    /// Histogram, seconds: how long each login took, whatever its outcome.
    pub const LOGIN_DURATION: &str = "paynet_auth_login_duration_seconds";
    /// Counter: rejections seen (-9999, or 401 for the Bearer preset), the first and any after a replay.
    pub const REJECTIONS: &str = "paynet_auth_rejections_total";
    /// Counter: requests sent again with a newer token after a rejection.
    pub const REPLAYS: &str = "paynet_auth_replays_total";
    /// Counter: tokens another instance wrote, taken from the store instead of logging in.
    pub const ADOPTIONS: &str = "paynet_auth_adoptions_total";
    /// Histogram, seconds: how long a refresh waited while another instance held the refresh lease.
    pub const LEASE_WAIT: &str = "paynet_auth_lease_wait_seconds";
    /// Counter: tokens of this instance's logins that the gateway rejected before accepting any call with them,
    /// each counted as a failed login for the backoff.
    pub const REJECTED_AT_ONCE: &str = "paynet_auth_tokens_rejected_at_once_total";
    /// Counter: callers failed at once because a failed login is backing off.
    pub const BACKOFF_REFUSALS: &str = "paynet_auth_backoff_refusals_total";
    /// Counter: store operations that failed, by `op` (`load`, `save`, `try_lease`, `release`, `clear`, `lease`,
    /// `stored_generation`) and `kind` (`unavailable`, `conflict`, `query`, `config`, `migration`).
    pub const STORE_ERRORS: &str = "paynet_auth_store_errors_total";
    /// Counter: answers handed on without looking for a rejection (too long, or in an unreadable coding).
    pub const UNINSPECTED: &str = "paynet_auth_uninspected_responses_total";
}

/// Describes every series (unit and help text) to the installed `metrics` recorder. Each manager does it when it
/// is built; call it yourself if you install the recorder after building the managers.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        names::LOGINS,
        Unit::Count,
        "Logins attempted, by outcome: ok, refused, unavailable, timeout."
    );
    describe_histogram!(
        names::LOGIN_DURATION,
        Unit::Seconds,
        "How long each login took."
    );
    describe_counter!(
        names::REJECTIONS,
        Unit::Count,
        "Rejections of a token seen in answers (-9999 or 401)."
    );
    describe_counter!(
        names::REPLAYS,
        Unit::Count,
        "Requests sent again with a newer token after a rejection."
    );
    describe_counter!(
        names::ADOPTIONS,
        Unit::Count,
        "Tokens written by another instance taken from the store."
    );
    describe_histogram!(
        names::LEASE_WAIT,
        Unit::Seconds,
        "How long a refresh waited for another instance holding the refresh lease."
    );
    describe_counter!(
        names::REJECTED_AT_ONCE,
        Unit::Count,
        "New tokens the gateway rejected before accepting any call with them."
    );
    describe_counter!(
        names::BACKOFF_REFUSALS,
        Unit::Count,
        "Callers failed at once while a failed login backs off."
    );
    describe_counter!(
        names::STORE_ERRORS,
        Unit::Count,
        "Token store operations that failed, by op and kind."
    );
    describe_counter!(
        names::UNINSPECTED,
        Unit::Count,
        "Answers handed on without looking for a rejection."
    );
}

/// What a manager did since it was built: the counts its `metrics` series report, without a recorder.
///
/// ```
/// use paynet_auth::{PaynetLogin, TokenManager};
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build().unwrap();
/// assert_eq!(manager.stats().logins_ok, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Logins that obtained a token.
    pub logins_ok: u64,
    /// Logins refused (wrong credentials, an HTTP 4xx other than 408 and 429).
    pub logins_refused: u64,
    /// Logins that failed because the endpoint is down or answered something else than a login answer.
    pub logins_unavailable: u64,
    /// Logins that ran past `login_timeout`.
    pub logins_timeout: u64,
    /// Rejections seen in answers (-9999, 401).
    pub rejections: u64,
    /// Requests sent again with a newer token after a rejection.
    pub replays: u64,
    /// Tokens written by another instance taken from the store.
    pub adoptions: u64,
    /// Refreshes that waited while another instance held the lease.
    pub lease_waits: u64,
    /// Tokens of this instance's logins that the gateway rejected before accepting any call with them (each
    /// counted as a failed login for the backoff).
    pub rejected_at_once: u64,
    /// Callers failed at once while a failed login backs off.
    pub backoff_refusals: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Answers handed on without looking for a rejection.
    pub uninspected_responses: u64,
}

impl std::fmt::Display for Stats {
    /// One line, every count named: `logins ok 2, refused 0, …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "logins ok {}, refused {}, unavailable {}, timed out {}; rejections {}, replays {}, adoptions {}, \
             lease waits {}, rejected at once {}, backoff refusals {}, store errors {}, uninspected responses {}",
            self.logins_ok,
            self.logins_refused,
            self.logins_unavailable,
            self.logins_timeout,
            self.rejections,
            self.replays,
            self.adoptions,
            self.lease_waits,
            self.rejected_at_once,
            self.backoff_refusals,
            self.store_errors,
            self.uninspected_responses
        )
    }
}

/// How a manager stands, for a readiness probe: see [`TokenManager::health`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Health {
    /// Calls get a token: a usable one is cached, or nothing stands in the way of a login.
    Ready,
    /// Calls get a token, but something is wrong that an operator should see.
    Degraded(Degradation),
    /// Calls fail: no usable token, and the login failed and is backing off.
    Failing {
        /// When the next login may be tried, on the manager's clock (UTC).
        next_attempt: SystemTime,
        /// The failed login.
        cause: Arc<LoginError>,
    },
}

impl Health {
    /// `Ready` or `Degraded`: calls get a token.
    pub fn is_serving(&self) -> bool {
        !matches!(self, Health::Failing { .. })
    }
}

impl std::fmt::Display for Health {
    /// `ready`, `degraded: …` or `failing: …`, on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ready => f.write_str("ready"),
            Health::Degraded(Degradation::StoreUnavailable) => f.write_str(
                "degraded: the token store does not answer; tokens are kept in memory only",
            ),
            Health::Degraded(Degradation::StoreTableMissing) => f.write_str(
                "degraded: a table of the token store is missing (run `paynet-auth migrate`, or `migrate()`); \
                 tokens are kept in memory only",
            ),
            Health::Degraded(Degradation::StoreDenied) => f.write_str(
                "degraded: the token store refuses this user's credentials or permissions; refreshes fail \
                 until the store user or its grants are fixed",
            ),
            Health::Degraded(Degradation::ServingPastLifetime) => f.write_str(
                "degraded: the token endpoint is down; the last token is sent past its lifetime",
            ),
            Health::Failing {
                next_attempt,
                cause,
            } => write!(
                f,
                "failing: no usable token, next login attempt at {}: {}",
                humantime::format_rfc3339_millis(*next_attempt),
                crate::error::Chain(&**cause)
            ),
        }
    }
}

/// Why a serving manager is [`Health::Degraded`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Degradation {
    /// The store's last operation failed: tokens live in memory only, logins are not coalesced across instances
    /// until it answers again.
    StoreUnavailable,
    /// The store's last operation found one of its tables missing (dropped, or never migrated on this database):
    /// tokens live in memory only until the migrations create it again.
    StoreTableMissing,
    /// The store refused its credentials or permissions ([`StoreError::Denied`]): refreshes fail (no login is
    /// made without the store for it) until the store user or its grants are fixed; a cached token is still
    /// served.
    StoreDenied,
    /// The token's lifetime has passed and no new one could be had because the token endpoint is down: the last
    /// token is sent until the gateway rejects it (static stability).
    ServingPastLifetime,
}

/// The counts, and the store's last answer.
#[derive(Default)]
pub(super) struct Counters {
    /// The `credential` label.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    credential: Arc<str>,
    logins_ok: AtomicU64,
    logins_refused: AtomicU64,
    logins_unavailable: AtomicU64,
    logins_timeout: AtomicU64,
    rejections: AtomicU64,
    replays: AtomicU64,
    adoptions: AtomicU64,
    lease_waits: AtomicU64,
    rejected_at_once: AtomicU64,
    backoff_refusals: AtomicU64,
    store_errors: AtomicU64,
    uninspected: AtomicU64,
    /// How the store's last operation went: one of the `STORE_*` states.
    store_state: AtomicU8,
}

/// The store's last operation succeeded, or failed only because of a concurrent one (the store answers).
const STORE_OK: u8 = 0;
/// The store's last operation failed: unreachable, timed out, or a query error.
const STORE_DOWN: u8 = 1;
/// The store's last operation found a table missing.
const STORE_MISSING_TABLE: u8 = 2;
/// The store refused its credentials or permissions.
const STORE_DENIED: u8 = 3;

/// One `metrics` event, with the credential label; nothing without the feature.
macro_rules! report {
    ($self:ident, counter $name:expr $(, $k:literal => $v:expr)*) => {
        #[cfg(feature = "metrics")]
        metrics::counter!($name, "credential" => metrics::SharedString::from_shared(Arc::clone(&$self.credential)) $(, $k => $v)*)
            .increment(1);
        #[cfg(not(feature = "metrics"))]
        {
            $(let _ = $v;)*
        }
    };
    ($self:ident, histogram $name:expr, $value:expr) => {
        #[cfg(feature = "metrics")]
        metrics::histogram!($name, "credential" => metrics::SharedString::from_shared(Arc::clone(&$self.credential)))
            .record($value.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = $value;
    };
}

impl Counters {
    pub(super) fn new(credential: &str) -> Self {
        #[cfg(feature = "metrics")]
        describe_metrics();
        Self {
            credential: Arc::from(credential),
            ..Self::default()
        }
    }

    pub(super) fn login(&self, result: Result<(), &LoginError>, took: Duration) {
        let (count, outcome) = match result {
            Ok(()) => (&self.logins_ok, "ok"),
            Err(LoginError::Timeout { .. }) => (&self.logins_timeout, "timeout"),
            Err(error)
                if error.is_outage()
                    || matches!(
                        error,
                        LoginError::NotJson { .. } | LoginError::TooLarge { .. }
                    ) =>
            {
                (&self.logins_unavailable, "unavailable")
            }
            Err(_) => (&self.logins_refused, "refused"),
        };
        count.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::LOGINS, "outcome" => outcome);
        report!(self, histogram names::LOGIN_DURATION, took);
    }

    pub(super) fn rejection(&self) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::REJECTIONS);
    }

    pub(super) fn replay(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::REPLAYS);
    }

    pub(super) fn adoption(&self) {
        self.adoptions.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::ADOPTIONS);
    }

    pub(super) fn lease_wait(&self, waited: Duration) {
        self.lease_waits.fetch_add(1, Ordering::Relaxed);
        report!(self, histogram names::LEASE_WAIT, waited);
    }

    pub(super) fn login_rejected_at_once(&self) {
        self.rejected_at_once.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::REJECTED_AT_ONCE);
    }

    pub(super) fn backoff_refusal(&self) {
        self.backoff_refusals.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::BACKOFF_REFUSALS);
    }

    pub(super) fn uninspected(&self) {
        self.uninspected.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::UNINSPECTED);
    }

    /// Successful logins: what [`TokenManager::logins`] reports.
    pub(super) fn logins_ok(&self) -> u64 {
        self.logins_ok.load(Ordering::Relaxed)
    }

    /// Logins attempted, whatever their outcome: what [`TokenManager::login_attempts`] reports.
    pub(super) fn login_attempts(&self) -> u64 {
        [
            &self.logins_ok,
            &self.logins_refused,
            &self.logins_unavailable,
            &self.logins_timeout,
        ]
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .sum()
    }

    pub(super) fn uninspected_count(&self) -> u64 {
        self.uninspected.load(Ordering::Relaxed)
    }

    fn store_result<T>(&self, op: &'static str, result: &Result<T, StoreError>) {
        let error = match result {
            Ok(_) => {
                self.store_state.store(STORE_OK, Ordering::Relaxed);
                return;
            }
            Err(error) => error,
        };
        let (kind, state) = match error {
            StoreError::Unavailable { .. } => ("unavailable", STORE_DOWN),
            // A conflict is the store answering: busy, not down.
            StoreError::Conflict { .. } => ("conflict", STORE_OK),
            StoreError::Query { .. } => ("query", STORE_DOWN),
            StoreError::Config(_) => ("config", STORE_DOWN),
            StoreError::Migration { .. } => ("migration", STORE_DOWN),
            StoreError::Denied { .. } => ("denied", STORE_DENIED),
            StoreError::MissingTable { .. } => ("missing_table", STORE_MISSING_TABLE),
        };
        if kind != "conflict" {
            self.store_state.store(state, Ordering::Relaxed);
        }
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        report!(self, counter names::STORE_ERRORS, "op" => op, "kind" => kind);
    }

    pub(super) fn snapshot(&self) -> Stats {
        let read = |count: &AtomicU64| count.load(Ordering::Relaxed);
        Stats {
            logins_ok: read(&self.logins_ok),
            logins_refused: read(&self.logins_refused),
            logins_unavailable: read(&self.logins_unavailable),
            logins_timeout: read(&self.logins_timeout),
            rejections: read(&self.rejections),
            replays: read(&self.replays),
            adoptions: read(&self.adoptions),
            lease_waits: read(&self.lease_waits),
            rejected_at_once: read(&self.rejected_at_once),
            backoff_refusals: read(&self.backoff_refusals),
            store_errors: read(&self.store_errors),
            uninspected_responses: read(&self.uninspected),
        }
    }
}

/// The user's store with every operation's outcome counted: one place sees them all, the refresh's and those of
/// the tasks that release a lease or save a token later.
pub(super) struct CountedStore {
    pub(super) store: Arc<dyn TokenStore>,
    pub(super) counters: Arc<Counters>,
}

#[async_trait]
impl TokenStore for CountedStore {
    fn describe(&self) -> String {
        self.store.describe()
    }

    fn operation_timeout(&self) -> Option<Duration> {
        self.store.operation_timeout()
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        let result = self.store.load(key).await;
        self.counters.store_result(op::LOAD, &result);
        result
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        let result = self.store.save(key, record).await;
        self.counters.store_result(op::SAVE, &result);
        result
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let result = self.store.try_lease(key, owner, ttl).await;
        self.counters.store_result(op::TRY_LEASE, &result);
        result
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let result = self.store.release(key, owner).await;
        self.counters.store_result(op::RELEASE, &result);
        result
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let result = self.store.clear(key).await;
        self.counters.store_result(op::CLEAR, &result);
        result
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        let result = self.store.lease(key).await;
        self.counters.store_result(op::LEASE, &result);
        result
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        let result = self.store.stored_generation(key).await;
        self.counters.store_result(op::STORED_GENERATION, &result);
        result
    }

    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        self.store.subscribe(key)
    }

    fn operation_counts(&self) -> Option<OperationCounts> {
        self.store.operation_counts()
    }
}

impl TokenManager {
    /// What this manager did since it was built: logins by outcome, rejections, replays, adoptions, lease waits,
    /// backoff refusals, store errors, uninspected answers. The same counts the `metrics` feature reports.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// How this manager stands, for a readiness probe: [`Health::Failing`] when calls fail (no usable token and
    /// a failed login backing off, with the time of the next attempt); [`Health::Degraded`] when calls get a token
    /// but the store's last operation failed, or the last token is served past its lifetime through an outage of
    /// the token endpoint; else [`Health::Ready`]. No I/O: it reads what the last calls left.
    ///
    /// ```
    /// use paynet_auth::PaynetLogin;
    /// use paynet_auth::token::{LoginResponse, LoginSender};
    /// use paynet_auth::TokenManager;
    /// use paynet_auth::token::Health;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "wrong".into(), 4027096);
    /// let manager = TokenManager::builder(login).name("merchant-17").build().unwrap();
    /// assert!(matches!(manager.health(), Health::Ready)); // nothing in the way of a login
    /// let refused = || LoginSender::new(|_| Box::pin(async {
    ///     Ok(LoginResponse {
    ///         status: http::StatusCode::OK,
    ///         headers: http::HeaderMap::new(),
    ///         body: r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1001,"message":"Invalid login or password"}}"#.into(),
    ///     })
    /// }));
    /// manager.token(refused()).await.unwrap_err();
    /// // No token, and the failed login backs off: calls fail at once until `next_attempt`.
    /// let health = manager.health();
    /// assert!(matches!(health, Health::Failing { .. }));
    /// assert!(health.to_string().starts_with("failing: no usable token, next login attempt at "));
    /// assert_eq!(manager.stats().logins_refused, 1);
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let current = inner.cache.current.load();
        let usable = current
            .as_ref()
            .and_then(|token| inner.usable_standing(token));
        if usable.is_none()
            && let Some((next_attempt, cause)) = inner.backoff()
        {
            return Health::Failing {
                next_attempt,
                cause,
            };
        }
        match inner.counters.store_state.load(Ordering::Relaxed) {
            STORE_DOWN => return Health::Degraded(Degradation::StoreUnavailable),
            STORE_MISSING_TABLE => return Health::Degraded(Degradation::StoreTableMissing),
            STORE_DENIED => return Health::Degraded(Degradation::StoreDenied),
            _ => {}
        }
        if usable == Some(Standing::Stale) {
            return Health::Degraded(Degradation::ServingPastLifetime);
        }
        Health::Ready
    }

    /// A rejection seen in an answer.
    pub(crate) fn note_rejection(&self) {
        self.inner.counters.rejection();
    }

    /// A call the gateway accepted with `generation`.
    #[inline]
    pub(crate) fn note_accepted(&self, generation: Generation) {
        self.inner.accepted(generation);
    }

    /// A request about to be sent again with a newer token.
    pub(crate) fn note_replay(&self) {
        self.inner.counters.replay();
    }
}
