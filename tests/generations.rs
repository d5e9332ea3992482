//! Generations: unique across instances that log in while the store is unreachable, and monotone across
//! `token clear`.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paynet_auth::TokenManager;
use paynet_auth::clock::ManualClock;
use paynet_auth::record::Generation;
use paynet_auth::store::{MemoryStore, TokenStore};
use secrecy::ExposeSecret;
use support::*;

use support::switched::SwitchedStore;

fn instance(store: &SwitchedStore, clock: &ManualClock, owner: &str) -> TokenManager {
    manager_builder()
        .shared_store(Arc::new(store.clone()))
        .clock(Arc::new(clock.clone()))
        .owner(owner)
        .build()
        .unwrap()
}

fn secret(manager: &TokenManager) -> String {
    manager
        .cached()
        .unwrap()
        .secret()
        .expose_secret()
        .to_owned()
}

/// Two instances, `a` and `b`, on one store that can be cut (kept by `a_clock`), each with its own clock, both
/// holding the first token, which one login obtained.
async fn two_instances(
    a_clock: &ManualClock,
    b_clock: &ManualClock,
) -> (
    SwitchedStore,
    FakeLogin,
    TokenManager,
    TokenManager,
    Generation,
) {
    let store = SwitchedStore {
        inner: MemoryStore::with_clock(Arc::new(a_clock.clone())),
        down: Arc::default(),
    };
    let login = FakeLogin::default();
    let a = instance(&store, a_clock, "host-a:1:0001");
    let b = instance(&store, b_clock, "host-b:1:0002");
    let first = a.token(login.sender()).await.unwrap().generation();
    assert_eq!(b.token(login.sender()).await.unwrap().generation(), first);
    assert_eq!(login.attempts(), 1);
    (store, login, a, b, first)
}

/// Two instances log in while the store is unreachable, from the same known generation: their tokens get distinct
/// generations, the later login the higher one. When the store returns it converges on the later token; the
/// instance whose token the later login killed adopts it without a login, and a late rejection of the old token
/// evicts nothing.
#[tokio::test(start_paused = true)]
async fn logins_during_an_outage_get_distinct_generations_and_converge() {
    let clock = ManualClock::new(1_800_000_000_000);
    let (store, login, a, b, first) = two_instances(&clock, &clock).await;

    // The store goes away and the gateway rejects the token; both log in on their own, in the same millisecond.
    store.down.store(true, Ordering::SeqCst);
    let in_a = a.token_after(first, login.sender()).await.unwrap();
    let in_b = b.token_after(first, login.sender()).await.unwrap();
    assert_eq!(login.attempts(), 3);
    assert_ne!(in_a.generation(), in_b.generation());
    assert!(in_a.generation() > first && in_b.generation() > first);

    // And again a millisecond later: the later login is numbered higher.
    clock.advance(Duration::from_millis(1));
    let later_a = a
        .token_after(in_a.generation(), login.sender())
        .await
        .unwrap();
    assert!(later_a.generation() > in_b.generation());
    clock.advance(Duration::from_millis(1));
    let later_b = b
        .token_after(in_b.generation(), login.sender())
        .await
        .unwrap();
    assert!(later_b.generation() > later_a.generation());
    assert_eq!(login.attempts(), 5);
    assert_eq!(secret(&b), "token-5");

    // The store returns; both instances write what they obtained, and the store keeps the later login.
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stored = store.inner.load(a.store_key()).await.unwrap().unwrap();
    assert_eq!(stored.generation, later_b.generation());
    assert_eq!(stored.token.expose_secret(), "token-5");

    // On a single-session gateway b's login killed a's token: a's refresh adopts b's token, no login.
    let adopted = a
        .token_after(later_a.generation(), login.sender())
        .await
        .unwrap();
    assert_eq!(adopted.generation(), later_b.generation());
    assert_eq!(secret(&a), "token-5");
    // A late rejection of a token b no longer uses does not evict b's token.
    for old in [first, in_b.generation(), later_a.generation()] {
        let kept = b.token_after(old, login.sender()).await.unwrap();
        assert_eq!(kept.generation(), later_b.generation());
    }
    assert_eq!(login.attempts(), 5);
}

/// `token clear` keeps the generation: the next login is numbered after the cleared token, on the memory store and
/// on a database.
#[tokio::test(start_paused = true)]
async fn clear_then_login_gives_a_higher_generation() {
    let mut stores: Vec<(&str, Arc<dyn TokenStore>)> =
        vec![("memory", Arc::new(MemoryStore::new()))];
    #[cfg(feature = "sqlite")]
    stores.push((
        "sqlite",
        paynet_auth::store::connect(
            "sqlite::memory:",
            paynet_auth::store::StoreOptions::default(),
        )
        .await
        .unwrap(),
    ));
    for (name, store) in stores {
        clear_then_login_on(name, store, None).await;
    }
}

/// The same on Redis (the shared server, a key of the test's own). Not under paused time: with the clock paused,
/// tokio jumps to the next timer while the runtime waits on the network, which would end each Redis command's
/// operation timeout before Redis could answer.
#[cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]
#[tokio::test]
async fn clear_then_login_gives_a_higher_generation_on_redis() {
    let store = support::redis_db::RedisFixture::shared()
        .plain_store()
        .await;
    let key = support::db::unique_key("clear_then_login");
    clear_then_login_on("redis", Arc::new(store), Some(key)).await;
}

/// Two refreshes, a clear and a login on `store` (under `key`, or the manager's default key), then another instance
/// holding the cleared token adopts the new one.
async fn clear_then_login_on(name: &str, store: Arc<dyn TokenStore>, key: Option<String>) {
    let login = FakeLogin::default();
    let instance = || {
        let builder = manager_builder().shared_store(Arc::clone(&store));
        match &key {
            Some(key) => builder.store_key(key.clone()),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let manager = instance();
    let first = manager.token(login.sender()).await.unwrap().generation();
    let second = manager
        .force_refresh(login.sender())
        .await
        .unwrap()
        .generation();
    assert!(second > first, "{name}");

    manager.clear().await.unwrap();
    assert!(manager.stored().await.unwrap().is_none(), "{name}");
    let after_clear = manager.token(login.sender()).await.unwrap();
    assert!(
        after_clear.generation() > second,
        "{name}: {} after clearing {second}",
        after_clear.generation()
    );
    assert_eq!(login.attempts(), 3, "{name}");
    // Another instance still holding the cleared token adopts the new one when that is rejected.
    let other = instance();
    assert_eq!(
        other
            .token_after(second, login.sender())
            .await
            .unwrap()
            .generation(),
        after_clear.generation(),
        "{name}"
    );
    assert_eq!(login.attempts(), 3, "{name}");
}

/// The first login under the lease after an outage is numbered past every login made without the store, not only
/// past this instance's own: the instance that logged in last during the outage (its token ended by this login on a
/// single-session gateway) adopts it rather than logging in once more. Counted from its own outage login, `a`'s
/// login after the return would be numbered below `b`'s, which `b` could not adopt.
#[tokio::test(start_paused = true)]
async fn the_first_login_after_an_outage_is_numbered_past_every_login_made_without_the_store() {
    let clock = ManualClock::new(1_800_000_000_000);
    let (store, login, a, b, first) = two_instances(&clock, &clock).await;

    // The store goes away and the gateway rejects the token: a logs in, then b a millisecond later (ending a's).
    store.set_down(true);
    let in_a = a.token_after(first, login.sender()).await.unwrap();
    clock.advance(Duration::from_millis(1));
    let in_b = b.token_after(first, login.sender()).await.unwrap();
    assert!(in_b.generation() > in_a.generation());
    assert_eq!(login.attempts(), 3);

    // The store is back before either wrote its token. a's is dead: a logs in under the lease, ending b's.
    store.set_down(false);
    clock.advance(Duration::from_millis(1));
    let after_return = a
        .token_after(in_a.generation(), login.sender())
        .await
        .unwrap();
    assert_eq!(login.attempts(), 4);
    assert!(
        after_return.generation() > in_b.generation(),
        "the login after the return is numbered {}, below b's outage login {}",
        after_return.generation(),
        in_b.generation()
    );
    // b adopts it: one login after the return converges the fleet.
    let adopted = b
        .token_after(in_b.generation(), login.sender())
        .await
        .unwrap();
    assert_eq!(adopted.generation(), after_return.generation());
    assert_eq!(login.attempts(), 4);
    // The tokens of the outage, written back once the store answers, do not replace it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stored = store.inner.load(a.store_key()).await.unwrap().unwrap();
    assert_eq!(stored.generation, after_return.generation());
}

/// A token obtained while the store was down and rejected by the gateway before the store came back is not
/// written to it: the fleet would adopt a dead token and be rejected once more. Here b's clock runs behind a's, so
/// b's later login (which ended a's token) is numbered below a's.
#[tokio::test(start_paused = true)]
async fn a_token_rejected_during_the_outage_is_not_written_back() {
    let clock = ManualClock::new(1_800_000_000_000);
    let behind = ManualClock::new(1_800_000_000_000 - 1_000);
    let (store, login, a, b, first) = two_instances(&clock, &behind).await;

    store.set_down(true);
    let in_a = a.token_after(first, login.sender()).await.unwrap();
    let in_b = b.token_after(first, login.sender()).await.unwrap();
    assert!(in_a.generation() > in_b.generation(), "b's clock is behind");
    // b's login ended a's token; a finds out, and cannot log in again (the token endpoint is down too).
    login.set_mode(FakeMode::Unavailable);
    a.token_after(in_a.generation(), login.sender())
        .await
        .unwrap_err();
    login.set_mode(FakeMode::Ok);

    // The store is back: b's live token is written, a's dead one is not (it would win on its higher generation).
    store.set_down(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stored = store.inner.load(a.store_key()).await.unwrap().unwrap();
    assert_eq!(
        stored.token.expose_secret(),
        in_b.secret().expose_secret(),
        "the store holds generation {} (a's dead token is {}, b's live one {})",
        stored.generation,
        in_a.generation(),
        in_b.generation()
    );
}

/// Instances whose clocks are behind the newest generation (numbered by an instance whose clock runs ahead) still
/// number their outage logins apart: the millisecond after it, each with its own low bits, rather than the
/// generation plus one for both.
#[tokio::test(start_paused = true)]
async fn instances_behind_a_clock_that_runs_ahead_still_number_outage_logins_apart() {
    let clock = ManualClock::new(1_800_000_000_000);
    let ahead = ManualClock::new(1_800_000_000_000 + 5_000);
    let (store, login, a, b, first) = two_instances(&clock, &clock).await;
    let fast = instance(&store, &ahead, "host-c:1:0003");
    assert_eq!(
        fast.token(login.sender()).await.unwrap().generation(),
        first
    );

    // The instance whose clock runs ahead logs in during an outage; its token is written back once the store
    // returns, and the others adopt it.
    store.set_down(true);
    let from_ahead = fast.token_after(first, login.sender()).await.unwrap();
    store.set_down(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for instance in [&a, &b] {
        let adopted = instance.token_after(first, login.sender()).await.unwrap();
        assert_eq!(adopted.generation(), from_ahead.generation());
    }

    // Another outage: a and b log in on their own, in the same millisecond of clocks 5 s behind that generation.
    store.set_down(true);
    let in_a = a
        .token_after(from_ahead.generation(), login.sender())
        .await
        .unwrap();
    let in_b = b
        .token_after(from_ahead.generation(), login.sender())
        .await
        .unwrap();
    assert!(in_a.generation() > from_ahead.generation());
    assert!(in_b.generation() > from_ahead.generation());
    assert_ne!(
        in_a.generation(),
        in_b.generation(),
        "two tokens, one generation"
    );
}

/// A login made without the store that ends after the store came back is written at once, not a second later: the
/// instance whose token it ended adopts it rather than finding the lease free and logging in too.
#[tokio::test(start_paused = true)]
async fn a_login_without_the_store_that_ends_after_its_return_is_stored_at_once() {
    let clock = ManualClock::new(1_800_000_000_000);
    let (store, login, a, b, first) = two_instances(&clock, &clock).await;
    login.state.lock().unwrap().latency = Duration::from_millis(100);

    // The store is down when a's refresh reads it, and back while a's login is under way.
    store.set_down(true);
    let refresh = tokio::spawn({
        let a = a.clone();
        let sender = login.sender();
        async move { a.token_after(first, sender).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.set_down(false);
    let in_a = refresh.await.unwrap();
    assert_eq!(login.attempts(), 2);

    tokio::time::sleep(Duration::from_millis(10)).await;
    let stored = store.inner.load(a.store_key()).await.unwrap().unwrap();
    assert_eq!(
        stored.generation,
        in_a.generation(),
        "the store still holds generation {} 10 ms after the login",
        stored.generation
    );
    // b's token was ended by that login: b adopts it.
    let adopted = b.token_after(first, login.sender()).await.unwrap();
    assert_eq!(adopted.generation(), in_a.generation());
    assert_eq!(login.attempts(), 2);
}
