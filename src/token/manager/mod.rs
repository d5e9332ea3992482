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
//! - `generation`: how a new token is numbered.

mod backoff;
mod builder;
mod generation;
mod login;
mod refresh;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tracing::warn;

use crate::clock::{Clock, Jitter};
use crate::error::{StoreError, TokenError};
use crate::store::TokenStore;
use crate::token::coalesce::Coalesce;
use crate::token::source::TokenSource;
use crate::token::{ActiveToken, Generation, TokenRecord};

use self::backoff::{Degraded, Failure};
pub use self::builder::{TokenManagerBuilder, defaults};
pub use self::login::{LoginFuture, LoginSender};

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
}

/// The state every clone of a [`TokenManager`] shares. Each file of this module adds the methods of its concern.
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
    ///
    /// [`Numbering`]: generation::Numbering
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

impl TokenManager {
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
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
