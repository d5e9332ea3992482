//! The reqwest-middleware adapter end to end against the simulator: same token manager, same replay rule.

mod support;

use paynet_auth::PaynetLogin;
use paynet_auth::record::Generation;
use paynet_auth::reqwest_adapter::PaynetAuthMiddleware;
use paynet_auth::{AuthPolicy, PaynetAuthLayer, PolicySet, TokenManager};
use paynet_sim::tls::{Authority, Identity, ServerTls};
use paynet_sim::{LoginFailure, Simulator};
use support::{PASSWORD, TERMINAL, USERNAME};

fn plain_http() -> reqwest::Client {
    support::install_ring_provider();
    reqwest::Client::new()
}

fn client(manager: &TokenManager) -> reqwest_middleware::ClientWithMiddleware {
    with_adapter(manager, plain_http())
}

/// `http` with the adapter on `manager`, the login going through `http` too.
fn with_adapter(
    manager: &TokenManager,
    http: reqwest::Client,
) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(http.clone())
        .with(PaynetAuthMiddleware::new(
            PaynetAuthLayer::new(manager.clone()),
            http,
        ))
        .build()
}

async fn categories(
    client: &reqwest_middleware::ClientWithMiddleware,
    sim: &Simulator,
) -> reqwest_middleware::Result<serde_json::Value> {
    let text = client
        .post(format!("{}/v2/service", sim.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":5,"params":{}}"#)
        .send()
        .await?
        .text()
        .await?;
    Ok(serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn adapter_logs_in_injects_and_replays_after_a_rejection() {
    let sim = Simulator::builder()
        .single_session(true)
        .start()
        .await
        .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    let client = client(&manager);

    let answer = categories(&client, &sim).await.unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    assert_eq!(sim.stats().logins, 1);

    sim.expire_all();
    let answer = categories(&client, &sim).await.unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let stats = sim.stats();
    assert_eq!(stats.rejections, 1);
    assert_eq!(stats.logins, 2);
    assert_eq!(stats.calls_to("getCategoriesList"), 2);
    assert_eq!(manager.cached().unwrap().generation(), Generation(2));
}

#[tokio::test]
async fn adapter_reports_a_failed_login_as_a_middleware_error() {
    let sim = Simulator::builder()
        .login_failure(Some(LoginFailure::WrongCredentials))
        .start()
        .await
        .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .build()
    .unwrap();
    let error = categories(&client(&manager), &sim).await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Middleware(_)),
        "{error}"
    );
    let message = format!("{error:#}");
    assert!(message.contains("Invalid login or password"), "{message}");
    assert!(!message.contains(PASSWORD));
    assert_eq!(sim.stats().calls_to("getCategoriesList"), 0);
}

/// A manager on a clock the test moves: tokens live 60 s (the simulator itself never expires them).
fn expiring_manager(
    sim: &Simulator,
    clock: &paynet_auth::clock::ManualClock,
    refresh_ahead: std::time::Duration,
) -> TokenManager {
    use std::sync::Arc;
    use std::time::Duration;
    TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .clock(Arc::new(clock.clone()))
    .store(paynet_auth::store::MemoryStore::with_clock(Arc::new(
        clock.clone(),
    )))
    .token_ttl(Some(Duration::from_secs(60)))
    .expiry_skew(Duration::ZERO)
    .refresh_ahead(refresh_ahead)
    .login_timeout(Duration::from_secs(20))
    .build()
    .unwrap()
}

/// Through the adapter, a call inside the refresh window is answered while the refresh's login hangs: had it
/// waited for the login, it would have failed after the 20 s login timeout.
#[tokio::test]
async fn adapter_sends_inside_the_window_at_once_and_refreshes_behind_the_call() {
    use std::time::Duration;
    let sim = Simulator::start().await.unwrap();
    let clock = paynet_auth::clock::ManualClock::new(1_700_000_000_000);
    let manager = expiring_manager(&sim, &clock, Duration::from_secs(10));
    let client = client(&manager);
    categories(&client, &sim).await.unwrap();
    assert_eq!(sim.stats().logins, 1);

    sim.set_login_failure(Some(LoginFailure::Hang));
    clock.advance(Duration::from_secs(55));
    let answer = categories(&client, &sim).await.unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    // The refresh started behind the call: its login reached the gateway, and hangs there.
    tokio::time::timeout(
        Duration::from_secs(30),
        sim.wait_for(|stats| stats.login_attempts == 2),
    )
    .await
    .expect("a refresh started behind the call");
    assert_eq!(sim.stats().calls_to("getCategoriesList"), 2);
    assert_eq!(manager.cached().unwrap().generation(), Generation(1));
}

/// Through the adapter, past its lifetime the last token is sent on while the login answers 503, until the gateway
/// rejects it; then the call fails with the login's error.
#[tokio::test]
async fn adapter_serves_the_last_token_through_a_login_outage_until_the_gateway_rejects_it() {
    use std::time::Duration;
    let sim = Simulator::start().await.unwrap();
    let clock = paynet_auth::clock::ManualClock::new(1_700_000_000_000);
    let manager = expiring_manager(&sim, &clock, Duration::ZERO);
    let client = client(&manager);
    categories(&client, &sim).await.unwrap();

    sim.set_login_failure(Some(LoginFailure::ServiceUnavailable));
    clock.advance(Duration::from_secs(61));
    for _ in 0..3 {
        let answer = categories(&client, &sim).await.unwrap();
        assert!(answer["result"]["categories"].is_array(), "{answer}");
    }
    assert_eq!(sim.stats().calls_to("getCategoriesList"), 4);

    sim.expire_all();
    let error = categories(&client, &sim).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("503"), "{message}");
    assert_eq!(sim.stats().rejections, 1);
}

/// Two credentials behind one adapter, each a terminal of its own gateway: a request's `CredentialName` extension
/// (`with_extension`) picks the token, a request without one gets the default's, and a name the adapter does not
/// serve is a middleware error with nothing sent. The adapter is made from a layer.
#[tokio::test]
async fn adapter_picks_the_credential_a_request_names() {
    picks_the_named_credential(|north, south, http| {
        let layer = PaynetAuthLayer::new(north).credential(PaynetAuthLayer::new(south));
        PaynetAuthMiddleware::new(layer, http)
    })
    .await;
}

/// The same with the adapter made from a policy set.
#[tokio::test]
async fn adapter_takes_a_policy_set() {
    picks_the_named_credential(|north, south, http| {
        let policies = PolicySet::new(AuthPolicy::paynet(north))
            .with(AuthPolicy::paynet(south))
            .unwrap();
        PaynetAuthMiddleware::new(policies, http)
    })
    .await;
}

/// `adapter(north, south, client)` is an adapter serving north by default and south by name.
async fn picks_the_named_credential(
    adapter: impl FnOnce(TokenManager, TokenManager, reqwest::Client) -> PaynetAuthMiddleware,
) {
    let (north, south) = (
        Simulator::builder().start().await.unwrap(),
        Simulator::builder().start().await.unwrap(),
    );
    let terminal = |sim: &Simulator, name: &str| {
        TokenManager::builder(PaynetLogin::new(
            sim.base_url(),
            USERNAME,
            PASSWORD.into(),
            TERMINAL,
        ))
        .name(name)
        .build()
        .unwrap()
    };
    let http = plain_http();
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(adapter(
            terminal(&north, "north"),
            terminal(&south, "south"),
            http,
        ))
        .build();
    let call = |sim: &Simulator, credential: Option<&str>| {
        let mut request = client
            .post(format!("{}/v2/service", sim.base_url()))
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":5,"params":{}}"#);
        if let Some(name) = credential {
            request = request.with_extension(paynet_auth::CredentialName::new(name));
        }
        request.send()
    };

    // South's gateway only knows south's token: the extension must pick it.
    let answer: serde_json::Value = serde_json::from_str(
        &call(&south, Some("south"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let answer: serde_json::Value =
        serde_json::from_str(&call(&north, None).await.unwrap().text().await.unwrap()).unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    assert_eq!((north.stats().logins, south.stats().logins), (1, 1));
    assert_eq!(north.stats().rejections + south.stats().rejections, 0);

    let error = call(&north, Some("west")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no credential named `west` here (known: north, south)"),
        "{error}"
    );
    assert_eq!(
        north.stats().calls_to("getCategoriesList"),
        1,
        "nothing sent"
    );
}

/// A reqwest client that trusts `ca` alone and, with `identity`, presents it as its client certificate; its
/// timeout is longer than the managers' login timeout, so a slow login ends with the manager's error.
fn https(ca: &Authority, identity: Option<&Identity>) -> reqwest::Client {
    support::install_ring_provider();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(30));
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The gateway's production shape: HTTPS from a private CA, client certificates required. With the terminal's
/// certificate, the login and the call go through (over one connection: the login shares the client's pool);
/// without it, the login is refused in the TLS handshake and the call fails with a middleware error naming the
/// token endpoint, not a panic, with nothing sent past the handshake.
#[tokio::test]
async fn adapter_over_mutual_tls_needs_the_client_certificate_for_the_login_and_the_call() {
    let ca = Authority::new("gateway CA");
    let sim = Simulator::builder()
        .tls(ServerTls::new(&ca.issue_server(&["127.0.0.1"])).require_client_certs(&ca.cert_pem()))
        .start()
        .await
        .unwrap();
    assert!(sim.base_url().starts_with("https://"), "{}", sim.base_url());
    let manager = || {
        TokenManager::builder(PaynetLogin::new(
            sim.base_url(),
            USERNAME,
            PASSWORD.into(),
            TERMINAL,
        ))
        .login_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
    };

    let terminal = ca.issue_client("terminal 4027096");
    let with_certificate = manager();
    let answer = categories(
        &with_adapter(&with_certificate, https(&ca, Some(&terminal))),
        &sim,
    )
    .await
    .unwrap();
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let stats = sim.stats();
    assert_eq!((stats.logins, stats.calls_to("getCategoriesList")), (1, 1));
    assert_eq!((stats.requests, stats.tls_handshakes), (2, 1), "{stats:?}");

    let without_certificate = manager();
    let error = categories(&with_adapter(&without_certificate, https(&ca, None)), &sim)
        .await
        .unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Middleware(_)),
        "{error:?}"
    );
    let message = format!("{error:#}");
    assert!(message.contains("/v2/user"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
    assert_eq!(without_certificate.logins(), 0);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sim.wait_for(|stats| stats.tls_handshake_failures >= 1),
    )
    .await
    .expect("the gateway refused a handshake");
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.logins), (2, 1), "{stats:?}");
}
