//! Wake-ups through Redis pub/sub: one subscribed connection per process and Redis URL, shared by every store (and
//! so every credential) on that URL, started on the first `subscribe`. Each save's script publishes its store key on
//! the database's channel; the listener hands it to [`Wakeups::notify`]. A dropped connection is made again with
//! backoff, said at WARN once per outage and at INFO when it is back; since messages sent meanwhile are lost, every
//! waiter is then woken to look again (polling carried the protocol meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::task::AbortHandle;

use crate::store::Wakeups;

/// The first pause before connecting again after a failure; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listeners of this process, by URL. Weak, so that a listener ends with the last store that uses it.
static LISTENERS: LazyLock<Mutex<HashMap<String, Weak<Listener>>>> =
    LazyLock::new(Default::default);

/// A running pub/sub connection and the wake-ups it fills.
pub(super) struct Listener {
    wakeups: Arc<Wakeups>,
    task: AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    pub(super) fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// Whether its task still runs: it does not once the runtime that spawned it is gone (a store shared between
    /// runtimes, as tests do), and a new one is then started.
    pub(super) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// What a listener needs to connect and to say where it listens.
pub(super) struct Target<'a> {
    /// The registry key: the store URL as given.
    pub(super) url: &'a str,
    pub(super) client: &'a redis::Client,
    pub(super) channel: &'a str,
    /// The URL without its password, for logs.
    pub(super) describe: &'a str,
    pub(super) connect_timeout: Duration,
}

/// The listener of `target.url`, started now if this process has none running; `None` outside a tokio runtime
/// (there is nowhere to run it: the waiter polls).
pub(super) fn shared(target: Target<'_>) -> Option<Arc<Listener>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let mut listeners = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(listener) = listeners.get(target.url).and_then(Weak::upgrade) {
        if listener.is_running() {
            return Some(listener);
        }
    }
    let wakeups = Arc::new(Wakeups::default());
    let task = runtime
        .spawn(listen(
            target.client.clone(),
            target.channel.to_owned(),
            target.describe.to_owned(),
            target.connect_timeout,
            Arc::clone(&wakeups),
        ))
        .abort_handle();
    let listener = Arc::new(Listener { wakeups, task });
    listeners.retain(|_, weak| weak.strong_count() > 0);
    listeners.insert(target.url.to_owned(), Arc::downgrade(&listener));
    Some(listener)
}

async fn subscribed(
    client: &redis::Client,
    channel: &str,
    connect_timeout: Duration,
) -> Result<redis::aio::PubSub, String> {
    let connecting = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {connect_timeout:?}")),
    }
}

async fn listen(
    client: redis::Client,
    channel: String,
    describe: String,
    connect_timeout: Duration,
    wakeups: Arc<Wakeups>,
) {
    // However this task ends (an aborted task, a runtime shut down), its waiters go back to polling.
    let _polling_after = wakeups.not_listening_on_drop();
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    loop {
        match subscribed(&client, &channel, connect_timeout).await {
            Ok(mut pubsub) => {
                if outage {
                    tracing::info!(store = %describe, "listening for token saves again");
                }
                backoff = MIN_BACKOFF;
                // Saves announced before the subscription took effect (the first one, or during an outage) were
                // not heard: every waiter looks again, and from now on waits for the wake-ups rather than polling.
                wakeups.listening();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(key) = message.get_payload::<String>() {
                        wakeups.notify(&key);
                    }
                }
                wakeups.not_listening();
                tracing::warn!(
                    store = %describe,
                    "lost the connection that listens for token saves; waiting instances poll until it is back"
                );
                outage = true;
            }
            Err(error) => {
                if !outage {
                    tracing::warn!(
                        store = %describe,
                        error = %error,
                        "cannot listen for token saves; waiting instances poll until it can"
                    );
                    outage = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
