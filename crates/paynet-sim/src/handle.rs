//! The running simulator: where it listens, its switches, its counters, and its shutdown.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::SimulatorBuilder;
use super::login::LoginFailure;
use super::server;
use super::state::State;
use super::stats::SimStats;
use super::tls::ServerTls;

/// A running gateway simulator on loopback.
///
/// Start one with [`Simulator::builder`], point a client at [`base_url`](Self::base_url), flip its switches while
/// the test runs, and read its counters with [`stats`](Self::stats). Dropping the handle stops the server at
/// once; [`shutdown`](Self::shutdown) lets requests in flight finish first.
///
/// ```
/// use paynet_sim::{LoginFailure, Simulator};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # fn main() -> std::io::Result<()> {
/// tokio_test::block_on(async {
///     let sim = Simulator::builder().single_session(true).start().await?;
///     assert!(sim.base_url().starts_with("http://127.0.0.1:"));
///     assert!(sim.base_url().ends_with("/gw"));
///
///     // A login request, sent by hand to show what goes over the wire.
///     let body = r#"{"jsonrpc":"2.0","method":"login","id":1,"params":{"username":"username_17627_56530","password":"password_17627_56530","terminal_id":4027096}}"#;
///     let request = format!(
///         "POST /gw/v2/user HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
///          content-length: {}\r\nconnection: close\r\n\r\n{body}",
///         sim.addr(),
///         body.len(),
///     );
///     let mut stream = tokio::net::TcpStream::connect(sim.addr()).await?;
///     stream.write_all(request.as_bytes()).await?;
///     let mut response = String::new();
///     stream.read_to_string(&mut response).await?;
///
///     assert!(response.starts_with("HTTP/1.1 200 OK"));
///     assert!(response.contains(r#""userLogin":"username_17627_56530""#));
///     let token = &sim.issued_tokens()[0];
///     assert!(response.contains(token.as_str()));
///     assert_eq!(sim.stats().logins, 1);
///
///     // From now on every login fails like an unreachable gateway behind a load balancer.
///     sim.set_login_failure(Some(LoginFailure::ServiceUnavailable));
///     sim.shutdown().await;
///     Ok(())
/// })
/// # }
/// ```
#[must_use = "dropping the Simulator stops it"]
pub struct Simulator {
    state: Arc<State>,
    addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("base_url", &self.base_url)
            .field("switches", &self.state.switches())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A builder with the defaults described on [`SimulatorBuilder`].
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// Starts a simulator with the defaults on a free loopback port.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    pub(crate) fn spawn(
        state: Arc<State>,
        listener: TcpListener,
        addr: SocketAddr,
        root: &str,
        tls: Option<ServerTls>,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            // An error means the handle is gone, which is a reason to stop as good as any.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.as_ref().map(ServerTls::acceptor);
        let task = tokio::spawn(server::run(
            Arc::clone(&state),
            listener,
            acceptor,
            shutdown,
        ));
        let base_url = format!("{scheme}://{addr}{root}");
        tracing::debug!(url = %base_url, "gateway simulator started");
        Self {
            state,
            addr,
            base_url,
            stop,
            task: Some(task),
        }
    }

    /// The gateway root URL, such as `http://127.0.0.1:40123/gw` (`https://` when started with
    /// [`SimulatorBuilder::tls`]); endpoints are `{base_url}/v2/user` and so on.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Waits until the counters satisfy `condition` and returns the snapshot that did, so a test can wait for
    /// the simulator to have seen something without sleeping. It waits forever if that never happens; wrap it in
    /// a timeout where that is a possibility.
    pub async fn wait_for(&self, mut condition: impl FnMut(&SimStats) -> bool) -> SimStats {
        let mut changes = self.state.subscribe();
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            // The state holds the sender, so this never fails while `self` exists.
            let _ = changes.changed().await;
        }
    }

    /// Sets the counters back to zero. Issued tokens, live sessions and executed payments are kept; logins in
    /// flight still count towards [`SimStats::max_concurrent_logins`].
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    /// Every token issued since start, in order, including those no longer valid; for tests that check no token
    /// reached a log.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued_tokens()
    }

    /// Ends every session now: every token issued so far is answered with `unauthorized` from now on.
    pub fn expire_all(&self) {
        self.state.expire_all();
    }

    /// Sets every switch back to how the simulator was started (what its builder set) and the counters to zero,
    /// as `POST /__admin/reset` does. Issued tokens that were still honoured stay honoured (end them with
    /// [`expire_all`](Self::expire_all)), and executed payments stay known to `checkTransaction`.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// See [`SimulatorBuilder::single_session`]. Turning it on does not end sessions opened before; the next
    /// login does.
    pub fn set_single_session(&self, on: bool) {
        self.state
            .update_switches(|switches| switches.single_session = on);
    }

    /// See [`SimulatorBuilder::token_ttl`]. Applies to tokens issued from now on; tokens already issued keep the
    /// lifetime they were issued with.
    pub fn set_token_ttl(&self, ttl: Option<Duration>) {
        self.state
            .update_switches(|switches| switches.token_ttl = ttl);
    }

    /// See [`SimulatorBuilder::login_latency`]. Applies to logins that arrive from now on.
    pub fn set_login_latency(&self, latency: Duration) {
        self.state
            .update_switches(|switches| switches.login_latency = latency);
    }

    /// See [`SimulatorBuilder::login_failure`]. Applies to logins that arrive from now on; a login already
    /// hanging keeps hanging until shutdown.
    pub fn set_login_failure(&self, failure: Option<LoginFailure>) {
        self.state
            .update_switches(|switches| switches.login_failure = failure);
    }

    /// See [`SimulatorBuilder::drop_after_execute`].
    pub fn set_drop_after_execute(&self, on: bool) {
        self.state
            .update_switches(|switches| switches.drop_after_execute = on);
    }

    /// See [`SimulatorBuilder::reject_all_tokens`]. Applies to calls that arrive from now on.
    pub fn set_reject_all_tokens(&self, on: bool) {
        self.state
            .update_switches(|switches| switches.reject_all_tokens = on);
    }

    /// See [`SimulatorBuilder::dribble`]. Applies to answers that start from now on; one already dribbling
    /// keeps its pace.
    pub fn set_dribble(&self, interval: Option<Duration>) {
        self.state
            .update_switches(|switches| switches.dribble = interval);
    }

    /// Stops accepting connections, closes idle ones, lets requests in flight finish (a hanging login is cut
    /// off) for up to five seconds, and returns when the server is gone.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // The task only ends by returning; a panic in it would be a simulator bug worth surfacing.
            if let Err(error) = task.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.stop.send_replace(true);
            task.abort();
        }
    }
}
