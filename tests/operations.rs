//! What an operator sees: `TokenManager::stats()`, `health()`, and the `metrics` series, after scripted scenarios
//! (an expiry, a rejection and its replay, refused, unavailable and timed-out logins, a store outage, an adoption
//! from a second manager, an answer too long to inspect). Each runs on a paused current-thread runtime under a
//! recorder of its own (`metrics-util`'s debugging recorder, installed for that runtime only), so the counts are
//! exact and the tests do not see each other's.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use paynet_auth::record::Generation;
use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::token::Degradation;
use paynet_auth::token::Health;
use paynet_auth::{PaynetAuthLayer, TokenError};
use support::*;
use tower::{Layer, ServiceExt};

const LOGIN_LATENCY: Duration = Duration::from_millis(200);

/// Runs `scenario` on a paused current-thread runtime with a debugging recorder of its own; returns what the
/// recorder saw.
fn recorded<F: Future<Output = ()>>(scenario: impl FnOnce() -> F) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(scenario()));
    Recorded(snapshotter.snapshot().into_vec())
}

struct Recorded(
    Vec<(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>,
);

impl Recorded {
    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0.iter().find_map(|(key, _, _, value)| {
            let key_labels: HashSet<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            let wanted: HashSet<(&str, &str)> = labels.iter().copied().collect();
            (key.kind() == kind && key.key().name() == name && key_labels == wanted)
                .then_some(value)
        })
    }

    /// The histogram's samples, in seconds.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.find(MetricKind::Histogram, name, labels) {
            Some(DebugValue::Histogram(samples)) => {
                samples.iter().map(|s| s.into_inner()).collect()
            }
            None => Vec::new(),
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// Every counter of `credential` that is not zero, by name and other labels, sorted: so that a test states
    /// all that was counted, and an extra count fails it.
    fn counters_of(&self, credential: &str) -> Vec<String> {
        let mut counters: Vec<String> = self
            .0
            .iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Counter(n) = value else {
                    return None;
                };
                let labels: Vec<_> = key.key().labels().collect();
                if *n == 0
                    || !labels
                        .iter()
                        .any(|l| l.key() == "credential" && l.value() == credential)
                {
                    return None;
                }
                let others: Vec<String> = labels
                    .iter()
                    .filter(|l| l.key() != "credential")
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                Some(format!("{}{{{}}} {n}", key.key().name(), others.join(",")))
            })
            .collect();
        counters.sort();
        counters
    }
}

/// An expiry: two logins, both counted with their duration, nothing else.
#[test]
fn an_expiry_counts_two_logins_and_their_durations() {
    let recorded = recorded(|| async {
        let login = FakeLogin::with_latency(LOGIN_LATENCY);
        let manager = manager_builder()
            .name("expiry")
            .token_ttl(Some(Duration::from_secs(2)))
            .expiry_skew(Duration::ZERO)
            .refresh_ahead(Duration::ZERO)
            .build()
            .unwrap();
        assert!(matches!(manager.health(), Health::Ready));
        manager.token(login.sender()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let token = manager.token(login.sender()).await.unwrap();
        assert_eq!(token.generation(), Generation(2));
        assert_eq!(
            manager.stats(),
            stats(|s| s.logins_ok = 2),
            "nothing but the two logins"
        );
        assert!(matches!(manager.health(), Health::Ready));
    });
    assert_eq!(
        recorded.counters_of("expiry"),
        ["paynet_auth_logins_total{outcome=ok} 2"]
    );
    let durations = recorded.histogram(
        "paynet_auth_login_duration_seconds",
        &[("credential", "expiry")],
    );
    assert_eq!(durations, [0.2, 0.2]);
}

/// A rejection of the cached token: one rejection, one replay, one more login, through the layer; then a rejection
/// of the refreshed token too, counted and not replayed again.
#[test]
fn a_rejection_and_its_replay_are_counted_once() {
    let recorded = recorded(|| async {
        let dead: Arc<Mutex<HashSet<String>>> = Arc::default();
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gateway = {
            let dead = Arc::clone(&dead);
            tower::service_fn(move |request: MockRequest| {
                let (dead, issued) = (Arc::clone(&dead), Arc::clone(&issued));
                async move {
                    if is_login(&request) {
                        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                        return Ok::<_, Infallible>(login_ok(&format!("T-{n}")));
                    }
                    let body = body_json(request.into_body()).await;
                    let token = body["params"]["token"].as_str().unwrap().to_owned();
                    if dead.lock().unwrap().contains(&token) {
                        return Ok(json_response(UNAUTHORIZED));
                    }
                    Ok(json_response(r#"{"jsonrpc":"2.0","id":1,"result":[]}"#))
                }
            })
        };
        let manager = manager_builder().name("rejected").build().unwrap();
        let service = PaynetAuthLayer::new(manager.clone()).layer(gateway);
        let call = || {
            json_request(
                "/v2/service",
                r#"{"jsonrpc":"2.0","method":"m","id":1,"params":{}}"#,
            )
        };
        service.clone().oneshot(call()).await.unwrap();
        dead.lock().unwrap().insert("T-1".into());
        service.clone().oneshot(call()).await.unwrap();
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_ok = 2;
                s.rejections = 1;
                s.replays = 1;
            })
        );
        // The fresh token rejected too: that second rejection is counted, and not replayed.
        dead.lock().unwrap().extend(["T-2".into(), "T-3".into()]);
        let error = service.clone().oneshot(call()).await.unwrap_err();
        assert!(
            matches!(
                error,
                paynet_auth::Error::RejectedAfterRefresh { generation: 3 }
            ),
            "{error:?}"
        );
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_ok = 3;
                s.rejections = 3;
                s.replays = 2;
                // T-3 was rejected before any call was accepted with it: counted, though the first such token in
                // a row does not back off.
                s.rejected_at_once = 1;
            })
        );
    });
    assert_eq!(
        recorded.counters_of("rejected"),
        [
            "paynet_auth_logins_total{outcome=ok} 3",
            "paynet_auth_rejections_total{} 3",
            "paynet_auth_replays_total{} 2",
            "paynet_auth_tokens_rejected_at_once_total{} 1",
        ]
    );
}

/// A refused login, then a caller during its backoff: `Failing` with the time of the next attempt.
#[test]
fn a_refused_login_and_the_backoff_refusal_after_it_are_counted() {
    let recorded = recorded(|| async {
        let login = FakeLogin::with_latency(LOGIN_LATENCY);
        login.set_mode(FakeMode::Refuse);
        let manager = manager_builder().name("refused").build().unwrap();
        manager.token(login.sender()).await.unwrap_err();
        let refused = manager.token(login.sender()).await.unwrap_err();
        let TokenError::Backoff { retry_at, .. } = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_refused = 1;
                s.backoff_refusals = 1;
            })
        );
        let Health::Failing {
            next_attempt,
            cause,
        } = manager.health()
        else {
            panic!("{:?}", manager.health())
        };
        assert!(
            matches!(*cause, paynet_auth::LoginError::Refused { .. }),
            "{cause:?}"
        );
        assert_eq!(next_attempt, retry_at);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            matches!(manager.health(), Health::Ready),
            "the backoff is over: a call would log in"
        );
    });
    assert_eq!(
        recorded.counters_of("refused"),
        [
            "paynet_auth_backoff_refusals_total{} 1",
            "paynet_auth_logins_total{outcome=refused} 1",
        ]
    );
}

/// A token endpoint that answers 503, then one that does not answer before `login_timeout`: counted as
/// `unavailable` and `timeout`; meanwhile the expired token is served (static stability), which is `Degraded`.
#[test]
fn unavailable_and_timed_out_logins_are_counted_apart_and_serving_past_the_lifetime_is_degraded() {
    let recorded = recorded(|| async {
        let login = FakeLogin::with_latency(LOGIN_LATENCY);
        let manager = manager_builder()
            .name("outage")
            .token_ttl(Some(Duration::from_secs(2)))
            .expiry_skew(Duration::ZERO)
            .refresh_ahead(Duration::ZERO)
            .login_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let first = manager.token(login.sender()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        login.set_mode(FakeMode::Unavailable);
        let served = manager.token(login.sender()).await.unwrap();
        assert_eq!(
            served.generation(),
            first.generation(),
            "served past its lifetime"
        );
        assert!(matches!(
            manager.health(),
            Health::Degraded(Degradation::ServingPastLifetime)
        ));
        assert_eq!(
            manager.health().to_string(),
            "degraded: the token endpoint is down; the last token is sent past its lifetime"
        );
        // After the backoff, a call starts the next attempt in the background; this one hangs past the timeout.
        login.set_mode(FakeMode::Hang);
        tokio::time::sleep(Duration::from_secs(1)).await;
        manager.token(login.sender()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_ok = 1;
                s.logins_unavailable = 1;
                s.logins_timeout = 1;
            })
        );
    });
    assert_eq!(
        recorded.counters_of("outage"),
        [
            "paynet_auth_logins_total{outcome=ok} 1",
            "paynet_auth_logins_total{outcome=timeout} 1",
            "paynet_auth_logins_total{outcome=unavailable} 1",
        ]
    );
    let durations = recorded.histogram(
        "paynet_auth_login_duration_seconds",
        &[("credential", "outage")],
    );
    assert_eq!(durations, [0.2, 0.2, 1.0]);
}

use support::switched::SwitchedStore;

/// A store that does not answer: its failed read counted by operation and kind, the manager `Degraded` while it
/// serves a token from memory, `Ready` again once the token obtained meanwhile is saved.
#[test]
fn a_store_outage_is_counted_by_operation_and_kind_and_is_degraded_until_the_store_answers() {
    let recorded = recorded(|| async {
        let store = SwitchedStore::default();
        store.down.store(true, Ordering::SeqCst);
        let login = FakeLogin::with_latency(LOGIN_LATENCY);
        let manager = manager_builder()
            .name("store-down")
            .store(store.clone())
            .build()
            .unwrap();
        manager.token(login.sender()).await.unwrap();
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_ok = 1;
                s.store_errors = 1;
            })
        );
        assert!(matches!(
            manager.health(),
            Health::Degraded(Degradation::StoreUnavailable)
        ));
        assert_eq!(
            manager.health().to_string(),
            "degraded: the token store does not answer; tokens are kept in memory only"
        );
        // The token obtained without the store is saved by a background task a second later.
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            store
                .inner
                .load(manager.store_key())
                .await
                .unwrap()
                .is_some()
        );
        assert!(matches!(manager.health(), Health::Ready));
        assert_eq!(manager.stats().store_errors, 1);
    });
    assert_eq!(
        recorded.counters_of("store-down"),
        [
            "paynet_auth_logins_total{outcome=ok} 1",
            "paynet_auth_store_errors_total{op=load,kind=unavailable} 1",
        ]
    );
}

/// Two managers on one store: the second finds the lease held by the first, waits, and adopts the first's token
/// from the store; its wait is recorded, its adoption counted, its logins none.
#[test]
fn an_adoption_from_a_second_manager_is_counted_with_its_lease_wait() {
    let recorded = recorded(|| async {
        let store = MemoryStore::new();
        let login = FakeLogin::with_latency(LOGIN_LATENCY);
        let built = |name: &str| {
            manager_builder()
                .name(name)
                .owner(name)
                .store(store.clone())
                .poll_interval(Duration::from_millis(50))
                .build()
                .unwrap()
        };
        let (first, second) = (built("first"), built("second"));
        let logging_in = tokio::spawn({
            let (first, sender) = (first.clone(), login.sender());
            async move { first.token(sender).await.unwrap() }
        });
        // The first holds the lease and is inside its 200 ms login.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let adopted = second.token(login.sender()).await.unwrap();
        assert_eq!(adopted.generation(), logging_in.await.unwrap().generation());
        assert_eq!(first.stats(), stats(|s| s.logins_ok = 1));
        assert_eq!(
            second.stats(),
            stats(|s| {
                s.adoptions = 1;
                s.lease_waits = 1;
            })
        );
    });
    assert_eq!(
        recorded.counters_of("first"),
        ["paynet_auth_logins_total{outcome=ok} 1"]
    );
    assert_eq!(
        recorded.counters_of("second"),
        ["paynet_auth_adoptions_total{} 1"]
    );
    // Asked 10 ms into the first's login: the store announced the save at 200 ms, and the second read it then, not
    // at its next poll.
    let waits = recorded.histogram(
        "paynet_auth_lease_wait_seconds",
        &[("credential", "second")],
    );
    assert_eq!(waits, [0.19]);
}

/// An answer longer than the inspection limit is handed on uninspected, and counted.
#[test]
fn an_uninspected_answer_is_counted() {
    let recorded = recorded(|| async {
        let gateway = tower::service_fn(|request: MockRequest| async move {
            if is_login(&request) {
                return Ok::<_, Infallible>(login_ok("T-1"));
            }
            Ok(json_response(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":"{}"}}"#,
                "x".repeat(64)
            )))
        });
        let manager = manager_builder().name("long").build().unwrap();
        let service = PaynetAuthLayer::new(manager.clone())
            .inspect_limit(32)
            .layer(gateway);
        service
            .oneshot(json_request(
                "/v2/service",
                r#"{"jsonrpc":"2.0","method":"m","id":1,"params":{}}"#,
            ))
            .await
            .unwrap();
        assert_eq!(
            manager.stats(),
            stats(|s| {
                s.logins_ok = 1;
                s.uninspected_responses = 1;
            })
        );
    });
    assert_eq!(
        recorded.counters_of("long"),
        [
            "paynet_auth_logins_total{outcome=ok} 1",
            "paynet_auth_uninspected_responses_total{} 1",
        ]
    );
}

/// Every series is described with its unit when a manager is built under a recorder.
#[test]
fn every_series_is_described_with_its_unit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let manager = manager_builder().name("described").build().unwrap();
        let _ = manager.stats();
        // Describing registers nothing; touch each series so the snapshot lists it with its description.
        for name in [
            paynet_auth::token::metric_names::LOGINS,
            paynet_auth::token::metric_names::REJECTIONS,
            paynet_auth::token::metric_names::REPLAYS,
            paynet_auth::token::metric_names::ADOPTIONS,
            paynet_auth::token::metric_names::BACKOFF_REFUSALS,
            paynet_auth::token::metric_names::STORE_ERRORS,
            paynet_auth::token::metric_names::UNINSPECTED,
        ] {
            metrics::counter!(name).absolute(0);
        }
        for name in [
            paynet_auth::token::metric_names::LOGIN_DURATION,
            paynet_auth::token::metric_names::LEASE_WAIT,
        ] {
            metrics::histogram!(name).record(0.0);
        }
    });
    let described: Vec<(String, Option<metrics::Unit>, bool)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, description, _)| {
            (key.key().name().to_owned(), unit, description.is_some())
        })
        .collect();
    assert_eq!(described.len(), 9, "{described:?}");
    for (name, unit, has_text) in described {
        let expected = if name.ends_with("_seconds") {
            metrics::Unit::Seconds
        } else {
            metrics::Unit::Count
        };
        assert_eq!(unit, Some(expected), "{name}");
        assert!(has_text, "{name} has no description");
    }
}

/// `Stats` with the counts `set` sets, the rest zero.
fn stats(set: impl FnOnce(&mut paynet_auth::token::Stats)) -> paynet_auth::token::Stats {
    let mut stats = paynet_auth::token::Stats::default();
    set(&mut stats);
    stats
}

/// The series as an operator scrapes them: a real axum server serving `/metrics` from
/// `metrics-exporter-prometheus` beside a handler that calls the simulated gateway over HTTP through the layer; a
/// real reqwest client calls, the gateway expires the token, the client calls again (rejected, replayed), then
/// scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_server_serves_the_series_in_prometheus_text() {
    use axum::Router;
    use axum::extract::State;
    use axum::routing::get;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use paynet_auth::PaynetLogin;
    use paynet_sim::Simulator;

    // The only global recorder of this test binary; the other tests record locally.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let sim = Simulator::builder().start().await.unwrap();
    let manager = paynet_auth::TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .name("shop")
    .build()
    .unwrap();
    let paynet = PaynetAuthLayer::new(manager)
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>());
    let base = sim.base_url().to_owned();
    let app = Router::new()
        .route(
            "/pay",
            get(move || {
                let (paynet, base) = (paynet.clone(), base.clone());
                async move {
                    let request = http::Request::post(format!("{base}/v2/service"))
                        .header("content-type", "application/json")
                        .body(Full::new(bytes::Bytes::from_static(
                            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
                        )))
                        .unwrap();
                    let response = paynet.oneshot(request).await.unwrap();
                    response.into_body().collect().await.unwrap().to_bytes()
                }
            }),
        )
        .route(
            "/metrics",
            get(
                |State(scrape): State<metrics_exporter_prometheus::PrometheusHandle>| async move {
                    scrape.render()
                },
            ),
        )
        .with_state(scrape);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    support::install_ring_provider();
    let client = reqwest::Client::new();
    let pay = || async {
        client
            .get(format!("{at}/pay"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(pay().await.contains("categories"));
    sim.expire_all();
    assert!(pay().await.contains("categories"));
    let scraped = client
        .get(format!("{at}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    for line in [
        "# TYPE paynet_auth_logins_total counter",
        r#"paynet_auth_logins_total{credential="shop",outcome="ok"} 2"#,
        r#"paynet_auth_rejections_total{credential="shop"} 1"#,
        r#"paynet_auth_replays_total{credential="shop"} 1"#,
        r#"paynet_auth_login_duration_seconds_count{credential="shop"} 2"#,
        "# HELP paynet_auth_replays_total Requests sent again with a newer token after a rejection.",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "no `{line}` in:\n{scraped}"
        );
    }
}
