//! Wake-ups: how a store tells the instances waiting on a lease that a new token was saved, so that they adopt it
//! at once rather than at their next poll. [`Wakeup`] is what a waiter holds; `Wakeups` is the per-process table a
//! store fills from its notifications (PostgreSQL `LISTEN`, Redis pub/sub, or a [`MemoryStore`](super::MemoryStore)'s
//! own saves).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// A subscription to the saves of one store key, from [`TokenStore::subscribe`](super::TokenStore::subscribe).
///
/// [`saved`](Self::saved) returns once a save was announced after the subscription was taken (or after the last
/// `saved` returned). A wake-up says only "look again": the waiter reads the store to see what was saved. Wake-ups
/// can be lost (a listening connection that dropped), so a waiter keeps polling as well, at its usual interval.
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
}

/// The wake-ups of one process for one store (one database, one Redis), by store key. A notification wakes the
/// subscribers of its key; a reconnection wakes them all, since notifications sent while the listener was down are
/// lost.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    keys: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Wakeups {
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
        Wakeup { receiver }
    }

    /// Wakes the subscribers of `key`, if any.
    pub(crate) fn notify(&self, key: &str) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = keys.get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every subscriber: after a reconnection, when notifications may have been missed.
    pub(crate) fn notify_all(&self) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for sender in keys.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        wakeups.notify_all();
        assert!(a.has_saved() && b.has_saved());
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
