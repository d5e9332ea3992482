//! Building a [`TokenManager`]: the settings and their defaults, the checks that refuse settings which could not
//! work together, and the store key and lease owner a manager gets when none is given.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::generation::owner_salt;
use super::{
    BackoffState, Cache, CountedStore, Counters, Inner, Leasing, SaidOnce, Settings, TokenManager,
};
use crate::clock::{Clock, Jitter, RandomJitter, SystemClock};
use crate::error::ConfigError;
use crate::store::{MAX_KEY_BYTES, MemoryStore, TokenStore};
use crate::token::coalesce::Coalesce;
use crate::token::rules::{self, Breach, Setting};
use crate::token::source::TokenSource;

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
    /// How long before a token stops being used a call starts refreshing it in the background, when its lifetime
    /// is known: room for a login that takes its whole [`LOGIN_TIMEOUT`] several times over, with the backoff of
    /// a failed one between. Scaled down to half the token's usable life (its lifetime less the skew) for
    /// shorter lifetimes.
    pub const REFRESH_AHEAD: Duration = Duration::from_secs(60);
}

/// Builds a [`TokenManager`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use paynet_auth::TokenManager;
/// use paynet_auth::clock::{ManualClock, NoJitter};
/// use paynet_auth::error::ConfigError;
/// use paynet_auth::store::MemoryStore;
/// use paynet_auth::PaynetLogin;
///
/// let login = || PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let clock = Arc::new(ManualClock::new(1_700_000_000_000));
/// let manager = TokenManager::builder(login())
///     .store(MemoryStore::with_clock(clock.clone()))
///     .clock(clock)
///     .jitter(Arc::new(NoJitter))
///     .token_ttl(Some(Duration::from_secs(12 * 3600)))
///     .login_timeout(Duration::from_secs(5))
///     .lease_ttl(Duration::from_secs(20))
///     .backoff(Duration::from_millis(250), Duration::from_secs(10))
///     .store_key("gateway-1")
///     .build()
///     .unwrap();
/// assert_eq!(manager.store_key(), "gateway-1");
///
/// // A lease that may run out while its holder is still logging in is refused.
/// let error = TokenManager::builder(login()).lease_ttl(Duration::from_secs(5)).build().unwrap_err();
/// assert!(matches!(&error, ConfigError::Refused { fields, .. } if fields == &["lease_ttl", "login_timeout"]));
/// ```
pub struct TokenManagerBuilder {
    source: Arc<dyn TokenSource>,
    store: Option<Arc<dyn TokenStore>>,
    clock: Option<Arc<dyn Clock>>,
    jitter: Arc<dyn Jitter>,
    key: Option<String>,
    name: String,
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

    /// How long before a token stops being used (its lifetime less the skew) a call starts refreshing it in the
    /// background, while the token keeps serving: no caller waits for that login. Only for a token whose lifetime
    /// is known (`token_ttl`, or the source's `expires_in`). `Duration::ZERO` turns it off; then the calls that
    /// find the token expired wait for its refresh. Defaults to [`defaults::REFRESH_AHEAD`], scaled down to half
    /// the usable life of shorter-lived tokens.
    ///
    /// A window not shorter than `token_ttl` less `expiry_skew` is refused by [`build`](Self::build): every
    /// token would be refreshed as soon as it arrived.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.settings.refresh_ahead = Some(window);
        self
    }

    /// Whether a token past its lifetime is still sent when no new one can be had because the token endpoint is
    /// down ([`TokenError::is_outage`](crate::TokenError::is_outage)): the gateway, not our guess of the lifetime,
    /// decides whether it still works, and only its rejection makes callers fail. Said at WARN once per token.
    /// Defaults to `true`; with `false` callers fail with the login's error as soon as the lifetime has passed.
    pub fn static_stability(mut self, on: bool) -> Self {
        self.settings.static_stability = on;
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

    /// The name of this credential in [`Stats`](super::Stats)' readers and the `credential` label of every
    /// `metrics` series: a short name an operator knows (`merchant-17`), unlike the store key. Defaults to
    /// `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The store key of this credential. Defaults to the source's [`TokenSource::store_key`].
    pub fn store_key(mut self, key: impl Into<String>) -> Self {
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
    /// - a `refresh_ahead` window, other than zero, not shorter than `token_ttl` less `expiry_skew` (every token
    ///   would be refreshed as soon as it arrived);
    /// - a `lease_ttl` not longer than `login_timeout` plus twice the store's
    ///   [`operation_timeout`](TokenStore::operation_timeout) (the re-read before and the save after the login
    ///   happen under the lease too; a shorter lease lets a second instance log in while the first still
    ///   holds a login in flight);
    /// - a `login_timeout` or `poll_interval` of zero, a duration longer than 100 years
    ///   ([`MAX_SPAN`](crate::config::MAX_SPAN)), a `backoff_initial` longer than `backoff_max` (the two arguments
    ///   of [`backoff`](Self::backoff)).
    ///
    /// The configuration's checks apply the same rules, under the names of the file.
    pub fn build(self) -> Result<TokenManager, ConfigError> {
        let clock = self
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock::new()) as Arc<dyn Clock>);
        let store = self
            .store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(Arc::clone(&clock))));
        if let Some(breach) = breach(&self.settings, store.operation_timeout()) {
            let (fields, reason) = breach.describe(builder_name);
            return Err(ConfigError::Refused {
                origin: "TokenManagerBuilder".to_owned(),
                fields,
                reason,
            });
        }
        Ok(TokenManager {
            inner: Arc::new(self.into_inner(clock, store)),
        })
    }

    /// The manager's state, from settings [`build`](Self::build) checked.
    fn into_inner(self, clock: Arc<dyn Clock>, store: Arc<dyn TokenStore>) -> Inner {
        let owner = self.owner.unwrap_or_else(default_owner);
        let counters = Arc::new(Counters::new(&self.name));
        let store = Arc::new(CountedStore {
            store,
            counters: Arc::clone(&counters),
        });
        Inner {
            name: self.name,
            counters,
            key: bounded_key(self.key.unwrap_or_else(|| self.source.store_key())),
            owner_salt: owner_salt(&owner),
            owner,
            source: self.source,
            store,
            clock,
            jitter: self.jitter,
            settings: self.settings,
            cache: Cache {
                current: ArcSwapOption::empty(),
                rejected: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                background: AtomicU64::new(0),
                serving_stale: AtomicU64::new(0),
                epoch: tokio::time::Instant::now(),
            },
            flights: Coalesce::new(),
            backoff: BackoffState::default(),
            leasing: Leasing::default(),
            said: SaidOnce::default(),
        }
    }
}

/// The first rule the settings break, if any, for a store whose operations are bounded by `store_timeout`.
fn breach(s: &Settings, store_timeout: Option<Duration>) -> Option<Breach> {
    [
        rules::positive(Setting::LoginTimeout, s.login_timeout),
        rules::positive(Setting::PollInterval, s.poll_interval),
    ]
    .into_iter()
    .chain([
        rules::within_span(Setting::TokenTtl, s.token_ttl),
        rules::within_span(Setting::ExpirySkew, Some(s.expiry_skew)),
        rules::within_span(Setting::RefreshAhead, s.refresh_ahead),
        rules::within_span(Setting::LoginTimeout, Some(s.login_timeout)),
        rules::within_span(Setting::LeaseTtl, Some(s.lease_ttl)),
    ])
    .chain([
        rules::token_outlives_skew(s.token_ttl, s.expiry_skew),
        rules::window_fits_life(s.refresh_ahead, s.token_ttl, s.expiry_skew),
        rules::lease_covers_login(
            s.lease_ttl,
            s.login_timeout,
            store_timeout.filter(|t| !t.is_zero()),
        ),
        rules::backoff_ordered(s.backoff_initial, s.backoff_max),
    ])
    .flatten()
    .next()
}

/// What the builder calls each setting: its method's name.
fn builder_name(setting: Setting) -> String {
    if setting.is_store() {
        format!("StoreOptions::{}", setting.name())
    } else {
        setting.name().to_owned()
    }
}

/// Keeps a store key within [`MAX_KEY_BYTES`] bytes: a longer one (a long gateway URL) keeps a readable prefix
/// and ends with a digest of the whole, so distinct credentials still get distinct rows.
fn bounded_key(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(key.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut prefix_len = MAX_KEY_BYTES - digest.len() - 1;
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
            name: String::from("default"),
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
                refresh_ahead: None,
                static_stability: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_KEY_BYTES, bounded_key};

    #[test]
    fn short_keys_are_kept_and_long_keys_are_bounded_and_distinct() {
        assert_eq!(bounded_key("paynet:key".into()), "paynet:key");
        let a = bounded_key(format!("paynet:{}:a", "h".repeat(400)));
        let b = bounded_key(format!("paynet:{}:b", "h".repeat(400)));
        assert_eq!(a.len(), MAX_KEY_BYTES);
        assert_ne!(a, b);
        let multibyte = bounded_key("ключ".repeat(100));
        assert!(multibyte.len() <= MAX_KEY_BYTES);
    }
}
