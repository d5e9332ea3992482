//! `paynet-auth`: call the gateway through the layer, look after the stored token, run the simulator or a demo.

mod call;
mod demo;
mod interrupt;
mod load;
mod log;
mod output;
mod stack;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Token management for the Paynet gateway: call it, load-test it, inspect the stored token.
#[derive(Parser)]
#[command(name = "paynet-auth", version, about)]
struct Cli {
    /// The YAML configuration file. Defaults to $PAYNET_CONFIG, then ./paynet.yaml.
    #[arg(long, global = true, env = "PAYNET_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends one JSON-RPC call through the layer and prints the response.
    Call {
        /// The request path below the gateway root, e.g. /v2/service.
        path: String,
        /// The JSON-RPC method.
        method: String,
        /// The params object as JSON. Defaults to {}.
        params: Option<String>,
        /// The credential to call as (its `name` in the configuration's `credentials:`). Defaults to the
        /// configuration's default credential.
        #[arg(long)]
        credential: Option<String>,
    },
    /// Drives many calls and prints one JSON line of figures.
    Load(load::LoadArgs),
    /// Shows, refreshes or clears the stored token.
    Token {
        /// The credential whose token to show, refresh or clear (its `name` in the configuration's
        /// `credentials:`). Defaults to the configuration's default credential.
        #[arg(long, global = true)]
        credential: Option<String>,
        #[command(subcommand)]
        action: token::TokenAction,
    },
    /// Applies the store's migrations.
    Migrate,
    /// Runs the gateway simulator until interrupted, over HTTP or, with --tls or --tls-cert, HTTPS. Its switches
    /// can be changed while it runs, and its counters read, under <root>/__admin/ (expire, mode, reset, stats).
    Simulate {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A login invalidates every older token (one session per terminal).
        #[arg(long)]
        single_session: bool,
        /// Tokens expire this long after they are issued ("1h", "90s").
        #[arg(long, value_parser = humantime::parse_duration)]
        token_ttl: Option<Duration>,
        /// Logins take this long ("200ms").
        #[arg(long, value_parser = humantime::parse_duration)]
        login_latency: Option<Duration>,
        /// Every login fails this way: service-unavailable, hang, html502, truncated-json, wrong-credentials,
        /// drop-connection, result-without-token, oversized-token[:BYTES] (default 1 MiB), hostile-refusal.
        #[arg(long, value_name = "MODE")]
        login_failure: Option<paynet_sim::LoginFailure>,
        /// Payment calls, once executed, drop the connection instead of answering.
        #[arg(long)]
        drop_after_execute: bool,
        /// Logins succeed, but every other call is answered -9999 unauthorized, even with the token just issued.
        #[arg(long)]
        reject_all_tokens: bool,
        /// Answers to calls (not logins) send their head at once, then one byte of body per interval ("500ms").
        #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
        dribble: Option<Duration>,
        #[command(flatten)]
        tls: SimulateTls,
    },
    /// Starts the simulator and a SQLite store in a temporary directory and walks through the four acceptance
    /// criteria: first login, refresh after a rejection, token endpoint down, concurrent callers.
    Demo,
}

/// How `simulate` serves HTTPS. `--tls` and `--tls-cert` are the two ways to turn it on, hence the group that
/// `--client-ca` requires.
#[derive(clap::Args)]
#[group(skip)]
struct SimulateTls {
    /// Serves HTTPS with a certificate for 127.0.0.1 and localhost, signed by a CA made at start; that CA's
    /// certificate is written to --tls-ca-out for clients to trust (it changes at every start).
    #[arg(long, group = "https")]
    tls: bool,
    /// Where --tls writes the CA certificate (PEM), replacing the file [default: paynet-sim-ca.pem in the
    /// current directory, so a client's configuration can keep pointing at it across restarts].
    #[arg(long, value_name = "PATH", requires = "tls")]
    tls_ca_out: Option<PathBuf>,
    /// Serves HTTPS with this certificate chain (PEM, the leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", group = "https", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, EC or RSA).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requires client certificates signed by a CA certificate in this PEM file (mutual TLS); needs --tls or
    /// --tls-cert.
    #[arg(long, value_name = "FILE", requires = "https")]
    client_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(match cli.command {
        Command::Demo => log::Default::Demo,
        Command::Simulate { .. } => log::Default::Simulator,
        _ => log::Default::Command,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A command interrupted by a signal leaves its login (or its calls) in flight: they are abandoned, not waited
    // for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(quiet) = output::reader_gone() {
        return quiet;
    }
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let config_path = cli.config.unwrap_or_else(|| PathBuf::from("paynet.yaml"));
    match cli.command {
        Command::Call {
            path,
            method,
            params,
            credential,
        } => {
            call::run(
                &config_path,
                &path,
                &method,
                params.as_deref(),
                credential.as_deref(),
            )
            .await
        }
        Command::Load(args) => load::run(&config_path, args).await,
        Command::Token { action, credential } => {
            token::run(&config_path, action, credential.as_deref()).await
        }
        Command::Migrate => token::migrate(&config_path).await,
        Command::Simulate {
            listen,
            single_session,
            token_ttl,
            login_latency,
            login_failure,
            drop_after_execute,
            reject_all_tokens,
            dribble,
            tls,
        } => {
            let builder = paynet_sim::Simulator::builder()
                .single_session(single_session)
                .token_ttl(token_ttl)
                .login_latency(login_latency.unwrap_or_default())
                .login_failure(login_failure)
                .drop_after_execute(drop_after_execute)
                .reject_all_tokens(reject_all_tokens)
                .dribble(dribble);
            demo::simulate(listen, builder, &tls).await
        }
        Command::Demo => demo::run().await,
    }
}

/// An error and its causes on one line, `a: b: c`, each cause once down to the root (the library's errors leave
/// their cause to `source()`).
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    paynet_auth::error::Chain(error).to_string()
}
