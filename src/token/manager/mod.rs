//! The token manager: a lock-free cache for the hot path, one coalesced refresh per stale generation inside the
//! process, and the store's lease across processes.
//!
//! This file holds what every part shares: the public handle [`TokenManager`] with its public methods, the state
//! behind it ([`Inner`]) and the hot path's freshness check. The rest is split by concern, each file adding its
//! own `impl Inner` block:
//! - `builder`: [`TokenManagerBuilder`], its checks and [`defaults`];
//! - `refresh`: the refresh protocol, from joining the refresh in flight to adopting, or logging in under the
//!   store's lease, and releasing it;
//! - `login`: [`LoginSender`], the login call and the record of the token it returns, and logging in while the
//!   store does not answer;
//! - `backoff`: the pause after a failed login and the spacing of logins made without the lease;
//! - `generation`: how a new token is numbered;
//! - `ahead`: refreshing in the background while the cached token still serves (refresh-ahead), and serving the
//!   last token past its lifetime while no new one can be had (static stability).

mod ahead;
mod backoff;
mod builder;
mod generation;
mod login;
mod refresh;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tracing::warn;

use crate::clock::{Clock, Jitter};
use crate::error::{StoreError, TokenError};
use crate::record::{Generation, TokenRecord};
use crate::store::TokenStore;
use crate::token::ActiveToken;
use crate::token::coalesce::Coalesce;
use crate::token::source::TokenSource;

use self::backoff::{Degraded, Failure};
pub use self::builder::{TokenManagerBuilder, defaults};
pub use self::login::{LoginFuture, LoginSender};
#[cfg(feature = "metrics")]
pub use self::stats::describe_metrics;
use self::stats::{CountedStore, Counters};
pub use self::stats::{Degradation, Health, Stats, names as metric_names};

/// How long [`TokenManager::shutdown`] waits for each store operation when the store states no operation
/// timeout of its own.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What one refresh hands to every task that waited for it.
type FlightResult = Result<Arc<ActiveToken>, TokenError>;

/// The builder's settings, kept by the manager as they were built.
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
    /// `None`: [`defaults::REFRESH_AHEAD`], scaled down for short lifetimes. `Some(ZERO)`: off.
    refresh_ahead: Option<Duration>,
    static_stability: bool,
}

/// The state every clone of a [`TokenManager`] shares, in the parts it is made of: what the builder gave it, the
/// cache the hot path reads, the backoff after failed logins, the lease's local guard, the refreshes in flight,
/// the counts, and what is said once. Each file of this module adds the methods of its concern.
struct Inner {
    key: String,
    /// See [`TokenManagerBuilder::name`].
    name: String,
    owner: String,
    /// A hash of `owner`, mixed into generations numbered without the store (see [`Numbering`]).
    ///
    /// [`Numbering`]: generation::Numbering
    owner_salt: u64,
    source: Arc<dyn TokenSource>,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    settings: Settings,
    cache: Cache,
    flights: Coalesce<Option<Generation>, FlightResult>,
    backoff: BackoffState,
    leasing: Leasing,
    /// What [`TokenManager::stats`] and the `metrics` series report; the store is wrapped to count its errors.
    counters: Arc<Counters>,
    said: SaidOnce,
}

/// The cached token and what the hot path reads beside it: each an atomic, so that a call finding a fresh token
/// makes one load of the token (and one of `rejected`), takes no lock and touches no reference count.
struct Cache {
    current: ArcSwapOption<ActiveToken>,
    /// One more than the newest generation the gateway rejected (0: none). The hot path reads it with the cache, so
    /// that a token known to be dead is never sent again, even while a failed login backs off; an atomic rather
    /// than a field of the cached token so that marking it needs no lock and no new `ActiveToken`.
    rejected: AtomicU64,
    /// The newest generation the gateway accepted a call with (0: none yet). A token rejected before it is
    /// accepted once was dead on arrival: see [`Inner::rejected_at_once`].
    accepted: AtomicU64,
    /// When the next background refresh may start, in milliseconds of tokio time since `epoch`; `u64::MAX` while
    /// one runs. The hot path reads it only for a token inside its refresh window (or served past its lifetime),
    /// so that one caller starts the refresh and the others neither take a lock nor clone the service.
    background: AtomicU64,
    /// One more than the generation served past its lifetime because no new token could be had (0: none): the
    /// hot path hands it out without waiting, and the WARN is said once per token.
    serving_stale: AtomicU64,
    /// The origin of `background`.
    epoch: tokio::time::Instant,
}

impl Cache {
    /// The generation of the cached token, if any.
    fn generation(&self) -> Option<Generation> {
        self.current.load().as_ref().map(|t| t.generation())
    }
}

/// The pause after failed logins, and the spacing of logins made without the lease.
#[derive(Default)]
struct BackoffState {
    failure: Mutex<Option<Failure>>,
    /// The generation whose rejection before any acceptance was last counted as a failed login, so that the many
    /// callers meeting one such rejection count it once.
    counted_at_once: AtomicU64,
    /// How many of this instance's logins in a row issued a token rejected before any acceptance: the exponent of
    /// the backoff after the next, which a successful login does not reset (an accepted call does).
    dead_on_arrival: AtomicU32,
    /// Spacing of logins made without the lease while the store is unreachable.
    degraded: Mutex<Option<Degraded>>,
}

/// This process's side of the store's refresh lease.
#[derive(Default)]
struct Leasing {
    /// Serialises taking the lease with a late release of an earlier one, and numbers the leases taken, so that
    /// a release retried after the store came back never gives up a lease taken since.
    gate: Arc<tokio::sync::Mutex<u64>>,
    /// Set by [`TokenManager::shutdown`] under `gate`, and read under it before a lease is taken: once the lease
    /// was given back at shutdown, it is never taken again.
    shut_down: AtomicBool,
}

/// Whether each WARN said once per manager was said.
#[derive(Default)]
struct SaidOnce {
    /// An answer in a content coding that could not be read.
    unreadable_coding: AtomicBool,
    /// The expiry skew scaled down for a short `expires_in`.
    skew_scaled: AtomicBool,
    /// The refresh-ahead window scaled down for a short `expires_in`.
    ahead_scaled: AtomicBool,
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
/// use paynet_auth::PaynetLogin;
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
            .field("generation", &self.inner.cache.generation())
            .finish()
    }
}

impl TokenManager {
    /// The cached token, if there is one and it has not expired. No lock, no I/O.
    pub fn cached(&self) -> Option<Arc<ActiveToken>> {
        let guard = self.inner.cache.current.load();
        let fresh = guard.as_ref().is_some_and(|token| {
            !self.inner.is_rejected(token) && self.inner.is_fresh(token.record())
        });
        fresh.then(|| arc_swap::Guard::into_inner(guard).expect("checked above"))
    }

    /// The token the hot path sends, borrowed from the cache: unlike [`cached`](Self::cached) it touches no
    /// reference count, which every call on every thread would otherwise contend on. Hold it briefly.
    ///
    /// `None` when the caller must wait for a refresh: no token, a rejected one, or one past its lifetime. A token
    /// inside its refresh window, or one served past its lifetime because no new one could be had, is handed out
    /// at once, and the first such caller starts a refresh in the background with the login `login` builds (only
    /// that caller calls it).
    pub(crate) fn usable(&self, login: impl FnOnce() -> LoginSender) -> Option<UsableToken> {
        let guard = self.inner.cache.current.load();
        let token = guard.as_ref()?;
        if self.inner.usable_standing(token)? != Standing::Fresh {
            self.refresh_in_background(token.generation(), login);
        }
        Some(UsableToken(guard))
    }

    /// A usable token: the cached one, or a refreshed one when there is none or it expired. With static stability
    /// (on by default), a token past its lifetime is still returned when no new one can be had because the token
    /// endpoint is down; see [`TokenManagerBuilder::static_stability`].
    pub fn token(
        &self,
        login: LoginSender,
    ) -> impl Future<Output = Result<Arc<ActiveToken>, TokenError>> + Send + '_ {
        self.usable_or_refreshed(login)
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
            .cache
            .rejected
            .fetch_max(rejected.0.saturating_add(1), Ordering::Relaxed);
        // A rejected token is not served past its lifetime: from here on a failed login fails the callers.
        self.refresh(Some(rejected), login).await
    }

    /// The gateway rejected `rejected` in an answer the layer (or the reqwest adapter) inspected. Besides what
    /// [`token_after`](Self::token_after) does, a token of this instance's own login rejected before any call was
    /// accepted with it counts as a failed login: the login did not really succeed, and logging in again at once
    /// would storm a gateway that rejects every session. Only the exchange knows which calls were accepted, so
    /// only it applies that rule; a caller of `token_after` alone is not subject to it.
    pub(crate) fn note_rejected(&self, rejected: Generation) {
        self.inner
            .cache
            .rejected
            .fetch_max(rejected.0.saturating_add(1), Ordering::Relaxed);
        self.inner.rejected_at_once(rejected);
    }

    /// Whether this instance's login obtained `token` (rather than another instance's, adopted from the store).
    pub(crate) fn is_own(&self, token: &ActiveToken) -> bool {
        token.record().written_by == self.inner.owner
    }

    /// Logs in now (or adopts a newer stored token), whatever the cache holds.
    pub async fn force_refresh(&self, login: LoginSender) -> Result<Arc<ActiveToken>, TokenError> {
        let cached = self.inner.cache.generation();
        let stored = match self.inner.store.load(&self.inner.key).await {
            Ok(record) => record.map(|r| r.generation),
            Err(e) => {
                warn!(store_key = %self.inner.key, error = %crate::error::Chain(&e), "token store unavailable while forcing a refresh");
                None
            }
        };
        self.refresh(cached.max(stored).or(Some(Generation(0))), login)
            .await
    }

    /// Gives back the store's refresh lease if this process holds it, so that the next instance (the one a deploy
    /// starts, or another of the fleet) takes it at once instead of waiting out `lease_ttl`. Call it when the
    /// service stops, after it stopped taking requests (axum's `with_graceful_shutdown`, a SIGTERM handler).
    ///
    /// Returns whether a lease held by this process was given back. Each of the two store operations (reading
    /// the lease, releasing it) is bounded by the store's operation timeout
    /// ([`StoreOptions::connect_timeout`](crate::store::StoreOptions::connect_timeout) for a database), or
    /// 5 seconds for a store without one; a store that does not answer within it is reported as
    /// [`StoreError::Unavailable`], and the lease then runs out by itself after `lease_ttl`.
    ///
    /// A login in flight is not cancelled: its token is still cached and saved when it arrives (saves never
    /// replace a newer generation), but the lease it was made under is already given back, so another instance
    /// may log in meanwhile. A service that exits right after this call simply abandons that login.
    ///
    /// After shutdown the manager keeps serving: calls still get the cached token, and a store unreachable still
    /// means logging in without the lease as always. But it never takes the lease again: a refresh waits for
    /// another instance's token and adopts it, as when the lease is held elsewhere, and fails with
    /// [`TokenError::LeaseWait`] if none comes within the wait timeout.
    ///
    /// ```
    /// use paynet_auth::TokenManager;
    /// use paynet_auth::store::MemoryStore;
    /// use paynet_auth::PaynetLogin;
    ///
    /// # tokio_test::block_on(async {
    /// let manager = TokenManager::builder(PaynetLogin::new("https://gateway.example/gw", "u", "p".into(), 1))
    ///     .store(MemoryStore::new())
    ///     .build()
    ///     .unwrap();
    /// // No refresh ran, so no lease was held.
    /// assert!(!manager.shutdown().await.unwrap());
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Result<bool, StoreError> {
        let inner = &self.inner;
        // Held while the lease is read and released, so that no refresh of this process takes it in between.
        let _gate = inner.leasing.gate.lock().await;
        inner.leasing.shut_down.store(true, Ordering::Relaxed);
        let bound = inner.store.operation_timeout().unwrap_or(SHUTDOWN_TIMEOUT);
        let bounded = |what: &'static str| {
            move |_elapsed| StoreError::Unavailable {
                store: inner.store.describe(),
                source: format!("{what} did not finish within {bound:?}").into(),
            }
        };
        let lease = tokio::time::timeout(bound, inner.store.lease(&inner.key))
            .await
            .map_err(bounded("reading the refresh lease"))??;
        let held = lease.is_some_and(|lease| lease.holder == inner.owner && lease.is_held());
        // Released even when the store reports no lease: a store that keeps no lease information may still keep
        // a lease, and releasing one this process does not hold changes nothing.
        tokio::time::timeout(bound, inner.store.release(&inner.key, &inner.owner))
            .await
            .map_err(bounded("releasing the refresh lease"))??;
        if held {
            tracing::info!(store_key = %inner.key, "gave the refresh lease back at shutdown");
        }
        Ok(held)
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
        self.inner.cache.current.store(None);
        self.inner.store.clear(&self.inner.key).await
    }

    /// The name of this credential, as the `metrics` series label it: see [`TokenManagerBuilder::name`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The store key of this credential.
    pub fn store_key(&self) -> &str {
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

    /// How many logins this manager performed successfully: [`Stats::logins_ok`], read from the same count.
    pub fn logins(&self) -> u64 {
        self.inner.counters.logins_ok()
    }

    /// How many logins this manager attempted, failed ones included: the sum of [`stats`](Self::stats)' login
    /// outcomes, read from the same counts.
    pub fn login_attempts(&self) -> u64 {
        self.inner.counters.login_attempts()
    }

    /// How many responses the layers and adapters on this manager handed on without looking for a rejection:
    /// longer than the inspection limit (declared or as they streamed), or compressed in a coding that could not
    /// be read. A rejection in such an answer would reach the caller as it is, so a count that grows is worth a
    /// look at the limit or the encodings.
    pub fn uninspected_responses(&self) -> u64 {
        self.inner.counters.uninspected_count()
    }

    pub(crate) fn note_uninspected(&self) {
        self.inner.counters.uninspected();
    }

    /// True the first time it is asked: an answer in an unreadable content coding is worth one WARN, not one per
    /// answer.
    pub(crate) fn first_unreadable_coding(&self) -> bool {
        !self
            .inner
            .said
            .unreadable_coding
            .swap(true, Ordering::Relaxed)
    }
}

/// Where a cached token stands in its lifetime (see `Inner::standing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Before its refresh window: send it, nothing else.
    Fresh,
    /// Inside its refresh window: send it, and refresh in the background.
    Ahead,
    /// Past its lifetime (less the skew): wait for a refresh, unless it is served past its lifetime (static
    /// stability), then send it and refresh in the background.
    Stale,
}

/// A usable token borrowed from the cache; see [`TokenManager::usable`].
pub(crate) struct UsableToken(arc_swap::Guard<Option<Arc<ActiveToken>>>);

impl UsableToken {
    pub(crate) fn into_shared(self) -> Arc<ActiveToken> {
        arc_swap::Guard::into_inner(self.0).expect("a UsableToken holds a token")
    }
}

impl std::ops::Deref for UsableToken {
    type Target = ActiveToken;

    fn deref(&self) -> &ActiveToken {
        self.0.as_deref().expect("a UsableToken holds a token")
    }
}

impl Inner {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn is_fresh(&self, record: &TokenRecord) -> bool {
        record.is_fresh(self.now_ms(), self.skew_ms(record))
    }

    /// Where a cached token stands if it may be sent: `None` when it was rejected, or is past its lifetime and not
    /// served through an outage. What the hot path and `health` both ask.
    fn usable_standing(&self, token: &ActiveToken) -> Option<Standing> {
        if self.is_rejected(token) {
            return None;
        }
        match self.standing(token.record()) {
            Standing::Stale if !self.is_served_stale(token.generation()) => None,
            standing => Some(standing),
        }
    }

    /// Whether the gateway rejected `token` (or a newer one).
    fn is_rejected(&self, token: &ActiveToken) -> bool {
        // Relaxed: a request that reads a stale value sends the rejected token once more, which the gateway
        // rejects again; no ordering with other memory is needed.
        token.generation().0 < self.cache.rejected.load(Ordering::Relaxed)
    }

    /// Where `record` stands in its lifetime. Integer arithmetic and one clock read: this runs on the hot path.
    fn standing(&self, record: &TokenRecord) -> Standing {
        let Some(expires) = record.expires_at_ms else {
            return Standing::Fresh;
        };
        let stale_at = expires.saturating_sub(self.skew_ms(record));
        let now = self.now_ms();
        if now >= stale_at {
            Standing::Stale
        } else if now >= stale_at.saturating_sub(self.ahead_ms(record, stale_at)) {
            Standing::Ahead
        } else {
            Standing::Fresh
        }
    }

    /// The refresh-ahead window of `record`, which stops being used at `stale_at`: the configured window (or
    /// [`defaults::REFRESH_AHEAD`]), but never the whole of the token's usable life, or every token would be
    /// refreshed as soon as it arrived. The default is scaled down to half that life; a configured window that
    /// does not fit (only possible with a source's short `expires_in`: a configured `token_ttl` is checked when
    /// the manager is built) likewise, as said once when such a token arrives.
    fn ahead_ms(&self, record: &TokenRecord, stale_at: i64) -> i64 {
        let usable = stale_at.saturating_sub(record.obtained_at_ms);
        match self.settings.refresh_ahead {
            None => duration_ms(defaults::REFRESH_AHEAD).min(usable / 2),
            Some(window) if duration_ms(window) < usable => duration_ms(window),
            Some(_) => usable / 2,
        }
    }

    /// Whether a configured window, other than zero, takes all of `record`'s usable life, so that `ahead_ms`
    /// shrinks it: the same arithmetic, for the WARN said when such a token arrives.
    fn window_shrunk(&self, record: &TokenRecord) -> bool {
        let Some(expires) = record.expires_at_ms else {
            return false;
        };
        let stale_at = expires.saturating_sub(self.skew_ms(record));
        matches!(self.settings.refresh_ahead, Some(window) if !window.is_zero()
            && duration_ms(window) >= stale_at.saturating_sub(record.obtained_at_ms))
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
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
