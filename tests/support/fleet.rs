//! What the fleet tests share: the expiry schedule, the tally of what the callers saw, and the verdict. The
//! in-process fleets (`tests/fleet.rs`) and the fleets of CLI processes (`crates/paynet-auth-cli/tests/`) both use it.

use std::time::{Duration, Instant};

use paynet_sim::Simulator;

/// How many expiries (one a second) a run has: `PAYNET_FLEET_SECS`, 20 by default.
pub fn expiries() -> u64 {
    std::env::var("PAYNET_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// What the callers of one run saw.
#[derive(Default)]
pub struct Tally {
    pub calls: u64,
    /// Each failed call: when it started and ended (the SQLite processes report only counts: `None`), and why.
    pub errors: Vec<(Option<(Instant, Instant)>, String)>,
    pub waits: Vec<Duration>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.errors.extend(other.errors);
        self.waits.extend(other.waits);
    }

    pub fn p99_ms(&mut self) -> f64 {
        self.waits.sort_unstable();
        if self.waits.is_empty() {
            return 0.0;
        }
        let rank = ((self.waits.len() as f64 * 0.99).ceil() as usize).clamp(1, self.waits.len());
        self.waits[rank - 1].as_secs_f64() * 1000.0
    }

    /// The longest a call took, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.waits
            .iter()
            .max()
            .map_or(0.0, |wait| wait.as_secs_f64() * 1000.0)
    }
}

pub fn single_session_sim() -> paynet_sim::SimulatorBuilder {
    Simulator::builder().single_session(true)
}

/// Expires every token once a second, `n` times, then waits until the fleet has logged in for the last expiry
/// (or clearly will not).
pub async fn expire_every_second(sim: &Simulator, n: u64) -> Vec<Instant> {
    let mut ticks = Vec::new();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for _ in 0..n {
        tick.tick().await;
        sim.expire_all();
        ticks.push(Instant::now());
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        sim.wait_for(|stats| stats.logins > n),
    )
    .await;
    ticks
}

/// Whether a failed call lived through two expiries: its token died, its replay's token died too, and the layer
/// replays only once, as it must (a payment is never sent a third time). Such a call fails on any fleet, with any
/// store; it happens when the machine is so loaded that a call takes as long as the expiry period.
pub fn across_two_expiries(span: Option<(Instant, Instant)>, ticks: &[Instant]) -> bool {
    span.is_some_and(|(start, end)| {
        ticks.iter().filter(|t| (start..=end).contains(*t)).count() >= 2
    })
}

/// Prints the run's `fleet:` line: its figures, and `more` (an object) merged into them.
pub fn report(
    variant: &str,
    logins: u64,
    expiries: u64,
    tally: &mut Tally,
    ticks: &[Instant],
    more: serde_json::Value,
) {
    let across = tally
        .errors
        .iter()
        .filter(|(span, _)| across_two_expiries(*span, ticks))
        .count();
    let mut figures = serde_json::json!({
        "variant": variant,
        "logins": logins,
        "expiries": expiries,
        "calls": tally.calls,
        "errors": tally.errors.len(),
        "errors_across_two_expiries": across,
        "p99_wait_ms": (tally.p99_ms() * 100.0).round() / 100.0,
        "max_wait_ms": (tally.max_ms() * 100.0).round() / 100.0,
    });
    if let (Some(figures), serde_json::Value::Object(more)) = (figures.as_object_mut(), more) {
        figures.extend(more);
    }
    println!("fleet: {figures}");
}

pub fn assert_verdict(variant: &str, logins: u64, expiries: u64, tally: &Tally, ticks: &[Instant]) {
    assert_eq!(
        logins,
        expiries + 1,
        "{variant}: one login per expiry plus the first"
    );
    let failed: Vec<&String> = tally
        .errors
        .iter()
        .filter(|(span, _)| !across_two_expiries(*span, ticks))
        .map(|(_, why)| why)
        .collect();
    assert!(
        failed.is_empty(),
        "{variant}: {} of {} calls failed (not counting calls that lived through two expiries), the first: {}",
        failed.len(),
        tally.calls,
        failed[0]
    );
    assert!(tally.calls > 0);
}
