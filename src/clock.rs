//! Injected time and randomness, so that expiry, backoff and polling can be tested without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in UTC milliseconds since the Unix epoch.
///
/// The manager reads it for token expiry, a [`MemoryStore`](crate::store::MemoryStore) for its leases; give one to
/// [`TokenManagerBuilder::clock`](crate::TokenManagerBuilder::clock) to control time in a test.
///
/// ```
/// use std::sync::Arc;
/// use paynet_auth::TokenManager;
/// use paynet_auth::clock::Clock;
/// use paynet_auth::PaynetLogin;
///
/// /// A clock stopped at one instant.
/// struct Stopped(i64);
///
/// impl Clock for Stopped {
///     fn now_ms(&self) -> i64 {
///         self.0
///     }
/// }
///
/// let clock: Arc<dyn Clock> = Arc::new(Stopped(1_700_000_000_000));
/// assert_eq!(clock.now_ms(), 1_700_000_000_000);
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).clock(clock).build().unwrap();
/// # let _ = manager;
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The real clock. It reads the system time once and then advances with tokio's clock, so that a test which
/// pauses and advances tokio time moves this clock too.
///
/// ```
/// use std::time::Duration;
/// use paynet_auth::clock::{Clock, SystemClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let clock = SystemClock::new();
/// let start = clock.now_ms();
/// assert!(start > 1_600_000_000_000); // UTC milliseconds since 1970
/// tokio::time::advance(Duration::from_secs(60)).await;
/// assert_eq!(clock.now_ms() - start, 60_000);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SystemClock {
    base_ms: i64,
    base: tokio::time::Instant,
}

impl SystemClock {
    /// A clock anchored now.
    #[allow(clippy::disallowed_methods)] // the one place that reads the system time
    pub fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// A clock that moves only when told to.
///
/// ```
/// use paynet_auth::clock::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(std::time::Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Sets the clock.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A source of random delays, so that instances polling a lease do not poll in step.
///
/// Given to [`TokenManagerBuilder::jitter`](crate::TokenManagerBuilder::jitter); the manager also mixes it into the
/// generation of a token obtained while the store does not answer.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use paynet_auth::TokenManager;
/// use paynet_auth::clock::Jitter;
/// use paynet_auth::PaynetLogin;
///
/// /// Always half the allowed delay.
/// struct Half;
///
/// impl Jitter for Half {
///     fn jitter(&self, max: Duration) -> Duration {
///         max / 2
///     }
/// }
///
/// assert_eq!(Half.jitter(Duration::from_millis(50)), Duration::from_millis(25));
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).jitter(Arc::new(Half)).build().unwrap();
/// # let _ = manager;
/// ```
pub trait Jitter: Send + Sync + 'static {
    /// A delay in `0..=max`.
    fn jitter(&self, max: Duration) -> Duration;
}

/// Uniformly random jitter from the thread-local generator. The manager's default.
///
/// ```
/// use std::time::Duration;
/// use paynet_auth::clock::{Jitter, RandomJitter};
///
/// let max = Duration::from_millis(50);
/// for _ in 0..100 {
///     assert!(RandomJitter.jitter(max) <= max);
/// }
/// assert_eq!(RandomJitter.jitter(Duration::ZERO), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn jitter(&self, max: Duration) -> Duration {
        use rand::Rng;
        let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=max_us))
    }
}

/// No jitter at all: deterministic tests.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use paynet_auth::TokenManager;
/// use paynet_auth::clock::{Jitter, NoJitter};
/// use paynet_auth::PaynetLogin;
///
/// assert_eq!(NoJitter.jitter(Duration::from_secs(1)), Duration::ZERO);
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).jitter(Arc::new(NoJitter)).build().unwrap();
/// # let _ = manager;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn jitter(&self, _max: Duration) -> Duration {
        Duration::ZERO
    }
}
