//! One refresh at a time: callers that need a token join the refresh in flight instead of starting their own.
//!
//! Modelled on hyper-util's pool singleton (`hyper_util::client::pool::singleton`): one piece of work for many
//! callers, its one result (success or error) handed to every waiter, and a caller that goes away does not cancel
//! the work for the others.
//!
//! - As there, the callers drive the work: it lives in a `futures` [`Shared`], and whichever waiter is polled first
//!   after a wake-up polls it, inside its own `poll`; the others are woken when it ends. So the wake-up that ends a
//!   login (the connection's, or the blocking pool's) reaches every waiter at once, as it would reach the waiters
//!   of a bare shared future, instead of first waking a task of the refresh's own that would then wake each waiter
//!   in turn from one worker thread: with 10,000 waiters that relay cost about a millisecond before the first of
//!   them ran, and 1.3× to 2× the bare future's fan-out (`benches/storm.rs`, BENCHMARKS.md §7).
//! - Unlike hyper-util, where the work is dropped with the last caller, a keeper task holds the flight too, so a
//!   refresh runs to its end even when every caller is gone, instead of stopping between taking the store's lease
//!   and giving it back, or between a login and saving its token. A panic in the work answers `aborted` to everyone
//!   waiting, as does the runtime's shutdown (which drops the keeper and the callers with the work).
//! - Nothing is kept once a flight ends: the token lives in the manager's cache, and a finished flight is never
//!   joined again. Each flight carries a key (the stale generation it was started for), so that a caller can tell
//!   whether the flight in progress answers its question or is an older one it must wait out before asking again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// Marks a flight finished when its work ends: by answering, by panicking, or by being dropped unfinished.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The shared handle on a flight's result.
pub(crate) type Flight<T> = Shared<BoxFuture<'static, T>>;

/// What [`Coalesce::join_or_start`] found.
pub(crate) enum Join<T: Clone> {
    /// A flight to wait for. `covers` says whether its result is the one the caller asked for; when it is not
    /// (an older flight is still finishing), the caller waits for it and asks again.
    Flight { flight: Flight<T>, covers: bool },
    /// `start` declined to start a flight and answered at once.
    Answered(T),
}

struct InFlight<K, T: Clone> {
    key: K,
    flight: Flight<T>,
    done: Arc<AtomicBool>,
}

/// At most one flight at a time, tagged with a key that says what its result will satisfy.
pub(crate) struct Coalesce<K, T: Clone> {
    slot: Mutex<Option<InFlight<K, T>>>,
}

impl<K: Clone, T: Clone + Send + Sync + 'static> Coalesce<K, T> {
    pub(crate) fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// Joins the flight in progress, or, when there is none, calls `start` and makes the future it returns a flight,
    /// driven by its waiters and held by a keeper task. `covers` tells whether a flight started for a key satisfies
    /// this caller. `aborted` is the result handed out if the work panics.
    pub(crate) fn join_or_start(
        &self,
        key: K,
        covers: impl FnOnce(&K) -> bool,
        start: impl FnOnce() -> Result<BoxFuture<'static, T>, T>,
        aborted: T,
    ) -> Join<T> {
        // Only the slow path takes this lock, and never across an await.
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(in_flight) = slot.as_ref() {
            // A finished flight must not be joined: its answer is about an older state (joining it forever would
            // spin), and a task that panicked would answer `aborted` to everyone after it.
            if !in_flight.done.load(Ordering::Acquire) {
                return Join::Flight {
                    flight: in_flight.flight.clone(),
                    covers: covers(&in_flight.key),
                };
            }
        }
        let work = match start() {
            Ok(work) => work,
            Err(answer) => return Join::Answered(answer),
        };
        let done = Arc::new(AtomicBool::new(false));
        let done_in_work = Arc::clone(&done);
        let flight = async move {
            // Set however the work ends: a flight whose work panicked must not be joined by everyone after it either.
            let _done = SetOnDrop(done_in_work);
            // A panic would otherwise reach whichever waiter happened to poll the work, and poison the flight for
            // the others.
            AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or(aborted)
        }
        .boxed()
        .shared();
        // The keeper: the flight goes on when every caller has gone. It is one more waiter, woken with the others.
        tokio::spawn(flight.clone().map(drop));
        *slot = Some(InFlight {
            key,
            flight: flight.clone(),
            done,
        });
        Join::Flight {
            flight,
            covers: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    type Answer = Result<u32, String>;

    /// A coalescer whose flights finish when their gate is opened, counting how many flights were started.
    struct Gated {
        coalesce: Coalesce<u64, Answer>,
        runs: Arc<AtomicUsize>,
    }

    impl Gated {
        fn new() -> Self {
            Self {
                coalesce: Coalesce::new(),
                runs: Arc::default(),
            }
        }

        /// Asks for a result at least as new as `key`; the sender finishes the flight if this call started one.
        fn join(&self, key: u64) -> (Join<Answer>, oneshot::Sender<Answer>) {
            let (gate, opened) = oneshot::channel();
            let runs = Arc::clone(&self.runs);
            let join = self.coalesce.join_or_start(
                key,
                |started_for| *started_for >= key,
                move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(async move { opened.await.unwrap_or(Err("gate dropped".into())) }.boxed())
                },
                Err("aborted".into()),
            );
            (join, gate)
        }

        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }
    }

    fn flight(join: Join<Answer>) -> Flight<Answer> {
        match join {
            Join::Flight { flight, covers } => {
                assert!(covers);
                flight
            }
            Join::Answered(_) => panic!("expected a flight"),
        }
    }

    #[tokio::test]
    async fn first_call_drives_subsequent_wait() {
        let gated = Gated::new();
        let (first, gate) = gated.join(1);
        let (second, _unused) = gated.join(1);
        gate.send(Ok(7)).unwrap();
        assert_eq!(flight(first).await, Ok(7));
        assert_eq!(flight(second).await, Ok(7));
        assert_eq!(gated.runs(), 1);
    }

    #[tokio::test]
    async fn cancel_waiter_does_not_affect_others() {
        let gated = Gated::new();
        let (first, gate) = gated.join(1);
        let (second, _unused) = gated.join(1);
        // The caller that started the work goes away before it finishes.
        drop(flight(first));
        gate.send(Ok(9)).unwrap();
        assert_eq!(flight(second).await, Ok(9));
        assert_eq!(gated.runs(), 1);
    }

    #[tokio::test]
    async fn work_runs_to_its_end_when_every_caller_is_gone() {
        let finished = Arc::new(AtomicBool::new(false));
        let (gate, opened) = oneshot::channel::<()>();
        let coalesce: Coalesce<u64, Answer> = Coalesce::new();
        let in_work = Arc::clone(&finished);
        let join = coalesce.join_or_start(
            1,
            |_| true,
            move || {
                Ok(async move {
                    let _ = opened.await;
                    in_work.store(true, Ordering::SeqCst);
                    Ok(1)
                }
                .boxed())
            },
            Err("aborted".into()),
        );
        // The only caller goes away before the work could end.
        drop(flight(join));
        gate.send(()).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            finished.load(Ordering::SeqCst),
            "the keeper drove the work to its end"
        );
    }

    #[tokio::test]
    async fn maker_error_is_shared_with_waiters() {
        let gated = Gated::new();
        let (first, gate) = gated.join(0);
        let waiters: Vec<_> = std::iter::once(first)
            .chain((0..9).map(|_| gated.join(0).0))
            .map(flight)
            .collect();
        gate.send(Err("login refused".into())).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await, Err("login refused".to_owned()));
        }
        assert_eq!(gated.runs(), 1);
    }

    #[tokio::test]
    async fn finished_flight_is_not_joined_again() {
        let gated = Gated::new();
        let (first, gate) = gated.join(1);
        gate.send(Ok(1)).unwrap();
        assert_eq!(flight(first).await, Ok(1));
        let (second, gate) = gated.join(2);
        gate.send(Ok(2)).unwrap();
        assert_eq!(flight(second).await, Ok(2));
        assert_eq!(gated.runs(), 2);
    }

    #[tokio::test]
    async fn older_flight_does_not_cover_newer_key() {
        let gated = Gated::new();
        let (_first, _gate) = gated.join(1);
        match gated.join(5).0 {
            Join::Flight { covers, .. } => assert!(!covers),
            Join::Answered(_) => panic!("expected the flight in progress"),
        }
        assert_eq!(gated.runs(), 1);
    }

    #[tokio::test]
    async fn start_may_answer_without_a_flight() {
        let coalesce: Coalesce<u64, Answer> = Coalesce::new();
        match coalesce.join_or_start(
            1,
            |_| true,
            || Err(Err("backing off".into())),
            Err("aborted".into()),
        ) {
            Join::Answered(answer) => assert_eq!(answer, Err("backing off".to_owned())),
            Join::Flight { .. } => panic!("expected an answer"),
        }
    }

    #[tokio::test]
    async fn panicking_work_answers_aborted() {
        let coalesce: Coalesce<u64, Answer> = Coalesce::new();
        let join = coalesce.join_or_start(
            1,
            |_| true,
            || Ok(async { panic!("work panicked") }.boxed()),
            Err("aborted".into()),
        );
        assert_eq!(flight(join).await, Err("aborted".to_owned()));
        // The dead flight is not joined again: the next caller starts a new one.
        let next = coalesce.join_or_start(
            1,
            |_| true,
            || Ok(async { Ok(3) }.boxed()),
            Err("aborted".into()),
        );
        assert_eq!(flight(next).await, Ok(3));
    }
}
