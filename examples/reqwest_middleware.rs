//! The reqwest-middleware adapter: a `reqwest_middleware::ClientWithMiddleware` whose calls carry the token, over
//! HTTPS with a private CA and a client certificate, the shape of a gateway that requires mutual TLS.
//!
//! `cargo run --example reqwest_middleware --features reqwest` runs it against the gateway simulator (`paynet-sim`),
//! started here over HTTPS with client certificates required.

use std::time::Duration;

use paynet_auth::PaynetLogin;
use paynet_auth::reqwest_adapter::PaynetAuthMiddleware;
use paynet_auth::{BoxError, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use paynet_sim::tls::{Authority, ServerTls};

/// How long a login may take before the manager gives up on it with its own typed error.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// reqwest's limit for any one request, the login included. Longer than [`LOGIN_TIMEOUT`], so a slow login ends
/// with the manager's error (which names the token endpoint and counts as a failed login) rather than reqwest's.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // reqwest is built with its `rustls-no-provider` feature: rustls without a crypto provider of its own, so the
    // process installs one before building a client (reqwest panics otherwise). Its `rustls` feature would bring
    // aws-lc-rs, whose build needs cmake (and more) on some machines; ring builds wherever cargo does. Where
    // aws-lc-rs builds, the `rustls` feature works the same, and this line can go. It fails only when a provider
    // is already installed, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The gateway's side: a private CA, a server certificate it signed, and client certificates required.
    let ca = Authority::new("Paynet example CA");
    let gateway = Simulator::builder()
        .tls(
            ServerTls::new(&ca.issue_server(&["127.0.0.1", "localhost"]))
                .require_client_certs(&ca.cert_pem()),
        )
        .start()
        .await?;
    // The merchant's side: what operations hand over as files, the CA certificate and the terminal's certificate
    // and key (read them with std::fs::read in a real service).
    let ca_pem = ca.cert_pem();
    let terminal = ca.issue_client("terminal 4027096");
    let identity_pem = format!("{}{}", terminal.cert_pem, terminal.key_pem);

    let manager = TokenManager::builder(PaynetLogin::new(
        gateway.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .login_timeout(LOGIN_TIMEOUT)
    .build()?;

    let http = reqwest::Client::builder()
        // The gateway's private CA alone: a certificate from any other CA is refused. `tls_certs_merge` instead
        // adds it to the platform's roots, for a client that also calls public hosts.
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        // The certificate and key in one PEM (the key PKCS#8, EC or RSA), presented when the gateway asks.
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes())?)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    // The login goes through the same client, so it uses the same CA, identity and connection pool.
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(PaynetAuthMiddleware::new(
            PaynetAuthLayer::new(manager.clone()),
            http,
        ))
        .build();

    let answer = client
        .post(format!("{}/v2/user", gateway.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"getDepositInfo","id":1,"params":{}}"#)
        .send()
        .await?
        .text()
        .await?;
    println!("getDepositInfo over {}: {answer}", gateway.base_url());
    let stats = gateway.stats();
    println!(
        "logins: {}, requests: {}, TLS handshakes: {}",
        manager.logins(),
        stats.requests,
        stats.tls_handshakes
    );
    Ok(())
}
