//! The `paynet-auth` binary end to end: the real executable, a YAML file in a temporary directory, a SQLite
//! store next to it, secrets passed through environment variables, and the gateway simulator in this process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use paynet_auth::record::fingerprint;
use paynet_sim::{
    DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, LoginFailure, Simulator,
};
use tempfile::TempDir;
use tokio::process::Command;

mod support;

use support::{RUN_TIMEOUT, Run, run};

const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");
/// Base64 of the 32 bytes `0123456789abcdef0123456789abcdef`, passed as `PAYNET_TOKEN_KEY`.
const TOKEN_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const TRACE: &str = "paynet_auth=trace";
const CATEGORIES: [&str; 3] = ["call", "/v2/service", "getCategoriesList"];
/// 200 calls, 16 at a time.
const LOAD: [&str; 7] = [
    "load",
    "/v2/service",
    "getCategoriesList",
    "--requests",
    "200",
    "--concurrency",
    "16",
];

impl Run {
    /// Asserts a failure that is not a panic and whose stderr is exactly one line; returns that line.
    fn assert_one_line_failure(&self) -> &str {
        assert!(
            !self.status.success(),
            "expected failure, got success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert_ne!(self.status.code(), Some(101), "a panic: {}", self.stderr);
        assert!(self.status.code().is_some(), "killed: {}", self.status);
        for word in ["panicked", "backtrace", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr.contains(word),
                "`{word}` on stderr: {}",
                self.stderr
            );
        }
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got:\n{}", self.stderr);
        lines[0]
    }

    /// Asserts that none of `secrets` appears on either stream.
    fn assert_reveals_none(&self, secrets: &[String]) -> &Self {
        for secret in secrets {
            for (stream, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret ({}…) on {stream}:\n{text}",
                    &secret[..4]
                );
            }
        }
        self
    }

    fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.stdout))
    }

    /// The value after `label:` on the stdout line that starts with it.
    fn field(&self, label: &str) -> &str {
        let prefix = format!("{label}:");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.stdout))
    }
}

/// The binary with a clean environment of its own: no configuration inherited from the test, tracing off so
/// that stderr holds only what the command itself says.
fn paynet_auth(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("PAYNET_CONFIG")
        .env_remove("PAYNET_PASSWORD")
        .env_remove("PAYNET_TOKEN_KEY")
        .env("RUST_LOG", "off")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A simulator and a directory holding `paynet.yaml` (pointing at it) and the SQLite store.
struct Gateway {
    sim: Simulator,
    dir: TempDir,
}

impl Gateway {
    async fn start() -> Self {
        Self::start_on(None).await
    }

    /// The same with `store_url` as the store (else the directory's SQLite file).
    async fn start_on(store_url: Option<&str>) -> Self {
        let sim = Simulator::builder()
            .start()
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let yaml = format!(
            "paynet:\n  base_url: \"{base}\"\n  username: \"{DEFAULT_USERNAME}\"\n  \
             password: \"${{PAYNET_PASSWORD}}\"\n  terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"5s\"\n  \
             store:\n    url: \"sqlite://{db}\"\n    encryption_key: \"${{PAYNET_TOKEN_KEY}}\"\n",
            base = sim.base_url(),
            db = dir.path().join("tokens.db").display(),
        );
        let yaml = match store_url {
            Some(url) => yaml.replace(
                &format!("sqlite://{}", dir.path().join("tokens.db").display()),
                url,
            ),
            None => yaml,
        };
        std::fs::write(dir.path().join("paynet.yaml"), yaml).expect("the configuration is written");
        Self { sim, dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("paynet.yaml")
    }

    fn login_url(&self) -> String {
        format!("{}/v2/user", self.sim.base_url())
    }

    /// The binary with the secrets in its environment, not told where the configuration is.
    fn unconfigured(&self, args: &[&str]) -> Command {
        let mut command = paynet_auth(args);
        command
            .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
            .env("PAYNET_TOKEN_KEY", TOKEN_KEY);
        command
    }

    /// The binary run with `--config` pointing at this gateway's file.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.unconfigured(args);
        command.arg("--config").arg(self.config());
        command
    }

    async fn run(&self, args: &[&str]) -> Run {
        run(self.command(args)).await
    }

    /// Runs with `RUST_LOG` set to `filter`, or unset (the binary's default filter) for `None`.
    async fn run_logging(&self, args: &[&str], filter: Option<&str>) -> Run {
        let mut command = self.command(args);
        match filter {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        run(command).await
    }

    async fn run_traced(&self, args: &[&str]) -> Run {
        self.run_logging(args, Some(TRACE)).await
    }

    /// Makes every login answer HTTP 503, runs `call` with `RUST_LOG` as [`run_logging`](Self::run_logging)
    /// sets it, and asserts a one-line failure naming the token endpoint and the status.
    async fn call_while_login_unavailable(&self, filter: Option<&str>) -> Run {
        self.sim
            .set_login_failure(Some(LoginFailure::ServiceUnavailable));
        let run = self.run_logging(&CATEGORIES, filter).await;
        let line = run.assert_one_line_failure();
        assert!(
            line.contains(&self.login_url()),
            "the token endpoint: {line}"
        );
        assert!(line.contains("503"), "the status: {line}");
        run
    }

    /// The password, the encryption key and every token the simulator issued so far.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.sim.issued_tokens();
        secrets.extend([DEFAULT_PASSWORD.to_owned(), TOKEN_KEY.to_owned()]);
        secrets
    }

    fn logins(&self) -> u64 {
        self.sim.stats().logins
    }
}

fn assert_no_token_stored(status: &Run) {
    status.assert_success();
    assert_eq!(status.field("token"), "none stored", "{}", status.stdout);
}

/// Asserts that `status` shows generation `generation` of the token `token`, by its fingerprint only.
fn assert_stored(status: &Run, generation: u64, token: &str) {
    status.assert_success();
    assert_eq!(status.field("generation"), generation.to_string());
    let shown = status.field("fingerprint");
    assert!(
        shown.len() == 8 && shown.bytes().all(|b| b.is_ascii_hexdigit()),
        "an 8-hex fingerprint: `{shown}`"
    );
    assert_eq!(shown, fingerprint(token));
    assert!(!status.field("obtained").is_empty());
    assert!(!status.field("expires").is_empty());
}

impl Gateway {
    /// Runs `load` of 200 calls, 16 at a time, with `extra` arguments; asserts that it succeeded, revealed no
    /// secret, and that its last line holds exactly the documented figures with every call a success. Returns
    /// the figures.
    async fn load_all_ok(&self, extra: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        let args: Vec<&str> = LOAD.iter().chain(extra).copied().collect();
        let run = self.run(&args).await;
        run.assert_success().assert_reveals_none(&self.secrets());
        let figures = load_figures(&run);
        assert_eq!(figure(&figures, "requests"), 200);
        assert_eq!(figure(&figures, "ok"), 200);
        assert_eq!(figure(&figures, "errors"), 0);
        for key in ["rps", "p50_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(figures[key].as_f64().is_some_and(|v| v >= 0.0), "{key}");
        }
        let ranks: Vec<f64> = ["p50_ms", "p99_ms", "p999_ms", "max_ms"]
            .iter()
            .map(|key| figures[*key].as_f64().unwrap())
            .collect();
        assert!(ranks.is_sorted(), "latency ranks out of order: {figures:?}");
        assert_eq!(figures["top_errors"], serde_json::json!([]));
        // --bare first makes one call through the layer, so that the token it reuses is one the gateway accepts.
        let warm_up = u64::from(extra.contains(&"--bare"));
        assert_eq!(
            self.sim.stats().calls_to("getCategoriesList"),
            200 + warm_up
        );
        figures
    }
}

fn load_figures(run: &Run) -> serde_json::Map<String, serde_json::Value> {
    let last = run.stdout.lines().last().expect("load prints a line");
    let figures: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"));
    let figures = figures
        .as_object()
        .expect("the figures are an object")
        .clone();
    let keys: BTreeSet<&str> = figures.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "requests",
        "ok",
        "errors",
        "logins",
        "elapsed_ms",
        "rps",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "top_errors",
    ]
    .into();
    assert_eq!(keys, expected, "exactly the documented keys: {last}");
    figures
}

fn figure(figures: &serde_json::Map<String, serde_json::Value>, key: &str) -> u64 {
    figures[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is a whole number: {}", figures[key]))
}

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_the_result_json_and_exits_zero_after_one_login() {
    let gateway = Gateway::start().await;
    let run = gateway.run(&CATEGORIES).await;
    run.assert_success().assert_reveals_none(&gateway.secrets());
    let json = run.stdout_json();
    assert!(
        json["result"]["categories"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{json}"
    );
    assert_eq!(gateway.logins(), 1);
    assert_eq!(gateway.sim.stats().calls_to("getCategoriesList"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn call_answered_with_a_json_rpc_error_exits_non_zero_with_one_line_naming_it() {
    let gateway = Gateway::start().await;
    let run = gateway.run(&["call", "/v2/service", "noSuchMethod"]).await;
    let line = run.assert_one_line_failure();
    assert!(line.contains("-32601"), "{line}");
    assert!(
        line.contains(&format!("{}/v2/service", gateway.sim.base_url())),
        "the endpoint is named: {line}"
    );
    assert_eq!(
        run.stdout_json()["error"]["code"],
        -32601,
        "the response is printed"
    );
    run.assert_reveals_none(&gateway.secrets());
}

#[tokio::test(flavor = "multi_thread")]
async fn call_when_login_answers_503_names_the_token_endpoint_and_the_status() {
    let gateway = Gateway::start().await;
    let run = gateway.call_while_login_unavailable(Some("off")).await;
    run.assert_reveals_none(&gateway.secrets());
    assert_eq!(gateway.sim.stats().calls_to("getCategoriesList"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_call_with_the_default_log_filter_states_its_cause_on_one_line() {
    let gateway = Gateway::start().await;
    gateway.call_while_login_unavailable(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn call_with_wrong_credentials_says_so_without_printing_the_password() {
    let gateway = Gateway::start().await;
    let wrong = "wrong-Passw0rd-31337";
    let mut command = gateway.command(&CATEGORIES);
    command.env("PAYNET_PASSWORD", wrong);
    let run = run(command).await;
    let line = run.assert_one_line_failure();
    assert!(line.contains("Invalid login or password"), "{line}");
    assert!(
        line.contains(&gateway.login_url()),
        "the token endpoint: {line}"
    );
    run.assert_reveals_none(&[wrong.to_owned(), DEFAULT_PASSWORD.to_owned()]);
    assert_eq!(gateway.logins(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_status_before_any_call_shows_the_key_and_none_stored() {
    let gateway = Gateway::start().await;
    let status = gateway.run(&["token", "status"]).await;
    assert_no_token_stored(&status);
    let key = status.field("key");
    assert!(key.contains(DEFAULT_USERNAME), "{key}");
    assert!(key.contains(&gateway.login_url()), "{key}");
    assert!(key.contains(&DEFAULT_TERMINAL_ID.to_string()), "{key}");
    status.assert_reveals_none(&gateway.secrets());
    assert_eq!(gateway.sim.stats().requests, 0, "status sends nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_status_after_a_call_shows_generation_and_fingerprint_never_the_token() {
    let gateway = Gateway::start().await;
    gateway.run(&CATEGORIES).await.assert_success();
    let status = gateway.run(&["token", "status"]).await;
    let issued = gateway.sim.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_stored(&status, 1, &issued[0]);
    status.assert_reveals_none(&gateway.secrets());
    assert_eq!(gateway.logins(), 1, "status does not log in");
    // This process's health and counts: its two store reads answered, it logged in nowhere.
    assert_eq!(status.field("health"), "ready");
    assert_eq!(
        status.field("stats"),
        "logins ok 0, refused 0, unavailable 0, timed out 0; rejections 0, replays 0, adoptions 0, lease waits 0, \
         rejected at once 0, backoff refusals 0, store errors 0, uninspected responses 0"
    );
}

/// On call can see who holds the refresh lease and until when: never taken, taken and released by the
/// process that logged in, and held by another process.
#[tokio::test(flavor = "multi_thread")]
async fn token_status_shows_the_lease_holder_and_until_when() {
    use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
    let gateway = Gateway::start().await;
    let status = gateway.run(&["token", "status"]).await;
    status.assert_success();
    assert_eq!(status.field("lease"), "never taken");

    gateway.run(&CATEGORIES).await.assert_success();
    let status = gateway.run(&["token", "status"]).await;
    status.assert_success();
    let lease = status.field("lease");
    // The process that logged in: host:pid:suffix, released when it had saved the token.
    assert!(lease.starts_with("free, last taken by "), "{lease}");
    assert_eq!(lease.matches(':').count(), 2, "{lease}");

    let key = status.field("key").to_owned();
    let store = DieselStore::connect(
        &format!(
            "sqlite://{}",
            gateway.dir.path().join("tokens.db").display()
        ),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        store
            .try_lease(&key, "host-b:4242:0badcafe", Duration::from_secs(600))
            .await
            .unwrap()
    );
    let status = gateway.run(&["token", "status"]).await;
    status.assert_success();
    assert_eq!(
        status.field("lease"),
        "held, last taken by host-b:4242:0badcafe"
    );
    let from = humantime::parse_rfc3339(status.field("lease from")).unwrap();
    let until = humantime::parse_rfc3339(status.field("lease until")).unwrap();
    let held_for = until.duration_since(from).unwrap();
    assert_eq!(held_for, Duration::from_secs(600));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_refresh_logs_in_again_and_bumps_the_generation() {
    let gateway = Gateway::start().await;
    gateway.run(&CATEGORIES).await.assert_success();
    let refresh = gateway.run(&["token", "refresh"]).await;
    refresh.assert_success();
    assert_eq!(gateway.logins(), 2, "one more login");
    let issued = gateway.sim.issued_tokens();
    assert_stored(&refresh, 2, &issued[1]);
    assert_stored(&gateway.run(&["token", "status"]).await, 2, &issued[1]);
    refresh.assert_reveals_none(&gateway.secrets());

    // The next call uses the refreshed token without logging in.
    gateway.run(&CATEGORIES).await.assert_success();
    assert_eq!(gateway.logins(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_clear_removes_the_stored_token() {
    let gateway = Gateway::start().await;
    gateway.run(&CATEGORIES).await.assert_success();
    gateway.run(&["token", "clear"]).await.assert_success();
    assert_no_token_stored(&gateway.run(&["token", "status"]).await);

    // The next call logs in again.
    gateway.run(&CATEGORIES).await.assert_success();
    assert_eq!(gateway.logins(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_succeeds_on_a_fresh_store_and_again_on_a_migrated_one() {
    let gateway = Gateway::start().await;
    for _ in 0..2 {
        let run = gateway.run(&["migrate"]).await;
        run.assert_success().assert_reveals_none(&gateway.secrets());
    }
    assert!(gateway.dir.path().join("tokens.db").exists());
    assert_eq!(gateway.sim.stats().requests, 0, "migrate sends nothing");
}

/// On a Redis store URL: `migrate` has nothing to create, and `token status` and `token clear` work as on SQL.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_status_and_clear_on_a_redis_store() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let gateway = Gateway::start_on(Some(&format!("redis://127.0.0.1:{port}/0"))).await;

    let migrate = gateway.run(&["migrate"]).await;
    migrate.assert_success();
    assert!(
        migrate.stdout.contains("nothing to create"),
        "{}",
        migrate.stdout
    );
    assert_no_token_stored(&gateway.run(&["token", "status"]).await);

    gateway.run(&CATEGORIES).await.assert_success();
    let status = gateway.run(&["token", "status"]).await;
    assert_stored(&status, 1, &gateway.sim.issued_tokens()[0]);
    status.assert_reveals_none(&gateway.secrets());

    gateway.run(&["token", "clear"]).await.assert_success();
    assert_no_token_stored(&gateway.run(&["token", "status"]).await);
    let _ = redis.kill();
    let _ = redis.wait();
}

/// `migrate` on a Redis nobody answers at: it fails in one line naming the store, password hidden, instead of
/// reporting success because there is nothing to create.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_on_an_unreachable_redis_fails_naming_it_without_the_password() {
    // Free when asked, and nothing is started on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = Gateway::start_on(Some(&format!("redis://:hunter2@127.0.0.1:{port}/0"))).await;

    let run = gateway.run(&["migrate"]).await;
    let line = run.assert_one_line_failure();
    assert!(
        line.contains(&format!("redis://:****@127.0.0.1:{port}/0")),
        "the store: {line}"
    );
    assert!(!run.stdout.contains("nothing to create"), "{}", run.stdout);
    let mut secrets = gateway.secrets();
    secrets.push("hunter2".to_owned());
    run.assert_reveals_none(&secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_prints_figures_as_the_last_line_with_one_login() {
    let gateway = Gateway::start().await;
    let figures = gateway.load_all_ok(&[]).await;
    assert_eq!(figure(&figures, "logins"), 1);
    assert_eq!(gateway.logins(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_bare_sends_every_call_with_at_most_one_login() {
    let gateway = Gateway::start().await;
    let figures = gateway.load_all_ok(&["--bare"]).await;
    assert!(figure(&figures, "logins") <= 1, "{figures:?}");
    assert!(gateway.logins() <= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_never_reveal_the_password_the_key_or_any_token() {
    let gateway = Gateway::start().await;
    let runs = [
        gateway.run_traced(&CATEGORIES).await,
        gateway.run_traced(&["token", "status"]).await,
        gateway.run_traced(&["token", "refresh"]).await,
        gateway.run_traced(&LOAD).await,
    ];
    assert_eq!(gateway.logins(), 2);
    assert!(
        runs[0].stderr.contains("paynet_auth"),
        "RUST_LOG turns tracing on: {}",
        runs[0].stderr
    );
    for run in &runs {
        run.assert_success().assert_reveals_none(&gateway.secrets());
    }
    gateway.sim.expire_all();
    let rejected_then_renewed = gateway.run_traced(&CATEGORIES).await;
    rejected_then_renewed
        .assert_success()
        .assert_reveals_none(&gateway.secrets());
    assert_eq!(gateway.logins(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_config_file_is_a_failure_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.yaml");
    let mut command = paynet_auth(&CATEGORIES);
    command.arg("--config").arg(&absent);
    let run = run(command).await;
    let line = run.assert_one_line_failure();
    assert!(line.contains(&absent.display().to_string()), "{line}");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_environment_variable_is_a_failure_naming_it() {
    let gateway = Gateway::start().await;
    let mut command = gateway.command(&CATEGORIES);
    command.env_remove("PAYNET_PASSWORD");
    let run = run(command).await;
    let line = run.assert_one_line_failure();
    assert!(line.contains("PAYNET_PASSWORD"), "{line}");
    assert!(
        line.contains(&gateway.config().display().to_string()),
        "{line}"
    );
    assert_eq!(gateway.sim.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_params_json_is_a_clear_failure_before_anything_is_sent() {
    let gateway = Gateway::start().await;
    let run = gateway
        .run(&["call", "/v2/service", "getProvidersList", "{categoryId: 1"])
        .await;
    let line = run.assert_one_line_failure();
    assert!(line.contains("PARAMS_JSON"), "{line}");
    assert!(line.contains("not valid JSON"), "{line}");
    assert_eq!(gateway.sim.stats().requests, 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_comes_from_paynet_config_then_the_working_directory() {
    let gateway = Gateway::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let status_in = |cwd: &Path| {
        let mut command = gateway.unconfigured(&["token", "status"]);
        command.current_dir(cwd);
        command
    };

    let mut from_env = status_in(elsewhere.path());
    from_env.env("PAYNET_CONFIG", gateway.config());
    assert_no_token_stored(&run(from_env).await);

    assert_no_token_stored(&run(status_in(gateway.dir.path())).await);

    let nowhere = run(status_in(elsewhere.path())).await;
    let line = nowhere.assert_one_line_failure();
    assert!(line.contains("paynet.yaml"), "{line}");
}

/// A directory holding `paynet.yaml` with `base_url` and `extra` lines, and a SQLite store.
fn config_dir(base_url: &str, extra: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("paynet.yaml");
    let yaml = format!(
        "paynet:\n  base_url: \"{base_url}\"\n  username: \"{DEFAULT_USERNAME}\"\n  password: \"${{PAYNET_PASSWORD}}\"\n  \
         terminal_id: {DEFAULT_TERMINAL_ID}\n  store:\n    url: \"sqlite://{db}\"\n{extra}",
        db = dir.path().join("tokens.db").display(),
    );
    std::fs::write(&path, yaml).expect("the configuration is written");
    (dir, path)
}

fn configured(args: &[&str], config: &Path) -> Command {
    let mut command = paynet_auth(args);
    command
        .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
        .arg("--config")
        .arg(config);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn base_url_without_scheme_or_host_is_a_config_error_with_its_line_not_a_panic() {
    for url in ["gateway.example/gw", "http:///gw"] {
        let (_dir, config) = config_dir(url, "");
        for args in [&CATEGORIES[..], &LOAD[..]] {
            let run = run(configured(args, &config)).await;
            let line = run.assert_one_line_failure();
            assert!(line.contains(&config.display().to_string()), "{line}");
            assert!(line.contains("`paynet.base_url`"), "{line}");
            assert!(line.contains(url), "{line}");
            assert!(line.contains("line 2: "), "{line}");
        }
    }
}

/// A port nothing listens on: bound, then closed.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_reaches_the_operator_through_the_whole_error_chain() {
    let base = format!("http://127.0.0.1:{}/gw", closed_port().await);
    let (_dir, config) = config_dir(&base, "");
    let run = run(configured(&CATEGORIES, &config)).await;
    let line = run.assert_one_line_failure();
    assert!(
        line.contains(&format!("{base}/v2/user")),
        "the endpoint: {line}"
    );
    assert!(
        line.to_lowercase().contains("connection refused"),
        "the root cause: {line}"
    );
    // Each cause once: a message that already shows its source is not followed by that source again.
    let causes: Vec<&str> = line.split(": ").collect();
    let distinct: BTreeSet<&str> = causes.iter().copied().collect();
    assert_eq!(distinct.len(), causes.len(), "a cause repeated: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_encryption_key_names_the_key_field_the_file_and_how_to_make_one() {
    let gateway = Gateway::start().await;
    for key in ["c2hvcnQ=", "not base64!"] {
        let mut command = gateway.command(&CATEGORIES);
        command.env("PAYNET_TOKEN_KEY", key);
        let run = run(command).await;
        let line = run.assert_one_line_failure();
        assert!(line.contains("`paynet.store.encryption_key`"), "{line}");
        assert!(
            line.contains(&gateway.config().display().to_string()),
            "{line}"
        );
        assert!(line.contains("openssl rand -base64 32"), "{line}");
        assert!(!line.contains(key), "the key is not shown: {line}");
    }
    assert_eq!(gateway.sim.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_names_the_top_error_causes_with_their_counts() {
    let gateway = Gateway::start().await;
    gateway
        .sim
        .set_login_failure(Some(LoginFailure::ServiceUnavailable));
    let run = gateway.run(&LOAD).await;
    assert!(!run.status.success());
    let figures = load_figures(&run);
    assert_eq!(figure(&figures, "errors"), 200);
    let top = figures["top_errors"]
        .as_array()
        .expect("top_errors is a list");
    assert!(!top.is_empty() && top.len() <= 5, "{top:?}");
    let mut counted = 0;
    let mut previous = u64::MAX;
    for entry in top {
        let error = entry["error"].as_str().expect("a text");
        let count = entry["count"].as_u64().expect("a count");
        assert!(error.contains(&gateway.login_url()), "{error}");
        assert!(error.contains("503"), "{error}");
        assert!(count <= previous, "most frequent first: {top:?}");
        previous = count;
        counted += count;
    }
    // Every failure had the same root (the login answers 503): the causes account for all 200.
    assert_eq!(counted, 200, "{top:?}");
    run.assert_reveals_none(&gateway.secrets());
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_logs_each_request_it_answers_at_debug_by_default_and_prints_its_counters_when_interrupted()
 {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = paynet_auth(&["simulate", "--listen", "127.0.0.1:0"]);
    command
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("paynet-auth starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let first = tokio::time::timeout(RUN_TIMEOUT, stdout.next_line())
        .await
        .expect("the simulator says where it listens")
        .unwrap()
        .expect("a line");
    let base = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in: {first}"))
        .to_owned();
    assert!(!base.contains(":0/"), "the bound port, not 0: {base}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let login = serde_json::json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
        "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}});
    let request = http::Request::post(format!("{base}/v2/user"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            login.to_string(),
        )))
        .unwrap();
    assert!(client.request(request).await.unwrap().status().is_success());

    // Interrupted, it prints what it counted and ends. It logs a request before it answers it: once the answer
    // is here, so is the line.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let counted = tokio::time::timeout(RUN_TIMEOUT, stdout.next_line())
        .await
        .expect("the simulator prints its counters when interrupted")
        .unwrap()
        .expect("a line");
    let counted: serde_json::Value = serde_json::from_str(&counted).unwrap();
    assert_eq!(counted["requests"], 1, "{counted}");
    assert_eq!(counted["logins"], 1, "{counted}");
    assert_eq!(counted["rejections"], 0, "{counted}");
    assert!(child.wait().await.unwrap().success());
    let mut logged = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut logged)
        .await
        .unwrap();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("gateway simulator request"))
        .collect();
    assert_eq!(lines.len(), 1, "one request line: {logged}");
    assert!(lines[0].contains("DEBUG"), "{}", lines[0]);
    assert!(lines[0].contains("login"), "{}", lines[0]);
    assert!(!logged.contains(DEFAULT_PASSWORD), "{logged}");
}

/// A `credentials:` list: `--credential` picks the credential `call` and `token status` act as; without it the
/// default (the first) acts; a name not configured is refused naming those that are. The second terminal's
/// password is wrong, so its calls fail with the gateway's refusal while the first's succeed.
#[tokio::test(flavor = "multi_thread")]
async fn credential_picks_which_configured_credential_a_command_acts_as() {
    let sim = Simulator::builder()
        .start()
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let entry = |name: &str, password: &str, terminal: u64| {
        format!(
            "  - name: {name}\n    base_url: \"{base}\"\n    username: \"{DEFAULT_USERNAME}\"\n    \
             password: \"{password}\"\n    terminal_id: {terminal}\n    store:\n      url: \"sqlite://{db}\"\n",
            base = sim.base_url(),
            db = dir.path().join("tokens.db").display(),
        )
    };
    let yaml = format!(
        "credentials:\n{}{}",
        entry("north", "${PAYNET_PASSWORD}", DEFAULT_TERMINAL_ID),
        entry("south", "wrong-password", DEFAULT_TERMINAL_ID + 1),
    );
    let config = dir.path().join("paynet.yaml");
    std::fs::write(&config, yaml).expect("the configuration is written");
    let call = |credential: Option<&str>| {
        let mut args = CATEGORIES.to_vec();
        if let Some(name) = credential {
            args.extend(["--credential", name]);
        }
        run(configured(&args, &config))
    };

    call(None).await.assert_success();
    call(Some("north")).await.assert_success();
    assert_eq!(
        sim.stats().logins,
        1,
        "north logged in once, the second call used its stored token"
    );
    let refused = call(Some("south")).await;
    let line = refused.assert_one_line_failure();
    assert!(line.contains("token refresh failed"), "{line}");

    // `load` as south: every call fails on the refused login (one login, then the backoff), none is sent.
    let mut args = LOAD.to_vec();
    args.extend(["--credential", "south"]);
    let figures = load_figures(&run(configured(&args, &config)).await);
    assert_eq!(
        (figures["ok"].as_u64(), figures["errors"].as_u64()),
        (Some(0), Some(200))
    );
    assert_eq!(
        sim.stats().calls_to("getCategoriesList"),
        2,
        "only north's two calls reached the gateway"
    );

    let status = run(configured(
        &["token", "status", "--credential", "south"],
        &config,
    ))
    .await;
    assert_eq!(status.field("credential"), "south");
    let key = status.field("key");
    assert!(
        key.contains(&(DEFAULT_TERMINAL_ID + 1).to_string()),
        "{key}"
    );
    assert_eq!(status.field("token"), "none stored");

    let unknown = call(Some("west")).await;
    let line = unknown.assert_one_line_failure();
    assert!(
        line.contains("--credential west: no credential of that name in the configuration (configured: north, south)"),
        "{line}"
    );
}

/// A `paynet-auth simulate` process started in `dir`, its stdout read line by line.
struct SimulateProcess {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SimulateProcess {
    fn spawn(args: &[&str], dir: &Path) -> Self {
        let mut command = paynet_auth(&[&["simulate", "--listen", "127.0.0.1:0"], args].concat());
        command.current_dir(dir).stdout(Stdio::piped());
        let mut child = command.spawn().expect("paynet-auth starts");
        let stdout = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        Self { child, stdout }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(RUN_TIMEOUT, self.stdout.next_line())
            .await
            .expect("the simulator prints the next line in time")
            .unwrap()
            .expect("a line")
    }

    /// The address in the start-up line, which must show an https:// URL.
    async fn https_addr(&mut self) -> std::net::SocketAddr {
        let first = self.line().await;
        let url = first
            .split_whitespace()
            .find_map(|word| word.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("no https:// URL in: {first}"));
        let (addr, root) = url.split_once('/').expect("a root after the address");
        assert_eq!(root, "gw", "{first}");
        addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    /// Interrupts it the way Ctrl-C would and returns the counters it prints on the way out.
    async fn interrupt(mut self) -> serde_json::Value {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let counted = self.line().await;
        assert!(self.child.wait().await.unwrap().success());
        serde_json::from_str(&counted).unwrap_or_else(|e| panic!("{e}: {counted}"))
    }
}

/// The ticket's login, by hand over `stream`; the raw HTTP answer.
async fn raw_login(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
        "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}})
    .to_string();
    let request = format!(
        "POST /gw/v2/user HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// `simulate --tls`: a CA made at start, written by default into the working directory and named on stdout with
/// the YAML line a client needs; a client that trusts that file (and nothing else) logs in over HTTPS; the
/// counters printed on interrupt include the handshake.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_tls_serves_https_trusted_through_the_ca_file_it_writes_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut simulator = SimulateProcess::spawn(&["--tls"], dir.path());

    let addr = simulator.https_addr().await;
    let ca_line = simulator.line().await;
    let ca_file = PathBuf::from(
        ca_line
            .strip_prefix("CA certificate: ")
            .unwrap_or_else(|| panic!("no CA path in: {ca_line}")),
    );
    assert_eq!(
        ca_file.canonicalize().unwrap(),
        dir.path().join("paynet-sim-ca.pem").canonicalize().unwrap(),
        "by default in the working directory"
    );
    let yaml_line = simulator.line().await;
    assert!(
        yaml_line.ends_with(&format!("tls: {{ ca_file: \"{}\" }}", ca_file.display())),
        "{yaml_line}"
    );

    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();
    let config = paynet_sim::tls::client_config(&ca_pem, None).unwrap();
    let stream = paynet_sim::tls::connect(addr, config)
        .await
        .expect("the server's certificate chains to the CA in the file and names 127.0.0.1");
    let response = raw_login(stream).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(r#""token":""#), "{response}");

    // Another CA's client is refused: the file, not luck, is what made the first one work.
    let stranger = paynet_sim::tls::Authority::new("another CA").client_config(None);
    assert!(paynet_sim::tls::connect(addr, stranger).await.is_err());

    let counted = simulator.interrupt().await;
    assert_eq!(counted["requests"], 1, "{counted}");
    assert_eq!(counted["tls_handshakes"], 1, "{counted}");
    assert_eq!(counted["connections"], 2, "{counted}");
}

/// `simulate --tls-cert --tls-key --client-ca`: the given pair is served, and only a client with a certificate
/// from the given CA gets an answer.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_serves_a_given_certificate_and_requires_client_certificates_from_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let authority = paynet_sim::tls::Authority::new("operator's CA");
    let (cert, key) = authority
        .issue_server(&["127.0.0.1"])
        .write(dir.path(), "server")
        .unwrap();
    let ca_file = dir.path().join("clients-ca.pem");
    authority.write_cert(&ca_file).unwrap();
    let mut simulator = SimulateProcess::spawn(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--client-ca",
            ca_file.to_str().unwrap(),
        ],
        dir.path(),
    );

    let addr = simulator.https_addr().await;
    let note = simulator.line().await;
    assert!(
        note.contains("Client certificates required") && note.contains("clients-ca.pem"),
        "{note}"
    );
    assert!(
        !dir.path().join("paynet-sim-ca.pem").exists(),
        "no CA of its own"
    );

    let anonymous = paynet_sim::tls::connect(addr, authority.client_config(None)).await;
    // TLS 1.3 tells a client without a certificate on its first read.
    let refused = match anonymous {
        Ok(stream) => raw_login(stream).await,
        Err(error) => Err(error),
    };
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );

    let identity = authority.issue_client("terminal 4027096");
    let stream = paynet_sim::tls::connect(addr, authority.client_config(Some(&identity)))
        .await
        .unwrap();
    let response = raw_login(stream).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

    // Its refusal of the anonymous client is not asserted on: the server counts it after sending the alert that
    // client reads, so across processes nothing orders the two.
    let counted = simulator.interrupt().await;
    assert_eq!(counted["requests"], 1, "{counted}");
    assert_eq!(counted["tls_handshakes"], 1, "{counted}");
}

/// The TLS options refuse what does not go together before anything starts, and a file that cannot be used is a
/// one-line failure naming it.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_refuses_tls_options_that_do_not_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let simulate = |args: &[&str]| {
        let mut command = paynet_auth(&[&["simulate", "--listen", "127.0.0.1:0"], args].concat());
        command.current_dir(dir.path());
        run(command)
    };
    for (args, says) in [
        (&["--client-ca", "ca.pem"][..], "<--tls|--tls-cert <FILE>>"),
        (&["--tls-cert", "c.pem"][..], "--tls-key <FILE>"),
        (&["--tls-key", "k.pem"][..], "--tls-cert <FILE>"),
        (&["--tls-ca-out", "ca.pem"][..], "--tls"),
        (
            &["--tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
            "'--tls' cannot be used with '--tls-cert <FILE>'",
        ),
    ] {
        let refused = simulate(args).await;
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains(says),
            "{args:?}: {}",
            refused.stderr
        );
        assert!(refused.stdout.is_empty(), "{args:?}: {}", refused.stdout);
    }

    let missing = dir.path().join("missing.crt");
    let refused = simulate(&[
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        missing.to_str().unwrap(),
    ])
    .await;
    let line = refused.assert_one_line_failure();
    assert!(
        line.contains(&format!(
            "cannot read the certificate file {}",
            missing.display()
        )),
        "{line}"
    );
    let refused = simulate(&["--tls", "--client-ca", missing.to_str().unwrap()]).await;
    let line = refused.assert_one_line_failure();
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert!(
        !dir.path().join("paynet-sim-ca.pem").exists(),
        "a refused start leaves no CA file behind"
    );
}
