//! Soak: sustained load through `PaynetAuthLayer` while the gateway expires every token on a schedule and the
//! token database goes away once.
//!
//! ```sh
//! cargo run --release --example soak --features postgres,hyper-client
//! ```
//!
//! What runs, all in this process:
//!
//! - the gateway simulator (`paynet-sim`), one session per terminal (a login ends the previous token);
//! - a PostgreSQL token store (`PAYNET_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//!   reached through a small loopback TCP proxy, so that the database can be made to disappear without touching
//!   the server; the credential key is unique per run;
//! - `CONCURRENCY` workers, each sending one call after another through hyper-util's client wrapped in the layer:
//!   `getCategoriesList` on `/v2/service`, and one call in `PAYMENT_EVERY` a `performTransaction` with a unique
//!   `transactionId` on `/v2/transaction`;
//! - every `EXPIRE_EVERY` the simulator forgets every token (`expire_all`), so the next calls are rejected with
//!   `-9999` and must be refreshed and replayed by the layer;
//! - at `OUTAGE_AT` the proxy drops every database connection and refuses new ones for `OUTAGE` (a database
//!   outage as the client sees it), then accepts again. With `PAYNET_SOAK_RESTART_CMD` set, that shell command is
//!   run instead (for instance `pg_ctlcluster --skip-systemctl-redirect 15 main restart`).
//!
//! Settings (environment, seconds may be fractional):
//!
//! | variable | default |
//! |---|---|
//! | `PAYNET_SOAK_SECS` | 60 (the whole run, warm-up included) |
//! | `PAYNET_SOAK_CONCURRENCY` | 64 |
//! | `PAYNET_SOAK_EXPIRE_EVERY_SECS` | 2 |
//! | `PAYNET_SOAK_OUTAGE_AT_SECS` | 25 |
//! | `PAYNET_SOAK_OUTAGE_SECS` | 5 |
//! | `PAYNET_SOAK_PAYMENT_EVERY` | 10 (0: no payments) |
//! | `PAYNET_SOAK_RESTART_CMD` | unset: use the proxy |
//! | `RUST_LOG` | `warn` (the library's WARN/ERROR lines go to stderr) |
//!
//! It prints a summary and, as its last line, one JSON object with every figure. The gateway stays healthy the
//! whole time, so every call is one it would have accepted: the exit status is 1 when any call failed, a payment
//! executed more than once, or a call was still unfinished when the drain limit ran out; 2 when the set-up failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::clock::Clock as _;
use paynet_auth::store::{DieselStore, StoreOptions};
use paynet_auth::{
    BoxError, Error, LoginError, PaynetAuth, PaynetAuthLayer, TokenError, TokenManager,
};
use paynet_sim::Simulator;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tower::timeout::Timeout;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Warm-up before the "start" memory sample: the pools, the first login and the allocator settle first.
const WARMUP: Duration = Duration::from_secs(2);
/// How often the timeline (and an RSS sample) is printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Bounds each send to the gateway (and the login, which goes through the same stack). Sits inside the layer, like
/// in `examples/hyper_client.rs`, so a refresh and its replay are not cut short by the first send's budget.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After the deadline, how long calls in flight may take to finish before they are abandoned and counted.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// The most failures listed one by one (all of them are counted by kind).
const MAX_LISTED_FAILURES: usize = 50;
/// A call slower than this is counted as slow: it succeeded, but a caller with a deadline of its own would have
/// given up (a refresh stalled behind something).
const SLOW_CALL: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Service = PaynetAuth<Timeout<HttpClient>>;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        match run().await {
            Ok(passed) => i32::from(!passed),
            Err(error) => {
                eprintln!("soak: set-up failed: {error}");
                println!("{}", json!({ "error": error.to_string() }));
                2
            }
        }
    });
    // Dropping the runtime could wait on a blocking task stuck on the database; the figures are printed already.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------------------------
// Settings

struct Settings {
    duration: Duration,
    concurrency: usize,
    expire_every: Duration,
    outage_at: Duration,
    outage: Duration,
    payment_every: u64,
    postgres_url: String,
    restart_cmd: Option<String>,
}

impl Settings {
    fn from_env() -> Result<Self, BoxError> {
        let settings = Self {
            duration: env_secs("PAYNET_SOAK_SECS", 60.0)?,
            concurrency: env_number("PAYNET_SOAK_CONCURRENCY", 64)?,
            expire_every: env_secs("PAYNET_SOAK_EXPIRE_EVERY_SECS", 2.0)?,
            outage_at: env_secs("PAYNET_SOAK_OUTAGE_AT_SECS", 25.0)?,
            outage: env_secs("PAYNET_SOAK_OUTAGE_SECS", 5.0)?,
            payment_every: env_number("PAYNET_SOAK_PAYMENT_EVERY", 10)?,
            postgres_url: std::env::var("PAYNET_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            restart_cmd: std::env::var("PAYNET_SOAK_RESTART_CMD")
                .ok()
                .filter(|cmd| !cmd.trim().is_empty()),
        };
        if settings.duration <= WARMUP {
            return Err(format!("PAYNET_SOAK_SECS must exceed the {WARMUP:?} warm-up").into());
        }
        if settings.concurrency == 0 || settings.expire_every.is_zero() {
            return Err(
                "PAYNET_SOAK_CONCURRENCY and PAYNET_SOAK_EXPIRE_EVERY_SECS must be positive".into(),
            );
        }
        Ok(settings)
    }

    /// Whether the database outage fits in the run (it must end before the deadline to be worth anything; a
    /// restart command's length is not known beforehand, so it only has to start within the run).
    fn outage_fits(&self) -> bool {
        let end = match self.restart_cmd {
            Some(_) => self.outage_at,
            None => self.outage_at + self.outage,
        };
        end < self.duration
    }
}

fn env_secs(name: &str, default: f64) -> Result<Duration, BoxError> {
    let secs = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|e| format!("{name}={text:?}: not a number of seconds: {e}"))?,
        Err(_) => default,
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{name}: {e}").into())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| format!("{name}={text:?}: {e}").into()),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The database proxy (the idea of tests/support/proxy.rs, which an example cannot import)

/// A TCP forwarder in front of the database that can be stopped (every connection dropped, new ones refused) and
/// started again on the same port: the database goes away and comes back as far as the store can tell.
struct Proxy {
    port: u16,
    target: String,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut proxy = Self {
            port: listener.local_addr()?.port(),
            target,
            task: None,
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every forwarding task and closes its sockets.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                // Reap finished forwarders so a long run does not accumulate their results.
                while connections.try_join_next().is_some() {}
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Drops every connection and closes the listening socket: new connections are refused.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    async fn restart(&mut self) -> std::io::Result<()> {
        // The port was ours a moment ago; retry briefly in case the kernel has not let go of it yet.
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(%error, "proxy port not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error),
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url_through(&self, url: &str) -> Result<String, BoxError> {
        let mut url = url::Url::parse(url)?;
        url.set_host(Some("127.0.0.1"))?;
        url.set_port(Some(self.port))
            .map_err(|()| "database URL cannot have a port")?;
        Ok(url.to_string())
    }
}

/// `host:port` of a database URL.
fn host_port(url: &str) -> Result<String, BoxError> {
    let parsed = url::Url::parse(url)?;
    let host = parsed.host_str().ok_or("database URL has no host")?;
    Ok(format!("{host}:{}", parsed.port().unwrap_or(5432)))
}

// ---------------------------------------------------------------------------------------------------------------
// Counting

/// Call latencies in power-of-two microsecond buckets: a fixed footprint, so the counting itself cannot make the
/// memory grow with the number of calls.
struct Latency {
    buckets: [AtomicU64; 40],
    max_us: AtomicU64,
}

impl Latency {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Bucket b holds [2^(b-1), 2^b) µs.
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[bucket.min(self.buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// An upper bound of the `q` quantile (the top of its bucket), in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let target = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= target {
                return (1u64 << bucket) as f64 / 1000.0;
            }
        }
        self.max_ms()
    }

    fn max_ms(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// One failed call, as listed in the summary.
struct FailedCall {
    at: Duration,
    id: u64,
    transaction_id: Option<String>,
    kind: String,
    detail: String,
    took: Duration,
    /// How many `expire_all` happened while the call was in flight: context for a `RejectedAfterRefresh`.
    expiries_during: u64,
}

#[derive(Default)]
struct Failures {
    by_kind: BTreeMap<String, u64>,
    listed: Vec<FailedCall>,
}

struct Tally {
    calls: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    payments: AtomicU64,
    payments_ok: AtomicU64,
    /// Calls abandoned at the drain limit (counted as failures too).
    unfinished: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Calls that took longer than [`SLOW_CALL`], failed or not.
    slow: AtomicU64,
    latency: Latency,
    failures: Mutex<Failures>,
}

impl Tally {
    fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            payments: AtomicU64::new(0),
            payments_ok: AtomicU64::new(0),
            unfinished: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            latency: Latency::new(),
            failures: Mutex::new(Failures::default()),
        }
    }

    fn fail(&self, call: FailedCall) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *failures.by_kind.entry(call.kind.clone()).or_default() += 1;
        if failures.listed.len() < MAX_LISTED_FAILURES {
            failures.listed.push(call);
        }
    }
}

/// Counts a call as in flight until dropped; a call dropped before it was recorded (abandoned at the drain limit)
/// counts as unfinished and failed.
struct InFlight<'a> {
    tally: &'a Tally,
    recorded: bool,
}

impl<'a> InFlight<'a> {
    fn enter(tally: &'a Tally) -> Self {
        let now = tally.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        tally.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self {
            tally,
            recorded: false,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.tally.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.recorded {
            self.tally.unfinished.fetch_add(1, Ordering::Relaxed);
            self.tally.failed.fetch_add(1, Ordering::Relaxed);
            let mut failures = self
                .tally
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *failures
                .by_kind
                .entry("unfinished at the drain limit".into())
                .or_default() += 1;
        }
    }
}

/// Counts the library's WARN and ERROR events (they are printed as well), for the summary.
#[derive(Clone, Default)]
struct LogCounter {
    warn: Arc<AtomicU64>,
    error: Arc<AtomicU64>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("paynet_auth") {
            return;
        }
        match *event.metadata().level() {
            tracing::Level::ERROR => self.error.fetch_add(1, Ordering::Relaxed),
            tracing::Level::WARN => self.warn.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// The resident set size of this process in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------------------------
// The calls

/// Why a call failed: a short kind for the counts, and the whole message.
struct Failure {
    kind: String,
    detail: String,
}

/// The kind of a layer error: its variant, and the login error's variant inside a token error.
fn error_kind(error: &Error) -> String {
    fn login(error: &LoginError) -> String {
        match error {
            LoginError::Unreachable { .. } => "Unreachable".into(),
            LoginError::Timeout { .. } => "Timeout".into(),
            LoginError::HttpStatus { status, .. } => format!("HttpStatus({})", status.as_u16()),
            LoginError::NotJson { .. } => "NotJson".into(),
            LoginError::Refused { code, .. } => format!("Refused({code})"),
            LoginError::MissingToken { .. } => "MissingToken".into(),
            LoginError::InvalidRequest { .. } => "InvalidRequest".into(),
            _ => "other".into(),
        }
    }
    match error {
        Error::Inner(source) if source.is::<tower::timeout::error::Elapsed>() => {
            "Inner(timeout)".into()
        }
        Error::Inner(_) => "Inner(transport)".into(),
        Error::Token(TokenError::Login(cause)) => format!("Token(Login({}))", login(cause)),
        Error::Token(TokenError::Backoff { cause, .. }) => {
            format!("Token(Backoff({}))", login(cause))
        }
        Error::Token(TokenError::LeaseWait { .. }) => "Token(LeaseWait)".into(),
        Error::Token(TokenError::Aborted) => "Token(Aborted)".into(),
        Error::Token(_) => "Token(other)".into(),
        Error::RejectedAfterRefresh { .. } => "RejectedAfterRefresh".into(),
        Error::Inject(_) => "Inject".into(),
        Error::RequestTooLarge { .. } => "RequestTooLarge".into(),
        Error::RequestBody(_) => "RequestBody".into(),
        Error::ResponseBody(_) => "ResponseBody".into(),
        Error::TokenNotHeaderSafe { .. } => "TokenNotHeaderSafe".into(),
        _ => "other".into(),
    }
}

/// An error's message followed by those of its sources that add something.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            let _ = write!(text, ": {message}");
        }
        source = cause.source();
    }
    text
}

/// Sends calls through one clone of the layered client.
#[derive(Clone)]
struct Caller {
    service: Service,
    base_url: String,
    run_id: Arc<str>,
}

impl Caller {
    /// A payment's `transactionId`: unique per run and per call.
    fn transaction_id(&self, id: u64) -> String {
        format!("soak-{}-{id}", self.run_id)
    }

    /// One call; `Ok` only when the gateway answered with a `result`.
    async fn call(&self, id: u64, transaction_id: Option<&str>) -> Result<(), Failure> {
        let (path, body) = match transaction_id {
            Some(tid) => (
                "/v2/transaction",
                format!(
                    r#"{{"jsonrpc":"2.0","method":"performTransaction","id":{id},"params":{{"transactionId":"{tid}","serviceId":101,"amount":1000,"fields":{{"phone":"998901234567"}}}}}}"#
                ),
            ),
            None => (
                "/v2/service",
                format!(
                    r#"{{"jsonrpc":"2.0","method":"getCategoriesList","id":{id},"params":{{}}}}"#
                ),
            ),
        };
        let request = http::Request::post(format!("{}{path}", self.base_url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure {
                kind: "request build".into(),
                detail: e.to_string(),
            })?;
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| Failure {
                kind: error_kind(&e),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure {
                kind: "response body".into(),
                detail: error_chain(&*e),
            })?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| Failure {
            kind: format!("HTTP {}, body not JSON", status.as_u16()),
            detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        })?;
        if answer.get("result").is_some_and(|result| !result.is_null()) {
            return Ok(());
        }
        Err(match answer["error"]["code"].as_i64() {
            Some(code) => Failure {
                kind: format!("JSON-RPC error {code}"),
                detail: answer["error"].to_string(),
            },
            None => Failure {
                kind: format!("HTTP {}, no result", status.as_u16()),
                detail: answer.to_string(),
            },
        })
    }
}

/// What every worker shares.
struct Shared {
    started: Instant,
    deadline: Instant,
    payment_every: u64,
    next_id: AtomicU64,
    /// `expire_all` calls so far.
    expiries: AtomicU64,
    tally: Tally,
}

/// Sends one call after another until the deadline.
async fn worker(shared: Arc<Shared>, caller: Caller) {
    let tally = &shared.tally;
    while Instant::now() < shared.deadline {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let transaction_id = (shared.payment_every > 0 && id % shared.payment_every == 0)
            .then(|| caller.transaction_id(id));
        let mut in_flight = InFlight::enter(tally);
        let expiries_before = shared.expiries.load(Ordering::SeqCst);
        let started = Instant::now();
        let outcome = caller.call(id, transaction_id.as_deref()).await;
        let took = started.elapsed();
        in_flight.recorded = true;
        drop(in_flight);

        tally.calls.fetch_add(1, Ordering::Relaxed);
        tally.latency.record(took);
        if took > SLOW_CALL {
            tally.slow.fetch_add(1, Ordering::Relaxed);
        }
        if transaction_id.is_some() {
            tally.payments.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if transaction_id.is_some() {
                    tally.payments_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(failure) => tally.fail(FailedCall {
                at: started - shared.started,
                id,
                transaction_id,
                kind: failure.kind,
                detail: failure.detail,
                took,
                expiries_during: shared.expiries.load(Ordering::SeqCst) - expiries_before,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The run

/// What happened to the database, for the summary.
struct Outage {
    description: String,
    down_at: Option<Duration>,
    up_at: Option<Duration>,
    ok: bool,
}

/// Takes the database away once, at `settings.outage_at`, and brings it back.
async fn database_outage(settings: &Settings, proxy: &mut Proxy, started: Instant) -> Outage {
    if !settings.outage_fits() {
        return Outage {
            description: format!(
                "none: an outage at {:?} for {:?} does not end within the {:?} run",
                settings.outage_at, settings.outage, settings.duration
            ),
            down_at: None,
            up_at: None,
            ok: true,
        };
    }
    tokio::time::sleep_until((started + settings.outage_at).into()).await;
    let down_at = started.elapsed();
    if let Some(cmd) = &settings.restart_cmd {
        println!(
            "[{:6.2}s] database restart: running `{cmd}`",
            down_at.as_secs_f64()
        );
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .kill_on_drop(true)
            .output();
        let (description, ok) = match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(Ok(output)) => {
                let took = (started.elapsed() - down_at).as_secs_f64();
                let mut text = if output.status.success() {
                    format!("database restarted by `{cmd}` (took {took:.2} s)")
                } else {
                    format!(
                        "database restart command `{cmd}` FAILED ({}, after {took:.2} s)",
                        output.status
                    )
                };
                let stderr = String::from_utf8_lossy(&output.stderr);
                if !stderr.trim().is_empty() {
                    let _ = write!(text, "; stderr: {}", stderr.trim());
                }
                (text, output.status.success())
            }
            Ok(Err(error)) => (format!("could not run `{cmd}`: {error}"), false),
            Err(_) => (
                format!("`{cmd}` did not finish within 120 s (killed)"),
                false,
            ),
        };
        println!("[{:6.2}s] {description}", started.elapsed().as_secs_f64());
        return Outage {
            description,
            down_at: Some(down_at),
            up_at: Some(started.elapsed()),
            ok,
        };
    }
    proxy.stop().await;
    println!(
        "[{:6.2}s] database outage: every connection to PostgreSQL dropped, new ones refused, for {:?}",
        down_at.as_secs_f64(),
        settings.outage
    );
    tokio::time::sleep(settings.outage).await;
    let restarted = proxy.restart().await;
    let up_at = started.elapsed();
    let (description, ok) = match restarted {
        Ok(()) => {
            println!("[{:6.2}s] database reachable again", up_at.as_secs_f64());
            (
                format!(
                    "database outage of {:.1} s (loopback proxy in front of PostgreSQL dropped every connection and \
                     refused new ones; the server itself kept running)",
                    (up_at - down_at).as_secs_f64()
                ),
                true,
            )
        }
        Err(error) => {
            println!(
                "[{:6.2}s] the proxy could not listen again: {error}",
                up_at.as_secs_f64()
            );
            (
                format!(
                    "database outage that did not end: the proxy could not listen again: {error}"
                ),
                false,
            )
        }
    };
    Outage {
        description,
        down_at: Some(down_at),
        up_at: Some(up_at),
        ok,
    }
}

async fn run() -> Result<bool, BoxError> {
    let settings = Settings::from_env()?;
    let logs = LogCounter::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                ),
        )
        .with(
            logs.clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .init();

    // A watchdog on a plain thread: whatever wedges, the process ends.
    let hard_limit = settings.duration + DRAIN_LIMIT + Duration::from_secs(150);
    std::thread::spawn(move || {
        std::thread::sleep(hard_limit);
        eprintln!("soak: still running after {hard_limit:?}; giving up");
        println!(
            "{}",
            json!({ "error": "watchdog: the soak did not end in time" })
        );
        std::process::exit(3);
    });

    let sim = Arc::new(Simulator::builder().single_session(true).start().await?);
    let mut proxy = Proxy::start(host_port(&settings.postgres_url)?).await?;
    let store_url = proxy.url_through(&settings.postgres_url)?;
    let store = DieselStore::connect(
        &store_url,
        StoreOptions {
            connect_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        },
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(30), store.migrate())
        .await
        .map_err(|_| "migrating the token store took more than 30 s")??;

    // Unique per run, so that payments and the stored row of earlier runs never meet this one's.
    let now_ms = paynet_auth::clock::SystemClock::new().now_ms();
    let run_id: Arc<str> = format!(
        "{}-{now_ms:x}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
    .into();
    let credential_key = format!("paynet-soak:{run_id}");
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .store(store.clone())
    .store_key(&credential_key)
    .login_timeout(Duration::from_secs(5))
    .build()?;

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let service: Service = tower::ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager.clone()))
        .timeout(CALL_TIMEOUT)
        .service(client);
    let caller = Caller {
        service,
        base_url: sim.base_url().to_owned(),
        run_id: Arc::clone(&run_id),
    };

    println!(
        "soak: {:?}, {} in flight, expire_all every {:?}, payments 1 in {}; token store {} through the proxy on \
         127.0.0.1:{} (credential key {credential_key})",
        settings.duration,
        settings.concurrency,
        settings.expire_every,
        settings.payment_every,
        paynet_auth::redact::url(&settings.postgres_url),
        proxy.port,
    );
    let rss_before = rss_kib();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        deadline: started + settings.duration,
        payment_every: settings.payment_every,
        next_id: AtomicU64::new(1),
        expiries: AtomicU64::new(0),
        tally: Tally::new(),
    });

    let mut workers = JoinSet::new();
    for _ in 0..settings.concurrency {
        workers.spawn(worker(Arc::clone(&shared), caller.clone()));
    }

    // The gateway forgets every token on a schedule, until the deadline.
    let expirer = {
        let shared = Arc::clone(&shared);
        let sim = Arc::clone(&sim);
        let every = settings.expire_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at((shared.started + every).into(), every);
            loop {
                let at = tick.tick().await;
                if at.into_std() >= shared.deadline {
                    return;
                }
                sim.expire_all();
                shared.expiries.fetch_add(1, Ordering::SeqCst);
                // Do not sleep past the deadline for a tick that will not fire.
                if at.into_std() + every >= shared.deadline {
                    return;
                }
            }
        })
    };

    // Timeline and memory samples: the first after the warm-up, then every SAMPLE_EVERY.
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let shared = Arc::clone(&shared);
        let samples = Arc::clone(&samples);
        let manager = manager.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut next = shared.started + WARMUP;
            let (mut last_calls, mut last_t) = (0, 0.0);
            while next < shared.deadline && !done.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next.into()).await;
                let t = shared.started.elapsed().as_secs_f64();
                let rss = rss_kib();
                samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((t, rss));
                let tally = &shared.tally;
                let calls = tally.calls.load(Ordering::Relaxed);
                let rate = (calls - last_calls) as f64 / (t - last_t);
                (last_calls, last_t) = (calls, t);
                println!(
                    "[{t:6.2}s] calls {calls:>8} ({rate:>6.0}/s)  ok {:>8}  failed {:>4}  in flight {:>3}  \
                     logins {:>3}  expiries {:>3}  RSS {:.1} MiB",
                    tally.ok.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed),
                    tally.in_flight.load(Ordering::Relaxed),
                    manager.logins(),
                    shared.expiries.load(Ordering::SeqCst),
                    mib(rss),
                );
                next += SAMPLE_EVERY;
            }
        })
    };

    let outage = database_outage(&settings, &mut proxy, started).await;

    // Let the workers finish the calls they started before the deadline; abandon (and count) what is left.
    tokio::time::sleep_until(shared.deadline.into()).await;
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while workers.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        workers.shutdown().await;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = expirer.await;
    let _ = sampler.await;
    let rss_end = rss_kib();
    let rss_samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rss_start = rss_samples.first().map_or(rss_before, |&(_, rss)| rss);

    // The gateway's view, and what the store holds now that the database is back.
    let stats = sim.stats();
    let store_after = tokio::time::timeout(Duration::from_secs(10), manager.stored()).await;
    let cached_generation = manager.cached().map(|t| t.generation().0);
    let (stored_generation, store_note) = match store_after {
        Ok(Ok(Some(record))) => (Some(record.generation.0), "read".to_owned()),
        Ok(Ok(None)) => (None, "no row".to_owned()),
        Ok(Err(error)) => (None, format!("unreadable: {error}")),
        Err(_) => (None, "read timed out".to_owned()),
    };
    // Leave the shared test database as it was (the lease row, keyed the same, is a few bytes and stays).
    let _ = tokio::time::timeout(Duration::from_secs(10), manager.clear()).await;

    let tally = &shared.tally;
    let calls = tally.calls.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let unfinished = tally.unfinished.load(Ordering::Relaxed);
    let payments = tally.payments.load(Ordering::Relaxed);
    let payments_ok = tally.payments_ok.load(Ordering::Relaxed);
    let expiries = shared.expiries.load(Ordering::SeqCst);
    let executed_twice: Vec<(&String, &u64)> =
        stats.executions.iter().filter(|(_, n)| **n > 1).collect();
    let (failures_by_kind, listed) = {
        let mut failures = tally.failures.lock().unwrap_or_else(|e| e.into_inner());
        (
            failures.by_kind.clone(),
            std::mem::take(&mut failures.listed),
        )
    };
    let listed: Vec<Value> = listed
        .iter()
        .map(|f| {
            json!({
                "at_s": round3(f.at.as_secs_f64()),
                "id": f.id,
                "transaction_id": f.transaction_id,
                // For a failed payment: did the gateway execute it anyway?
                "executed": f.transaction_id.as_ref().map(|tid| stats.executions_of(tid)),
                "kind": f.kind,
                "detail": f.detail,
                "took_ms": round3(f.took.as_secs_f64() * 1000.0),
                "expiries_during": f.expiries_during,
            })
        })
        .collect();
    // Why the run fails, if it does; the gateway is healthy throughout, so every failed call counts.
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} calls failed"));
    }
    if !executed_twice.is_empty() {
        problems.push(format!(
            "{} payments executed more than once",
            executed_twice.len()
        ));
    }
    if calls == 0 {
        problems.push("no call completed".to_owned());
    }
    if !outage.ok {
        problems.push("the database outage did not go as planned".to_owned());
    }
    let passed = problems.is_empty();

    // The summary.
    let secs = elapsed.as_secs_f64();
    println!();
    println!(
        "== soak summary ({secs:.1} s, {} in flight) ==",
        settings.concurrency
    );
    println!(
        "calls      {calls} ({:.0}/s), ok {ok}, failed {failed} (unfinished {unfinished}); max in flight {}",
        calls as f64 / secs,
        tally.max_in_flight.load(Ordering::Relaxed)
    );
    println!(
        "latency    p50 <= {:.1} ms, p99 <= {:.1} ms, p99.9 <= {:.1} ms, max {:.1} ms; {} calls over {SLOW_CALL:?}",
        tally.latency.quantile_ms(0.5),
        tally.latency.quantile_ms(0.99),
        tally.latency.quantile_ms(0.999),
        tally.latency.max_ms(),
        tally.slow.load(Ordering::Relaxed),
    );
    println!(
        "payments   {payments} sent, {payments_ok} ok; gateway executed {} distinct, {} more than once",
        stats.executions.len(),
        executed_twice.len()
    );
    println!(
        "gateway    {expiries} expire_all; {} logins ({} attempts), max {} concurrent; {} rejections (-9999); \
         {} authorised calls",
        stats.logins,
        stats.login_attempts,
        stats.max_concurrent_logins,
        stats.rejections,
        stats.total_calls()
    );
    println!(
        "client     manager logins {} (attempts {}); token generation cached {:?}, stored {:?} ({store_note}); \
         {} store queries; library WARN {} / ERROR {}",
        manager.logins(),
        manager.login_attempts(),
        cached_generation,
        stored_generation,
        store.query_count(),
        logs.warn.load(Ordering::Relaxed),
        logs.error.load(Ordering::Relaxed),
    );
    println!("database   {}", outage.description);
    println!(
        "memory     RSS before load {:.1} MiB, start (after {WARMUP:?} warm-up) {:.1} MiB, end {:.1} MiB \
         ({:+.1} MiB); samples: {}",
        mib(rss_before),
        mib(rss_start),
        mib(rss_end),
        mib(rss_end) - mib(rss_start),
        rss_samples
            .iter()
            .map(|(t, rss)| format!("{t:.0}s {:.1}", mib(*rss)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The simulator shares this process and by design remembers every payment it executed (its counters and its
    // `checkTransaction` ledger), so with payments on the RSS grows with their number whatever the layer does.
    // `PAYNET_SOAK_PAYMENT_EVERY=0` shows the layer's own footprint.
    if stats.executions.len() >= 1000 {
        let growth_bytes = rss_end.saturating_sub(rss_start) as f64 * 1024.0;
        println!(
            "           the simulator in this process keeps every executed payment ({} of them, two map entries \
             each); the growth is {:.0} B per payment; PAYNET_SOAK_PAYMENT_EVERY=0 measures the layer alone",
            stats.executions.len(),
            growth_bytes / stats.executions.len() as f64
        );
    }
    if failed > 0 {
        println!("failures by kind:");
        for (kind, n) in &failures_by_kind {
            println!("  {n:>6}  {kind}");
        }
        println!("failed calls (first {MAX_LISTED_FAILURES}):");
        for f in &listed {
            println!("  {f}");
        }
    }
    for (tid, n) in &executed_twice {
        println!("EXECUTED {n} TIMES: {tid}");
    }
    println!(
        "verdict    {}",
        if passed {
            "PASS: every call served, no payment executed twice".to_owned()
        } else {
            format!("FAIL: {}", problems.join("; "))
        }
    );

    println!(
        "{}",
        json!({
            "passed": passed,
            "problems": problems,
            "duration_s": round3(secs),
            "concurrency": settings.concurrency,
            "max_in_flight": tally.max_in_flight.load(Ordering::Relaxed),
            "calls": calls,
            "ok": ok,
            "failed": failed,
            "unfinished": unfinished,
            "failures_by_kind": failures_by_kind,
            "failures": listed,
            "rps": round3(calls as f64 / secs),
            "latency_ms": {
                "p50_le": tally.latency.quantile_ms(0.5),
                "p99_le": tally.latency.quantile_ms(0.99),
                "p999_le": tally.latency.quantile_ms(0.999),
                "max": tally.latency.max_ms(),
                "calls_over_5s": tally.slow.load(Ordering::Relaxed),
            },
            "payments": payments,
            "payments_ok": payments_ok,
            "payments_executed": stats.executions.len(),
            "payments_executed_more_than_once": executed_twice.len(),
            "expiries": expiries,
            "logins": stats.logins,
            "login_attempts": stats.login_attempts,
            "max_concurrent_logins": stats.max_concurrent_logins,
            "rejections": stats.rejections,
            "gateway_authorised_calls": stats.total_calls(),
            "manager_logins": manager.logins(),
            "manager_login_attempts": manager.login_attempts(),
            "cached_generation": cached_generation,
            "stored_generation_at_end": stored_generation,
            "store_queries": store.query_count(),
            "library_warn_events": logs.warn.load(Ordering::Relaxed),
            "library_error_events": logs.error.load(Ordering::Relaxed),
            "database_outage": {
                "description": outage.description,
                "down_at_s": outage.down_at.map(|d| round3(d.as_secs_f64())),
                "up_at_s": outage.up_at.map(|d| round3(d.as_secs_f64())),
                "ok": outage.ok,
            },
            "rss_kib": {
                "before_load": rss_before,
                "start": rss_start,
                "end": rss_end,
                "samples": rss_samples.iter().map(|(t, rss)| json!([round3(*t), rss])).collect::<Vec<_>>(),
            },
        })
    );
    Ok(passed)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
