//! A fleet on real databases against a gateway that keeps one session per terminal (every extra login logs a
//! colleague out): eight instances with pools of their own, 64 callers each, the token expiring every second.
//! Whatever the database does (READ COMMITTED or SERIALIZABLE PostgreSQL, MariaDB, one SQLite file shared by
//! several processes), the fleet logs in once per expiry and no caller sees an error.
//!
//! One kind of failed call is not held against the fleet: a call that lived through two expiries (its token died,
//! and its replay's too). The layer replays once and only once, so such a call fails whatever the store does; it
//! happens only when the machine is so loaded that one call takes as long as the expiry period. The figures count
//! these separately (`errors_across_two_expiries`).
//!
//! `PAYNET_FLEET_SECS` sets how many expiries a run has (default 20, one a second, the documented full run).
//! `scripts/fleet-repeat.sh` runs every variant many times and counts the runs that broke the promise.
//!
//! Each run prints one `fleet:` line of figures (logins, expiries, calls, errors, p99 wait) on stdout; run with
//! `--nocapture` to read it.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "sim",
    feature = "hyper-client",
    feature = "cli"
))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, Simulator};
use paynet_auth::store::{DieselStore, StoreOptions};
use paynet_auth::token::PaynetLogin;
use paynet_auth::{PaynetAuth, PaynetAuthLayer, TokenManager};
use support::db::{Fixture, unique_key};
use tower::{Layer, ServiceExt};

const INSTANCES: usize = 8;
const CALLERS_PER_INSTANCE: usize = 64;
const METHOD: &str = "getCategoriesList";
const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");

/// One fleet at a time: each one alone keeps two cores busy, and two at once would measure the machine, not the
/// protocol (refreshes slower than the expiry period merge two expiries into one login).
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many expiries (one a second) a run has: `PAYNET_FLEET_SECS`, 20 by default.
fn expiries() -> u64 {
    std::env::var("PAYNET_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What the callers of one run saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    /// Each failed call: when it started and ended (the SQLite processes report only counts: `None`), and why.
    errors: Vec<(Option<(Instant, Instant)>, String)>,
    waits: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.errors.extend(other.errors);
        self.waits.extend(other.waits);
    }

    fn p99_ms(&mut self) -> f64 {
        self.waits.sort_unstable();
        if self.waits.is_empty() {
            return 0.0;
        }
        let rank = ((self.waits.len() as f64 * 0.99).ceil() as usize).clamp(1, self.waits.len());
        self.waits[rank - 1].as_secs_f64() * 1000.0
    }
}

/// One caller: calls through the layer until told to stop.
async fn caller(service: PaynetAuth<HttpClient>, url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"{METHOD}","id":7,"params":{{}}}}"#
    ));
    while !stop.load(Ordering::Relaxed) {
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let started = Instant::now();
        let outcome = match service.clone().oneshot(request).await {
            Err(e) => Err(e.to_string()),
            Ok(response) => match response.into_body().collect().await {
                Err(e) => Err(e.to_string()),
                Ok(body) => {
                    let answer: serde_json::Value =
                        serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                    if answer["result"]["categories"].is_array() {
                        Ok(())
                    } else {
                        Err(format!("not served: {answer}"))
                    }
                }
            },
        };
        tally.calls += 1;
        tally.waits.push(started.elapsed());
        if let Err(e) = outcome {
            tally.errors.push((Some((started, Instant::now())), e));
        }
    }
    tally
}

fn single_session_sim() -> paynet_auth::sim::SimulatorBuilder {
    Simulator::builder().single_session(true)
}

/// Expires every token once a second, `n` times, then waits until the fleet has logged in for the last expiry
/// (or clearly will not).
async fn expire_every_second(sim: &Simulator, n: u64) -> Vec<Instant> {
    let mut ticks = Vec::new();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for _ in 0..n {
        tick.tick().await;
        sim.expire_all();
        ticks.push(Instant::now());
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        sim.wait_for(|stats| stats.logins > n),
    )
    .await;
    ticks
}

/// Eight instances with pools of their own on `url`, 64 callers each, `expiries()` expiries.
async fn in_process_fleet(url: &str, variant: &str) {
    let n = expiries();
    let sim = single_session_sim().start().await.unwrap();
    let key = unique_key("fleet");
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    let mut managers = Vec::new();
    let mut stores = Vec::new();
    for i in 0..INSTANCES {
        let store = DieselStore::connect(
            url,
            StoreOptions {
                pool_size: 2,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let manager = TokenManager::builder(PaynetLogin::new(
            sim.base_url(),
            DEFAULT_USERNAME,
            DEFAULT_PASSWORD.into(),
            DEFAULT_TERMINAL_ID,
        ))
        .store(store.clone())
        .credential_key(&key)
        .owner(format!("{variant}-instance-{i}"))
        .login_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let service = PaynetAuthLayer::new(manager.clone()).layer(client);
        for _ in 0..CALLERS_PER_INSTANCE {
            callers.push(tokio::spawn(caller(
                service.clone(),
                format!("{}/v2/service", sim.base_url()),
                Arc::clone(&stop),
            )));
        }
        managers.push(manager);
        stores.push(store);
    }

    let ticks = expire_every_second(&sim, n).await;
    // The hot path: once every instance holds the last token, calls cost no query at all.
    let live = sim.issued_tokens().last().cloned().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !managers.iter().all(|m| {
        m.cached()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t.secret()) == live.as_str())
    }) {
        assert!(
            Instant::now() < deadline,
            "{variant}: the fleet never converged on the last token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queries: Vec<u64> = stores.iter().map(DieselStore::query_count).collect();
    let served = sim.stats().calls_to(METHOD);
    sim.wait_for(|stats| stats.calls_to(METHOD) >= served + 2000)
        .await;
    let after: Vec<u64> = stores.iter().map(DieselStore::query_count).collect();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for caller in callers {
        tally.merge(caller.await.expect("a caller panicked"));
    }
    let logins = sim.stats().logins;
    report(variant, logins, n, &mut tally, &ticks);
    let by_managers: u64 = managers.iter().map(TokenManager::logins).sum();
    assert_eq!(by_managers, logins, "logins counted by the managers");
    assert_eq!(
        after, queries,
        "{variant}: 2,000 calls on a cached token queried the store"
    );
    assert_verdict(variant, logins, n, &tally, &ticks);
}

/// Whether a failed call lived through two expiries: its token died, its replay's token died too, and the layer
/// replays only once, as it must (a payment is never sent a third time). Such a call fails on any fleet, with any
/// store; it happens when the machine is so loaded that a call takes as long as the expiry period.
fn across_two_expiries(span: Option<(Instant, Instant)>, ticks: &[Instant]) -> bool {
    span.is_some_and(|(start, end)| ticks.iter().filter(|t| (start..=end).contains(t)).count() >= 2)
}

fn report(variant: &str, logins: u64, expiries: u64, tally: &mut Tally, ticks: &[Instant]) {
    let across = tally
        .errors
        .iter()
        .filter(|(span, _)| across_two_expiries(*span, ticks))
        .count();
    println!(
        "fleet: {}",
        serde_json::json!({
            "variant": variant,
            "logins": logins,
            "expiries": expiries,
            "calls": tally.calls,
            "errors": tally.errors.len(),
            "errors_across_two_expiries": across,
            "p99_wait_ms": (tally.p99_ms() * 100.0).round() / 100.0,
        })
    );
}

fn assert_verdict(variant: &str, logins: u64, expiries: u64, tally: &Tally, ticks: &[Instant]) {
    assert_eq!(
        logins,
        expiries + 1,
        "{variant}: one login per expiry plus the first"
    );
    let failed: Vec<&String> = tally
        .errors
        .iter()
        .filter(|(span, _)| !across_two_expiries(*span, ticks))
        .map(|(_, why)| why)
        .collect();
    assert!(
        failed.is_empty(),
        "{variant}: {} of {} calls failed (not counting calls that lived through two expiries), the first: {}",
        failed.len(),
        tally.calls,
        failed[0]
    );
    assert!(tally.calls > 0);
}

/// PostgreSQL sessions of `url` defaulting to SERIALIZABLE, through tokio-postgres's `options` parameter.
fn serializable(url: &str) -> String {
    // Written out: `Url::query_pairs_mut` would encode the space as `+`, which tokio-postgres does not decode.
    let options = "options=-c%20default_transaction_isolation%3Dserializable";
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{query}&{options}"),
        None => format!("{url}?{options}"),
    }
}

/// The isolation level a session on `url` runs at.
async fn isolation_of(url: &str) -> String {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Level {
        #[diesel(sql_type = diesel::sql_types::Text)]
        transaction_isolation: String,
    }
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query("SHOW transaction_isolation")
        .get_result::<Level>(&mut conn)
        .await
        .unwrap()
        .transaction_isolation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_committed_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = Fixture::postgres().url;
    assert_eq!(isolation_of(&url).await, "read committed");
    in_process_fleet(&url, "postgres-read-committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serializable_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = serializable(&Fixture::postgres().url);
    // The store's sessions are made from this very URL.
    assert_eq!(isolation_of(&url).await, "serializable");
    in_process_fleet(&url, "postgres-serializable").await;
}

/// The server-wide default isolation of new MariaDB/MySQL sessions (`tx_isolation`, which both spell so).
async fn mysql_default_isolation(url: &str, set: Option<&str>) -> String {
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Level {
        #[diesel(sql_type = diesel::sql_types::Text)]
        level: String,
    }
    let mut conn = AsyncMysqlConnection::establish(url).await.unwrap();
    if let Some(level) = set {
        diesel::sql_query(format!("SET GLOBAL tx_isolation = '{level}'"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // A new session, as the store's pool opens them: the global default applies to sessions opened after it.
    let mut fresh = AsyncMysqlConnection::establish(url).await.unwrap();
    diesel::sql_query("SELECT @@session.tx_isolation AS level")
        .get_result::<Level>(&mut fresh)
        .await
        .unwrap()
        .level
}

/// MariaDB has no per-connection option in its URL for the isolation level, so this variant sets the server's
/// default for new sessions while its fleet runs (the fleets run one at a time, and the other test binaries run
/// after this one), and puts the previous default back even if the fleet fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_serializable_fleet_logs_in_once_per_expiry() {
    use futures_util::FutureExt;
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let url = Fixture::mysql().url;
    let before = mysql_default_isolation(&url, None).await;
    assert_eq!(
        mysql_default_isolation(&url, Some("SERIALIZABLE")).await,
        "SERIALIZABLE"
    );
    let outcome = std::panic::AssertUnwindSafe(in_process_fleet(&url, "mariadb-serializable"))
        .catch_unwind()
        .await;
    assert_eq!(mysql_default_isolation(&url, Some(&before)).await, before);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_fleet_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    in_process_fleet(&Fixture::mysql().url, "mariadb-repeatable-read").await;
}

/// The configuration of a CLI process of the SQLite fleet.
fn write_config(dir: &std::path::Path, sim: &Simulator, lease_ttl: &str) -> std::path::PathBuf {
    let yaml = format!(
        "paynet:\n  base_url: \"{base}\"\n  username: \"{DEFAULT_USERNAME}\"\n  \
         password: \"${{PAYNET_PASSWORD}}\"\n  terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"4s\"\n  \
         lease_ttl: \"{lease_ttl}\"\n  store:\n    url: \"sqlite://{db}\"\n    connect_timeout: \"500ms\"\n",
        base = sim.base_url(),
        db = dir.join("tokens.db").display(),
    );
    let path = dir.join("paynet.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `paynet-auth load` for `duration`, 64 calls in flight, as a process of its own.
fn load_process(config: &std::path::Path, duration: Duration) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["load", "/v2/service", METHOD, "--concurrency"])
        .arg(CALLERS_PER_INSTANCE.to_string())
        .arg("--duration")
        .arg(format!("{}ms", duration.as_millis()))
        .arg("--config")
        .arg(config)
        .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
        .env_remove("PAYNET_TOKEN_KEY")
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("paynet-auth starts")
}

/// The figures a `load` process printed.
async fn figures_of(child: tokio::process::Child) -> serde_json::Value {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("a load process finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no figures ({e}), status {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The processes of the SQLite fleet: fewer than the server fleets' eight, since each is a whole runtime on the
/// same two cores.
const SQLITE_PROCESSES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_shared_by_processes_logs_in_once_per_expiry() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let n = expiries();
    let sim = single_session_sim().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "30s");
    // The processes run two seconds past the last expiry, so that it is followed by calls (and one login).
    let duration = Duration::from_secs(n + 2);
    let processes: Vec<_> = (0..SQLITE_PROCESSES)
        .map(|_| load_process(&config, duration))
        .collect();
    expire_every_second(&sim, n).await;
    let mut tally = Tally::default();
    let mut p99 = 0.0f64;
    let mut by_processes = 0;
    for process in processes {
        let figures = figures_of(process).await;
        tally.calls += figures["requests"].as_u64().unwrap();
        let errors = figures["errors"].as_u64().unwrap();
        tally.errors.extend(
            (0..errors).map(|_| (None, format!("a call of a load process failed: {figures}"))),
        );
        by_processes += figures["logins"].as_u64().unwrap();
        p99 = p99.max(figures["p99_ms"].as_f64().unwrap());
    }
    let logins = sim.stats().logins;
    println!(
        "fleet: {}",
        serde_json::json!({
            "variant": "sqlite-processes",
            "logins": logins,
            "expiries": n,
            "calls": tally.calls,
            "errors": tally.errors.len(),
            "p99_wait_ms": p99,
        })
    );
    assert_eq!(by_processes, logins, "logins counted by the processes");
    // The processes report counts only: every failed call counts.
    assert_verdict("sqlite-processes", logins, n, &tally, &[]);
}

/// A lease holder killed with SIGKILL in the middle of its login (the gateway takes 3 s to answer): the other
/// processes wait for the lease TTL (6 s) to run out on the database's clock, one of them logs in, and none of
/// their callers fails; their longest wait is the documented one, lease TTL plus one login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_holder_killed_mid_login_is_taken_over_after_the_lease_ttl() {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    use paynet_auth::store::TokenStore;
    const PROCESSES: usize = 3;
    let login_latency = Duration::from_secs(3);
    let lease_ttl = Duration::from_secs(6);
    let sim = single_session_sim()
        .login_latency(login_latency)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "6s");
    let mut processes: Vec<_> = (0..PROCESSES)
        .map(|_| load_process(&config, Duration::from_secs(14)))
        .collect();

    // Wait for the first login to reach the gateway, then find the lease holder by its process id. Bounded, so
    // that processes which could not start (a configuration refused) fail the test instead of hanging it.
    if tokio::time::timeout(
        Duration::from_secs(30),
        sim.wait_for(|stats| stats.login_attempts == 1),
    )
    .await
    .is_err()
    {
        let mut reasons = String::new();
        for process in processes {
            let output = process.wait_with_output().await.unwrap();
            reasons.push_str(&String::from_utf8_lossy(&output.stderr));
        }
        panic!("no login reached the gateway within 30 s: {reasons}");
    }
    let observer = DieselStore::connect(
        &format!("sqlite://{}", dir.path().join("tokens.db").display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    // The key the CLI's manager stores under: the default one of the configured credential.
    let key = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        DEFAULT_USERNAME,
        DEFAULT_PASSWORD.into(),
        DEFAULT_TERMINAL_ID,
    ))
    .build()
    .unwrap()
    .credential_key()
    .to_owned();
    let lease = observer
        .lease(&key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no lease under {key}"));
    assert!(lease.is_held());
    let holder_pid: u32 = lease.holder.split(':').nth(1).unwrap().parse().unwrap();
    let holder = processes
        .iter()
        .position(|p| p.id() == Some(holder_pid))
        .unwrap_or_else(|| panic!("the lease holder {} is none of the processes", lease.holder));
    let mut killed = processes.remove(holder);
    let killed_at = Instant::now();
    killed.start_kill().unwrap();
    let status = killed.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(sim.stats().logins, 0, "killed before its login answered");

    // The first lease taken after the killed one's: the survivor that logs in. (A survivor that later takes the
    // lease only to find the new token stored, and adopts it, takes it again after that.)
    let took_over = loop {
        let now = observer.lease(&key).await.unwrap().unwrap();
        if now.holder != lease.holder {
            break now;
        }
        assert!(
            killed_at.elapsed() < lease_ttl + Duration::from_secs(5),
            "nobody took the lease over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let mut by_survivors = 0;
    let mut longest_wait_ms = 0.0f64;
    for process in processes {
        let figures = figures_of(process).await;
        assert_eq!(figures["errors"], 0, "a survivor's call failed: {figures}");
        by_survivors += figures["logins"].as_u64().unwrap();
        longest_wait_ms = longest_wait_ms.max(figures["p99_ms"].as_f64().unwrap());
    }
    let stats = sim.stats();
    println!(
        "holder killed: {}",
        serde_json::json!({
            "logins": stats.logins,
            "login_attempts": stats.login_attempts,
            "by_survivors": by_survivors,
            "new_holder": took_over.holder,
            "took_over_after_ms": took_over.acquired_at_ms - lease.acquired_at_ms,
            "p99_wait_ms": longest_wait_ms,
            "since_kill_ms": killed_at.elapsed().as_millis() as u64,
        })
    );
    assert_eq!(by_survivors, 1, "one survivor logged in");
    // The killed process's login may still have been answered by the gateway: at most one extra login.
    assert!(stats.logins <= 2, "{stats:?}");
    assert_eq!(stats.login_attempts, 2, "{stats:?}");
    assert_ne!(took_over.holder, lease.holder);
    let after = Duration::from_millis(
        u64::try_from(took_over.acquired_at_ms - lease.acquired_at_ms).unwrap(),
    );
    assert!(
        after >= lease_ttl && after < lease_ttl + Duration::from_secs(1),
        "taken over {after:?} after the first holder took it"
    );
    let stored = observer.load(&key).await.unwrap().expect("a stored token");
    assert_eq!(stored.written_by, took_over.holder);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&stored.token),
        sim.issued_tokens().last().unwrap().as_str()
    );
}
