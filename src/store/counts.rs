//! What a store did, counted by kind: [`OperationCounts`] (public, a snapshot) and `Counter` (the atomics a store
//! keeps). The fleet tests divide them by instances and expiries to tell what one expiry costs.

use std::sync::atomic::{AtomicU64, Ordering};

use super::op;

/// The operations a store made since it was opened, by [`TokenStore`](super::TokenStore) method, and the round
/// trips they took to the server (SQL statements, Redis commands and scripts), from
/// [`TokenStore::operation_counts`](super::TokenStore::operation_counts).
///
/// ```
/// # tokio_test::block_on(async {
/// use paynet_auth::store::{MemoryStore, TokenStore};
/// let store = MemoryStore::new();
/// store.load("gateway-1").await.unwrap();
/// let counts = store.operation_counts().unwrap();
/// assert_eq!((counts.load, counts.total()), (1, 1));
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationCounts {
    /// [`load`](super::TokenStore::load)s.
    pub load: u64,
    /// [`save`](super::TokenStore::save)s.
    pub save: u64,
    /// [`try_lease`](super::TokenStore::try_lease)s.
    pub try_lease: u64,
    /// [`release`](super::TokenStore::release)s.
    pub release: u64,
    /// [`clear`](super::TokenStore::clear)s.
    pub clear: u64,
    /// [`lease`](super::TokenStore::lease) reads.
    pub lease: u64,
    /// [`stored_generation`](super::TokenStore::stored_generation) reads.
    pub stored_generation: u64,
    /// Round trips to the server those operations took: SQL statements (a transaction's `BEGIN` and `COMMIT`
    /// included) or Redis commands and scripts. Zero for a store in memory.
    pub round_trips: u64,
}

impl OperationCounts {
    /// Every operation, of any kind.
    pub fn total(&self) -> u64 {
        self.load
            + self.save
            + self.try_lease
            + self.release
            + self.clear
            + self.lease
            + self.stored_generation
    }

    /// What was done between `earlier` and `self` (both of one store).
    pub fn since(&self, earlier: &OperationCounts) -> OperationCounts {
        OperationCounts {
            load: self.load.saturating_sub(earlier.load),
            save: self.save.saturating_sub(earlier.save),
            try_lease: self.try_lease.saturating_sub(earlier.try_lease),
            release: self.release.saturating_sub(earlier.release),
            clear: self.clear.saturating_sub(earlier.clear),
            lease: self.lease.saturating_sub(earlier.lease),
            stored_generation: self
                .stored_generation
                .saturating_sub(earlier.stored_generation),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
        }
    }
}

impl std::ops::Add for OperationCounts {
    type Output = OperationCounts;
    fn add(self, other: OperationCounts) -> OperationCounts {
        OperationCounts {
            load: self.load + other.load,
            save: self.save + other.save,
            try_lease: self.try_lease + other.try_lease,
            release: self.release + other.release,
            clear: self.clear + other.clear,
            lease: self.lease + other.lease,
            stored_generation: self.stored_generation + other.stored_generation,
            round_trips: self.round_trips + other.round_trips,
        }
    }
}

/// The counters a store keeps (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Counter {
    load: AtomicU64,
    save: AtomicU64,
    try_lease: AtomicU64,
    release: AtomicU64,
    clear: AtomicU64,
    lease: AtomicU64,
    stored_generation: AtomicU64,
    round_trips: AtomicU64,
}

impl Counter {
    /// Counts one operation, by its name in [`op`].
    pub(crate) fn operation(&self, name: &str) {
        let counter = match name {
            op::LOAD => &self.load,
            op::SAVE => &self.save,
            op::TRY_LEASE => &self.try_lease,
            op::RELEASE => &self.release,
            op::CLEAR => &self.clear,
            op::LEASE => &self.lease,
            op::STORED_GENERATION => &self.stored_generation,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one round trip to the server.
    #[cfg(any(
        feature = "postgres",
        feature = "sqlite",
        feature = "mysql",
        feature = "redis"
    ))]
    pub(crate) fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// The round trips so far.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> OperationCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OperationCounts {
            load: read(&self.load),
            save: read(&self.save),
            try_lease: read(&self.try_lease),
            release: read(&self.release),
            clear: read(&self.clear),
            lease: read(&self.lease),
            stored_generation: read(&self.stored_generation),
            round_trips: read(&self.round_trips),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_is_counted_under_its_own_kind() {
        let counter = Counter::default();
        for name in [
            op::LOAD,
            op::SAVE,
            op::TRY_LEASE,
            op::RELEASE,
            op::CLEAR,
            op::LEASE,
            op::STORED_GENERATION,
        ] {
            counter.operation(name);
        }
        counter.operation(op::LOAD);
        counter.round_trip();
        let counts = counter.snapshot();
        assert_eq!(
            counts,
            OperationCounts {
                load: 2,
                save: 1,
                try_lease: 1,
                release: 1,
                clear: 1,
                lease: 1,
                stored_generation: 1,
                round_trips: 1,
            }
        );
        assert_eq!(counts.total(), 8);
        assert_eq!(counts.since(&counts).total(), 0);
    }
}
