//! Calls that do not wait for a login.
//!
//! **Refresh-ahead.** When the token's lifetime is known, its last stretch before it stops being used (the
//! refresh window, see `Inner::ahead_ms`) is spent refreshing in the background: the call that finds the token
//! there is sent at once with it and starts one refresh, the same refresh a caller waiting for a token would start
//! (coalesced in the process, under the store's lease across instances, adopting a colleague's newer row). It
//! runs in a task of its own, so it survives the call that started it; nothing runs while no call comes (no
//! timer). The token keeps serving until it really expires; a refresh that fails is logged and backs off as any
//! other, and the next call inside the window after the pause tries again.
//!
//! **Static stability.** A token past its lifetime is only our guess of what the gateway will accept. When no new
//! token can be had because the token endpoint is down (unreachable, a timeout, a 5xx; see
//! [`TokenError::is_outage`]), the last token is sent on, said once per token at WARN, and refreshed in the
//! background as above. Only a rejection by the gateway (-9999 or 401) ends that: a rejected token is never sent
//! again, and callers then fail with the login's error and its backoff as before.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, warn};

use super::{FlightResult, Inner, LoginSender, TokenManager};
use crate::error::TokenError;
use crate::record::Generation;
use crate::token::ActiveToken;

/// `Inner::background` while a background refresh runs.
const RUNNING: u64 = u64::MAX;

impl TokenManager {
    /// Starts a refresh of `generation` in the background unless one runs, or the last one failed less than a
    /// backoff ago. Only the caller that wins the compare-exchange builds the login.
    pub(super) fn refresh_in_background(
        &self,
        generation: Generation,
        login: impl FnOnce() -> LoginSender,
    ) {
        let inner = &self.inner;
        let not_before = inner.cache.background.load(Ordering::Acquire);
        if not_before == RUNNING
            || inner.since_epoch_ms(Instant::now()) < not_before
            || inner
                .cache
                .background
                .compare_exchange(not_before, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let manager = self.clone();
        let login = login();
        // A root span, like the refresh's: the call that starts it is only the first to find the token in its window.
        let span = debug_span!(parent: None, "background_refresh", store_key = %inner.key, generation = generation.0);
        tokio::spawn(
            async move {
                debug!("token inside its refresh window or served past its lifetime: refreshing in the background");
                let result = manager.refresh(Some(generation), login).await;
                // The refresh logged its own failure; here only when the next background attempt may start.
                let next = match result {
                    Ok(_) => 0,
                    Err(_) => manager.inner.next_attempt_ms(),
                };
                manager.inner.cache.background.store(next, Ordering::Release);
            }
            .instrument(span),
        );
    }
}

impl Inner {
    fn since_epoch_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.cache.epoch).as_millis())
            .unwrap_or(RUNNING - 1)
    }

    /// When a refresh may next be tried after one failed: when the login's backoff ends, or after the initial
    /// backoff when the failure was not a login's (a lease wait that ran out, a task that died).
    fn next_attempt_ms(&self) -> u64 {
        let until = self
            .backoff_until()
            .unwrap_or_else(|| Instant::now() + self.settings.backoff_initial);
        self.since_epoch_ms(until)
    }

    /// Whether `generation` is being served past its lifetime.
    pub(super) fn is_served_stale(&self, generation: Generation) -> bool {
        self.cache.serving_stale.load(Ordering::Relaxed) == generation.0.saturating_add(1)
    }

    /// After the refresh of a token past its lifetime failed with `error`: that token, when static stability is
    /// on, the failure is an outage of the token endpoint and the gateway has not rejected the token; else the
    /// error.
    pub(super) fn serve_stale(
        &self,
        last: Option<Arc<ActiveToken>>,
        error: TokenError,
    ) -> FlightResult {
        let Some(token) = last else {
            return Err(error);
        };
        if !self.settings.static_stability || !error.is_outage() || self.is_rejected(&token) {
            return Err(error);
        }
        let marker = token.generation().0.saturating_add(1);
        if self.cache.serving_stale.swap(marker, Ordering::Relaxed) != marker {
            warn!(
                store_key = %self.key,
                generation = token.generation().0,
                fingerprint = %crate::record::fingerprint(secrecy::ExposeSecret::expose_secret(token.secret())),
                error = %crate::error::Chain(&error),
                "the token's lifetime has passed and no new token can be had: sending it on until the gateway \
                 rejects it (said once per token)"
            );
        }
        // The hot path now hands this token out and refreshes in the background, but not before the backoff
        // ends: the failed login was this caller's.
        let next = self.next_attempt_ms();
        let _ =
            self.cache
                .background
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    (current != RUNNING).then_some(next)
                });
        Ok(token)
    }
}
