//! Calls that never wait for a login: refresh-ahead inside the refresh window, and the last token served past its
//! lifetime while the token endpoint is down (static stability). Paused tokio time drives both the token's clock
//! (the default `SystemClock` follows tokio's) and the gateway's latencies, so every instant here is exact.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use paynet_auth::record::Generation;
use paynet_auth::store::MemoryStore;
use paynet_auth::token::TokenManagerBuilder;
use paynet_auth::{Error, PaynetAuth, PaynetAuthLayer, TokenError, TokenManager};
use serde_json::json;
use support::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const LIFETIME: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_millis(500);
const LOGIN_LATENCY: Duration = Duration::from_millis(200);
const CALL_LATENCY: Duration = Duration::from_millis(10);

/// A Paynet gateway in memory: logins take [`LOGIN_LATENCY`] and can be switched off (HTTP 503), calls take
/// [`CALL_LATENCY`] and are rejected with -9999 for a token the test marked dead.
#[derive(Clone, Default)]
struct Gateway {
    logins: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    rejections: Arc<AtomicUsize>,
    login_down: Arc<std::sync::atomic::AtomicBool>,
    dead: Arc<Mutex<HashSet<String>>>,
    /// The token each call carried, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    fn set_login_down(&self, down: bool) {
        self.login_down.store(down, Ordering::SeqCst);
    }

    fn kill(&self, token: &str) {
        self.dead.lock().unwrap().insert(token.to_owned());
    }
}

fn serve(
    gateway: Gateway,
) -> impl Service<
    MockRequest,
    Response = MockResponse,
    Error = Infallible,
    Future = impl Future<Output = Result<MockResponse, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: MockRequest| {
        let gateway = gateway.clone();
        async move {
            if is_login(&request) {
                tokio::time::sleep(LOGIN_LATENCY).await;
                if gateway.login_down.load(Ordering::SeqCst) {
                    let mut down = Response::new(Full::new(Bytes::from_static(b"down")));
                    *down.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(down);
                }
                let n = gateway.logins.fetch_add(1, Ordering::SeqCst) + 1;
                return Ok(login_ok(&format!("T-{n}")));
            }
            gateway.calls.fetch_add(1, Ordering::SeqCst);
            let body = body_json(request.into_body()).await;
            let token = body["params"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            gateway.seen.lock().unwrap().push(token.clone());
            tokio::time::sleep(CALL_LATENCY).await;
            if gateway.dead.lock().unwrap().contains(&token) {
                gateway.rejections.fetch_add(1, Ordering::SeqCst);
                return Ok(json_response(
                    r#"{"jsonrpc":"2.0","id":1,"error":{"code":-9999,"message":"unauthorized"}}"#,
                ));
            }
            Ok(json_response(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"token":"{token}"}}}}"#
            )))
        }
    })
}

fn builder(store: &MemoryStore) -> TokenManagerBuilder {
    manager_builder()
        .store(store.clone())
        .token_ttl(Some(LIFETIME))
        .expiry_skew(Duration::ZERO)
        .refresh_ahead(WINDOW)
}

/// A gateway in memory, and a client through the layer over the manager `builder` builds, after a first call that
/// logged in (token `T-1`).
async fn started(
    builder: TokenManagerBuilder,
) -> (
    Gateway,
    TokenManager,
    PaynetAuth<
        impl Service<
            MockRequest,
            Response = MockResponse,
            Error = Infallible,
            Future = impl Future<Output = Result<MockResponse, Infallible>> + Send,
        > + Clone
        + Send
        + 'static,
    >,
) {
    let gateway = Gateway::default();
    let manager = builder.build().unwrap();
    let client = layered(&manager, serve(gateway.clone()));
    assert_eq!(pay(&client).await.unwrap(), "T-1");
    (gateway, manager, client)
}

fn layered<S: Clone>(manager: &TokenManager, gateway: S) -> PaynetAuth<S> {
    PaynetAuthLayer::new(manager.clone()).layer(gateway)
}

fn payment() -> MockRequest {
    json_request(
        "/v2/service",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "pay", "params": {"amount": 100}}).to_string(),
    )
}

/// Sends one payment; the token the gateway saw, as it echoes it.
async fn pay<S>(client: &PaynetAuth<S>) -> Result<String, Error>
where
    S: Clone,
    PaynetAuth<S>: Service<
            MockRequest,
            Response = Response<paynet_auth::ResponseBody<Full<Bytes>>>,
            Error = Error,
        >,
    <PaynetAuth<S> as Service<MockRequest>>::Future: Send,
{
    let response = client.clone().oneshot(payment()).await?;
    let body = body_json(response.into_body()).await;
    Ok(body["result"]["token"].as_str().unwrap().to_owned())
}

/// Lets spawned tasks run to their next timer without moving the clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Lets a login's latency pass and whatever refresh was started land, then checks that the gateway has issued
/// `logins` tokens and that the manager holds the last.
async fn after_a_login(gateway: &Gateway, manager: &TokenManager, logins: usize) {
    tokio::time::sleep(LOGIN_LATENCY).await;
    settle().await;
    assert_eq!(gateway.logins(), logins, "tokens issued");
    assert_eq!(
        manager.cached().unwrap().generation(),
        Generation(logins as u64)
    );
    assert_logins_agree(manager);
}

#[tokio::test(start_paused = true)]
async fn a_call_inside_the_window_does_not_wait_and_the_refresh_happens_behind_it() {
    let (gateway, manager, client) = started(builder(&MemoryStore::new())).await;
    let obtained = Instant::now() - CALL_LATENCY;

    // Into the window: the token still has 400 ms, more than the 200 ms login.
    tokio::time::sleep_until(obtained + LIFETIME - Duration::from_millis(400)).await;
    let asked = Instant::now();
    assert_eq!(
        pay(&client).await.unwrap(),
        "T-1",
        "sent with the current token"
    );
    assert_eq!(
        asked.elapsed(),
        CALL_LATENCY,
        "the call took its own latency and no login"
    );

    // The refresh ran behind it: after a login's latency the next call has the new token, and nobody waited.
    after_a_login(&gateway, &manager, 2).await;
    let asked = Instant::now();
    assert_eq!(pay(&client).await.unwrap(), "T-2");
    assert_eq!(asked.elapsed(), CALL_LATENCY);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_in_the_window_start_one_refresh_and_none_waits() {
    let (gateway, manager, client) = started(builder(&MemoryStore::new())).await;
    tokio::time::advance(LIFETIME - Duration::from_millis(400)).await;

    let asked = Instant::now();
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let token = pay(&client).await.unwrap();
                (token, Instant::now())
            })
        })
        .collect();
    for caller in callers {
        let (token, answered) = caller.await.unwrap();
        assert_eq!(token, "T-1");
        assert_eq!(
            answered - asked,
            CALL_LATENCY,
            "no caller waited for the login"
        );
    }
    after_a_login(&gateway, &manager, 2).await;
    assert_eq!(manager.logins(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_background_refresh_survives_the_cancellation_of_the_call_that_started_it() {
    let (gateway, manager, client) = started(builder(&MemoryStore::new())).await;
    tokio::time::advance(LIFETIME - Duration::from_millis(400)).await;

    // The call starts the refresh when it sends, then is dropped while its own request is in flight.
    let mut call = Box::pin(pay(&client));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 2, "the call was sent");
    drop(call);

    after_a_login(&gateway, &manager, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_outside_the_window_or_with_refresh_ahead_off_starts_no_refresh() {
    let (gateway, manager, client) = started(builder(&MemoryStore::new())).await;
    // Just before the window opens.
    tokio::time::advance(LIFETIME - WINDOW - CALL_LATENCY - Duration::from_millis(1)).await;
    pay(&client).await.unwrap();
    after_a_login(&gateway, &manager, 1).await;

    // Off: the callers that find the token expired wait for its login, as without refresh-ahead.
    let (gateway, _manager, client) =
        started(builder(&MemoryStore::new()).refresh_ahead(Duration::ZERO)).await;
    tokio::time::advance(LIFETIME - Duration::from_millis(100)).await;
    pay(&client).await.unwrap();
    tokio::time::sleep(LOGIN_LATENCY).await;
    settle().await;
    assert_eq!(gateway.logins(), 1, "no refresh ahead of expiry");
    let asked = Instant::now();
    assert_eq!(pay(&client).await.unwrap(), "T-2");
    assert_eq!(
        asked.elapsed(),
        LOGIN_LATENCY + CALL_LATENCY,
        "the caller waited for the login"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_ahead_backs_off_and_the_token_serves_until_a_later_attempt_succeeds() {
    let (gateway, manager, client) = started(
        builder(&MemoryStore::new())
            .token_ttl(Some(Duration::from_secs(20)))
            .refresh_ahead(Duration::from_secs(10))
            .backoff(Duration::from_secs(1), Duration::from_secs(8)),
    )
    .await;
    gateway.set_login_down(true);
    tokio::time::advance(Duration::from_secs(11)).await;

    // Calls every 100 ms for 2.5 s: attempts at 11 s, then after the 1 s backoff (12.2 s), then after 2 s.
    for _ in 0..25 {
        let asked = Instant::now();
        assert_eq!(pay(&client).await.unwrap(), "T-1");
        assert_eq!(asked.elapsed(), CALL_LATENCY);
        tokio::time::sleep(Duration::from_millis(100) - CALL_LATENCY).await;
    }
    assert_eq!(
        manager.login_attempts(),
        3,
        "one attempt per backoff, not one per call"
    );
    gateway.set_login_down(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    pay(&client).await.unwrap();
    after_a_login(&gateway, &manager, 2).await;
    assert_eq!(pay(&client).await.unwrap(), "T-2");
}

#[tokio::test(start_paused = true)]
async fn two_managers_on_one_store_refresh_ahead_once_and_the_other_adopts() {
    let gateway = Gateway::default();
    let store = MemoryStore::new();
    let a = builder(&store)
        .owner("a")
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let b = builder(&store)
        .owner("b")
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let (client_a, client_b) = (
        layered(&a, serve(gateway.clone())),
        layered(&b, serve(gateway.clone())),
    );
    assert_eq!(pay(&client_a).await.unwrap(), "T-1");
    assert_eq!(pay(&client_b).await.unwrap(), "T-1", "b adopted a's token");

    tokio::time::advance(LIFETIME - Duration::from_millis(400)).await;
    let (from_a, from_b) = tokio::join!(pay(&client_a), pay(&client_b));
    assert_eq!(
        (from_a.unwrap(), from_b.unwrap()),
        ("T-1".to_owned(), "T-1".to_owned())
    );
    tokio::time::sleep(LOGIN_LATENCY + Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(gateway.logins(), 2, "one login for both instances");
    assert_eq!(a.logins() + b.logins(), 2);
    assert_logins_agree(&a);
    assert_logins_agree(&b);
    assert_eq!(a.cached().unwrap().generation(), Generation(2));
    assert_eq!(b.cached().unwrap().generation(), Generation(2));
}

#[tokio::test(start_paused = true)]
async fn past_its_lifetime_the_last_token_is_served_while_login_is_down_and_refused_after_a_rejection()
 {
    let logs = support::logs::Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let (gateway, manager, client) =
        started(builder(&MemoryStore::new()).refresh_ahead(Duration::ZERO)).await;
    gateway.set_login_down(true);
    tokio::time::advance(LIFETIME).await;

    // The first callers past the lifetime wait for the failed login, then are served the last token.
    let asked = Instant::now();
    let first: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { pay(&client).await })
        })
        .collect();
    for caller in first {
        assert_eq!(caller.await.unwrap().unwrap(), "T-1");
    }
    assert_eq!(asked.elapsed(), LOGIN_LATENCY + CALL_LATENCY);
    // The others are served at once, for as long as the gateway takes the token.
    for _ in 0..30 {
        let asked = Instant::now();
        assert_eq!(pay(&client).await.unwrap(), "T-1");
        assert_eq!(asked.elapsed(), CALL_LATENCY);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warnings = logs
        .text()
        .lines()
        .filter(|l| l.contains("sending it on until the gateway rejects it"))
        .count();
    assert_eq!(warnings, 1, "said once per token:\n{}", logs.text());
    assert!(
        manager.login_attempts() < 10,
        "logins backed off: {}",
        manager.login_attempts()
    );

    // The gateway's verdict ends it: a rejected token is not sent again, callers get the login's error.
    gateway.kill("T-1");
    let sent_before = gateway.seen.lock().unwrap().len();
    let error = pay(&client).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Token(TokenError::Login(_) | TokenError::Backoff { .. })
        ),
        "{error:?}"
    );
    let error = pay(&client).await.unwrap_err();
    assert!(
        matches!(&error, Error::Token(TokenError::Backoff { .. })),
        "{error:?}"
    );
    assert_eq!(
        gateway.seen.lock().unwrap().len(),
        sent_before + 1,
        "the rejected call was not replayed and the next one sent nothing"
    );

    // Back up: the next attempt after the backoff logs in.
    gateway.set_login_down(false);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(pay(&client).await.unwrap(), "T-2");
}

#[tokio::test(start_paused = true)]
async fn without_static_stability_or_for_a_refused_login_an_expired_token_fails_the_callers() {
    let (gateway, _manager, client) = started(
        builder(&MemoryStore::new())
            .refresh_ahead(Duration::ZERO)
            .static_stability(false),
    )
    .await;
    gateway.set_login_down(true);
    tokio::time::advance(LIFETIME).await;
    let error = pay(&client).await.unwrap_err();
    assert!(
        matches!(&error, Error::Token(TokenError::Login(_))),
        "{error:?}"
    );
    assert_eq!(
        gateway.calls.load(Ordering::SeqCst),
        1,
        "nothing sent with the expired token"
    );

    // A refusal is a verdict on the credentials, not an outage: not served past the lifetime either.
    let login = FakeLogin::default();
    let manager = manager_builder()
        .token_ttl(Some(LIFETIME))
        .expiry_skew(Duration::ZERO)
        .build()
        .unwrap();
    manager.token(login.sender()).await.unwrap();
    login.set_mode(FakeMode::Refuse);
    tokio::time::advance(LIFETIME).await;
    let error = manager.token(login.sender()).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::Login(cause) if cause.is_refused()),
        "{error:?}"
    );

    // While an outage: served.
    login.set_mode(FakeMode::Unavailable);
    tokio::time::advance(Duration::from_secs(8)).await;
    let token = manager.token(login.sender()).await.unwrap();
    assert_eq!(token.generation(), Generation(1));
}

#[tokio::test(start_paused = true)]
async fn a_single_session_gateway_costs_one_replay_per_call_in_flight_and_no_further_login() {
    // A gateway where a new login kills the older tokens: calls in flight with the old token when the
    // refresh-ahead lands are rejected once and replayed with the new one.
    let gateway = Gateway::default();
    let killer = gateway.clone();
    let service = tower::service_fn(move |request: MockRequest| {
        let killer = killer.clone();
        async move {
            let inner = serve(killer.clone());
            let login = is_login(&request);
            let response = inner.oneshot(request).await;
            if login {
                let n = killer.logins();
                for old in 1..n {
                    killer.kill(&format!("T-{old}"));
                }
            }
            response
        }
    });
    let manager = builder(&MemoryStore::new()).build().unwrap();
    let client = layered(&manager, service);
    pay(&client).await.unwrap();
    tokio::time::advance(LIFETIME - Duration::from_millis(400)).await;

    // 64 callers every 5 ms through the window: those in flight when T-2 arrives are replayed, once each.
    let mut callers = Vec::new();
    for _ in 0..60 {
        for _ in 0..64 {
            let client = client.clone();
            callers.push(tokio::spawn(async move { pay(&client).await }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answered = 0;
    for caller in callers {
        caller.await.unwrap().unwrap();
        answered += 1;
    }
    let calls = gateway.calls.load(Ordering::SeqCst) - 1;
    let rejections = gateway.rejections.load(Ordering::SeqCst);
    assert_eq!(gateway.logins(), 2, "no login beyond the refresh-ahead");
    assert_eq!(
        calls,
        answered + rejections,
        "each rejected call cost one gateway round trip more, no more"
    );
    // The calls in flight with T-1 when T-2 arrived: at most a call latency's worth of callers (64 per 5 ms).
    assert!(
        rejections > 0 && rejections <= 64 * 3,
        "{rejections} rejections"
    );
}
