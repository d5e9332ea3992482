//! Wake-ups: how a store tells the instances waiting on a lease that a new token was saved, so that they adopt it
//! at once rather than at their next poll. [`Wakeup`] is what a waiter holds; `Wakeups` is the per-process table a
//! store fills from its notifications (PostgreSQL `LISTEN`, Redis pub/sub, or a [`MemoryStore`](super::MemoryStore)'s
//! own saves).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A subscription to the saves of one store key, from [`TokenStore::subscribe`](super::TokenStore::subscribe).
///
/// [`saved`](Self::saved) returns once a save was announced after the subscription was taken (or after the last
/// `saved` returned). A wake-up says only "look again": the waiter reads the store to see what was saved.
/// [`is_live`](Self::is_live) says whether announcements are heard now: while they are not (the listening
/// connection is not up yet, or dropped), a waiter polls at its usual interval; while they are, it polls only
/// rarely, as a safety net.
///
/// ```
/// # tokio_test::block_on(async {
/// use std::sync::Arc;
/// use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
/// use paynet_auth::store::{MemoryStore, TokenStore};
///
/// let store = MemoryStore::new();
/// let mut wakeup = store.subscribe("gateway-1").expect("a memory store announces its saves");
/// let record = TokenRecord {
///     token: "T".into(),
///     generation: Generation(1),
///     obtained_at_ms: 0,
///     expires_at_ms: None,
///     meta: LoginMeta::default(),
///     written_by: "host-a".into(),
/// };
/// store.save("gateway-1", &record).await.unwrap();
/// wakeup.saved().await; // returns at once: the save came after the subscription
/// # });
/// ```
#[derive(Debug)]
pub struct Wakeup {
    receiver: watch::Receiver<u64>,
    live: Arc<AtomicBool>,
}

impl Wakeup {
    /// Waits for the next announced save of the key. Never returns if the store stops announcing (the store was
    /// dropped): the waiter's poll carries on alone.
    pub async fn saved(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether a save was announced since the subscription (or the last [`saved`](Self::saved)) and not waited
    /// for yet.
    pub fn has_saved(&self) -> bool {
        self.receiver.has_changed().unwrap_or(false)
    }

    /// Whether the store hears announcements now (its listening connection is up). A change either way also wakes
    /// the waiter, so that it picks its poll interval again.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }
}

/// The wake-ups of one process for one store (one database, one Redis), by store key. A notification wakes the
/// subscribers of its key; a reconnection wakes them all, since notifications sent while the listener was down are
/// lost. Not live until its listener says it [`listens`](Self::listening).
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    keys: Mutex<HashMap<String, watch::Sender<u64>>>,
    live: Arc<AtomicBool>,
}

impl Wakeups {
    /// Wake-ups that are always heard: a store in this process's memory announces its saves itself.
    pub(crate) fn always_live() -> Self {
        let wakeups = Self::default();
        wakeups.live.store(true, Ordering::Release);
        wakeups
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    /// The listener hears announcements from now on: every waiter looks again (what was announced before was not
    /// heard) and, from then on, relies on the wake-ups rather than on its poll.
    pub(crate) fn listening(&self) {
        self.live.store(true, Ordering::Release);
        self.notify_all();
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    /// The listener stopped hearing announcements: every waiter looks again and polls at its usual interval until
    /// [`listening`](Self::listening).
    pub(crate) fn not_listening(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            self.notify_all();
        }
    }

    /// A subscription to the saves of `key` announced from now on.
    pub(crate) fn subscribe(&self, key: &str) -> Wakeup {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = match keys.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                keys.insert(key.to_owned(), sender);
                receiver
            }
        };
        Wakeup {
            receiver,
            live: Arc::clone(&self.live),
        }
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    /// A guard that says [`not_listening`](Self::not_listening) when dropped: a listener's task holds it, so that
    /// its waiters poll again however the task ends.
    pub(crate) fn not_listening_on_drop(self: &Arc<Self>) -> NotListeningOnDrop {
        NotListeningOnDrop(Arc::clone(self))
    }

    /// Wakes the subscribers of `key`, if any.
    pub(crate) fn notify(&self, key: &str) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = keys.get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    /// Wakes every subscriber.
    fn notify_all(&self) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for sender in keys.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

#[cfg(any(feature = "postgres", feature = "redis"))]
/// See [`Wakeups::not_listening_on_drop`].
pub(crate) struct NotListeningOnDrop(Arc<Wakeups>);

#[cfg(any(feature = "postgres", feature = "redis"))]
impl Drop for NotListeningOnDrop {
    fn drop(&mut self) {
        self.0.not_listening();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "postgres", feature = "redis"))]
    #[tokio::test]
    async fn a_notification_wakes_the_subscribers_of_its_key_only() {
        let wakeups = Wakeups::default();
        let mut a = wakeups.subscribe("a");
        let b = wakeups.subscribe("b");
        wakeups.notify("a");
        assert!(a.has_saved());
        assert!(!b.has_saved());
        a.saved().await;
        assert!(!a.has_saved());
        wakeups.listening();
        assert!(a.has_saved() && b.has_saved());
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    #[tokio::test]
    async fn a_change_of_liveness_wakes_every_subscriber() {
        let wakeups = Wakeups::default();
        let mut a = wakeups.subscribe("a");
        assert!(!a.is_live());
        wakeups.listening();
        assert!(a.is_live() && a.has_saved());
        a.saved().await;
        wakeups.not_listening();
        assert!(!a.is_live() && a.has_saved());
        a.saved().await;
        wakeups.not_listening();
        assert!(!a.has_saved(), "no change, no wake-up");
        assert!(Wakeups::always_live().subscribe("a").is_live());
    }

    #[tokio::test]
    async fn a_subscription_sees_only_what_comes_after_it() {
        let wakeups = Wakeups::default();
        let _first = wakeups.subscribe("a");
        wakeups.notify("a");
        let late = wakeups.subscribe("a");
        assert!(!late.has_saved());
    }
}
