//! `paynet-auth simulate` as a real process: its fault switches as flags, driven over `/gw/__admin/` with an HTTP
//! client while `paynet-auth call` runs against it.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

mod support;

use support::{RUN_TIMEOUT, Run, run};

const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");
/// Base64 of 32 bytes, passed as `PAYNET_TOKEN_KEY`.
const TOKEN_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The binary with an environment of its own: nothing inherited that would configure it.
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

/// A `paynet-auth simulate` process on a free port, and an HTTP client for its admin paths.
struct Simulate {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// `http://127.0.0.1:<port>/gw`, from its start-up line.
    base_url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Simulate {
    /// Starts it with `flags` and waits for the line that says where it listens.
    async fn start(flags: &[&str]) -> Self {
        let mut command = paynet_auth(&[&["simulate", "--listen", "127.0.0.1:0"], flags].concat());
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("paynet-auth starts");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut simulate = Self {
            child,
            stdout,
            base_url: String::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let first = simulate.line().await;
        assert!(first.contains("simulator on"), "{first}");
        simulate.base_url = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in: {first}"))
            .to_owned();
        simulate
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(RUN_TIMEOUT, self.stdout.next_line())
            .await
            .expect("the simulator prints the next line in time")
            .unwrap()
            .expect("a line")
    }

    /// A request to `/__admin/<action>`; its status and JSON body.
    async fn admin(&self, method: Method, action: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}/__admin/{action}", self.base_url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = tokio::time::timeout(RUN_TIMEOUT, self.client.request(request))
            .await
            .expect("the admin path answers in time")
            .expect("the admin path answers");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{action}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, value)
    }

    /// `POST /__admin/mode` with `change`, which must be accepted; the mode it answers.
    async fn mode(&self, change: Value) -> Value {
        let (status, mode) = self.admin(Method::POST, "mode", &change.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{change}: {mode}");
        mode
    }

    async fn stats(&self) -> Value {
        let (status, stats) = self.admin(Method::GET, "stats", "").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        stats
    }

    /// A `paynet.yaml` in `dir` pointing at it, with a SQLite store beside it.
    fn config(&self, dir: &Path) -> std::path::PathBuf {
        let yaml = format!(
            "paynet:\n  base_url: \"{base}\"\n  username: \"{DEFAULT_USERNAME}\"\n  \
             password: \"${{PAYNET_PASSWORD}}\"\n  terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"5s\"\n  \
             store:\n    url: \"sqlite://{db}\"\n    encryption_key: \"${{PAYNET_TOKEN_KEY}}\"\n",
            base = self.base_url,
            db = dir.join("tokens.db").display(),
        );
        let path = dir.join("paynet.yaml");
        std::fs::write(&path, yaml).expect("the configuration is written");
        path
    }

    /// Interrupts it the way Ctrl-C would; the counters it prints on the way out.
    async fn interrupt(mut self) -> Value {
        let pid = self.child.id().unwrap().to_string();
        let signalled = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(signalled.success());
        let counted = self.line().await;
        let status = tokio::time::timeout(RUN_TIMEOUT, self.child.wait())
            .await
            .expect("the simulator ends once interrupted")
            .unwrap();
        assert!(status.success(), "{status}");
        serde_json::from_str(&counted).unwrap_or_else(|e| panic!("{e}: {counted}"))
    }
}

/// `paynet-auth call /v2/service getCategoriesList` with `config`.
async fn call(config: &Path) -> Run {
    let mut command = paynet_auth(&["call", "/v2/service", "getCategoriesList"]);
    command
        .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
        .env("PAYNET_TOKEN_KEY", TOKEN_KEY)
        .arg("--config")
        .arg(config);
    run(command).await
}

/// Every fault switch is a flag, and each flag sets its switch: the mode the admin path reports is the one the
/// command line asked for.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_takes_every_fault_switch_as_a_flag() {
    let sim = Simulate::start(&[
        "--single-session",
        "--token-ttl",
        "2s",
        "--login-latency",
        "200ms",
        "--login-failure",
        "hostile-refusal",
        "--drop-after-execute",
        "--reject-all-tokens",
        "--dribble",
        "500ms",
    ])
    .await;
    let started = json!({
        "single_session": true, "token_ttl": "2s", "login_latency": "200ms",
        "login_failure": "hostile-refusal", "drop_after_execute": true, "reject_all_tokens": true,
        "dribble": "500ms",
    });
    assert_eq!(sim.mode(json!({})).await, started);
    // A reset goes back to the command line's switches, not to the library's defaults.
    sim.mode(
        json!({"single_session": null, "dribble": null, "login_failure": "oversized-token:5000"}),
    )
    .await;
    let (status, reset) = sim.admin(Method::POST, "reset", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reset, started);
    sim.interrupt().await;

    let plain = Simulate::start(&["--login-failure", "oversized-token"]).await;
    assert_eq!(
        plain.mode(json!({})).await,
        json!({
            "single_session": false, "token_ttl": null, "login_latency": "0s",
            "login_failure": "oversized-token", "drop_after_execute": false, "reject_all_tokens": false,
            "dribble": null,
        })
    );
    plain.interrupt().await;

    let refused = run(paynet_auth(&["simulate", "--login-failure", "teapot"])).await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("hostile-refusal"),
        "{}",
        refused.stderr
    );
}

/// The admin paths drive a running `simulate` while `call` runs against it: expiry makes a call refresh, a login
/// failure fails it, a reset puts things back, rejecting every token fails it again; the counters tell each
/// step, and the line printed at the interrupt is the object `/__admin/stats` answers.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_is_driven_over_its_admin_paths_while_call_runs_against_it() {
    let sim = Simulate::start(&[]).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = sim.config(dir.path());

    call(&config).await.assert_success();
    let stats = sim.stats().await;
    assert_eq!(
        (stats["logins"].as_u64(), stats["ok"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );

    let (status, expired) = sim.admin(Method::POST, "expire", "").await;
    assert_eq!((status, expired), (StatusCode::OK, json!({"expired": 1})));
    call(&config).await.assert_success();
    let stats = sim.stats().await;
    assert_eq!(
        stats["unauthorized"], 1,
        "the stored token was refused: {stats}"
    );
    assert_eq!(
        (stats["logins"].as_u64(), stats["ok"].as_u64()),
        (Some(2), Some(2)),
        "{stats}"
    );

    let mode = sim
        .mode(json!({"login_failure": "service-unavailable"}))
        .await;
    assert_eq!(mode["login_failure"], "service-unavailable");
    sim.admin(Method::POST, "expire", "").await;
    let failed = call(&config).await;
    assert!(!failed.status.success(), "{}", failed.stdout);
    let stats = sim.stats().await;
    assert_eq!(stats["logins"], 2, "{stats}");
    assert!(stats["login_attempts"].as_u64() > Some(2), "{stats}");

    let (status, mode) = sim.admin(Method::POST, "reset", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mode["login_failure"], Value::Null);
    let zero = sim.stats().await;
    for counter in ["requests", "login_attempts", "logins", "unauthorized", "ok"] {
        assert_eq!(zero[counter], 0, "{counter}: {zero}");
    }
    call(&config).await.assert_success();
    assert_eq!(sim.stats().await["ok"], 1);

    sim.mode(json!({"reject_all_tokens": true})).await;
    sim.admin(Method::POST, "expire", "").await;
    let refused = call(&config).await;
    assert!(!refused.status.success(), "{}", refused.stdout);
    let stats = sim.stats().await;
    assert!(stats["unauthorized"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["logins"].as_u64() >= Some(2),
        "a login, then its token refused: {stats}"
    );
    assert_eq!(stats["ok"], 1, "{stats}");

    assert_eq!(
        sim.interrupt().await,
        stats,
        "the exit line is what /__admin/stats answered"
    );
}
