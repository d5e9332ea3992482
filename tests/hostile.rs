//! Gateways that misbehave on purpose: one that rejects every token it issues, one that drops a token another
//! instance stored, one that dribbles its answer; and calls the layer would refuse, which must not cost a login.
#![cfg(feature = "hyper-client")]

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paynet_auth::PaynetLogin;
use paynet_auth::deadline::{DeadlineExceeded, DeadlineLayer};
use paynet_auth::hyper_client::HttpClient;
use paynet_auth::store::MemoryStore;
use paynet_auth::token::Health;
use paynet_auth::token::LoginSender;
use paynet_auth::{BoxError, Error, PaynetAuthLayer, TokenError, TokenManager};
use paynet_sim::Simulator;
use support::logs::Captured;
use support::*;
use tower::{Layer, ServiceBuilder, ServiceExt};

const CALL: &str = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#;

/// A mock gateway: logins issue `T-n`; a call is accepted only with a token in `alive`. `single_session` makes a
/// login end every older token, as the Paynet gateway does per terminal.
#[derive(Clone, Default)]
struct Gateway {
    alive: Arc<Mutex<HashSet<String>>>,
    logins: Arc<AtomicU64>,
    sends: Arc<AtomicU64>,
    reject_all: bool,
}

impl Gateway {
    fn service(
        &self,
    ) -> impl tower::Service<
        MockRequest,
        Response = MockResponse,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let gateway = self.clone();
        tower::service_fn(move |request: MockRequest| {
            let gateway = gateway.clone();
            async move {
                if is_login(&request) {
                    let n = gateway.logins.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = format!("T-{n}");
                    let mut alive = gateway.alive.lock().unwrap();
                    alive.clear();
                    alive.insert(token.clone());
                    return Ok::<_, Infallible>(login_ok(&token));
                }
                gateway.sends.fetch_add(1, Ordering::SeqCst);
                let body = body_json(request.into_body()).await;
                let token = body["params"]["token"].as_str().unwrap_or_default();
                if gateway.reject_all || !gateway.alive.lock().unwrap().contains(token) {
                    return Ok(json_response(UNAUTHORIZED));
                }
                Ok(json_response(r#"{"jsonrpc":"2.0","id":1,"result":[]}"#))
            }
        })
    }

    fn logins(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }

    fn sends(&self) -> u64 {
        self.sends.load(Ordering::SeqCst)
    }
}

/// The most logins a gateway rejecting every token can cost in `span`: the first rejected token is logged in
/// again at once, then the k-th such token in a row waits `initial · 2^(k-2)`, at most `max`.
fn login_bound(span: Duration, initial: Duration, max: Duration) -> u64 {
    let mut at = Duration::ZERO;
    let mut logins = 2; // the first login, and the one tried at once after its token was rejected
    let mut pause = initial;
    loop {
        at += pause;
        if at > span {
            return logins;
        }
        logins += 1;
        pause = (pause * 2).min(max);
    }
}

/// A gateway that issues tokens and rejects every call with them, at the default backoff (500 ms doubling to
/// 30 s): 8 callers calling without pause for five minutes cost a handful of logins a minute, not one per call;
/// callers in between fail at once with `Backoff`, and health says `Failing`.
#[tokio::test(start_paused = true)]
async fn a_gateway_rejecting_every_token_gets_a_login_per_backoff_pause_not_per_call() {
    let gateway = Gateway {
        reject_all: true,
        ..Gateway::default()
    };
    let manager =
        TokenManager::builder(PaynetLogin::new(BASE, USERNAME, PASSWORD.into(), TERMINAL))
            .jitter(Arc::new(paynet_auth::clock::NoJitter))
            .store(MemoryStore::new())
            .build()
            .unwrap();
    let service = PaynetAuthLayer::new(manager.clone()).layer(gateway.service());
    let started = tokio::time::Instant::now();
    let minutes = 5;
    let mut per_minute = vec![0u64; minutes];
    let mut failing_seen = false;
    let mut backoff_errors = 0u64;
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_secs(60 * minutes as u64) {
        let callers = (0..8).map(|_| service.clone().oneshot(json_request("/v2/service", CALL)));
        for outcome in futures_util::future::join_all(callers).await {
            calls += 1;
            match outcome {
                Err(Error::Token(TokenError::Backoff { .. })) => backoff_errors += 1,
                Err(Error::RejectedAfterRefresh { .. }) => {}
                other => panic!("a call with every token rejected: {other:?}"),
            }
        }
        let minute = (started.elapsed().as_secs() / 60) as usize;
        if minute < minutes {
            per_minute[minute] = gateway.logins() - per_minute[..minute].iter().sum::<u64>();
        }
        failing_seen |= matches!(manager.health(), Health::Failing { .. });
        // The callers of a real service come back after a while; on the paused clock this is what lets time pass.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "logins per minute, every token rejected: {per_minute:?} ({calls} calls, {backoff_errors} refused at once)"
    );
    let (initial, max) = (
        paynet_auth::token::defaults::BACKOFF_INITIAL,
        paynet_auth::token::defaults::BACKOFF_MAX,
    );
    let first = login_bound(Duration::from_secs(60), initial, max);
    assert!(
        first <= 9,
        "the formula's first minute is a handful: {first}"
    );
    assert!(
        per_minute[0] <= first,
        "first minute: {} logins, bound {first}",
        per_minute[0]
    );
    for (minute, logins) in per_minute.iter().enumerate().skip(1) {
        // Past the doubling, one login per `backoff_max`: 60 s / 30 s, and one more where a pause straddles the
        // minute's start.
        assert!(*logins <= 3, "minute {minute}: {logins} logins");
    }
    assert!(
        failing_seen,
        "health said Failing while the login backed off"
    );
    assert!(
        backoff_errors > calls / 2,
        "most callers were refused at once"
    );
    assert_eq!(
        manager.stats().rejected_at_once,
        gateway.logins(),
        "every token was rejected before any call was accepted with it"
    );
}

/// The same against the simulator over HTTP, through the library's client, on the real clock with a short
/// backoff: the bound holds there too, and a token that is accepted ends the backoff for good.
#[tokio::test]
async fn a_simulator_rejecting_every_token_is_not_stormed() {
    let sim = Simulator::builder()
        .reject_all_tokens(true)
        .start()
        .await
        .unwrap();
    let (initial, max) = (Duration::from_millis(40), Duration::from_millis(320));
    let manager = account_at(sim.base_url())
        .store(MemoryStore::new())
        .backoff(initial, max)
        .build()
        .unwrap();
    let service = PaynetAuthLayer::new(manager.clone()).layer(HttpClient::new());
    let span = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < span {
        let callers = (0..4).map(|_| {
            let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    CALL.as_bytes(),
                )))
                .unwrap();
            service.clone().oneshot(request)
        });
        for outcome in futures_util::future::join_all(callers).await {
            calls += 1;
            assert!(outcome.is_err(), "every token is rejected");
        }
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed();
    let logins = sim.stats().logins;
    let bound = login_bound(elapsed, initial, max);
    println!(
        "simulator rejecting every token: {logins} logins in {elapsed:?} for {calls} calls (bound {bound})"
    );
    assert!(logins <= bound, "{logins} logins, bound {bound}");
    assert!(calls > 4 * bound, "the callers kept calling: {calls}");

    sim.set_reject_all_tokens(false);
    // Once the backoff runs out, one login and the calls are accepted again.
    let outcome = loop {
        let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                CALL.as_bytes(),
            )))
            .unwrap();
        match service.clone().oneshot(request).await {
            Err(Error::Token(TokenError::Backoff { retry_in, .. })) => {
                tokio::time::sleep(retry_in).await
            }
            other => break other,
        }
    };
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        matches!(manager.health(), Health::Ready),
        "{}",
        manager.health()
    );
}

/// Another instance stored a token the gateway has dropped since (a later login elsewhere ended its session).
/// The replay with that adopted token is rejected: one refresh past it, which logs in, and one more send; the
/// call succeeds. The rejection and both replays are logged at INFO.
#[tokio::test(flavor = "current_thread")]
async fn a_replay_rejected_with_an_adopted_token_refreshes_past_it_once() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let gateway = Gateway::default();
    let store = MemoryStore::new();
    let instance = |owner: &str| {
        manager_builder()
            .owner(owner)
            .shared_store(Arc::new(store.clone()))
            .build()
            .unwrap()
    };
    let (other, this) = (instance("other"), instance("this"));
    let login = || LoginSender::from_service(gateway.service());
    other.token(login()).await.unwrap(); // T-1, stored by `other`
    let service = PaynetAuthLayer::new(this.clone()).layer(gateway.service());
    service
        .clone()
        .oneshot(json_request("/v2/service", CALL))
        .await
        .unwrap(); // adopts T-1
    other.force_refresh(login()).await.unwrap(); // T-2, stored by `other`; T-1 is dead
    gateway.alive.lock().unwrap().clear(); // T-2 dies too: ended by a login elsewhere
    let sends = gateway.sends();

    let response = service
        .clone()
        .oneshot(json_request("/v2/service", CALL))
        .await
        .expect("a replay with a dropped adopted token logs in once more");
    assert_eq!(
        body_json(response.into_body()).await["result"],
        serde_json::json!([])
    );
    assert_eq!(
        gateway.sends() - sends,
        3,
        "T-1 rejected, T-2 (adopted) rejected, T-3 (its own login) accepted"
    );
    assert_eq!(this.logins(), 1, "one login for the call");
    assert_logins_agree(&this);
    assert_eq!(this.stats().rejections, 2);
    assert_eq!(this.stats().replays, 2);

    let text = logs.text();
    let rejected = text
        .lines()
        .find(|l| l.contains("gateway rejected the token; replaying with a newer one"))
        .unwrap_or_else(|| panic!("no INFO line for the rejection in:\n{text}"));
    assert!(rejected.contains(" INFO "), "{rejected}");
    assert!(rejected.contains("generation=1"), "{rejected}");
    assert!(
        rejected.contains("method=\"getCategoriesList\"")
            || rejected.contains("method=getCategoriesList"),
        "{rejected}"
    );
    assert!(
        text.contains("rejected the token adopted from the store too; one refresh past it"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" INFO ") && l.contains("replay accepted")),
        "{text}"
    );
    for token in ["T-1", "T-2", "T-3"] {
        assert!(
            !text.contains(&format!("\"{token}\"")) && !text.contains(&format!("={token}")),
            "{token} logged"
        );
    }
}

/// A replay rejected with this instance's own fresh login is not refreshed again: at most one login per call.
#[tokio::test(flavor = "current_thread")]
async fn a_replay_rejected_with_its_own_login_is_not_replayed_again() {
    let gateway = Gateway {
        reject_all: true,
        ..Gateway::default()
    };
    let manager = manager_builder().store(MemoryStore::new()).build().unwrap();
    let service = PaynetAuthLayer::new(manager.clone()).layer(gateway.service());
    let error = service
        .oneshot(json_request("/v2/service", CALL))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::RejectedAfterRefresh { .. }),
        "{error:?}"
    );
    assert_eq!(
        gateway.logins(),
        2,
        "the first login, and the one its rejection asked for"
    );
    assert_eq!(gateway.sends(), 2, "sent, and replayed once");
}

/// A cold call whose body the layer refuses (params an array) is refused before any login: on a single-session
/// gateway that login would end every other instance's session.
#[tokio::test(flavor = "current_thread")]
async fn a_body_the_layer_refuses_costs_no_login() {
    let gateway = Gateway::default();
    let manager = manager_builder().store(MemoryStore::new()).build().unwrap();
    let service = PaynetAuthLayer::new(manager.clone()).layer(gateway.service());
    let bodies = [
        r#"{"jsonrpc":"2.0","method":"pay","id":1,"params":[1,2]}"#,
        r#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{"#,
        r#"[]"#,
    ];
    for body in bodies {
        let error = service
            .clone()
            .oneshot(json_request("/v2/payment", body))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Inject(_)), "{body}: {error:?}");
    }
    assert_eq!(
        gateway.logins(),
        0,
        "no login for a request that is never sent"
    );
    assert_eq!(gateway.sends(), 0);
    // A good body still logs in and goes through, its token written where the first pass found the place.
    let response = service
        .oneshot(json_request(
            "/v2/payment",
            r#"{"jsonrpc":"2.0","method":"pay","id":1}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        body_json(response.into_body()).await["result"],
        serde_json::json!([])
    );
    assert_eq!(gateway.logins(), 1);
}

/// The same through the reqwest adapter, against the simulator.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_body_the_reqwest_adapter_refuses_costs_no_login() {
    install_ring_provider();
    let sim = Simulator::start().await.unwrap();
    let manager = account_at(sim.base_url())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(paynet_auth::reqwest_adapter::PaynetAuthMiddleware::new(
            PaynetAuthLayer::new(manager.clone()),
            reqwest::Client::new(),
        ))
        .build();
    let error = client
        .post(format!("{}/v2/service", sim.base_url()))
        .body(r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":["x"]}"#)
        .send()
        .await
        .unwrap_err();
    let chain = paynet_auth::error::Chain(&error).to_string();
    assert!(chain.contains("params"), "{chain}");
    assert_eq!(
        sim.stats().login_attempts,
        0,
        "no login for a request that is never sent"
    );
}

/// A gateway that sends its answer's head at once and then one byte every 500 ms: the call ends at its
/// `request_timeout`, body included, instead of 40 s later.
#[tokio::test]
async fn a_dribbling_answer_ends_at_the_request_timeout() {
    let sim = Simulator::builder()
        .dribble(Some(Duration::from_millis(500)))
        .start()
        .await
        .unwrap();
    let manager = account_at(sim.base_url())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let timeout = Duration::from_millis(1500);
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new(timeout))
        .layer(PaynetAuthLayer::new(manager))
        .service(HttpClient::new());
    let started = std::time::Instant::now();
    let request = http::Request::post(format!("{}/v2/service", sim.base_url()))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            CALL.as_bytes(),
        )))
        .unwrap();
    let outcome: Result<bytes::Bytes, BoxError> = async {
        let response = service.oneshot(request).await?;
        Ok(http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes())
    }
    .await;
    let took = started.elapsed();
    let error = outcome.unwrap_err();
    let deadline = error
        .downcast_ref::<DeadlineExceeded>()
        .unwrap_or_else(|| panic!("not the deadline: {error}"));
    assert_eq!(deadline.after(), timeout);
    assert!(
        error.to_string().contains("request timeout (1s 500ms)"),
        "{error}"
    );
    assert!(took < timeout * 2, "the call took {took:?}");
}

/// A token that served calls and is then rejected expired: however many times in a row that happens, each costs
/// one login and the call is replayed; nothing backs off. (What tells it from a token rejected at once is the
/// accepted call.)
#[tokio::test(flavor = "current_thread")]
async fn tokens_that_served_calls_and_expire_never_back_off() {
    let gateway = Gateway::default();
    let manager = manager_builder().store(MemoryStore::new()).build().unwrap();
    let service = PaynetAuthLayer::new(manager.clone()).layer(gateway.service());
    for expiry in 1..=6 {
        service
            .clone()
            .oneshot(json_request("/v2/service", CALL))
            .await
            .unwrap_or_else(|e| panic!("expiry {expiry}: {e}"));
        // Every token dies once it has served a call.
        gateway.alive.lock().unwrap().clear();
    }
    assert_eq!(gateway.logins(), 6, "one login per expiry");
    assert_eq!(manager.stats().rejected_at_once, 0);
    assert_eq!(manager.stats().backoff_refusals, 0);
}
