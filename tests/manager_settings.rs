//! Settings the manager cannot work with are refused when it is built, naming them by their builder names; a
//! token endpoint whose `expires_in` is shorter than the expiry skew scales the skew down instead of making
//! every call log in.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use paynet_auth::TokenManager;
use paynet_auth::clock::ManualClock;
use paynet_auth::error::ConfigError;
use paynet_auth::record::Generation;
use paynet_auth::store::MemoryStore;
use paynet_auth::token::source::ClientCredentials;
use paynet_auth::token::{LoginResponse, LoginSender};
use support::logs::Captured;
use support::*;

/// Asserts that `result` is the builder's refusal of exactly `fields`, with a message naming each; returns the
/// message.
fn assert_refused(result: Result<TokenManager, ConfigError>, fields: &[&str]) -> String {
    let error = result.expect_err("the builder refuses these settings");
    let message = error.to_string();
    match &error {
        ConfigError::Refused {
            origin,
            fields: named,
            ..
        } => {
            assert_eq!(origin, "TokenManagerBuilder", "{message}");
            assert_eq!(named, fields, "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    for field in fields {
        assert!(message.contains(field), "names `{field}`: {message}");
    }
    message
}

#[test]
fn token_ttl_not_longer_than_expiry_skew_is_refused() {
    let message = assert_refused(
        manager_builder()
            .token_ttl(Some(Duration::from_secs(30)))
            .expiry_skew(Duration::from_secs(30))
            .build(),
        &["token_ttl", "expiry_skew"],
    );
    assert!(message.starts_with("TokenManagerBuilder: "), "{message}");
    // The default skew is 30 s.
    assert_refused(
        manager_builder()
            .token_ttl(Some(Duration::from_secs(20)))
            .build(),
        &["token_ttl", "expiry_skew"],
    );
    manager_builder()
        .token_ttl(Some(Duration::from_millis(30_001)))
        .build()
        .unwrap();
}

#[test]
fn lease_ttl_not_longer_than_login_timeout_is_refused_for_a_memory_store() {
    assert_refused(
        manager_builder()
            .login_timeout(Duration::from_secs(10))
            .lease_ttl(Duration::from_secs(10))
            .build(),
        &["lease_ttl", "login_timeout"],
    );
    manager_builder()
        .login_timeout(Duration::from_secs(10))
        .lease_ttl(Duration::from_millis(10_001))
        .build()
        .unwrap();
}

/// A database store's operations may each wait `connect_timeout`; the re-read before the login and the save
/// after it happen under the lease, so the lease must cover both as well.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn lease_ttl_must_cover_the_login_and_two_store_operations() {
    use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
    let store = DieselStore::connect(
        "sqlite::memory:",
        StoreOptions {
            connect_timeout: Duration::from_secs(5),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.operation_timeout(), Some(Duration::from_secs(5)));
    let build = |lease: Duration| {
        manager_builder()
            .store(store.clone())
            .login_timeout(Duration::from_secs(10))
            .lease_ttl(lease)
            .build()
    };
    let message = assert_refused(
        build(Duration::from_secs(20)),
        &[
            "lease_ttl",
            "login_timeout",
            "StoreOptions::operation_timeout",
        ],
    );
    assert!(message.contains("20s") && message.contains("10s") && message.contains("5s"));
    build(Duration::from_millis(20_001)).unwrap();
}

/// An OAuth endpoint that grants tokens for 20 s and counts its logins.
#[derive(Clone, Default)]
struct ShortLivedGrants {
    logins: Arc<AtomicU64>,
}

impl ShortLivedGrants {
    const EXPIRES_IN_S: u64 = 20;

    fn sender(&self) -> LoginSender {
        let logins = Arc::clone(&self.logins);
        LoginSender::new(move |_request| {
            Box::pin(async move {
                let n = logins.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(LoginResponse {
                    status: http::StatusCode::OK,
                    headers: http::HeaderMap::new(),
                    body: Bytes::from(format!(
                        r#"{{"access_token":"token-{n}","token_type":"bearer","expires_in":{}}}"#,
                        Self::EXPIRES_IN_S
                    )),
                })
            })
        })
    }

    fn logins(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }
}

/// With the default 30 s skew, a 20 s token was stale on arrival: 4,980 calls made 4,980 logins. The skew is now
/// at most half the token's lifetime: one login serves the first 10 s, the next one is due at 10 s, and the
/// scaling is said once at WARN.
#[tokio::test]
async fn expires_in_shorter_than_the_skew_scales_it_down_to_one_login_per_half_lifetime() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let start_ms = 1_700_000_000_000;
    let clock = ManualClock::new(start_ms);
    let endpoint = ShortLivedGrants::default();
    let manager = TokenManager::builder(ClientCredentials::new(
        "http://auth.test/oauth/token",
        "client",
        "client-secret".into(),
    ))
    .clock(Arc::new(clock.clone()))
    .store(MemoryStore::with_clock(Arc::new(clock.clone())))
    .build()
    .unwrap();

    // 4,980 calls 2 ms apart: 9.96 s, all within the first half of the token's 20 s.
    for _ in 0..4_980 {
        let token = manager.token(endpoint.sender()).await.unwrap();
        assert_eq!(token.generation(), Generation(1));
        clock.advance(Duration::from_millis(2));
    }
    assert_eq!(endpoint.logins(), 1);

    clock.set(start_ms + 10_000);
    assert!(manager.cached().is_none(), "half the lifetime is left: due");
    let token = manager.token(endpoint.sender()).await.unwrap();
    assert_eq!(token.generation(), Generation(2));
    assert_eq!(endpoint.logins(), 2);

    let warnings: Vec<String> = logs
        .text()
        .lines()
        .filter(|line| line.contains(" WARN ") && line.contains("expires_in"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
    assert!(
        warnings[0].contains("expires_in_ms=20000"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("expiry_skew_ms=30000"),
        "{}",
        warnings[0]
    );
}

#[test]
fn refresh_ahead_not_shorter_than_the_usable_lifetime_is_refused() {
    let message = assert_refused(
        manager_builder()
            .token_ttl(Some(Duration::from_secs(120)))
            .expiry_skew(Duration::from_secs(30))
            .refresh_ahead(Duration::from_secs(90))
            .build(),
        &["refresh_ahead", "token_ttl", "expiry_skew"],
    );
    assert!(
        message.contains("`0s` turns refresh-ahead off"),
        "{message}"
    );
    manager_builder()
        .token_ttl(Some(Duration::from_secs(120)))
        .expiry_skew(Duration::from_secs(30))
        .refresh_ahead(Duration::from_millis(89_999))
        .build()
        .unwrap();
    // Off, or with no lifetime to refresh ahead of: nothing to refuse.
    manager_builder()
        .token_ttl(Some(Duration::from_secs(120)))
        .refresh_ahead(Duration::ZERO)
        .build()
        .unwrap();
    manager_builder()
        .refresh_ahead(Duration::from_secs(3600))
        .build()
        .unwrap();
}

/// Lets the background refresh run on this current-thread runtime.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A 20 s `expires_in` leaves 10 s of use (the skew is scaled down to half). The default window (60 s) is scaled
/// to half of that, silently; a configured 15 s window does not fit either, is scaled the same way and said once.
/// Either way the token is refreshed in the background from 5 s on, and no call before that refreshes.
#[tokio::test]
async fn a_window_longer_than_a_short_expires_in_allows_is_scaled_to_half_the_usable_life() {
    for configured in [None, Some(Duration::from_secs(15))] {
        let logs = Captured::default();
        let _guard = logs.install(tracing::Level::WARN);
        let start_ms = 1_700_000_000_000;
        let clock = ManualClock::new(start_ms);
        let endpoint = ShortLivedGrants::default();
        let mut builder = TokenManager::builder(ClientCredentials::new(
            "http://auth.test/oauth/token",
            "client",
            "client-secret".into(),
        ))
        .clock(Arc::new(clock.clone()))
        .store(MemoryStore::with_clock(Arc::new(clock.clone())));
        if let Some(window) = configured {
            builder = builder.refresh_ahead(window);
        }
        let manager = builder.build().unwrap();

        assert_eq!(
            manager.token(endpoint.sender()).await.unwrap().generation(),
            Generation(1)
        );
        clock.set(start_ms + 4_999);
        manager.token(endpoint.sender()).await.unwrap();
        settle().await;
        assert_eq!(endpoint.logins(), 1, "{configured:?}: before the window");
        clock.set(start_ms + 5_000);
        let served = manager.token(endpoint.sender()).await.unwrap();
        assert_eq!(served.generation(), Generation(1), "served at once");
        settle().await;
        assert_eq!(
            endpoint.logins(),
            2,
            "{configured:?}: refreshed behind the call"
        );
        assert_eq!(manager.cached().unwrap().generation(), Generation(2));

        let said: Vec<String> = logs
            .text()
            .lines()
            .filter(|line| line.contains("refresh_ahead_ms"))
            .map(str::to_owned)
            .collect();
        match configured {
            None => assert!(said.is_empty(), "the default is scaled silently: {said:?}"),
            Some(_) => {
                assert_eq!(said.len(), 1, "said once: {said:?}");
                assert!(said[0].contains("refresh_ahead_ms=15000"), "{}", said[0]);
            }
        }
    }
}

/// A lifetime past what a timestamp holds (a token stored with `"7980y"` could not be printed) is refused
/// by the builder as by the configuration.
#[test]
fn lifetimes_past_a_century_are_refused() {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let message = assert_refused(
        manager_builder()
            .token_ttl(Some(century + Duration::from_secs(1)))
            .build(),
        &["token_ttl"],
    );
    assert!(message.contains("100 years"), "{message}");
    assert_refused(
        manager_builder()
            .lease_ttl(Duration::from_secs(u64::MAX / 4))
            .build(),
        &["lease_ttl"],
    );
    manager_builder().token_ttl(Some(century)).build().unwrap();
}
