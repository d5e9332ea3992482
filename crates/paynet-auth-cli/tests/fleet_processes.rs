//! Fleets of `paynet-auth` processes sharing one store (a SQLite file, a PostgreSQL database, a Redis database),
//! against a gateway that keeps one session per terminal: the CLI's `load` in several processes, configured as a
//! user would (`store.url`, `paynet-auth migrate` first, a no-op on Redis), the token expiring every second; and a
//! lease holder killed with SIGKILL in the middle of its login. Whatever happens, the fleet logs in once per expiry
//! and no caller sees an error. The in-process fleets (64 instances, each store's figures) are in the library's
//! `tests/fleet.rs`; both share `tests/support/fleet.rs`.
//!
//! `PAYNET_FLEET_SECS` sets how many expiries a run has (default 20, one a second). Each run prints one line of
//! figures on stdout; run with `--nocapture` to read it.

#[allow(dead_code)]
#[path = "../../../tests/support/fleet.rs"]
mod fleet;

use std::time::{Duration, Instant};

use fleet::{Tally, assert_verdict, expire_every_second, expiries, single_session_sim};

#[allow(dead_code)]
#[path = "../../../tests/support/servers.rs"]
mod servers;

use paynet_auth::store::{DieselStore, StoreOptions};
use paynet_auth::{PaynetLogin, TokenManager};
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, Simulator};
use servers::{postgres_url, redis_url};

const CALLERS_PER_INSTANCE: usize = 64;
const METHOD: &str = "getCategoriesList";
const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");

/// One fleet at a time: each one alone keeps two cores busy, and two at once would measure the machine, not the
/// protocol.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The SQLite file of a fleet's directory, as a store URL.
fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("tokens.db").display())
}

/// The configuration of a CLI process of a fleet sharing the store at `store_url`.
fn write_config(
    dir: &std::path::Path,
    sim: &Simulator,
    lease_ttl: &str,
    store_url: &str,
    connect_timeout: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "paynet:\n  base_url: \"{base}\"\n  username: \"{DEFAULT_USERNAME}\"\n  \
         password: \"${{PAYNET_PASSWORD}}\"\n  terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"4s\"\n  \
         lease_ttl: \"{lease_ttl}\"\n  store:\n    url: \"{store_url}\"\n    connect_timeout: \"{connect_timeout}\"\n",
        base = sim.base_url(),
    );
    let path = dir.join("paynet.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `paynet-auth load` for `duration`, `concurrency` calls in flight, as a process of its own.
fn load_process(
    config: &std::path::Path,
    duration: Duration,
    concurrency: usize,
) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["load", "/v2/service", METHOD, "--concurrency"])
        .arg(concurrency.to_string())
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

/// `paynet-auth ARGS` with `config`, as a user deploying the fleet would run it before starting it: it must
/// succeed.
async fn run(args: &[&str], config: &std::path::Path) {
    let output = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
        .env_remove("PAYNET_TOKEN_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "paynet-auth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `processes` `load` processes, `concurrency` calls in flight each, sharing the store at `store_url` (migrated
/// first) for [`expiries`] expiries: one login per expiry, no failed call.
async fn shared_store_fleet(
    variant: &str,
    store_url: impl FnOnce(&std::path::Path) -> String,
    processes: usize,
    concurrency: usize,
) {
    let _serial = ONE_FLEET_AT_A_TIME.lock().await;
    let n = expiries();
    let sim = single_session_sim().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "30s", &store_url(dir.path()), "2s");
    run(&["migrate"], &config).await;
    // A token a previous run left under the same key (a simulator on the same port) is not this gateway's.
    run(&["token", "clear"], &config).await;
    // The processes run two seconds past the last expiry, so that it is followed by calls (and one login).
    let duration = Duration::from_secs(n + 2);
    let children: Vec<_> = (0..processes)
        .map(|_| load_process(&config, duration, concurrency))
        .collect();
    expire_every_second(&sim, n).await;
    let mut tally = Tally::default();
    let mut p99 = 0.0f64;
    let mut by_processes = 0;
    for child in children {
        let figures = figures_of(child).await;
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
            "variant": variant,
            "processes": processes,
            "concurrency": concurrency,
            "logins": logins,
            "expiries": n,
            "calls": tally.calls,
            "errors": tally.errors.len(),
            "p99_wait_ms": p99,
        })
    );
    assert_eq!(by_processes, logins, "logins counted by the processes");
    // The processes report counts only: every failed call counts.
    assert_verdict(variant, logins, n, &tally, &[]);
}

/// The processes of the SQLite fleet: each is a whole runtime on the same two cores, 64 calls in flight.
const SQLITE_PROCESSES: usize = 4;
/// The processes of the server fleets: more of them, fewer calls in flight each, so that the two cores keep up.
const SERVER_PROCESSES: usize = 8;
const SERVER_CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_shared_by_processes_logs_in_once_per_expiry() {
    shared_store_fleet(
        "sqlite-processes",
        sqlite_url,
        SQLITE_PROCESSES,
        CALLERS_PER_INSTANCE,
    )
    .await;
}

/// PostgreSQL (TLS as the server offers it, wake-ups through `LISTEN` in each process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_by_processes_logs_in_once_per_expiry() {
    shared_store_fleet(
        "postgres-processes",
        |_| postgres_url(),
        SERVER_PROCESSES,
        SERVER_CONCURRENCY,
    )
    .await;
}

/// Redis (`store.url: redis://…/N`; `migrate` only checks that it answers; wake-ups through pub/sub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shared_by_processes_logs_in_once_per_expiry() {
    shared_store_fleet(
        "redis-processes",
        |_| redis_url(),
        SERVER_PROCESSES,
        SERVER_CONCURRENCY,
    )
    .await;
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
    let config = write_config(dir.path(), &sim, "6s", &sqlite_url(dir.path()), "500ms");
    let mut processes: Vec<_> = (0..PROCESSES)
        .map(|_| load_process(&config, Duration::from_secs(14), CALLERS_PER_INSTANCE))
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
    let observer = DieselStore::connect(&sqlite_url(dir.path()), StoreOptions::default())
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
    .store_key()
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
