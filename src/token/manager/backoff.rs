//! Pauses that protect the gateway: after a failed login no other is tried before a doubling pause ends (callers
//! get [`TokenError::Backoff`] meanwhile), and while the store does not answer, logins made without the lease are
//! spaced out the same way until it answers again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{FlightResult, Inner, duration_ms};
use crate::error::{LoginError, TokenError};

pub(super) struct Failure {
    cause: Arc<LoginError>,
    until: Instant,
    /// `until` on the injected wall clock, for the error's `retry_at`.
    retry_at: SystemTime,
    consecutive: u32,
}

/// Logins without the lease since the store last answered.
pub(super) struct Degraded {
    /// No further login without the lease before this.
    next_login: Instant,
    consecutive: u32,
}

impl Inner {
    pub(super) fn check_backoff(&self) -> Result<(), FlightResult> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(failure) = failure.as_ref() {
            let now = Instant::now();
            if now < failure.until {
                self.counters.backoff_refusal();
                return Err(Err(TokenError::Backoff {
                    retry_in: failure.until - now,
                    retry_at: failure.retry_at,
                    cause: Arc::clone(&failure.cause),
                }));
            }
        }
        Ok(())
    }

    pub(super) fn record_failure(&self, cause: &Arc<LoginError>) -> (Duration, SystemTime) {
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

    /// When the next login may be tried (on the injected wall clock) and the failure that waits, while a failed
    /// login backs off.
    pub(super) fn backoff(&self) -> Option<(SystemTime, Arc<LoginError>)> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .filter(|f| Instant::now() < f.until)
            .map(|f| (f.retry_at, Arc::clone(&f.cause)))
    }

    /// When the backoff after the last failed login ends, if it has not yet.
    pub(super) fn backoff_until(&self) -> Option<Instant> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failure
            .as_ref()
            .map(|f| f.until)
            .filter(|until| now < *until)
    }

    pub(super) fn clear_failure(&self) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long until the next login without the lease is allowed, if that is not yet.
    pub(super) fn degraded_wait(&self) -> Option<Duration> {
        let degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        degraded
            .as_ref()
            .filter(|d| now < d.next_login)
            .map(|d| d.next_login - now)
    }

    /// Counts a login without the lease: the next one waits `backoff_initial`, doubled after each further one up
    /// to `backoff_max`, until the store answers again.
    pub(super) fn degraded_login(&self) -> Duration {
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

    pub(super) fn store_answered(&self) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.is_some() {
            *degraded = None;
        }
    }
}

/// Epoch milliseconds of the injected clock as a `SystemTime`.
fn wall_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
