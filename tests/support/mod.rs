//! Shared pieces of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use paynet_auth::clock::NoJitter;
use paynet_auth::token::TokenManagerBuilder;
use paynet_auth::{PaynetLogin, TokenManager};

#[cfg(all(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod db;
pub mod fleet;
pub mod logs;
#[cfg(feature = "diesel-store")]
pub mod proxy;
pub mod recording;
#[cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]
pub mod redis_db;
pub mod servers;
pub mod switched;

pub const USERNAME: &str = "username_17627_56530";
pub const PASSWORD: &str = "password_17627_56530";
pub const TERMINAL: u64 = 4027096;
pub const BASE: &str = "http://gateway.test/gw";

pub type MockRequest = Request<Full<Bytes>>;
pub type MockResponse = Response<Full<Bytes>>;

/// Asserts that the manager's login counts and its [`stats`](TokenManager::stats) agree: `logins()` is the count of
/// successful logins, `login_attempts()` the sum of every outcome.
pub fn assert_logins_agree(manager: &TokenManager) {
    let stats = manager.stats();
    assert_eq!(
        manager.logins(),
        stats.logins_ok,
        "logins() against {stats}"
    );
    assert_eq!(
        manager.login_attempts(),
        stats.logins_ok + stats.logins_refused + stats.logins_unavailable + stats.logins_timeout,
        "login_attempts() against {stats}"
    );
}

/// A manager builder for the mock gateway at [`BASE`], deterministic (no jitter).
pub fn manager_builder() -> TokenManagerBuilder {
    TokenManager::builder(PaynetLogin::new(BASE, USERNAME, PASSWORD.into(), TERMINAL))
        .jitter(Arc::new(NoJitter))
        .login_timeout(Duration::from_secs(5))
        .backoff(Duration::from_secs(1), Duration::from_secs(8))
}

/// A manager builder for the published test account at `base_url` (a simulator's, say), with no other setting.
pub fn account_at(base_url: &str) -> TokenManagerBuilder {
    TokenManager::builder(PaynetLogin::new(
        base_url,
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
}

pub fn json_request(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{BASE}{path}"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

pub fn json_response(body: &str) -> MockResponse {
    Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())))
}

pub fn login_ok(token: &str) -> MockResponse {
    json_response(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"agentId":"17627","terminalId":"4027096","userId":56530,"userLogin":"{USERNAME}","token":"{token}"}}}}"#
    ))
}

pub const UNAUTHORIZED: &str =
    r#"{"jsonrpc":"2.0","id":123,"error":{"code":-9999,"message":"unauthorized"}}"#;

pub async fn body_bytes<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

pub async fn body_json<B>(body: B) -> serde_json::Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    serde_json::from_slice(&body_bytes(body).await).unwrap()
}

pub fn is_login(request: &MockRequest) -> bool {
    request.uri().path() == "/gw/v2/user"
}

/// A scripted token endpoint for manager tests: counts logins, answers after a latency, can fail or hang.
#[derive(Clone, Default)]
pub struct FakeLogin {
    pub state: Arc<std::sync::Mutex<FakeLoginState>>,
    pub attempts: Arc<std::sync::atomic::AtomicUsize>,
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Clone, Default)]
pub struct FakeLoginState {
    pub latency: Duration,
    pub mode: FakeMode,
    pub issued: u64,
}

#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub enum FakeMode {
    #[default]
    Ok,
    Unavailable,
    Hang,
    Refuse,
}

impl FakeLogin {
    pub fn with_latency(latency: Duration) -> Self {
        let fake = Self::default();
        fake.state.lock().unwrap().latency = latency;
        fake
    }

    pub fn set_mode(&self, mode: FakeMode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn issued(&self) -> u64 {
        self.state.lock().unwrap().issued
    }

    pub fn sender(&self) -> paynet_auth::token::LoginSender {
        use std::sync::atomic::Ordering::SeqCst;
        let fake = self.clone();
        paynet_auth::token::LoginSender::new(move |request| {
            Box::pin(async move {
                assert!(is_login(&request));
                fake.attempts.fetch_add(1, SeqCst);
                let now = fake.in_flight.fetch_add(1, SeqCst) + 1;
                fake.max_in_flight.fetch_max(now, SeqCst);
                let (latency, mode) = {
                    let state = fake.state.lock().unwrap();
                    (state.latency, state.mode.clone())
                };
                tokio::time::sleep(latency).await;
                let answer = match mode {
                    FakeMode::Ok => {
                        let issued = {
                            let mut state = fake.state.lock().unwrap();
                            state.issued += 1;
                            state.issued
                        };
                        let body = login_ok(&format!("token-{issued}")).into_body();
                        Ok(paynet_auth::token::LoginResponse {
                            status: http::StatusCode::OK,
                            headers: http::HeaderMap::new(),
                            body: http_body_util::BodyExt::collect(body).await.unwrap().to_bytes(),
                        })
                    }
                    FakeMode::Unavailable => Ok(paynet_auth::token::LoginResponse {
                        status: http::StatusCode::SERVICE_UNAVAILABLE,
                        headers: http::HeaderMap::new(),
                        body: Bytes::from_static(b"Service Unavailable"),
                    }),
                    FakeMode::Refuse => Ok(paynet_auth::token::LoginResponse {
                        status: http::StatusCode::OK,
                        headers: http::HeaderMap::new(),
                        body: Bytes::from_static(
                            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1001,"message":"Invalid login or password"}}"#,
                        ),
                    }),
                    FakeMode::Hang => std::future::pending().await,
                };
                fake.in_flight.fetch_sub(1, SeqCst);
                answer
            })
        })
    }
}

/// Installs ring as rustls' process-wide provider, once. The tests' reqwest is built with `rustls-no-provider`
/// (reqwest's `rustls` feature brings aws-lc-rs, which needs cmake on some machines), and such a client panics
/// when it is built without a provider installed, even for plain HTTP.
pub fn install_ring_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
