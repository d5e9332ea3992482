//! The refresh protocol: joining the refresh in flight for a stale generation or starting one, then, in that
//! refresh, reading the store, adopting a newer token, or taking the lease and logging in under it; retrying
//! store conflicts; releasing the lease; and saving later a token obtained while the store was down. The README's
//! "How the refresh works" tells the same story; the fleet and fault tests guard it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::generation::Numbering;
use super::{FlightResult, Inner, LoginSender, TokenManager};
use crate::error::{StoreError, TokenError};
use crate::record::{Generation, TokenRecord};
use crate::store::Wakeup;
use crate::token::ActiveToken;
use crate::token::coalesce::{Flight, Join};

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

impl TokenManager {
    /// A token newer than `stale` (any fresh token for `None`): the cached one if it is, else the result of the
    /// refresh in flight for it, or of one this call starts. The step is taken at once; the future only waits.
    pub(super) fn refresh(&self, stale: Option<Generation>, login: LoginSender) -> Refresh<'_> {
        Refresh {
            manager: self,
            state: self.state(stale, login, false),
        }
    }

    /// [`token`](Self::token)'s future: nothing is done until it is polled, as of an `async fn`; then the
    /// usable token, else the refresh's answer, which [`Inner::serve_stale`] may turn into the last token.
    pub(super) fn usable_or_refreshed(&self, login: LoginSender) -> Refresh<'_> {
        Refresh {
            manager: self,
            state: State::Start(login),
        }
    }

    /// The first state of a call to [`token`](Self::token): its usable token, or the refresh of the cached one
    /// (which a failed login may answer with the last token, past its lifetime).
    fn start(&self, login: LoginSender) -> State<'_> {
        let mut login = Some(login);
        if let Some(token) = self.usable(|| login.take().expect("taken once")) {
            return State::Ready(token.into_shared());
        }
        let login = login.expect("usable() takes the login only when it hands out a token");
        let stale = self.inner.cache.generation();
        self.state(stale, login, true)
    }

    /// Where a refresh's future goes from the step taken. With `serve_stale`, a failure is handed to
    /// [`Inner::serve_stale`], which may answer the last token instead.
    fn state(&self, stale: Option<Generation>, login: LoginSender, serve_stale: bool) -> State<'_> {
        match self.step(stale, Some(login)) {
            Step::Done(answer) => State::answered(self.finish(answer, serve_stale)),
            Step::Wait(flight) => State::Wait {
                flight,
                serve_stale,
            },
            Step::Older(flight, login) => State::Older(Box::pin(async move {
                let answer = self.after_older(flight, stale, login).await;
                self.finish(answer, serve_stale)
            })),
        }
    }

    /// A refresh's answer as its caller gets it. The token to serve through an outage is read once the refresh
    /// failed, not kept across the wait: a waiting caller's future stays small, and if a newer token came meanwhile
    /// it is the better one to serve.
    fn finish(&self, answer: FlightResult, serve_stale: bool) -> FlightResult {
        match answer {
            Err(error) if serve_stale => self
                .inner
                .serve_stale(self.inner.cache.current.load_full(), error),
            answer => answer,
        }
    }

    /// Waits out an older refresh, then asks again, until a refresh answers for `stale`.
    async fn after_older(
        &self,
        mut older: Flight<FlightResult>,
        stale: Option<Generation>,
        mut login: Option<LoginSender>,
    ) -> FlightResult {
        loop {
            // Its token may already satisfy us, else start our own.
            let _ = older.await;
            match self.step(stale, login) {
                Step::Done(answer) => return answer,
                Step::Wait(flight) => return flight.await,
                Step::Older(flight, unused) => (older, login) = (flight, unused),
            }
        }
    }

    /// What a caller asking for a token newer than `stale` does next: take the cached one, join the refresh in
    /// flight, or start one with `login` (only then is it taken). A caller that waits lets its login go here,
    /// before waiting rather than after, when every waiter of a storm would drop one at the same instant.
    fn step(&self, stale: Option<Generation>, mut login: Option<LoginSender>) -> Step {
        if let Some(token) = self.cached()
            && stale.is_none_or(|g| token.generation() > g)
        {
            return Step::Done(Ok(token));
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
            Join::Answered(answer) => Step::Done(answer),
            Join::Flight {
                flight,
                covers: true,
            } => Step::Wait(flight),
            Join::Flight {
                flight,
                covers: false,
            } => Step::Older(flight, login),
        }
    }
}

/// The future of [`TokenManager::refresh`] and [`TokenManager::token`]: a flight handle and little else, written
/// out rather than an `async fn`, whose state would keep the arguments and the step beside the handle. 10,000
/// callers meeting one expiry are 10,000 tasks woken at once, and their size is much of what waking them costs
/// beyond the runtime's own (BENCHMARKS.md §7): this is 32 bytes, where the equivalent `async fn` takes 104. An error, and the
/// rare wait for an older refresh, are boxed.
pub(super) struct Refresh<'a> {
    manager: &'a TokenManager,
    state: State<'a>,
}

enum State<'a> {
    /// [`TokenManager::token`]'s, not polled yet: the login this call may have to start. Its failure may be
    /// answered with the last token.
    Start(LoginSender),
    Ready(Arc<ActiveToken>),
    Failed(Box<TokenError>),
    /// `serve_stale` sits in the tag's padding: a field of `Refresh` would add 8 bytes.
    Wait {
        flight: Flight<FlightResult>,
        serve_stale: bool,
    },
    Older(BoxFuture<'a, FlightResult>),
    Answered,
}

impl State<'_> {
    fn answered(answer: FlightResult) -> Self {
        match answer {
            Ok(token) => State::Ready(token),
            Err(error) => State::Failed(Box::new(error)),
        }
    }
}

impl Future for Refresh<'_> {
    type Output = FlightResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FlightResult> {
        let this = self.get_mut();
        let manager = this.manager;
        loop {
            match &mut this.state {
                State::Wait {
                    flight,
                    serve_stale,
                } => {
                    let answer = std::task::ready!(Pin::new(flight).poll(cx));
                    let answer = manager.finish(answer, *serve_stale);
                    this.state = State::Answered;
                    return Poll::Ready(answer);
                }
                State::Older(waiting) => {
                    let answer = std::task::ready!(waiting.as_mut().poll(cx));
                    this.state = State::Answered;
                    return Poll::Ready(answer);
                }
                _ => {}
            }
            match std::mem::replace(&mut this.state, State::Answered) {
                State::Start(login) => this.state = manager.start(login),
                State::Ready(token) => return Poll::Ready(Ok(token)),
                State::Failed(error) => return Poll::Ready(Err(*error)),
                State::Answered => panic!("polled after it answered"),
                State::Wait { .. } | State::Older(_) => unreachable!("handled above"),
            }
        }
    }
}

/// See [`TokenManager::step`].
enum Step {
    Done(FlightResult),
    Wait(Flight<FlightResult>),
    /// An older refresh is finishing: wait it out, then ask again with the login, if this call still has it.
    Older(Flight<FlightResult>, Option<LoginSender>),
}

/// How a refresh obtained its token, as its span records it.
pub(super) enum Outcome {
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
    async fn run_refresh(
        self: Arc<Self>,
        stale: Option<Generation>,
        login: LoginSender,
    ) -> FlightResult {
        // A root span: the refresh serves every caller waiting for it, and runs in whichever of them polls it
        // first, so it belongs to none of their requests.
        let span = info_span!(
            parent: None,
            "token_refresh",
            store_key = %self.key,
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
                self.cache.current.rcu(|current| match current {
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
                        error = %crate::error::Chain(&**cause),
                        retry_in_ms = pause.as_millis() as u64,
                        retry_at = %humantime::format_rfc3339_millis(retry_at),
                        "token refresh failed"
                    );
                } else {
                    error!(error = %crate::error::Chain(&error), "token refresh failed");
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
        let mut lease_wait = None;
        let result = self.refresh_steps(stale, login, &mut lease_wait).await;
        if let Some(since) = lease_wait {
            self.counters.lease_wait(since.elapsed());
        }
        result
    }

    /// [`refresh_protocol`](Self::refresh_protocol)'s steps; `lease_wait` is when it first found the lease held
    /// by another instance, if it did.
    async fn refresh_steps(
        self: &Arc<Self>,
        stale: Option<Generation>,
        login: LoginSender,
        lease_wait: &mut Option<Instant>,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        let mut newest = stale.max(self.cache.current.load().as_ref().map(|t| t.generation()));
        // Taken before the first read, so that a save announced between that read and the wait is not missed.
        let mut wakeup = self.store.subscribe(&self.key);
        let mut waited_since = Instant::now();
        let mut down = None;
        let mut row_locked;
        match self.read(stale).await {
            Read::Adopt(record) => return Ok(self.adopt(record)),
            Read::Nothing(generation) => newest = newest.max(generation),
            Read::Down(error) => down = Some(error),
        }
        loop {
            if let Some(error) = down.take() {
                if error.is_denied() {
                    return Err(self.store_refused(error));
                }
                let Some(wait) = self.degraded_wait() else {
                    return self.login_without_store(newest, login, &error).await;
                };
                // A login without the lease was made recently: no other before the pause ends. Meanwhile ask the
                // store again every poll interval, so that once it is back the lease decides at once rather than
                // after the rest of a pause that may be long.
                debug!(wait_ms = wait.as_millis() as u64, error = %crate::error::Chain(&error), "token store unavailable; spacing out logins without the lease");
                tokio::time::sleep(wait.min(self.settings.poll_interval)).await;
                waited_since = Instant::now();
            } else if let Some(announced) = wakeup.as_mut().filter(|w| w.has_saved()) {
                // A save was announced since the subscription, after the read began or while it was answered:
                // most likely the lease holder's new token, which a lease taken now would only find under it
                // (a lease, a re-read and a release more). Read it instead; one announcement buys one read.
                announced.saved().await;
            } else {
                match self.take_lease().await {
                    Ok(true) => return self.refresh_holding_lease(stale, newest, login).await,
                    Ok(false) => {
                        lease_wait.get_or_insert_with(Instant::now);
                        row_locked = false;
                    }
                    Err(error) if error.is_conflict() => {
                        lease_wait.get_or_insert_with(Instant::now);
                        row_locked = true;
                        debug!(error = %crate::error::Chain(&error), "refresh lease contended: not acquired");
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
                        row_locked,
                    });
                }
                let poll = poll_interval(self.settings.poll_interval, wakeup.as_ref());
                let pause = (poll + self.jitter.jitter(poll)).min(
                    self.settings
                        .wait_timeout
                        .saturating_sub(waited_since.elapsed()),
                );
                pause_or_wakeup(pause, wakeup.as_mut()).await;
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
                debug!(error = %crate::error::Chain(&error), "token store read collided with another transaction");
                Read::Nothing(None)
            }
            Err(error) => Read::Down(error),
        }
    }

    /// Tries the lease once, and numbers it when taken (see `lease_gate`).
    async fn take_lease(&self) -> Result<bool, StoreError> {
        let mut taken = self.leasing.gate.lock().await;
        // A manager that was shut down gave its lease back for good: from here on it waits like an instance that
        // lost the race (see `TokenManager::shutdown`).
        if self.leasing.shut_down.load(Ordering::Relaxed) {
            return Ok(false);
        }
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
                    debug!(attempt, error = %crate::error::Chain(&error), "token store conflict; retrying");
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
        newest: Option<Generation>,
        login: LoginSender,
    ) -> Result<(Arc<ActiveToken>, Outcome), TokenError> {
        let result = match self.reread_under_lease(stale, newest).await {
            Reread::Adopted(adopted) => Ok(adopted),
            Reread::LogIn { newest, numbering } => match self.login(login).await {
                Ok(grant) => {
                    let record = self.new_record(newest, grant, numbering);
                    let outcome = self.save_new(&record).await;
                    Ok((Arc::new(ActiveToken::new(record)), outcome))
                }
                Err(error) => Err(TokenError::Login(Arc::new(error))),
            },
        };
        self.release_lease().await;
        result
    }

    /// Re-reads the store after taking the lease: the previous holder may have saved just before releasing it. A
    /// read that fails here is no reason to wait: holding the lease, this instance is the one that logs in, and
    /// numbers its token without the store.
    async fn reread_under_lease(
        &self,
        stale: Option<Generation>,
        newest: Option<Generation>,
    ) -> Reread {
        let unordered = |error: &StoreError| {
            self.store_failed("read under the lease", "logging in", error);
            Reread::LogIn {
                newest,
                numbering: Numbering::Unordered,
            }
        };
        let stored = match self.retry_conflicts(|| self.store.load(&self.key)).await {
            Ok(Some(record)) if self.adoptable(&record, stale) => {
                return Reread::Adopted(self.adopt(record));
            }
            Ok(Some(record)) => Some(record.generation),
            // Absent, cleared, or present but unusable here (another encryption key, no valid authentication):
            // number past it either way.
            Ok(None) => match self
                .retry_conflicts(|| self.store.stored_generation(&self.key))
                .await
            {
                Ok(stored) => stored,
                Err(error) => return unordered(&error),
            },
            Err(error) => return unordered(&error),
        };
        Reread::LogIn {
            newest: newest.max(stored),
            numbering: Numbering::AfterStored,
        }
    }

    /// Saves the token of this instance's login; one the store does not take is served from memory (and, if the
    /// store failed, saved later).
    async fn save_new(self: &Arc<Self>, record: &TokenRecord) -> Outcome {
        match self
            .retry_conflicts(|| self.store.save(&self.key, record))
            .await
        {
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
                self.persist_later(record.clone(), Duration::from_secs(1));
                Outcome::LoggedInUnsaved
            }
        }
    }

    /// Gives the lease back. Conflicts are retried at once; if the store does not answer, a task keeps trying
    /// until the lease would have run out anyway, so that the fleet does not wait a whole lease TTL for this
    /// instance's next refresh to start.
    async fn release_lease(self: &Arc<Self>) {
        let released = self
            .retry_conflicts(|| self.store.release(&self.key, &self.owner))
            .await;
        let Err(error) = released else { return };
        warn!(store = %self.store.describe(), error = %crate::error::Chain(&error), "could not release the refresh lease; retrying in the background until it runs out");
        let inner = Arc::downgrade(self);
        let gate = Arc::clone(&self.leasing.gate);
        let lease = *self.leasing.gate.lock().await;
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
                        info!(store_key = %inner.key, "released the refresh lease after the store came back");
                        return;
                    }
                    Err(error) => {
                        debug!(error = %crate::error::Chain(&error), "refresh lease release failed again")
                    }
                }
                drop(taken);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// A store that refuses this process's credentials or permissions: not an outage to ride out with logins
    /// without the lease, but a failure to fix, handed to the callers (and logged at ERROR as every failed refresh
    /// is).
    fn store_refused(&self, error: StoreError) -> TokenError {
        TokenError::Store(Arc::new(error))
    }

    /// Logs a store failure the refresh works around: a query error (schema, bug) at ERROR, since retrying will
    /// not cure it; an unreachable or busy store at WARN.
    pub(super) fn store_failed(&self, op: &str, then: &str, error: &StoreError) {
        match error {
            StoreError::Unavailable { .. } => {
                warn!(store = %self.store.describe(), error = %crate::error::Chain(error), "token store unavailable ({op}): {then}");
            }
            StoreError::Conflict { .. } => {
                warn!(store = %self.store.describe(), error = %crate::error::Chain(error), "token store conflict past its retries ({op}): {then}");
            }
            _ => {
                error!(store = %self.store.describe(), error = %crate::error::Chain(error), "token store {op} failed: {then}")
            }
        }
    }

    fn adoptable(&self, record: &TokenRecord, stale: Option<Generation>) -> bool {
        stale.is_none_or(|g| record.generation > g) && self.is_fresh(record)
    }

    fn adopt(&self, record: TokenRecord) -> (Arc<ActiveToken>, Outcome) {
        self.counters.adoption();
        info!(generation = record.generation.0, written_by = %record.written_by, "adopted a newer token from the store");
        (Arc::new(ActiveToken::new(record)), Outcome::Adopted)
    }

    /// Writes a token obtained while the store was down once the store is back, unless a newer one replaced it or
    /// the gateway rejected it (or a newer one): a dead token in the store would be adopted by the fleet, only to
    /// be rejected once more. The first attempt comes after `first`, the next ones after pauses that double from a
    /// second (or from twice `first`), up to 30 s.
    ///
    /// A login made without the store tries at once (`first` zero): the store may have come back while the login
    /// was under way, and the other instances, whose tokens this login ended on a single-session gateway, adopt it
    /// only once it is stored. Until then each of them finds the lease free and logs in too. A save that just
    /// failed waits the second.
    pub(super) fn persist_later(self: &Arc<Self>, record: TokenRecord, first: Duration) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = first;
            let mut next = (first * 2).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = inner.upgrade() else { return };
                let superseded = inner
                    .cache
                    .generation()
                    .is_some_and(|generation| generation > record.generation);
                let dead = inner.cache.rejected.load(Ordering::Acquire) > record.generation.0;
                if superseded || dead {
                    return;
                }
                match inner.store.save(&inner.key, &record).await {
                    Ok(_) => {
                        info!(store_key = %inner.key, generation = record.generation.0, "token store is back: saved the token obtained while it was down");
                        return;
                    }
                    Err(error) => {
                        debug!(error = %crate::error::Chain(&error), "token store still unavailable");
                        wait = next;
                        next = (next * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

/// How often a waiter polls while its store's announcements are heard: only as a safety net, for an announcement
/// lost on a connection that looks alive and for a holder that died (whose lease runs out after `lease_ttl`, with
/// no save to announce). Rare enough that a waiter's cost is its read, its lease attempt and the adopting read,
/// whatever the login takes; frequent enough that a lost announcement costs at most a second.
const LIVE_POLL: Duration = Duration::from_secs(1);

/// The poll interval of a waiter: `poll_interval`, or [`LIVE_POLL`] (at least) while the store's announcements are
/// heard.
fn poll_interval(configured: Duration, wakeup: Option<&Wakeup>) -> Duration {
    if wakeup.is_some_and(Wakeup::is_live) {
        configured.max(LIVE_POLL)
    } else {
        configured
    }
}

/// Waits `pause`, or less if the store announces a save of the key meanwhile (the lease holder's new token). The
/// poll stays: an announcement can be lost (a listening connection that dropped), and some stores make none.
async fn pause_or_wakeup(pause: Duration, wakeup: Option<&mut Wakeup>) {
    match wakeup {
        Some(wakeup) => {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = wakeup.saved() => debug!("woken by a save announced by the token store"),
            }
        }
        None => tokio::time::sleep(pause).await,
    }
}

/// What the re-read under the lease found: a token to adopt, or the generation to number a login past and how.
enum Reread {
    Adopted((Arc<ActiveToken>, Outcome)),
    LogIn {
        newest: Option<Generation>,
        numbering: Numbering,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{LoginResponse, PaynetLogin};

    fn manager() -> TokenManager {
        TokenManager::builder(PaynetLogin::new(
            "http://gateway.test/gw",
            "u",
            "p".into(),
            1,
        ))
        .build()
        .unwrap()
    }

    fn login() -> LoginSender {
        LoginSender::new(|_| {
            async {
                Ok(LoginResponse {
                    status: http::StatusCode::OK,
                    headers: http::HeaderMap::new(),
                    body: bytes::Bytes::from_static(
                        br#"{"jsonrpc":"2.0","id":1,"result":{"token":"RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG"}}"#,
                    ),
                })
            }
            .boxed()
        })
    }

    /// 10,000 callers of one expiry are 10,000 such futures woken at once: their size is much of the storm's cost
    /// (BENCHMARKS.md §7). An `async fn` here, an error kept unboxed or a flag beside the state makes it larger.
    #[test]
    fn a_callers_token_future_is_small() {
        let manager = manager();
        let future = manager.token(login());
        assert!(size_of_val(&future) <= 32, "{} bytes", size_of_val(&future));
    }

    /// As of an `async fn`, calling `token` does nothing: the future may be made outside the runtime that polls it
    /// (`runtime.block_on(manager.token(login))`), where starting the refresh at once would panic.
    #[test]
    fn token_does_nothing_until_polled() {
        let manager = manager();
        let future = manager.token(login());
        assert_eq!(manager.login_attempts(), 0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let token = runtime.block_on(future).unwrap();
        assert_eq!(token.generation(), Generation(1));
        assert_eq!(manager.login_attempts(), 1);
    }
}
