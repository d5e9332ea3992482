//! How the binary ends: on SIGTERM and SIGINT (the lease given back, the conventional status, `load`'s figures so
//! far), on a closed stdout (quietly), and when what it was asked to do did not happen (a token not saved, a store
//! that cannot be opened, a configuration that is no file). Real processes, real signals, real pipes, the
//! simulator in this process and SQLite files in a temporary directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use paynet_sim::{
    DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, LoginFailure, SimStats, Simulator,
};
use tempfile::TempDir;
use tokio::process::{Child, Command};

mod support;

use support::{RUN_TIMEOUT, Run, run};

const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");
const CATEGORIES: [&str; 3] = ["call", "/v2/service", "getCategoriesList"];
/// Far longer than any run of these tests: a lease left behind would make the next call wait this long.
const LEASE_TTL: &str = "120s";
/// How long a command may take to end after its signal: the lease's release on a local SQLite file, and the
/// runtime's shutdown.
const STOP_BOUND: Duration = Duration::from_secs(20);

/// A simulator and a directory holding `paynet.yaml` (pointing at it) and the SQLite store.
struct Gateway {
    sim: Simulator,
    dir: TempDir,
}

impl Gateway {
    /// A gateway whose logins never answer, with a login timeout long enough that only a signal ends one.
    async fn hanging() -> Self {
        Self::start(Some(LoginFailure::Hang)).await
    }

    async fn start(login_failure: Option<LoginFailure>) -> Self {
        let sim = Simulator::builder()
            .login_failure(login_failure)
            .start()
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gateway = Self { sim, dir };
        gateway.write_config(&format!("sqlite://{}", gateway.db().display()));
        gateway
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("tokens.db")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("paynet.yaml")
    }

    /// Points the configuration at the store `url`.
    fn write_config(&self, url: &str) {
        let yaml = format!(
            "paynet:\n  base_url: \"{base}\"\n  username: \"{DEFAULT_USERNAME}\"\n  \
             password: \"${{PAYNET_PASSWORD}}\"\n  terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"60s\"\n  request_timeout: \"90s\"\n  \
             lease_ttl: \"{LEASE_TTL}\"\n  store:\n    url: \"{url}\"\n    connect_timeout: \"2s\"\n    \
             encryption_key: \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
            base = self.sim.base_url(),
        );
        std::fs::write(self.config(), yaml).expect("the configuration is written");
    }

    /// The binary with this gateway's configuration and secrets, tracing as `RUST_LOG` would leave it unless
    /// the test says otherwise (the default filter is part of what some tests check).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("PAYNET_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Run {
        run(self.command(args)).await
    }

    /// Waits, without sleeping, until the simulator's counters satisfy `condition`.
    async fn wait_for(&self, what: &str, condition: impl FnMut(&SimStats) -> bool) -> SimStats {
        tokio::time::timeout(RUN_TIMEOUT, self.sim.wait_for(condition))
            .await
            .unwrap_or_else(|_| panic!("the simulator never saw {what}: {:?}", self.sim.stats()))
    }

    /// What `token status` says of the lease.
    async fn lease(&self) -> String {
        let status = self.run(&["token", "status"]).await;
        status.assert_success();
        field(&status.stdout, "lease").to_owned()
    }
}

/// The value after `label:` on the line of `stdout` that starts with it.
fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}:");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
}

/// The signals the tests send, as `kill` names them, and the status each must end the process with.
#[derive(Clone, Copy)]
enum Sig {
    Term,
    Int,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Term => "TERM",
            Sig::Int => "INT",
        }
    }

    fn status(self) -> i32 {
        match self {
            Sig::Term => 143,
            Sig::Int => 130,
        }
    }
}

/// Sends `signal` to the running `child` with the system's `kill`.
fn send(signal: Sig, child: &Child) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{}", signal.name()))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{} {pid}: {status}", signal.name());
}

/// Waits for `child` to end, within `bound` of `since`, and collects what it printed.
async fn ended(child: Child, since: Instant, bound: Duration) -> Run {
    let output = tokio::time::timeout(bound, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the process did not end within {bound:?}"))
        .expect("the child's output is collected");
    assert!(since.elapsed() < bound);
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

fn assert_status(run: &Run, code: i32) {
    assert_eq!(
        run.status.code(),
        Some(code),
        "exit status\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// Starts `args` against a gateway whose login hangs, sends `signal` once the login is in flight (the lease
/// taken), and checks that the process gave the lease back and ended with the signal's status; then that the
/// next call, once logins work again, logs in at once instead of waiting out the lease.
async fn interrupted_during_login(args: &[&str], signal: Sig) -> Run {
    let gateway = Gateway::hanging().await;
    let child = gateway
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paynet-auth starts");
    // The lease is taken before the login request is sent: once the gateway sees the login, it is held.
    gateway
        .wait_for("the login", |stats| stats.login_attempts >= 1)
        .await;
    assert!(
        gateway.lease().await.starts_with("held"),
        "the lease is held during the login"
    );
    send(signal, &child);
    let run = ended(child, Instant::now(), STOP_BOUND).await;
    assert_status(&run, signal.status());
    let said = format!(
        "interrupted by SIG{}: gave the refresh lease back",
        signal.name()
    );
    assert!(run.stderr.contains(&said), "stderr:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "stderr:\n{}", run.stderr);

    let lease = gateway.lease().await;
    assert!(lease.starts_with("free"), "{lease}");
    gateway.sim.set_login_failure(None);
    let started = Instant::now();
    gateway.run(&CATEGORIES).await.assert_success();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the next call waited {:?}",
        started.elapsed()
    );
    let stats = gateway.sim.stats();
    assert_eq!((stats.login_attempts, stats.logins), (2, 1));
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn call_interrupted_by_sigterm_during_login_gives_the_lease_back_and_exits_143() {
    let run = interrupted_during_login(&CATEGORIES, Sig::Term).await;
    assert_eq!(run.stdout, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn call_interrupted_by_sigint_during_login_gives_the_lease_back_and_exits_130() {
    interrupted_during_login(&CATEGORIES, Sig::Int).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_refresh_interrupted_by_sigterm_during_login_gives_the_lease_back_and_exits_143() {
    interrupted_during_login(&["token", "refresh"], Sig::Term).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn load_interrupted_by_sigterm_during_login_gives_the_lease_back_and_prints_empty_partial_figures()
 {
    let run = interrupted_during_login(
        &[
            "load",
            "/v2/service",
            "getCategoriesList",
            "--requests",
            "50",
        ],
        Sig::Term,
    )
    .await;
    let figures: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line ({e}):\n{}", run.stdout));
    assert_eq!(figures["partial"], true, "{figures}");
    assert_eq!(figures["requests"], 0, "{figures}");
    assert_eq!(figures["logins"], 0, "{figures}");
}

/// A load that runs until interrupted prints the figures of the calls that finished, marked partial, and exits
/// with SIGINT's status; it held no lease (one login, long done).
#[tokio::test(flavor = "multi_thread")]
async fn load_interrupted_by_sigint_prints_its_figures_so_far_marked_partial_and_exits_130() {
    let gateway = Gateway::start(None).await;
    let child = gateway
        .command(&[
            "load",
            "/v2/service",
            "getCategoriesList",
            "--duration",
            "1h",
            "--concurrency",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paynet-auth starts");
    gateway
        .wait_for("50 calls", |stats| {
            stats.calls_to("getCategoriesList") >= 50
        })
        .await;
    send(Sig::Int, &child);
    let run = ended(child, Instant::now(), STOP_BOUND).await;
    assert_status(&run, 130);
    assert!(
        run.stderr
            .contains("interrupted by SIGINT: held no refresh lease"),
        "stderr:\n{}",
        run.stderr
    );
    let figures: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line ({e}):\n{}", run.stdout));
    assert_eq!(figures["partial"], true, "{figures}");
    let requests = figures["requests"].as_u64().expect("requests");
    // Every call counted finished at the gateway before the signal; calls in flight then are not counted. The
    // gateway had seen 50 calls when the signal went; up to `--concurrency` (4) of them could still be on their way
    // back and are not counted.
    assert!(requests >= 50 - 4, "{figures}");
    assert!(requests <= gateway.sim.stats().calls_to("getCategoriesList"));
    assert_eq!(figures["ok"], figures["requests"], "{figures}");
    assert_eq!(figures["logins"], 1, "{figures}");
}

/// A pipe whose reading end is closed before the command starts: every write to it fails, as when `head` has
/// read what it wanted. The reading end is the stdin of a `true` that has ended.
fn closed_pipe() -> Stdio {
    let mut reader = std::process::Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("true starts");
    let writer = reader.stdin.take().expect("its stdin");
    reader.wait().expect("true ends");
    Stdio::from(writer)
}

/// Runs `args` with stdout on a pipe nobody reads, and asserts the quiet end `ls | head` has: no panic, nothing
/// on stderr, the status of a process ended by SIGPIPE.
async fn assert_quiet_on_a_closed_pipe(gateway: &Gateway, args: &[&str]) {
    // Spawned rather than run with `output()`, which would capture stdout through a pipe of its own.
    let child = gateway
        .command(args)
        .env("RUST_LOG", "off")
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paynet-auth starts");
    let run = ended(child, Instant::now(), RUN_TIMEOUT).await;
    assert_eq!(
        run.status.code(),
        Some(141),
        "`{}` on a closed pipe: {}\nstderr:\n{}",
        args.join(" "),
        run.status,
        run.stderr
    );
    assert_eq!(run.stderr, "", "`{}` said something", args.join(" "));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_writing_to_a_closed_pipe_ends_quietly_without_a_panic() {
    let gateway = Gateway::start(None).await;
    for args in [
        &["migrate"][..],
        &["token", "status"],
        &CATEGORIES,
        &[
            "load",
            "/v2/service",
            "getCategoriesList",
            "--requests",
            "20",
        ],
        &["token", "refresh"],
        &["token", "clear"],
        &["demo"],
    ] {
        assert_quiet_on_a_closed_pipe(&gateway, args).await;
    }
    // The commands did their work before they found nobody reading: a call, the load, the refresh.
    assert_eq!(gateway.sim.stats().logins, 2);
}

/// Opens the store read-only: SQLite refuses every write (the tests run as root, whom file permissions do not
/// stop).
fn read_only(gateway: &Gateway) {
    gateway.write_config(&format!("sqlite://file:{}?mode=ro", gateway.db().display()));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_refresh_on_a_read_only_store_fails_saying_the_new_token_was_not_saved() {
    let gateway = Gateway::start(None).await;
    gateway.run(&["migrate"]).await.assert_success();
    read_only(&gateway);
    let run = gateway.run(&["token", "refresh"]).await;
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("but the new token was not saved: the store holds no token"),
        "stderr:\n{}",
        run.stderr
    );
    // The store's own error, at the default log level.
    assert!(
        run.stderr.contains("readonly database"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(!run.stdout.contains("refreshed"), "stdout:\n{}", run.stdout);
    assert_eq!(gateway.sim.stats().logins, 1);
}

/// With its table dropped, the store cannot keep a token: `token refresh` says so and fails, naming the missing
/// table, unless opening the store recreated the table, in which case the token it reports is the one stored.
/// Never success for a token that is not there.
#[tokio::test(flavor = "multi_thread")]
async fn token_refresh_after_the_token_table_was_dropped_never_reports_an_unsaved_token_as_refreshed()
 {
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    let gateway = Gateway::start(None).await;
    gateway.run(&CATEGORIES).await.assert_success();
    let mut connection =
        SqliteConnection::establish(&gateway.db().display().to_string()).expect("the store opens");
    diesel::sql_query("DROP TABLE paynet_tokens")
        .execute(&mut connection)
        .expect("the table is dropped");
    drop(connection);
    let run = gateway.run(&["token", "refresh"]).await;
    if run.status.success() {
        let status = gateway.run(&["token", "status"]).await;
        status.assert_success();
        assert_eq!(
            field(&status.stdout, "generation"),
            field(&run.stdout, "generation"),
            "refreshed:\n{}\nstatus:\n{}",
            run.stdout,
            status.stdout
        );
        return;
    }
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: logged in (generation ")
            && last.contains("but the new token was not saved: reading it back failed: ")
            && last.contains("paynet_tokens"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(!run.stdout.contains("refreshed"), "stdout:\n{}", run.stdout);
}

/// A call on a store it cannot write still gets its answer (the token is served from memory), and says once,
/// at the binary's default log level, that the store failed.
#[tokio::test(flavor = "multi_thread")]
async fn call_on_a_read_only_store_says_once_at_the_default_level_that_the_store_failed() {
    let gateway = Gateway::start(None).await;
    gateway.run(&["migrate"]).await.assert_success();
    read_only(&gateway);
    let run = gateway.run(&CATEGORIES).await;
    run.assert_success();
    assert!(run.stdout.contains("\"result\""), "stdout:\n{}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{}", run.stderr);
    assert!(
        (lines[0].contains(" WARN ") || lines[0].contains(" ERROR "))
            && lines[0].contains("readonly database"),
        "{}",
        lines[0]
    );
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_status_of_a_store_that_cannot_be_reached_reports_what_it_could_not_read_and_exits_1()
{
    let gateway = Gateway::start(None).await;
    let port = closed_port().await;
    gateway.write_config(&format!(
        "postgres://postgres:s3cr3t-pw@127.0.0.1:{port}/test"
    ));
    let run = gateway.run(&["token", "status"]).await;
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    let stdout = &run.stdout;
    assert_eq!(field(stdout, "credential"), "default");
    assert!(field(stdout, "key").starts_with("paynet:"), "{stdout}");
    let store = format!("postgres://postgres:****@127.0.0.1:{port}/test");
    assert_eq!(field(stdout, "store"), store);
    let token = field(stdout, "token");
    assert!(
        token.starts_with("unknown: ") && token.contains(&store) && token.contains("refused"),
        "{token}"
    );
    assert!(field(stdout, "lease").starts_with("unknown"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-pw") && !run.stderr.contains("s3cr3t-pw"));
}

/// `psql` on the machine's PostgreSQL (trust authentication), running `sql` and failing the test if it fails.
fn psql(database: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            database,
        ])
        .args(["-c", sql])
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql: {sql}");
}

/// A database of this test's own on the machine's PostgreSQL, dropped at the end.
struct OwnDatabase(String);

impl OwnDatabase {
    fn create(name: &str) -> Self {
        let name = format!("{name}_{}", std::process::id());
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Self(name)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
        );
    }
}

/// A store whose token table another session keeps locked: each read of `token status` waits for the lock
/// until the command's bound (twice the connection timeout of 2 s) ends it, and the status says what it could
/// not read.
#[tokio::test(flavor = "multi_thread")]
async fn token_status_of_a_locked_store_ends_within_its_bound_saying_what_it_could_not_read() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let gateway = Gateway::start(None).await;
    let database = OwnDatabase::create("paynet_cli_locked_status");
    gateway.write_config(&database.url());
    gateway.run(&["migrate"]).await.assert_success();

    let mut locker = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-t",
            "-A",
            "-d",
            &database.0,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("psql starts");
    let mut input = locker.stdin.take().expect("psql's stdin");
    input
        .write_all(b"BEGIN; LOCK TABLE paynet_tokens IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        .await
        .expect("the lock is asked for");
    let mut output = BufReader::new(locker.stdout.take().expect("psql's stdout")).lines();
    // Synchronised on psql's answer: the lock is held from here on, as long as its session stays open.
    while output.next_line().await.expect("psql answers").as_deref() != Some("locked") {}

    let started = Instant::now();
    let child = gateway
        .command(&["token", "status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paynet-auth starts");
    let run = ended(child, started, Duration::from_secs(30)).await;
    drop(input);
    locker.kill().await.expect("psql is stopped");
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        field(&run.stdout, "token").starts_with("unknown: ")
            && run.stdout.contains("no answer within 4s"),
        "took {:?}:\n{}",
        started.elapsed(),
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_that_never_ends_is_refused_naming_the_file() {
    let mut command = Command::new(BIN);
    command
        .args(["token", "status", "--config", "/dev/zero"])
        .env("RUST_LOG", "off")
        .kill_on_drop(true);
    let started = Instant::now();
    let run = run(command).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "error: cannot read configuration file /dev/zero: larger than 1 MiB, more than any configuration \
         needs (is it the right file?)"
    );
}

/// `migrate` names the store it could not open, password hidden, whether the store refused its URL or could
/// not be reached.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_names_the_store_it_could_not_open_without_its_password() {
    let gateway = Gateway::start(None).await;
    let port = closed_port().await;
    for (url, shown, cause) in [
        (
            format!("postgres://postgres:s3cr3t-pw@127.0.0.1:{port}/test?sslmode=bogus"),
            format!("postgres://postgres:****@127.0.0.1:{port}/test?sslmode=bogus"),
            "invalid sslmode",
        ),
        (
            format!("postgres://postgres:s3cr3t-pw@127.0.0.1:{port}/test"),
            format!("postgres://postgres:****@127.0.0.1:{port}/test"),
            "refused",
        ),
    ] {
        gateway.write_config(&url);
        let run = gateway.run(&["migrate"]).await;
        assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
        let line = run.stderr.trim();
        assert!(
            line.starts_with("error: cannot open the token store")
                && line.contains(&shown)
                && line.contains(cause)
                && !line.contains("s3cr3t-pw"),
            "{line}"
        );
    }
}
