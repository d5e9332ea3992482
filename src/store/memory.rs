//! [`MemoryStore`]: the store in this process's memory, with the same generation and lease rules as a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Counter, LeaseInfo, OperationCounts, TokenStore, Wakeup, Wakeups, op};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::record::{Generation, TokenRecord};

/// A store in this process's memory: for tests, and for services that need no persistence. Several managers
/// sharing one `MemoryStore` behave like instances sharing a database.
///
/// ```
/// # tokio_test::block_on(async {
/// use paynet_auth::store::{MemoryStore, TokenStore};
/// let store = MemoryStore::new();
/// assert!(store.load("key").await.unwrap().is_none());
/// assert!(store.try_lease("key", "me", std::time::Duration::from_secs(30)).await.unwrap());
/// assert!(!store.try_lease("key", "you", std::time::Duration::from_secs(30)).await.unwrap());
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<HashMap<String, Slot>>>,
    clock: Arc<dyn Clock>,
    /// Its saves wake the managers sharing it that wait on a lease, as a database's notifications would.
    wakeups: Arc<Wakeups>,
    counter: Arc<Counter>,
}

#[derive(Default)]
struct Slot {
    record: Option<TokenRecord>,
    /// The generation of the record a clear removed: the tombstone a database row keeps.
    cleared: Option<Generation>,
    /// Holder, taken at, runs out at.
    lease: Option<(String, i64, i64)>,
}

impl Slot {
    fn generation(&self) -> Option<Generation> {
        self.record.as_ref().map(|r| r.generation).max(self.cleared)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock::new()))
    }

    /// An empty store whose leases run on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
            wakeups: Arc::new(Wakeups::always_live()),
            counter: Arc::default(),
        }
    }

    /// Runs `f` on the slot of `key`, counted as the operation `op`.
    fn with_slot<R>(&self, op: &str, key: &str, f: impl FnOnce(&mut Slot) -> R) -> R {
        self.counter.operation(op);
        // A poisoned lock only means another test thread panicked mid-update of plain data; the data stays usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(state.entry(key.to_owned()).or_default())
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.with_slot(op::LOAD, key, |slot| slot.record.clone()))
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        Ok(self.with_slot(op::SAVE, key, |slot| {
            if slot
                .generation()
                .is_some_and(|old| old >= record.generation)
            {
                return false;
            }
            slot.record = Some(record.clone());
            true
        }))
        .inspect(|&saved| {
            if saved {
                self.wakeups.notify(key);
            }
        })
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        Ok(
            self.with_slot(op::TRY_LEASE, key, |slot| match &slot.lease {
                Some((holder, _, lock_until)) if *lock_until > now && holder != owner => false,
                _ => {
                    slot.lease = Some((owner.to_owned(), now, until));
                    true
                }
            }),
        )
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        self.with_slot(op::RELEASE, key, |slot| {
            // Kept, ended now, like a database row: the last holder stays visible to `lease`.
            if let Some((holder, _, lock_until)) = slot.lease.as_mut()
                && holder == owner
            {
                *lock_until = (*lock_until).min(now);
            }
        });
        Ok(())
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.with_slot(op::LEASE, key, |slot| {
            slot.lease
                .as_ref()
                .map(|(holder, at, until)| LeaseInfo::new(holder.clone(), *at, *until, now))
        }))
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.with_slot(op::CLEAR, key, |slot| {
            slot.cleared = slot.generation();
            slot.record = None;
        });
        Ok(())
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        Ok(self.with_slot(op::STORED_GENERATION, key, |slot| slot.generation()))
    }

    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        Some(self.wakeups.subscribe(key))
    }

    fn operation_counts(&self) -> Option<OperationCounts> {
        Some(self.counter.snapshot())
    }
}
