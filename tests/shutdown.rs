//! `TokenManager::shutdown`: the lease a login in flight holds is given back, and none is taken afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use paynet_auth::TokenError;
use paynet_auth::store::{MemoryStore, TokenStore};
use support::*;

/// Lets the spawned tasks run until `done` holds; the clock is paused, so nothing waits on real time.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_back_the_lease_a_login_in_flight_holds() {
    let store = Arc::new(MemoryStore::new());
    let manager = manager_builder()
        .shared_store(store.clone())
        .build()
        .unwrap();
    let login = FakeLogin::default();
    login.set_mode(FakeMode::Hang);
    let caller = {
        let (manager, sender) = (manager.clone(), login.sender());
        tokio::spawn(async move { manager.token(sender).await.map(|t| t.generation()) })
    };
    // The lease is taken before the login is sent.
    until(|| login.attempts() == 1).await;
    let key = manager.store_key().to_owned();
    assert!(store.lease(&key).await.unwrap().unwrap().is_held());

    assert!(manager.shutdown().await.unwrap(), "a lease was held");
    assert!(!store.lease(&key).await.unwrap().unwrap().is_held());
    // Said once: nothing is held any more.
    assert!(!manager.shutdown().await.unwrap());
    caller.abort();
}

/// After shutdown the manager never takes the lease: its refresh waits for another instance's token and adopts
/// it, without a login of its own.
#[tokio::test(start_paused = true)]
async fn after_shutdown_a_refresh_takes_no_lease_and_adopts_another_instances_token() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let stopping = manager_builder()
        .shared_store(Arc::clone(&store))
        .poll_interval(Duration::from_millis(100))
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(!stopping.shutdown().await.unwrap(), "no lease was held");
    let its_login = FakeLogin::default();
    let refresh = {
        let (manager, sender) = (stopping.clone(), its_login.sender());
        tokio::spawn(async move { manager.token(sender).await.map(|t| t.generation()) })
    };
    // Paused time: this runs once the refresh has found the lease not to be its own and sleeps until its next
    // poll (100 ms); no real time passes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(its_login.attempts(), 0);

    let other = manager_builder().shared_store(store).build().unwrap();
    let other_login = FakeLogin::default();
    let token = other.token(other_login.sender()).await.unwrap();
    assert_eq!(refresh.await.unwrap().unwrap(), token.generation());
    assert_eq!((its_login.attempts(), other_login.attempts()), (0, 1));
}

/// With no other instance, a refresh after shutdown ends when the wait does.
#[tokio::test(start_paused = true)]
async fn after_shutdown_a_refresh_alone_fails_with_lease_wait_without_logging_in() {
    let manager = manager_builder()
        .poll_interval(Duration::from_millis(100))
        .wait_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    manager.shutdown().await.unwrap();
    let login = FakeLogin::default();
    let error = manager.token(login.sender()).await.unwrap_err();
    assert!(matches!(error, TokenError::LeaseWait { .. }), "{error}");
    assert_eq!(login.attempts(), 0);
}
