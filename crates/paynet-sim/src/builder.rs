//! Configuring a simulator before it starts.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;

use super::handle::Simulator;
use super::login::{Account, LoginFailure};
use super::server;
use super::state::{State, Switches};
use super::tls::ServerTls;
use super::{DEFAULT_PASSWORD, DEFAULT_ROOT, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME};

/// Configures a [`Simulator`]; made by [`Simulator::builder`].
///
/// Defaults: the test account of Paynet's documented login example ([`DEFAULT_USERNAME`], [`DEFAULT_PASSWORD`],
/// [`DEFAULT_TERMINAL_ID`]), root [`DEFAULT_ROOT`], address `127.0.0.1:0`, plain HTTP, several sessions per
/// terminal allowed, tokens that never expire, no login latency, no injected failure, random tokens.
#[must_use = "a SimulatorBuilder does nothing until it is started"]
pub struct SimulatorBuilder {
    username: String,
    password: SecretString,
    terminal_id: u64,
    root: String,
    addr: SocketAddr,
    seed: Option<u64>,
    switches: Switches,
    tls: Option<ServerTls>,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            username: DEFAULT_USERNAME.to_owned(),
            password: DEFAULT_PASSWORD.into(),
            terminal_id: DEFAULT_TERMINAL_ID,
            root: DEFAULT_ROOT.to_owned(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            seed: None,
            switches: Switches::default(),
            tls: None,
        }
    }
}

impl fmt::Debug for SimulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorBuilder")
            .field("username", &self.username)
            .field("password", &"****")
            .field("terminal_id", &self.terminal_id)
            .field("root", &self.root)
            .field("addr", &self.addr)
            .field("seed", &self.seed)
            .field("switches", &self.switches)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SimulatorBuilder {
    /// The account `login` accepts.
    pub fn credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
        terminal_id: u64,
    ) -> Self {
        self.username = username.into();
        self.password = SecretString::from(password.into());
        self.terminal_id = terminal_id;
        self
    }

    /// The path the endpoints live under, such as `/gw` (the default) or `/` for none. A missing leading slash
    /// is added and a trailing one dropped.
    pub fn root(mut self, root: impl AsRef<str>) -> Self {
        let trimmed = root.as_ref().trim_matches('/');
        self.root = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// The address [`start`](Self::start) binds; `127.0.0.1:0` (a free loopback port) by default.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Draws tokens from a generator seeded with `seed`, so that two simulators with the same seed issue the same
    /// tokens in the same order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a login ends every older session of the same terminal (one active session per terminal).
    pub fn single_session(mut self, on: bool) -> Self {
        self.switches.single_session = on;
        self
    }

    /// How long a token lives after it is issued, on tokio's clock (so paused test time moves it); `None`, the
    /// default, for tokens that live until something else ends them.
    pub fn token_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.switches.token_ttl = ttl;
        self
    }

    /// How long `login` takes to answer (a tokio sleep).
    pub fn login_latency(mut self, latency: Duration) -> Self {
        self.switches.login_latency = latency;
        self
    }

    /// Makes every `login` fail this way; `None`, the default, for working logins.
    pub fn login_failure(mut self, failure: Option<LoginFailure>) -> Self {
        self.switches.login_failure = failure;
        self
    }

    /// Whether payment calls, once executed, drop the connection instead of answering.
    pub fn drop_after_execute(mut self, on: bool) -> Self {
        self.switches.drop_after_execute = on;
        self
    }

    /// Whether every call other than `login` is answered with [`UNAUTHORIZED_CODE`](crate::UNAUTHORIZED_CODE),
    /// even with the token the last login issued: a gateway whose sessions are broken. Logins keep succeeding
    /// and issuing tokens; the refused calls count in [`SimStats::rejections`](crate::SimStats::rejections).
    /// Off by default.
    pub fn reject_all_tokens(mut self, on: bool) -> Self {
        self.switches.reject_all_tokens = on;
        self
    }

    /// Answers every call other than `login` slowly: the status and headers (with the body's true
    /// `content-length`) at once, then the body one byte per `interval`, waiting an interval before each byte (a
    /// slow-loris answer, on tokio's clock). A 75-byte answer with 500 ms takes 37.5 s. `None`, the default,
    /// answers whole.
    pub fn dribble(mut self, interval: Option<Duration>) -> Self {
        self.switches.dribble = interval;
        self
    }

    /// Serves HTTPS instead of plain HTTP: every connection starts with a TLS handshake (one that fails is logged
    /// at DEBUG, counted in [`SimStats::tls_handshake_failures`](crate::SimStats::tls_handshake_failures) and
    /// dropped), then speaks HTTP/1.1, and [`Simulator::base_url`] starts with `https://`.
    ///
    /// ```
    /// use paynet_sim::Simulator;
    /// use paynet_sim::tls::ServerTls;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// tokio_test::block_on(async {
    ///     let (tls, authority) = ServerTls::generated();
    ///     let sim = Simulator::builder().tls(tls).start().await?;
    ///     assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    ///     // Point the client under test at sim.base_url(), trusting authority.cert_pem() as its CA.
    ///     # drop(authority);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds the configured address and starts serving in a background task.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(self) -> io::Result<Simulator> {
        let listener = TcpListener::bind(self.addr).await?;
        self.start_on(listener)
    }

    /// Starts serving on a listener the caller bound, in a background task. Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// When the listener's local address cannot be read.
    pub fn start_on(self, listener: TcpListener) -> io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let root = self.root.clone();
        let tls = self.tls.clone();
        let state = Arc::new(self.into_state());
        Ok(Simulator::spawn(state, listener, addr, &root, tls))
    }

    /// Serves on `listener` in the current task until `shutdown` completes, then shuts down gracefully; for a
    /// process that is nothing but a simulator, such as `paynet-auth simulate`.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// paynet_sim::Simulator::builder()
    ///     .serve(listener, tokio::signal::ctrl_c())
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the listener's local address cannot be read.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        let addr = listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::debug!(url = %format!("{scheme}://{addr}{}", self.root), "gateway simulator serving");
        let acceptor = self.tls.as_ref().map(ServerTls::acceptor);
        server::run(Arc::new(self.into_state()), listener, acceptor, shutdown).await;
        Ok(())
    }

    fn into_state(self) -> State {
        State::new(
            self.root,
            Account::new(self.username, self.password, self.terminal_id),
            self.switches,
            self.seed,
        )
    }
}
