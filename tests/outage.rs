//! The store goes away under a fleet (a TCP proxy in front of PostgreSQL, or of Redis, stops) while a
//! single-session gateway expires every token: each instance logs in without the lease at most as often as the
//! README's bound says, and once the store is back the fleet converges on one token within two refreshes.
//!
//! `PAYNET_OUTAGE_SECS` sets the outage (default 10 s, the documented measurement). The run prints one `outage:`
//! line of figures; run with `--nocapture` to read it.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "hyper-client"
))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::store::StoreOptions;
use paynet_auth::{PaynetAuthLayer, TokenManager};
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, Simulator};
use secrecy::ExposeSecret;
use support::db::{Fixture, unique_key};
use support::proxy::{Proxy, host_port};
use support::redis_db::redis_url;
use tower::{Layer, ServiceExt};

const INSTANCES: usize = 4;
const CALLERS_PER_INSTANCE: usize = 16;
const METHOD: &str = "getCategoriesList";
/// The managers' `backoff_initial`, the first pause between logins without the lease.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// The gateway's login latency: one login round trip.
const LOGIN_LATENCY: Duration = Duration::from_millis(50);

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("PAYNET_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

/// The README's bound on logins without the lease per instance during an outage of `t`: one at once, then one
/// per pause, the pauses doubling from `initial` (and capped at `backoff_max`, which a 10 s outage does not reach):
/// `1 + floor(log2(t / initial + 1))`.
fn bound(t: Duration, initial: Duration) -> u64 {
    1 + (t.as_secs_f64() / initial.as_secs_f64() + 1.0)
        .log2()
        .floor() as u64
}

/// One fleet at a time: two fleets' callers at once starve each other's store connections of CPU, and a connection
/// that misses its connect timeout before the outage is not what these tests measure.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_bounds_logins_per_instance_and_the_fleet_converges_after_it() {
    let _alone = ONE_FLEET_AT_A_TIME.lock().await;
    fleet_through_an_outage_of(&Fixture::postgres().url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_bounds_logins_per_instance_and_the_fleet_converges_after_it() {
    let _alone = ONE_FLEET_AT_A_TIME.lock().await;
    fleet_through_an_outage_of(&redis_url()).await;
}

/// The fleet, its callers and the outage, with the store at `store_url` reached through a proxy.
async fn fleet_through_an_outage_of(store_url: &str) {
    let t = outage();
    let sim = Simulator::builder()
        .single_session(true)
        .login_latency(LOGIN_LATENCY)
        .start()
        .await
        .unwrap();
    let mut proxy = Proxy::start(host_port(store_url)).await;
    let key = unique_key("outage_fleet");
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut managers = Vec::new();
    let mut callers = Vec::new();
    for i in 0..INSTANCES {
        // Opened as the CLI and `setup` open a store: a database is migrated, Redis needs nothing.
        let store = paynet_auth::store::connect(
            &proxy.url_through(store_url),
            StoreOptions {
                connect_timeout: Duration::from_millis(300),
                // Statements of a loaded machine may take longer than the connection wait the outage needs short.
                operation_timeout: Some(Duration::from_secs(2)),
                pool_size: 2,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let manager = TokenManager::builder(PaynetLogin::new(
            sim.base_url(),
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD.into(),
            DEFAULT_TERMINAL_ID,
        ))
        .shared_store(store)
        .store_key(&key)
        .owner(format!("instance-{i}"))
        .login_timeout(Duration::from_secs(5))
        .backoff(BACKOFF_INITIAL, Duration::from_secs(30))
        .build()
        .unwrap();
        let service = PaynetAuthLayer::new(manager.clone())
            .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
        let url = format!("{}/v2/service", sim.base_url());
        for _ in 0..CALLERS_PER_INSTANCE {
            let (service, url, stop) = (service.clone(), url.clone(), Arc::clone(&stop));
            let (calls, failures) = (Arc::clone(&calls), Arc::clone(&failures));
            callers.push(tokio::spawn(async move {
                let body =
                    format!(r#"{{"jsonrpc":"2.0","method":"{METHOD}","id":7,"params":{{}}}}"#);
                while !stop.load(Ordering::Relaxed) {
                    let request = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.clone())))
                        .unwrap();
                    let served = match service.clone().oneshot(request).await {
                        Ok(response) => response
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                            .is_some_and(|answer| answer["result"]["categories"].is_array()),
                        Err(_) => false,
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !served {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        managers.push(manager);
    }
    // Before the outage: one token for the whole fleet.
    sim.wait_for(|stats| stats.calls_to(METHOD) >= 1000).await;
    assert_eq!(sim.stats().logins, 1);
    let failed_before = failures.load(Ordering::Relaxed);
    assert_eq!(failed_before, 0);

    // The store goes away and the token expires: every instance needs a new one while it cannot coordinate.
    proxy.stop().await;
    let down_at = Instant::now();
    sim.expire_all();
    let before: Vec<u64> = managers.iter().map(TokenManager::logins).collect();
    tokio::time::sleep(t).await;
    let during: Vec<u64> = managers
        .iter()
        .zip(&before)
        .map(|(m, b)| m.logins() - b)
        .collect();
    let logins_at_return = sim.stats().logins;
    let failed_during = failures.load(Ordering::Relaxed) - failed_before;

    // The store is back.
    proxy.restart().await;
    let back_at = Instant::now();
    let outage_took = back_at - down_at;
    // Converged: every instance holds the gateway's one live token (the last one issued) and calls are served.
    let deadline = back_at + Duration::from_secs(60);
    let converged_after = loop {
        let live = sim.issued_tokens().last().cloned().unwrap();
        let all_hold_it = managers.iter().all(|m| {
            m.cached()
                .is_some_and(|t| t.secret().expose_secret() == live.as_str())
        });
        if all_hold_it {
            break back_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within 60 s of the store's return"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let logins_to_converge = sim.stats().logins - logins_at_return;
    // Once converged, no further login: a second of calls on the one token.
    let settled = sim.stats().logins;
    let served = sim.stats().calls_to(METHOD);
    sim.wait_for(|stats| stats.calls_to(METHOD) >= served + 1000)
        .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let after_logins = sim.stats().logins - settled;

    let bound = bound(outage_took, BACKOFF_INITIAL);
    println!(
        "outage: {}",
        serde_json::json!({
            "outage_ms": outage_took.as_millis() as u64,
            "logins_per_instance_during": during,
            "bound_per_instance": bound,
            "failed_calls_during": failed_during,
            "logins_to_converge": logins_to_converge,
            "converged_after_ms": converged_after.as_millis() as u64,
            "login_round_trip_ms": LOGIN_LATENCY.as_millis() as u64,
            "logins_after_convergence": after_logins,
            "calls": calls.load(Ordering::Relaxed),
        })
    );
    for (i, logins) in during.iter().enumerate() {
        assert!(
            (1..=bound).contains(logins),
            "instance {i} logged in {logins} times in a {outage_took:?} outage; the bound is {bound}"
        );
    }
    // The refresh that notices the return waits at most a poll interval and a connect timeout for the store,
    // then one login round trip; 3 s leaves room for a loaded machine.
    assert!(
        converged_after < Duration::from_secs(3),
        "converged {converged_after:?} after the store came back"
    );
    // Two, plus at most one more on this single-session gateway: a token adopted from the store right after the
    // return may already have been ended by a login another instance made without the store just before it, and
    // the replay rejected with it refreshes past it once (one login) instead of failing the call.
    assert!(
        logins_to_converge <= 3,
        "{logins_to_converge} logins to converge after the store came back"
    );
    assert_eq!(after_logins, 0, "logins after the fleet converged");
    proxy.stop().await;
}
