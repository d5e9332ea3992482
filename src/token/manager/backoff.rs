//! Pauses that protect the gateway: after a failed login no other is tried before a doubling pause ends (callers
//! get [`TokenError::Backoff`] meanwhile), and while the store does not answer, logins made without the lease are
//! spaced out the same way until it answers again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use std::sync::atomic::Ordering;

use tracing::warn;

use super::{FlightResult, Inner, duration_ms};
use crate::error::{LoginError, TokenError};
use crate::record::Generation;

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
        let failure = self
            .backoff
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
        let mut failure = self
            .backoff
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let consecutive = failure.as_ref().map_or(1, |f| f.consecutive + 1);
        self.pause_after(&mut failure, cause, consecutive)
    }

    /// Counts the rejection of `rejected` as a failed login when it is this instance's own newest token and no
    /// call was accepted with it: the gateway will not honour the sessions it issues, and a login per rejected
    /// call would storm it. The first such token in a row is logged in again at once; from the second on, the
    /// next login waits `backoff_initial`, doubled with each further one up to `backoff_max`, a successful login
    /// in between notwithstanding, until a call is accepted. Tokens adopted from the store are not counted here: another
    /// instance's token may have been ended by a later login, which one refresh past it cures.
    pub(super) fn rejected_at_once(&self, rejected: Generation) {
        let current = self.cache.current.load();
        let Some(token) = current.as_ref() else {
            return;
        };
        if token.generation() != rejected
            || token.record().written_by != self.owner
            || self.cache.accepted.load(Ordering::Relaxed) >= rejected.0
        {
            return;
        }
        // Once per generation, however many callers meet the rejection.
        if self
            .backoff
            .counted_at_once
            .fetch_max(rejected.0, Ordering::Relaxed)
            >= rejected.0
        {
            return;
        }
        let consecutive = self.backoff.dead_on_arrival.fetch_add(1, Ordering::Relaxed) + 1;
        self.counters.login_rejected_at_once();
        if consecutive == 1 {
            // One such token can be bad luck (an expiry, a restart of the gateway between the login and the first
            // call): the next login is tried at once. The second in a row backs off.
            warn!(
                generation = rejected.0,
                "the gateway rejected a new token before accepting any call with it; logging in once more"
            );
            return;
        }
        let cause = Arc::new(LoginError::RejectedAtOnce {
            endpoint: self.source.endpoint().to_owned(),
            generation: rejected.0,
        });
        let (pause, retry_at) = {
            let mut failure = self
                .backoff
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.pause_after(&mut failure, &cause, consecutive - 1)
        };
        warn!(
            generation = rejected.0,
            retry_in_ms = pause.as_millis() as u64,
            retry_at = %humantime::format_rfc3339_millis(retry_at),
            "the gateway rejected a new token before accepting any call with it; backing off before the next login"
        );
    }

    /// A call accepted with `generation`: the tokens are honoured again, and the next rejected one is an expiry
    /// rather than a failed login. One relaxed load on the hot path; a write once per generation.
    #[inline]
    pub(super) fn accepted(&self, generation: Generation) {
        if self.cache.accepted.load(Ordering::Relaxed) < generation.0 {
            self.cache
                .accepted
                .fetch_max(generation.0, Ordering::Relaxed);
            self.backoff.dead_on_arrival.store(0, Ordering::Relaxed);
        }
    }

    /// Sets the backoff after the `consecutive`th failure in a row.
    fn pause_after(
        &self,
        failure: &mut Option<Failure>,
        cause: &Arc<LoginError>,
        consecutive: u32,
    ) -> (Duration, SystemTime) {
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
        let failure = self
            .backoff
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .filter(|f| Instant::now() < f.until)
            .map(|f| (f.retry_at, Arc::clone(&f.cause)))
    }

    /// When the backoff after the last failed login ends, if it has not yet.
    pub(super) fn backoff_until(&self) -> Option<Instant> {
        let failure = self
            .backoff
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failure
            .as_ref()
            .map(|f| f.until)
            .filter(|until| now < *until)
    }

    pub(super) fn clear_failure(&self) {
        *self
            .backoff
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long until the next login without the lease is allowed, if that is not yet.
    pub(super) fn degraded_wait(&self) -> Option<Duration> {
        let degraded = self
            .backoff
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        degraded
            .as_ref()
            .filter(|d| now < d.next_login)
            .map(|d| d.next_login - now)
    }

    /// Counts a login without the lease: the next one waits `backoff_initial`, doubled after each further one up
    /// to `backoff_max`, until the store answers again.
    pub(super) fn degraded_login(&self) -> Duration {
        let mut degraded = self
            .backoff
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
        let mut degraded = self
            .backoff
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if degraded.is_some() {
            *degraded = None;
        }
    }
}

/// Epoch milliseconds of the injected clock as a `SystemTime`.
fn wall_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
