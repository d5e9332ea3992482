//! What an expiry costs a fleet, counted from the outside: [`RecordingStore`] wraps any store, forwards every
//! operation (wake-ups and the store's own counts included) and timestamps, per instance, each operation by kind,
//! each save that went in, each load that brought the instance a newer generation (an adoption) and each refused
//! lease (the start of a lease wait). [`Log::expiries`] cuts the log at the expiries' ticks and tells, per expiry,
//! the operations per instance, the lease waits of the instances that adopted after one, and the time from the
//! winner's save to the last adoption.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paynet_auth::StoreError;
use paynet_auth::record::{Generation, TokenRecord};
use paynet_auth::store::{LeaseInfo, OperationCounts, TokenStore, Wakeup};

/// The operations of [`TokenStore`], by the name of their method, in the order the figures print them.
pub const KINDS: [&str; 7] = [
    "load",
    "save",
    "try_lease",
    "release",
    "clear",
    "lease",
    "stored_generation",
];

/// Something one instance's store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// An operation was sent (one of [`KINDS`]).
    Operation(&'static str),
    /// A save was written, with this generation.
    Saved(u64),
    /// A load returned a generation newer than any this instance had seen (the event's time); `asked` is when
    /// that load was sent.
    Adopted(u64, Instant),
    /// A `try_lease` was refused: another instance holds the lease.
    LeaseRefused,
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub at: Instant,
    pub instance: usize,
    pub what: What,
}

/// The events of a whole fleet, in the order they were recorded.
#[derive(Debug, Default)]
pub struct Log {
    events: Mutex<Vec<Event>>,
    /// When the first save went in: what the callers waited for before it was the fleet's first login.
    first_save: std::sync::OnceLock<Instant>,
}

impl Log {
    /// When the fleet first saved a token, if it has.
    pub fn first_save(&self) -> Option<Instant> {
        self.first_save.get().copied()
    }

    fn record(&self, instance: usize, what: What) {
        let at = Instant::now();
        if matches!(what, What::Saved(_)) {
            let _ = self.first_save.set(at);
        }
        self.events
            .lock()
            .unwrap()
            .push(Event { at, instance, what });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The operations recorded for each instance, by kind, as [`OperationCounts`] (without round trips, which
    /// only the store sees).
    pub fn operation_counts(&self, instances: usize) -> Vec<OperationCounts> {
        let mut counts = vec![OperationCounts::default(); instances];
        for event in self.events.lock().unwrap().iter() {
            if let What::Operation(kind) = event.what {
                add(&mut counts[event.instance], kind);
            }
        }
        counts
    }

    /// The instants of the successful saves, in order: in a fleet refreshing ahead, each one after the first ends
    /// a token's life as far as the fleet is concerned.
    pub fn saves(&self) -> Vec<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| matches!(event.what, What::Saved(_)))
            .map(|event| event.at)
            .collect()
    }

    /// The figures of each expiry: events are the expiry's whose tick most recently precedes them (the events
    /// before the first tick, the first login's, belong to none).
    pub fn expiries(&self, instances: usize, ticks: &[Instant]) -> Vec<Expiry> {
        let events = self.events();
        ticks
            .iter()
            .enumerate()
            .map(|(i, &tick)| {
                let end = ticks.get(i + 1).copied();
                let inside: Vec<&Event> = events
                    .iter()
                    .filter(|e| e.at >= tick && end.is_none_or(|end| e.at < end))
                    .collect();
                Expiry::of(instances, &inside)
            })
            .collect()
    }
}

fn add(counts: &mut OperationCounts, kind: &str) {
    let counter = match kind {
        "load" => &mut counts.load,
        "save" => &mut counts.save,
        "try_lease" => &mut counts.try_lease,
        "release" => &mut counts.release,
        "clear" => &mut counts.clear,
        "lease" => &mut counts.lease,
        "stored_generation" => &mut counts.stored_generation,
        other => panic!("unknown operation {other}"),
    };
    *counter += 1;
}

/// What one expiry cost the fleet.
#[derive(Debug, Clone)]
pub struct Expiry {
    /// Operations of each instance (instances that made none count as zero).
    pub operations: Vec<u64>,
    /// Whether each instance saved a token in this expiry (the winner of the lease): the others waited for it.
    pub saved_by: Vec<bool>,
    /// Operations of the whole fleet, by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Successful saves (one per login that was saved).
    pub saves: usize,
    /// From the first save to the last adoption of its generation by an instance that was waiting on the lease
    /// when it went in; `None` without a save or such an adoption.
    pub save_to_last_adoption: Option<Duration>,
    /// The same to when the last of those instances sent the read that adopted: how soon the instances heard of
    /// the save, before the run queue of a loaded machine delays the answers.
    pub save_to_last_read_asked: Option<Duration>,
    /// For each instance that adopted after a refused lease: from its first refusal to its adoption.
    pub lease_waits: Vec<Duration>,
    /// Instances that adopted the saved generation.
    pub adoptions: usize,
    /// Instances that were waiting on the lease when the save went in and had not adopted its generation by the
    /// next expiry: neither woken nor polling.
    pub waiting_not_adopted: usize,
}

impl Expiry {
    fn of(instances: usize, events: &[&Event]) -> Expiry {
        let mut operations = vec![0; instances];
        let mut by_kind = BTreeMap::new();
        let mut refused: Vec<Option<Instant>> = vec![None; instances];
        let mut adopted: Vec<Option<(Instant, u64)>> = vec![None; instances];
        let mut asked_at: Vec<Option<Instant>> = vec![None; instances];
        let mut saved: Option<(Instant, u64)> = None;
        let mut saves = 0;
        let mut saved_by = vec![false; instances];
        for event in events {
            match event.what {
                What::Operation(kind) => {
                    operations[event.instance] += 1;
                    *by_kind.entry(kind).or_insert(0) += 1;
                }
                What::Saved(generation) => {
                    saves += 1;
                    saved_by[event.instance] = true;
                    saved.get_or_insert((event.at, generation));
                }
                What::Adopted(generation, asked) => {
                    adopted[event.instance].get_or_insert((event.at, generation));
                    asked_at[event.instance].get_or_insert(asked);
                }
                What::LeaseRefused => {
                    refused[event.instance].get_or_insert(event.at);
                }
            }
        }
        let lease_waits = refused
            .iter()
            .zip(&adopted)
            .filter_map(|(refused, adopted)| match (refused, adopted) {
                (Some(refused), Some((adopted, _))) if adopted >= refused => {
                    Some(*adopted - *refused)
                }
                _ => None,
            })
            .collect();
        let of_saved: Vec<(usize, Instant)> = adopted
            .iter()
            .enumerate()
            .filter_map(|(instance, adopted)| match adopted {
                Some((at, generation)) if saved.is_some_and(|(_, g)| g == *generation) => {
                    Some((instance, *at))
                }
                _ => None,
            })
            .collect();
        // Only the instances already waiting on the lease when the save went in: how soon they hear of it is what
        // wake-ups (or polls) decide. An instance that meets the expiry after the save adopts at its first read,
        // as late as its callers found out.
        let waiting_at_save =
            |instance: usize, save: Instant| refused[instance].is_some_and(|at| at <= save);
        let save_to_last_adoption = saved.and_then(|(save, _)| {
            of_saved
                .iter()
                .filter(|(instance, _)| waiting_at_save(*instance, save))
                .map(|(_, at)| at.saturating_duration_since(save))
                .max()
        });
        let save_to_last_read_asked = saved.and_then(|(save, _)| {
            of_saved
                .iter()
                .filter(|(instance, _)| waiting_at_save(*instance, save))
                .filter_map(|(instance, _)| asked_at[*instance])
                .map(|at| at.saturating_duration_since(save))
                .max()
        });
        let waiting_not_adopted = saved.map_or(0, |(save, _)| {
            (0..instances)
                .filter(|&instance| waiting_at_save(instance, save))
                .filter(|&instance| !of_saved.iter().any(|(adopter, _)| *adopter == instance))
                .count()
        });
        Expiry {
            waiting_not_adopted,
            operations,
            saved_by,
            by_kind,
            saves,
            save_to_last_adoption,
            save_to_last_read_asked,
            lease_waits,
            adoptions: of_saved.len(),
        }
    }

    pub fn mean_operations(&self) -> f64 {
        self.operations.iter().sum::<u64>() as f64 / self.operations.len().max(1) as f64
    }

    /// The mean operations of the instances that did not save (every one of them, whether it waited for the
    /// winner's save or met the expiry after it): what the winner's login cost each of the others.
    pub fn mean_waiter_operations(&self) -> f64 {
        let waiters: Vec<u64> = self
            .operations
            .iter()
            .zip(&self.saved_by)
            .filter(|(_, saved)| !**saved)
            .map(|(ops, _)| *ops)
            .collect();
        waiters.iter().sum::<u64>() as f64 / waiters.len().max(1) as f64
    }

    pub fn max_operations(&self) -> u64 {
        self.operations.iter().copied().max().unwrap_or(0)
    }

    /// One line of figures for this expiry (times in milliseconds).
    pub fn to_json(&self, index: usize) -> serde_json::Value {
        let mut waits = self.lease_waits.clone();
        serde_json::json!({
            "expiry": index + 1,
            "ops_per_instance_mean": round(self.mean_operations()),
            "ops_per_instance_max": self.max_operations(),
            "ops_per_waiter_mean": round(self.mean_waiter_operations()),
            "ops_by_kind_per_instance": self
                .by_kind
                .iter()
                .map(|(kind, n)| (kind.to_string(), round(*n as f64 / self.operations.len().max(1) as f64).into()))
                .collect::<serde_json::Map<_, _>>(),
            "saves": self.saves,
            "adoptions": self.adoptions,
            "waiting_not_adopted": self.waiting_not_adopted,
            "lease_wait_ms": percentiles(&mut waits),
            "save_to_last_adoption_ms": self.save_to_last_adoption.map(ms),
            "save_to_last_read_asked_ms": self.save_to_last_read_asked.map(ms),
        })
    }
}

pub fn ms(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0)
}

pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `q` quantile (nearest rank) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `{p50, p99, max}` in milliseconds, `null`s for no durations.
pub fn percentiles(durations: &mut [Duration]) -> serde_json::Value {
    durations.sort_unstable();
    let at = |q| quantile(durations, q).map(ms);
    serde_json::json!({"p50": at(0.5), "p99": at(0.99), "max": at(1.0)})
}

/// A store that records what one instance of a fleet asks of `inner`. With `hide_wakeups`, it says the store
/// announces no saves ([`TokenStore::subscribe`] answers `None`), so the instance polls: the polling figures of
/// the very backend that offers wake-ups.
pub struct RecordingStore {
    inner: Arc<dyn TokenStore>,
    instance: usize,
    log: Arc<Log>,
    hide_wakeups: bool,
    /// The newest generation this instance has seen stored: a load that returns a newer one is an adoption.
    seen: Mutex<Option<Generation>>,
}

impl RecordingStore {
    pub fn new(
        inner: Arc<dyn TokenStore>,
        instance: usize,
        log: Arc<Log>,
        hide_wakeups: bool,
    ) -> Self {
        Self {
            inner,
            instance,
            log,
            hide_wakeups,
            seen: Mutex::new(None),
        }
    }

    fn operation(&self, kind: &'static str) {
        self.log.record(self.instance, What::Operation(kind));
    }

    /// Notes `generation` as seen; whether it is newer than any seen before.
    fn see(&self, generation: Generation) -> bool {
        let mut seen = self.seen.lock().unwrap();
        let newer = seen.is_none_or(|s| generation > s);
        if newer {
            *seen = Some(generation);
        }
        newer
    }
}

#[async_trait]
impl TokenStore for RecordingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn operation_timeout(&self) -> Option<Duration> {
        self.inner.operation_timeout()
    }

    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.operation("load");
        let asked = Instant::now();
        let loaded = self.inner.load(key).await?;
        if let Some(record) = &loaded
            && self.see(record.generation)
        {
            self.log
                .record(self.instance, What::Adopted(record.generation.0, asked));
        }
        Ok(loaded)
    }

    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        self.operation("save");
        let written = self.inner.save(key, record).await?;
        if written {
            self.see(record.generation);
            self.log
                .record(self.instance, What::Saved(record.generation.0));
        }
        Ok(written)
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.operation("try_lease");
        let taken = self.inner.try_lease(key, owner, ttl).await?;
        if !taken {
            self.log.record(self.instance, What::LeaseRefused);
        }
        Ok(taken)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.operation("release");
        self.inner.release(key, owner).await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.operation("clear");
        self.inner.clear(key).await
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        self.operation("lease");
        self.inner.lease(key).await
    }

    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        self.operation("stored_generation");
        self.inner.stored_generation(key).await
    }

    fn subscribe(&self, key: &str) -> Option<Wakeup> {
        if self.hide_wakeups {
            None
        } else {
            self.inner.subscribe(key)
        }
    }

    fn operation_counts(&self) -> Option<OperationCounts> {
        self.inner.operation_counts()
    }
}
