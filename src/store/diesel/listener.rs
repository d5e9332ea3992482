//! PostgreSQL wake-ups: one connection per process and database that `LISTEN`s on the channel every save announces
//! itself on (see `postgres.rs`), and turns each notification into a wake-up of the waiters on its key.
//!
//! The connection is shared by every `DieselStore` of the process opened on the same URL, through a process-wide
//! registry of weak references: a fleet of stores in one process (or one store serving many credentials) holds one
//! listening connection, not one per store, which matters where `max_connections` is counted per pool. It is made
//! by the first [`Listening::subscribe`], so a store that never waits on another instance's lease costs no
//! connection, and it is closed when the last store holding it is dropped.
//!
//! A listening connection that drops is made again, with a backoff. While it is down, wake-ups are lost and the
//! waiters poll at their usual interval; when it is back, every waiter is woken once, to read the store again.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::postgres::SAVED_CHANNEL;
use super::tls::PgConnector;
use crate::error::{BoxError, Chain, StoreError};
use crate::store::{Wakeup, Wakeups};

/// What the listening connection reports to the server as its `application_name`: how an operator tells it from
/// the pool's connections in `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "paynet-auth listener";

/// The first pause before making a dropped listening connection again; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest pause between attempts: while the connection is down, waiters poll, so a slower retry costs
/// latency, not correctness.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// How often an idle listening connection is checked with `SELECT 1`. A connection whose peer went away without a
/// word (a host that died, a NAT or firewall that forgot the flow) is only found by sending on it: TCP keepalives
/// would find it after hours by default, and all that time every wake-up would be lost and every waiter would
/// poll. One tiny statement per process and database every 30 s bounds that.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The registry: the listener of each connection target (the URL, TLS parameters included) in this process.
static LISTENERS: LazyLock<Mutex<HashMap<String, Weak<Listener>>>> =
    LazyLock::new(Default::default);

/// A store's access to the listener of its database.
pub(super) struct Listening {
    /// The URL the store connects to: the registry's key.
    address: String,
    /// The store, redacted, for the logs.
    describe: String,
    connect_timeout: Duration,
    /// The listener this store holds, once it subscribed.
    held: Mutex<Option<Arc<Listener>>>,
}

impl Listening {
    pub(super) fn new(address: String, describe: String, connect_timeout: Duration) -> Self {
        Self {
            address,
            describe,
            connect_timeout,
            held: Mutex::new(None),
        }
    }

    /// A subscription to the saves of `key`, starting the listener of this database if this process has none.
    /// `None` outside a tokio runtime, where no listener can run (the waiter polls).
    pub(super) fn subscribe(&self, key: &str) -> Option<Wakeup> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let listener = match &*held {
            Some(listener) if listener.is_running() => Arc::clone(listener),
            _ => {
                let listener = self.shared(&runtime)?;
                *held = Some(Arc::clone(&listener));
                listener
            }
        };
        Some(listener.wakeups.subscribe(key))
    }

    /// The process's listener of this store's target, started if there is none (or if the one there stopped: its
    /// runtime was shut down). `None` if the URL no longer reads, which `connect` already checked.
    fn shared(&self, runtime: &tokio::runtime::Handle) -> Option<Arc<Listener>> {
        let mut listeners = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = listeners.get(&self.address).and_then(Weak::upgrade) {
            if listener.is_running() {
                return Some(listener);
            }
        }
        let connector = match PgConnector::from_url(&self.address) {
            Ok(connector) => connector,
            Err(error) => {
                tracing::warn!(
                    store = %self.describe,
                    error = %Chain(&error),
                    "token store listener not started: waiters poll"
                );
                return None;
            }
        };
        let wakeups = Arc::new(Wakeups::default());
        let task = runtime.spawn(listen(
            connector,
            Arc::clone(&wakeups),
            self.describe.clone(),
            self.connect_timeout,
        ));
        let listener = Arc::new(Listener { wakeups, task });
        // The entries of listeners that ended go with this one's insertion: the map holds no more entries than
        // targets in use.
        listeners.retain(|_, listener| listener.strong_count() > 0);
        listeners.insert(self.address.clone(), Arc::downgrade(&listener));
        Some(listener)
    }
}

/// One listening connection (made and made again by its task) and the wake-ups it fills.
struct Listener {
    wakeups: Arc<Wakeups>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Whether its task still runs: it only ends with its runtime.
    fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Listener {
    /// The last store holding it is gone: the task ends, and with it the connection.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listener's task: connect, `LISTEN`, hand each notification to `wakeups`, and when the connection is lost
/// or cannot be made, say so once per outage and try again after a pause that doubles.
async fn listen(
    connector: PgConnector,
    wakeups: Arc<Wakeups>,
    describe: String,
    connect_timeout: Duration,
) {
    let unavailable = |source: BoxError| StoreError::Unavailable {
        store: describe.clone(),
        source,
    };
    // However this task ends (an aborted task, a runtime shut down), its waiters go back to polling.
    let _polling_after = wakeups.not_listening_on_drop();
    let mut retry = FIRST_RETRY;
    // Whether the current outage was said at WARN: once per outage, the attempts that fail after it at DEBUG.
    let mut in_outage = false;
    loop {
        let failure = match connect(&connector, connect_timeout).await {
            Ok(mut conn) => {
                if in_outage {
                    tracing::info!(
                        store = %describe,
                        "token store listener is back: waiters are woken by saves again"
                    );
                    in_outage = false;
                } else {
                    tracing::debug!(store = %describe, "token store listener connected");
                }
                // Saves announced while no connection listened are lost (including those made before the first
                // `LISTEN`, after the first subscription): every waiter reads the store once more, and from now on
                // waits for the wake-ups rather than polling.
                wakeups.listening();
                let since = Instant::now();
                let lost = relay(&mut conn, &wakeups).await;
                wakeups.not_listening();
                // A connection that lasted does not count as part of a flapping outage: the next attempt is at
                // once. One that dropped soon after it was made keeps the backoff growing.
                if since.elapsed() >= LAST_RETRY {
                    retry = FIRST_RETRY;
                }
                unavailable(format!("the listening connection was lost: {lost}").into())
            }
            Err(error) => unavailable(error),
        };
        if in_outage {
            tracing::debug!(
                store = %describe,
                error = %Chain(&failure),
                retry_ms = retry.as_millis() as u64,
                "token store listener still down"
            );
        } else {
            tracing::warn!(
                store = %describe,
                error = %Chain(&failure),
                "token store listener down: waiters poll until it is back"
            );
            in_outage = true;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// A connection made as the pool's are (TLS as the URL asks), listening on the save channel.
async fn connect(
    connector: &PgConnector,
    connect_timeout: Duration,
) -> Result<AsyncPgConnection, BoxError> {
    let connecting = async {
        let mut conn = connector.connect_as(APPLICATION_NAME).await?;
        diesel::sql_query(format!("LISTEN {SAVED_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok::<_, BoxError>(conn)
    };
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(format!("no listening connection within {connect_timeout:?}").into()),
    }
}

/// Wakes the waiters of each notification's key until the connection is lost; what ended it.
async fn relay(conn: &mut AsyncPgConnection, wakeups: &Wakeups) -> BoxError {
    loop {
        {
            // The stream borrows the connection; notifications that arrive while the check below runs wait in
            // diesel-async's channel for the next stream.
            let mut notifications = pin!(conn.notifications_stream());
            let mut check = pin!(tokio::time::sleep(CHECK_EVERY));
            loop {
                tokio::select! {
                    notification = notifications.next() => match notification {
                        Some(Ok(notification)) => {
                            if notification.channel == SAVED_CHANNEL {
                                wakeups.notify(&notification.payload);
                            }
                        }
                        Some(Err(error)) => return error.into(),
                        // diesel-async ends the stream when its connection task ends.
                        None => return "the server closed the connection".into(),
                    },
                    () = &mut check => break,
                }
            }
        }
        match tokio::time::timeout(CHECK_EVERY, diesel::sql_query("SELECT 1").execute(conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return error.into(),
            Err(_) => return format!("no answer to a check within {CHECK_EVERY:?}").into(),
        }
    }
}
