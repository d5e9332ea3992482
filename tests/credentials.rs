//! Several credentials behind one layer: a Paynet terminal per merchant and a Bearer API, each with its own token,
//! lifetime, lease and backoff, chosen per request by a `CredentialName` extension. Paused tokio time and a gateway
//! in memory make every count exact; the fleet test runs two instances on real threads over one store.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paynet_auth::store::MemoryStore;
use paynet_auth::token::Health;
use paynet_auth::{
    AuthPolicy, CredentialName, Error, PaynetAuthLayer, PolicySet, PolicySetError, TokenError,
    TokenManager,
};
use paynet_auth::{ClientCredentials, PaynetLogin};
use support::*;
use tower::{Layer, ServiceExt};

const LOGIN_LATENCY: Duration = Duration::from_millis(200);
const TOKEN_URL: &str = "http://reports.test/oauth/token";

/// What the gateway saw, per login username (`reports` for the Bearer API's client).
#[derive(Clone, Default)]
struct Gateway {
    logins: Arc<Mutex<HashMap<String, usize>>>,
    /// The usernames whose logins are refused.
    refused: Arc<Mutex<Vec<String>>>,
    /// Each call's token, as sent (body or header).
    calls: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn logins(&self, username: &str) -> usize {
        self.logins
            .lock()
            .unwrap()
            .get(username)
            .copied()
            .unwrap_or(0)
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Paynet logins answer `<username>-<n>`; the Bearer token endpoint `reports-<n>`; calls echo their token.
    fn service(
        &self,
    ) -> impl tower::Service<
        MockRequest,
        Response = MockResponse,
        Error = Infallible,
        Future = impl Future<Output = Result<MockResponse, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        let gateway = self.clone();
        tower::service_fn(move |request: MockRequest| {
            let gateway = gateway.clone();
            async move {
                let login = is_login(&request);
                let authorization = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|h| h.to_str().unwrap().to_owned());
                if request.uri() == TOKEN_URL {
                    return Ok(gateway.login("reports").await);
                }
                let body = body_json(request.into_body()).await;
                if login {
                    return Ok(gateway
                        .login(body["params"]["username"].as_str().unwrap())
                        .await);
                }
                let token = authorization
                    .unwrap_or_else(|| body["params"]["token"].as_str().unwrap().to_owned());
                gateway.calls.lock().unwrap().push(token);
                Ok(json_response(r#"{"jsonrpc":"2.0","id":1,"result":[]}"#))
            }
        })
    }

    /// A login of `username` after [`LOGIN_LATENCY`]: `<username>-<n>`, or refused.
    async fn login(&self, username: &str) -> MockResponse {
        let username = username.to_owned();
        tokio::time::sleep(LOGIN_LATENCY).await;
        if self.refused.lock().unwrap().contains(&username) {
            return json_response(
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1001,"message":"Invalid login or password"}}"#,
            );
        }
        let n = {
            let mut logins = self.logins.lock().unwrap();
            let n = logins.entry(username.clone()).or_default();
            *n += 1;
            *n
        };
        let token = format!("{username}-{n}");
        if username == "reports" {
            return json_response(&format!(
                r#"{{"access_token":"{token}","token_type":"Bearer"}}"#
            ));
        }
        login_ok(&token)
    }
}

/// A merchant's terminal: its manager is named `name` and logs in as `name`.
fn terminal(name: &str, ttl: Duration, store: &MemoryStore) -> TokenManager {
    TokenManager::builder(PaynetLogin::new(BASE, name, PASSWORD.into(), TERMINAL))
        .name(name)
        .store(store.clone())
        .token_ttl(Some(ttl))
        .expiry_skew(Duration::ZERO)
        .refresh_ahead(Duration::ZERO)
        .backoff(Duration::from_secs(1), Duration::from_secs(8))
        .build()
        .unwrap()
}

fn call(credential: Option<&str>) -> MockRequest {
    let mut request = json_request(
        "/v2/service",
        r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
    );
    if let Some(name) = credential {
        request.extensions_mut().insert(CredentialName::new(name));
    }
    request
}

/// Two terminals with lifetimes of 2 s and 4 s: each request carries its credential's token, a request without a
/// credential the default's, and each token is renewed when its own lifetime runs out, not the other's.
#[tokio::test(start_paused = true)]
async fn two_credentials_expire_independently() {
    let gateway = Gateway::default();
    let store = MemoryStore::new();
    let layer = PaynetAuthLayer::new(terminal("north", Duration::from_secs(2), &store)).credential(
        PaynetAuthLayer::new(terminal("south", Duration::from_secs(4), &store)),
    );
    let service = layer.layer(gateway.service());

    // Logins take 200 ms: north's token lives from 0.2 s to 2.2 s, south's from 0.4 s to 4.4 s.
    service.clone().oneshot(call(Some("north"))).await.unwrap();
    service.clone().oneshot(call(Some("south"))).await.unwrap();
    service.clone().oneshot(call(None)).await.unwrap();
    assert_eq!(gateway.calls(), ["north-1", "south-1", "north-1"]);

    // At 3.4 s north's token has expired, south's has not; north's second lives to 5.6 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    service.clone().oneshot(call(Some("south"))).await.unwrap();
    service.clone().oneshot(call(Some("north"))).await.unwrap();
    assert_eq!((gateway.logins("north"), gateway.logins("south")), (2, 1));

    // At 5.1 s south's has expired, north's second has not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.clone().oneshot(call(Some("north"))).await.unwrap();
    service.clone().oneshot(call(Some("south"))).await.unwrap();
    assert_eq!((gateway.logins("north"), gateway.logins("south")), (2, 2));
    assert_eq!(
        gateway.calls()[3..],
        ["south-1", "north-2", "north-2", "south-2"]
    );
    let north = service.credential_manager("north").unwrap();
    let south = service.credential_manager("south").unwrap();
    assert_ne!(north.store_key(), south.store_key(), "a store row each");
    assert_eq!((north.stats().logins_ok, south.stats().logins_ok), (2, 2));
}

/// A terminal whose login is refused fails its own calls, and backs off, while the other terminal's calls go
/// through at once, during the refused login and after it.
#[tokio::test(start_paused = true)]
async fn a_refused_login_does_not_block_the_other_credential() {
    let gateway = Gateway::default();
    gateway.refused.lock().unwrap().push("south".into());
    let store = MemoryStore::new();
    let layer =
        PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)).credential(
            PaynetAuthLayer::new(terminal("south", Duration::from_secs(60), &store)),
        );
    let service = layer.layer(gateway.service());
    service.clone().oneshot(call(Some("north"))).await.unwrap();

    // South's login takes 200 ms and is refused; north's calls meanwhile answer at once.
    let started = tokio::time::Instant::now();
    let south = tokio::spawn(service.clone().oneshot(call(Some("south"))));
    tokio::task::yield_now().await;
    for _ in 0..10 {
        service.clone().oneshot(call(Some("north"))).await.unwrap();
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "north never waited for south"
    );
    let error = south.await.unwrap().unwrap_err();
    assert!(
        matches!(error, Error::Token(TokenError::Login(_))),
        "{error}"
    );
    // During south's backoff: south fails at once, north still answers.
    let error = service
        .clone()
        .oneshot(call(Some("south")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Token(TokenError::Backoff { .. })),
        "{error}"
    );
    service.clone().oneshot(call(Some("north"))).await.unwrap();

    assert!(matches!(
        service.credential_manager("south").unwrap().health(),
        Health::Failing { .. }
    ));
    assert!(matches!(service.manager().health(), Health::Ready));
    assert_eq!((gateway.logins("north"), gateway.logins("south")), (1, 0));
    assert!(gateway.calls().iter().all(|token| token == "north-1"));
}

/// A name the layer does not serve fails the call unsent, naming what it does serve.
#[tokio::test(start_paused = true)]
async fn an_unknown_credential_is_an_error_and_sends_nothing() {
    let gateway = Gateway::default();
    let store = MemoryStore::new();
    let layer =
        PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)).credential(
            PaynetAuthLayer::new(terminal("south", Duration::from_secs(60), &store)),
        );
    let service = layer.layer(gateway.service());
    let error = service.oneshot(call(Some("west"))).await.unwrap_err();
    assert!(
        matches!(&error, Error::UnknownCredential { name, known } if name == "west" && *known == ["north", "south"]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "no credential named `west` here (known: north, south); the request was not sent"
    );
    assert!(error.is_safe_to_retry());
    assert_eq!((gateway.logins("north"), gateway.logins("south")), (0, 0));
    assert!(gateway.calls().is_empty());
}

/// A Bearer API beside a Paynet terminal: each request gets its own preset's placement.
#[tokio::test(start_paused = true)]
async fn a_bearer_credential_beside_a_paynet_one_gets_its_header() {
    let gateway = Gateway::default();
    let store = MemoryStore::new();
    let reports = TokenManager::builder(ClientCredentials::new(TOKEN_URL, "id", "secret".into()))
        .name("reports")
        .store(store.clone())
        .build()
        .unwrap();
    let layer = PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store))
        .credential(PaynetAuthLayer::bearer(reports));
    let service = layer.layer(gateway.service());
    service
        .clone()
        .oneshot(call(Some("reports")))
        .await
        .unwrap();
    service.clone().oneshot(call(None)).await.unwrap();
    assert_eq!(gateway.calls(), ["Bearer reports-1", "north-1"]);
}

/// Adding a credential whose name is taken is a programming error, said at once.
#[test]
#[should_panic(expected = "a credential named `north` is already served")]
fn a_credential_name_served_twice_panics() {
    let store = MemoryStore::new();
    let _ = PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)).credential(
        PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)),
    );
}

/// A set refuses a second policy of a name it holds with a typed error, and stays as it was.
#[test]
fn a_policy_set_refuses_a_name_twice_with_an_error() {
    let store = MemoryStore::new();
    let policy = |name: &str| AuthPolicy::paynet(terminal(name, Duration::from_secs(60), &store));
    let mut policies = PolicySet::new(policy("north"))
        .with(policy("south"))
        .unwrap();
    for taken in ["north", "south"] {
        assert_eq!(
            policies.insert(AuthPolicy::bearer(terminal(
                taken,
                Duration::from_secs(60),
                &store
            ))),
            Err(PolicySetError::DuplicateName {
                name: taken.to_owned()
            })
        );
    }
    assert_eq!(policies.names(), ["north", "south"]);
    assert_eq!(
        policies.get("south").unwrap().rejection_rule(),
        &paynet_auth::policy::RejectionRule::json_rpc_error(-9999),
        "the refused Bearer policy replaced nothing"
    );
    let error = PolicySet::new(policy("north"))
        .with(policy("north"))
        .unwrap_err();
    assert!(
        error.to_string().contains("`north`"),
        "the error names the name: {error}"
    );
}

/// The layer builds its set once: every service it makes shares it, whatever the number of `layer` calls.
#[test]
fn every_service_of_a_layer_shares_its_one_policy_set() {
    let store = MemoryStore::new();
    let gateway = Gateway::default();
    let layer =
        PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)).credential(
            PaynetAuthLayer::new(terminal("south", Duration::from_secs(60), &store)),
        );
    let first = layer.layer(gateway.service());
    let second = layer.layer(gateway.service());
    assert!(std::ptr::eq(first.policies(), second.policies()));
    assert!(std::ptr::eq(first.policies(), layer.policies()));
    assert_eq!(first.policies().names(), ["north", "south"]);
}

/// `authorised_http_client` takes a set, a policy or a layer; from a layer it shares the layer's set.
#[cfg(feature = "hyper-client")]
#[tokio::test]
async fn the_hyper_client_function_takes_a_policy_set_or_a_layer() {
    use paynet_auth::hyper_client::authorised_http_client;
    let store = MemoryStore::new();
    let layer =
        PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store)).credential(
            PaynetAuthLayer::new(terminal("south", Duration::from_secs(60), &store)),
        );
    let borrowed = authorised_http_client(&layer);
    assert!(std::ptr::eq(borrowed.policies(), layer.policies()));
    let owned = authorised_http_client(layer.clone());
    assert!(std::ptr::eq(owned.policies(), layer.policies()));
    let set = authorised_http_client(PolicySet::from(layer.clone()));
    assert_eq!(set.policies().names(), ["north", "south"]);
    let one = authorised_http_client(AuthPolicy::bearer(terminal(
        "reports",
        Duration::from_secs(60),
        &store,
    )));
    assert_eq!(one.manager().name(), "reports");
}

/// Two instances (a layer each, with both terminals, each instance with its own connection pool to one SQLite
/// file), 50 concurrent callers per credential on each, on real threads, from a cold start: one login per
/// credential for the whole fleet, the other instance adopting it through the store.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_two_instances_logs_in_once_per_credential() {
    use paynet_auth::store::{self, StoreOptions};
    let gateway = Gateway::default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tokens.db").display());
    let mut fleet = Vec::new();
    for owner in ["a", "b"] {
        let pool = store::connect(&url, StoreOptions::default()).await.unwrap();
        let build = |name: &str| {
            TokenManager::builder(PaynetLogin::new(BASE, name, PASSWORD.into(), TERMINAL))
                .name(name)
                .owner(format!("{owner}-{name}"))
                .shared_store(pool.clone())
                .poll_interval(Duration::from_millis(20))
                .build()
                .unwrap()
        };
        fleet.push(
            PaynetAuthLayer::new(build("north"))
                .credential(PaynetAuthLayer::new(build("south")))
                .layer(gateway.service()),
        );
    }
    let mut calls = Vec::new();
    for service in &fleet {
        for name in ["north", "south"] {
            for _ in 0..50 {
                calls.push(tokio::spawn(service.clone().oneshot(call(Some(name)))));
            }
        }
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!((gateway.logins("north"), gateway.logins("south")), (1, 1));
    for name in ["north", "south"] {
        let (a, b) = (
            fleet[0].credential_manager(name).unwrap().stats(),
            fleet[1].credential_manager(name).unwrap().stats(),
        );
        assert_eq!(a.logins_ok + b.logins_ok, 1, "{name}");
        assert_eq!(
            a.adoptions + b.adoptions,
            1,
            "{name}: the other instance adopted"
        );
    }
    let calls = gateway.calls();
    assert_eq!(calls.len(), 200);
    assert_eq!(calls.iter().filter(|t| *t == "north-1").count(), 100);
    assert_eq!(calls.iter().filter(|t| *t == "south-1").count(), 100);
}

/// The layer takes the `CredentialName` out of the request, and nothing else: an extension of the caller's own still
/// reaches the service below, on the first send and on the replay after a rejection.
#[tokio::test(start_paused = true)]
async fn the_callers_other_extensions_reach_the_service_below_first_and_on_replay() {
    #[derive(Clone, Debug, PartialEq)]
    struct TraceId(u64);
    /// Per send: whether it carried a `CredentialName`, and its trace id.
    type Seen = Arc<Mutex<Vec<(bool, Option<TraceId>)>>>;
    let seen: Seen = Arc::default();
    let gateway = {
        let seen = Arc::clone(&seen);
        let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tower::service_fn(move |request: MockRequest| {
            let (seen, logins) = (Arc::clone(&seen), Arc::clone(&logins));
            async move {
                if is_login(&request) {
                    let n = logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    return Ok::<_, Infallible>(login_ok(&format!("T-{n}")));
                }
                seen.lock().unwrap().push((
                    request.extensions().get::<CredentialName>().is_some(),
                    request.extensions().get::<TraceId>().cloned(),
                ));
                let body = body_json(request.into_body()).await;
                // T-1 serves one call, then expires: a token rejected before any call was accepted with it would
                // be a failed login, not an expiry to replay.
                if body["params"]["token"] == "T-1" && seen.lock().unwrap().len() > 1 {
                    return Ok(json_response(UNAUTHORIZED));
                }
                Ok(json_response(r#"{"jsonrpc":"2.0","id":1,"result":[]}"#))
            }
        })
    };
    let store = MemoryStore::new();
    let service = PaynetAuthLayer::new(terminal("north", Duration::from_secs(60), &store))
        .credential(PaynetAuthLayer::new(terminal(
            "south",
            Duration::from_secs(60),
            &store,
        )))
        .layer(gateway);
    service.clone().oneshot(call(Some("south"))).await.unwrap();
    let mut request = call(Some("south"));
    request.extensions_mut().insert(TraceId(7));
    service.oneshot(request).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[1..],
        [(false, Some(TraceId(7))), (false, Some(TraceId(7)))],
        "sent, rejected (T-1), replayed (T-2): the trace id both times, the credential neither"
    );
}
