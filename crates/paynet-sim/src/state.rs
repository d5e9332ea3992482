//! What the gateway remembers between requests: its switches, the sessions it honours and its counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::login::{Account, LoginFailure};
use super::stats::SimStats;

/// The length of the tokens in the gateway's published example.
const TOKEN_LEN: usize = 32;

/// The first identifier the simulated gateway gives to a payment it executed.
const FIRST_PAYNET_TRANSACTION_ID: u64 = 900_000_001;

/// The behaviour switches, settable before start and at run time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Switches {
    pub(crate) single_session: bool,
    pub(crate) token_ttl: Option<Duration>,
    pub(crate) login_latency: Duration,
    pub(crate) login_failure: Option<LoginFailure>,
    pub(crate) drop_after_execute: bool,
    pub(crate) reject_all_tokens: bool,
    pub(crate) dribble: Option<Duration>,
}

struct Session {
    terminal_id: u64,
    // Fixed when the token is issued, as a real gateway would stamp it, so changing the TTL later does not
    // reach back to tokens already handed out.
    expires_at: Option<Instant>,
}

struct Inner {
    switches: Switches,
    // What `reset` goes back to.
    initial: Switches,
    sessions: HashMap<String, Session>,
    issued: Vec<String>,
    stats: SimStats,
    logins_in_flight: u64,
    // Kept apart from the counters so that `reset_stats` cannot make `checkTransaction` forget a payment.
    ledger: HashMap<String, u64>,
    next_paynet_id: u64,
    rng: StdRng,
}

impl Inner {
    fn reset_stats(&mut self) {
        self.stats = SimStats {
            // Logins still being handled are concurrent with whatever comes next.
            max_concurrent_logins: self.logins_in_flight,
            ..SimStats::default()
        };
    }
}

/// The state shared by the handle and every connection.
pub(crate) struct State {
    root: String,
    account: Account,
    inner: Mutex<Inner>,
    // Bumped on every counter change, so tests can wait for the simulator to have seen something instead of
    // sleeping.
    changes: watch::Sender<u64>,
}

impl State {
    pub(crate) fn new(
        root: String,
        account: Account,
        switches: Switches,
        seed: Option<u64>,
    ) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self {
            root,
            account,
            inner: Mutex::new(Inner {
                initial: switches.clone(),
                switches,
                sessions: HashMap::new(),
                issued: Vec::new(),
                stats: SimStats::default(),
                logins_in_flight: 0,
                ledger: HashMap::new(),
                next_paynet_id: FIRST_PAYNET_TRANSACTION_ID,
                rng,
            }),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the state consistent, so a panic elsewhere must not wedge the simulator.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then tells waiters that the counters moved.
    fn counted<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let result = f(&mut self.lock());
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn account(&self) -> &Account {
        &self.account
    }

    pub(crate) fn switches(&self) -> Switches {
        self.lock().switches.clone()
    }

    pub(crate) fn update_switches(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.lock().switches);
    }

    /// Changes the switches with `f`, or leaves them as they were when it fails; the switches that result.
    pub(crate) fn try_update_switches<E>(
        &self,
        f: impl FnOnce(&mut Switches) -> Result<(), E>,
    ) -> Result<Switches, E> {
        let mut inner = self.lock();
        f(&mut inner.switches)?;
        Ok(inner.switches.clone())
    }

    /// The switches back to how the simulator started, the counters to zero; sessions and payments are kept.
    pub(crate) fn reset(&self) -> Switches {
        self.counted(|inner| {
            inner.switches = inner.initial.clone();
            inner.reset_stats();
            inner.switches.clone()
        })
    }

    pub(crate) fn count_request(&self) {
        self.counted(|inner| inner.stats.requests += 1);
    }

    pub(crate) fn count_connection(&self) {
        self.counted(|inner| inner.stats.connections += 1);
    }

    pub(crate) fn count_tls_handshake(&self, ok: bool) {
        self.counted(|inner| {
            if ok {
                inner.stats.tls_handshakes += 1;
            } else {
                inner.stats.tls_handshake_failures += 1;
            }
        });
    }

    /// Counts a login attempt as in flight until the returned guard is dropped.
    pub(crate) fn login_started(self: &Arc<Self>) -> LoginInFlight {
        self.counted(|inner| {
            inner.stats.login_attempts += 1;
            inner.logins_in_flight += 1;
            let peak = &mut inner.stats.max_concurrent_logins;
            *peak = (*peak).max(inner.logins_in_flight);
        });
        LoginInFlight {
            state: Arc::clone(self),
        }
    }

    /// Issues a fresh token for `terminal_id`, ending the terminal's older sessions in single-session mode.
    pub(crate) fn issue_token(&self, terminal_id: u64) -> String {
        self.counted(|inner| {
            let token = loop {
                let candidate: String = (0..TOKEN_LEN)
                    .map(|_| char::from(inner.rng.sample(Alphanumeric)))
                    .collect();
                // A repeat is astronomically unlikely, but a repeated token would make two sessions one.
                if !inner.issued.contains(&candidate) {
                    break candidate;
                }
            };
            if inner.switches.single_session {
                inner
                    .sessions
                    .retain(|_, session| session.terminal_id != terminal_id);
            }
            let expires_at = inner.switches.token_ttl.map(|ttl| Instant::now() + ttl);
            inner.sessions.insert(
                token.clone(),
                Session {
                    terminal_id,
                    expires_at,
                },
            );
            inner.issued.push(token.clone());
            inner.stats.logins += 1;
            token
        })
    }

    /// Whether `token` opens a live session; an expired one is forgotten on the way.
    pub(crate) fn token_is_valid(&self, token: &str) -> bool {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get(token) else {
            return false;
        };
        if session.expires_at.is_some_and(|at| Instant::now() >= at) {
            inner.sessions.remove(token);
            return false;
        }
        true
    }

    pub(crate) fn revoke(&self, token: &str) {
        self.lock().sessions.remove(token);
    }

    /// Ends every session; how many there were.
    pub(crate) fn expire_all(&self) -> usize {
        let mut inner = self.lock();
        let ended = inner.sessions.len();
        inner.sessions.clear();
        ended
    }

    pub(crate) fn count_rejection(&self) {
        self.counted(|inner| inner.stats.rejections += 1);
    }

    pub(crate) fn count_ok(&self) {
        self.counted(|inner| inner.stats.ok += 1);
    }

    pub(crate) fn count_call(&self, method: &str) {
        self.counted(|inner| *inner.stats.calls.entry(method.to_owned()).or_default() += 1);
    }

    /// Executes the payment known by `key` and returns the gateway's identifier for it; a repeated key keeps the
    /// identifier of its first execution but still counts as another execution.
    pub(crate) fn execute(&self, key: &str) -> u64 {
        self.counted(|inner| {
            *inner.stats.executions.entry(key.to_owned()).or_default() += 1;
            let next = &mut inner.next_paynet_id;
            *inner.ledger.entry(key.to_owned()).or_insert_with(|| {
                let id = *next;
                *next += 1;
                id
            })
        })
    }

    /// The gateway's identifier of the payment known by `key`, if it was ever executed.
    pub(crate) fn executed(&self, key: &str) -> Option<u64> {
        self.lock().ledger.get(key).copied()
    }

    /// A card token for `getCardToken`. It is not a session token and opens nothing.
    pub(crate) fn card_token(&self) -> String {
        let mut inner = self.lock();
        let suffix: String = (0..24)
            .map(|_| char::from(inner.rng.sample(Alphanumeric)))
            .collect();
        format!("card_{suffix}")
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    pub(crate) fn reset_stats(&self) {
        self.counted(Inner::reset_stats);
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// A login being handled; dropping it (answer sent, connection dropped, or shutdown) ends it.
pub(crate) struct LoginInFlight {
    state: Arc<State>,
}

impl Drop for LoginInFlight {
    fn drop(&mut self) {
        self.state.lock().logins_in_flight -= 1;
    }
}
