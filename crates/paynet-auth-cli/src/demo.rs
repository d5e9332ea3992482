//! `paynet-auth demo` and `paynet-auth simulate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::BodyExt;
use paynet_auth::Error;
use paynet_auth::config::PaynetConfig;
use paynet_auth::setup::Configured;
use paynet_sim::tls::ServerTls;
use paynet_sim::{LoginFailure, Simulator, SimulatorBuilder};
use tower::ServiceExt;

use crate::output::outln;
use crate::{SimulateTls, stack};

/// Runs the simulator `builder` describes (its fault switches set from the command line) on `listen` until
/// interrupted, then prints its counters.
pub(crate) async fn simulate(
    listen: SocketAddr,
    mut builder: SimulatorBuilder,
    tls: &SimulateTls,
) -> Result<ExitCode, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // Certificates are made or read, and the CA file written, before the start-up line: a client that reads the
    // URL can trust the CA file at once.
    let (scheme, notes) = match simulator_tls(tls)? {
        Some((server_tls, notes)) => {
            builder = builder.tls(server_tls);
            ("https", notes)
        }
        None => ("http", Vec::new()),
    };
    // The bound address, not the requested one: `--listen 127.0.0.1:0` picks a free port.
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address bound for {listen}: {e}"))?;
    println!("Paynet gateway simulator on {scheme}://{bound}/gw (Ctrl-C stops it)");
    for note in notes {
        println!("{note}");
    }
    let simulator = builder
        .start_on(listener)
        .map_err(|e| format!("simulator failed: {e}"))?;
    let _ = tokio::signal::ctrl_c().await;
    // What it counted, as one JSON line, the same object `GET /gw/__admin/stats` answers: a benchmark that drove
    // it learns the logins and rejections the gateway saw, which the client cannot count (a replay is invisible
    // to the caller), and whether the client reused its connections (far fewer connections and handshakes than
    // requests).
    let stats = serde_json::to_string(&simulator.stats())
        .map_err(|e| format!("cannot write the simulator's counters: {e}"))?;
    println!("{stats}");
    simulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Where `simulate --tls` writes its CA certificate unless told otherwise: the current directory, so that a
/// client's configuration written once keeps pointing at the CA of whichever simulator runs there.
const DEFAULT_CA_OUT: &str = "paynet-sim-ca.pem";

/// The TLS `simulate` serves with, if any, and the lines that tell its user how a client trusts it.
fn simulator_tls(args: &SimulateTls) -> Result<Option<(ServerTls, Vec<String>)>, String> {
    let (server_tls, authority) = if args.tls {
        let (server_tls, authority) = ServerTls::generated();
        (server_tls, Some(authority))
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let server_tls = ServerTls::from_pem_files(cert, key)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        (server_tls, None)
    } else {
        return Ok(None);
    };
    let mut notes = Vec::new();
    let server_tls = match &args.client_ca {
        Some(ca) => {
            let server_tls = server_tls
                .require_client_certs_from_file(ca)
                .map_err(|e| format!("--client-ca: {e}"))?;
            notes.push(format!(
                "Client certificates required, signed by the CA in {}",
                ca.display()
            ));
            server_tls
        }
        None => server_tls,
    };
    // Written last, so that a refused option leaves an older CA file as it was.
    if let Some(authority) = authority {
        let path = args
            .tls_ca_out
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_OUT));
        authority
            .write_cert(&path)
            .map_err(|e| format!("--tls: {e}"))?;
        // Absolute, so the line can be pasted into a configuration that lives elsewhere.
        let path = std::path::absolute(&path).unwrap_or(path);
        let shown = path.display().to_string();
        // A JSON string is a valid YAML double-quoted scalar, whatever the path holds.
        let yaml = format!(
            "tls: {{ ca_file: {} }}",
            serde_json::Value::from(shown.as_str())
        );
        notes.insert(0, format!("CA certificate: {shown}"));
        notes.insert(1, format!("Client configuration (under paynet:): {yaml}"));
    }
    Ok(Some((server_tls, notes)))
}

struct Demo {
    config: PaynetConfig,
    sim: Simulator,
}

const CALL_PATH: &str = "/v2/service";
const CALL_METHOD: &str = "getCategoriesList";

impl Demo {
    async fn stack(&self) -> Result<Configured, String> {
        stack::configured(&self.config).await
    }

    async fn call(&self, ready: &Configured) -> Result<serde_json::Value, Error> {
        // The layer's own error, not the request timeout's boxed one: the demo shows which of them a call met.
        let service = ready.service(
            stack::client(&self.config)
                .expect("the demo's configuration has no TLS files or proxy to refuse"),
        );
        let request = stack::rpc_request(
            &self.config,
            CALL_PATH,
            CALL_METHOD,
            &serde_json::json!({}),
            1,
        )
        .expect("the simulator's URL and a fixed path make a valid request");
        let response = service.oneshot(request).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(Error::ResponseBody)?
            .to_bytes();
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }
}

/// The SQLite file and its write-ahead log, where a just-written row lives until a checkpoint.
fn database_bytes(db: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap_or_default();
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    if ok {
        outln!("   ✓ {what}")?;
        Ok(())
    } else {
        Err(format!("demo expectation failed: {what}"))
    }
}

pub(crate) async fn run() -> Result<ExitCode, String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let db = dir.path().join("paynet-demo.db");
    let sim = Simulator::builder()
        .single_session(true)
        .login_latency(Duration::from_millis(50))
        .start()
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let yaml = format!(
        "paynet:\n  base_url: \"{}\"\n  username: \"username_17627_56530\"\n  password: \"${{DEMO_PASSWORD}}\"\n  terminal_id: 4027096\n  login_timeout: \"2s\"\n  lease_ttl: \"10s\"\n  store:\n    url: \"sqlite://{}\"\n    connect_timeout: \"2s\"\n    encryption_key: \"${{DEMO_TOKEN_KEY}}\"\n",
        sim.base_url(),
        db.display()
    );
    let token_key = {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    };
    let config =
        paynet_auth::config::Config::from_yaml_str(&yaml, "demo.yaml", &|name| match name {
            "DEMO_PASSWORD" => Some("password_17627_56530".to_owned()),
            "DEMO_TOKEN_KEY" => Some(token_key.clone()),
            _ => None,
        })
        .map_err(|e| crate::one_line(&e))?;
    let demo = Demo {
        config: config.default_credential().clone(),
        sim,
    };
    outln!(
        "Paynet gateway simulator at {} (one session per terminal)",
        demo.sim.base_url()
    )?;
    outln!("Token store: SQLite at {}\n", db.display())?;

    outln!("1. First acquisition: no token in the database, a request to a protected resource")?;
    let first = demo.stack().await?;
    let manager = first.manager();
    check(
        "no token stored yet",
        manager
            .stored()
            .await
            .map_err(|e| crate::one_line(&e))?
            .is_none(),
    )?;
    let answer = demo.call(&first).await.map_err(|e| crate::one_line(&e))?;
    let stats = demo.sim.stats();
    outln!(
        "   logins {}, rejections {}, calls {}",
        stats.logins,
        stats.rejections,
        stats.calls_to(CALL_METHOD)
    )?;
    check("the call got a result", answer.get("result").is_some())?;
    check("exactly one login", stats.logins == 1)?;
    let stored = manager.stored().await.map_err(|e| crate::one_line(&e))?;
    check(
        "the token is stored (generation 1)",
        stored.as_ref().is_some_and(|r| r.generation.0 == 1),
    )?;
    if let Some(record) = &stored {
        outln!(
            "   stored token: generation {}, fingerprint {}",
            record.generation,
            record.fingerprint()
        )?;
    }
    let on_disk = database_bytes(&db);
    check(
        "the database holds it encrypted: the token's bytes appear nowhere in the file",
        !on_disk.is_empty()
            && demo
                .sim
                .issued_tokens()
                .iter()
                .all(|token| !contains(&on_disk, token.as_bytes())),
    )?;

    outln!("\n   … a restart: a new manager on the same database")?;
    let restarted = demo.stack().await?;
    demo.call(&restarted)
        .await
        .map_err(|e| crate::one_line(&e))?;
    check(
        "the stored token is reused, no login",
        demo.sim.stats().logins == 1,
    )?;

    outln!("\n2. Refresh of an expired token: the gateway forgets every token")?;
    demo.sim.expire_all();
    let before = demo.sim.stats();
    let answer = demo
        .call(&restarted)
        .await
        .map_err(|e| crate::one_line(&e))?;
    let after = demo.sim.stats();
    outln!(
        "   rejections +{}, logins +{}, generation now {}",
        after.rejections - before.rejections,
        after.logins - before.logins,
        restarted.manager().cached().map_or(0, |t| t.generation().0)
    )?;
    check(
        "the gateway answered -9999 once",
        after.rejections - before.rejections == 1,
    )?;
    check(
        "one new login, the request replayed with the new token",
        after.logins - before.logins == 1 && answer.get("result").is_some(),
    )?;

    outln!("\n3. Token endpoint unavailable: login answers 503")?;
    demo.sim.expire_all();
    demo.sim
        .set_login_failure(Some(LoginFailure::ServiceUnavailable));
    match demo.call(&restarted).await {
        Ok(answer) => {
            return Err(format!(
                "demo expectation failed: expected an error, got {answer}"
            ));
        }
        Err(error) => {
            outln!("   the caller gets: {}", crate::one_line(&error))?;
            check(
                "a typed token error naming the endpoint",
                matches!(error, Error::Token(_)) && crate::one_line(&error).contains("/v2/user"),
            )?;
        }
    }
    demo.sim.set_login_failure(None);
    // Let the short backoff after the failed login run out.
    tokio::time::sleep(Duration::from_millis(600)).await;

    outln!("\n4. Concurrent access: 200 callers at once with an expired token")?;
    demo.sim.expire_all();
    let before = demo.sim.stats();
    // All in this task: the point is 200 requests in flight at once, which join_all gives without threads.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let demo_config = demo.config.clone();
            let service = stack::authorised(&restarted, &demo_config)
                .expect("the demo's configuration has no TLS files or proxy to refuse");
            async move {
                let request = stack::rpc_request(
                    &demo_config,
                    CALL_PATH,
                    CALL_METHOD,
                    &serde_json::json!({}),
                    1,
                )
                .expect("the simulator's URL and a fixed path make a valid request");
                match service.oneshot(request).await {
                    Ok(response) => response.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .collect();
    let ok = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    let after = demo.sim.stats();
    outln!(
        "   {ok}/200 succeeded, logins +{}, max concurrent logins {}",
        after.logins - before.logins,
        after.max_concurrent_logins
    )?;
    check("all 200 succeeded", ok == 200)?;
    check(
        "one login for all of them",
        after.logins - before.logins == 1,
    )?;

    outln!("\nDone: every acceptance criterion held.")?;
    demo.sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
