//! HTTPS to the gateway through the built-in client: the simulator serving TLS with certificates made in the test
//! (a private CA, another host's certificate, an expired one, client certificates required), the client
//! configured the way a user's YAML configures it (`tls.ca_file`, `tls.client_cert`, `tls.client_key`).
#![cfg(all(feature = "hyper-client", feature = "yaml"))]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use paynet_auth::clock::NoJitter;
use paynet_auth::config::{Config, PaynetConfig};
use paynet_auth::hyper_client::{HttpClient, HttpErrorKind};
use paynet_auth::tls::TlsFailure;
use paynet_auth::{Error, PaynetAuth, PaynetAuthLayer, TokenError, TokenManager};
use paynet_sim::Simulator;
use paynet_sim::tls::{Authority, ServerTls};
use tempfile::TempDir;
use tower::{Layer, ServiceExt};

/// A credential for the simulator at `base_url` with `extra` YAML lines (indented for the `paynet:` section).
fn config(base_url: &str, extra: &str) -> Result<PaynetConfig, paynet_auth::error::ConfigError> {
    let yaml = format!(
        "paynet:\n  base_url: \"{base_url}\"\n  username: \"{}\"\n  password: \"{}\"\n  terminal_id: {}\n  \
         store: {{ url: \"memory:\" }}\n{extra}",
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD,
        paynet_sim::DEFAULT_TERMINAL_ID,
    );
    let config = Config::from_yaml_str(&yaml, "paynet.yaml", &|_| None)?;
    Ok(config.default_credential().clone())
}

fn service(config: &PaynetConfig) -> PaynetAuth<HttpClient> {
    // The configuration's `tls`, but no proxy from the environment this test runs in: the gateway is local.
    assert!(config.proxy.is_none());
    let client = HttpClient::builder()
        .tls(&config.tls)
        .no_proxy()
        .build()
        .expect("a configuration that loaded builds its client");
    let manager = TokenManager::builder(config.login())
        .jitter(Arc::new(NoJitter))
        .login_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    PaynetAuthLayer::new(manager).layer(client)
}

fn categories(config: &PaynetConfig) -> Request<Full<Bytes>> {
    Request::post(config.url("/v2/service"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#,
        )))
        .unwrap()
}

/// One call through the layer: the JSON answer, or the error's whole chain on one line.
async fn call(
    service: &PaynetAuth<HttpClient>,
    config: &PaynetConfig,
) -> Result<serde_json::Value, String> {
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        service.clone().oneshot(categories(config)),
    )
    .await
    .expect("a call ends within 20 s")
    .map_err(|e| chain(&e))?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| (*e).source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The TLS failure a failed call carries, found in its chain.
async fn tls_failure(
    service: &PaynetAuth<HttpClient>,
    config: &PaynetConfig,
) -> (TlsFailure, String) {
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        service.clone().oneshot(categories(config)),
    )
    .await
    .expect("a call ends within 20 s")
    .expect_err("the handshake must fail");
    let line = chain(&error);
    let Error::Token(TokenError::Login(login)) = &error else {
        panic!("the login fails first, got: {line}");
    };
    let failure = TlsFailure::find(&**login).unwrap_or_else(|| panic!("no TLS failure in: {line}"));
    (failure, line)
}

struct Pki {
    dir: TempDir,
    ca: Authority,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("paynet-auth test CA");
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn ca_line(&self) -> String {
        format!("  tls:\n    ca_file: \"{}\"\n", self.path("ca.pem"))
    }
}

async fn https_sim(tls: ServerTls) -> Simulator {
    let sim = Simulator::builder().tls(tls).start().await.unwrap();
    assert!(
        sim.base_url().starts_with("https://127.0.0.1:"),
        "{}",
        sim.base_url()
    );
    sim
}

#[tokio::test]
async fn a_private_ca_in_tls_ca_file_is_trusted_and_connections_are_reused() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(
        &pki.ca.issue_server(&["127.0.0.1", "localhost"]),
    ))
    .await;
    let config = config(sim.base_url(), &pki.ca_line()).unwrap();
    let service = service(&config);
    const CALLS: u64 = 40;
    for _ in 0..CALLS {
        let answer = call(&service, &config).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
    }
    let stats = sim.stats();
    assert_eq!(stats.logins, 1, "{stats:?}");
    // The login and the calls share the pool: one handshake, kept alive, not one per call.
    assert!(
        stats.tls_handshakes >= 1 && stats.tls_handshakes <= 2,
        "{} handshakes for {CALLS} calls and a login",
        stats.tls_handshakes
    );
}

#[tokio::test]
async fn the_ca_alone_is_trusted_without_the_default_roots() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(&pki.ca.issue_server(&["127.0.0.1"]))).await;
    let extra = format!("{}    default_roots: false\n", pki.ca_line());
    let config = config(sim.base_url(), &extra).unwrap();
    call(&service(&config), &config).await.unwrap();
}

#[tokio::test]
async fn an_unknown_ca_is_refused_naming_tls_ca_file() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(&pki.ca.issue_server(&["127.0.0.1"]))).await;
    // Mozilla's roots only: the simulator's private CA is not among them.
    let config = config(sim.base_url(), "").unwrap();
    let (failure, line) = tls_failure(&service(&config), &config).await;
    assert_eq!(failure, TlsFailure::UnknownIssuer, "{line}");
    assert!(
        line.contains("unknown issuer") && line.contains("`tls.ca_file`"),
        "{line}"
    );
    assert!(line.contains(&config.url("/v2/user")), "{line}");
    assert_eq!(sim.stats().logins, 0);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_naming_both_names() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(
        &pki.ca.issue_server(&["gateway.other.example"]),
    ))
    .await;
    let config = config(sim.base_url(), &pki.ca_line()).unwrap();
    let (failure, line) = tls_failure(&service(&config), &config).await;
    assert!(matches!(failure, TlsFailure::NameMismatch { .. }), "{line}");
    assert!(
        line.contains(
            "the server's certificate is for gateway.other.example but the connection is to 127.0.0.1"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(&pki.ca.issue_server_expired(&["127.0.0.1"]))).await;
    let config = config(sim.base_url(), &pki.ca_line()).unwrap();
    let (failure, line) = tls_failure(&service(&config), &config).await;
    assert_eq!(failure, TlsFailure::Expired, "{line}");
    assert!(line.contains("expired"), "{line}");
}

#[tokio::test]
async fn a_server_requiring_client_certificates_serves_tls_client_cert_and_refuses_without() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.ca.issue_server(&["127.0.0.1"]))
        .require_client_certs(&pki.ca.cert_pem());
    let sim = https_sim(server).await;

    let without = config(sim.base_url(), &pki.ca_line()).unwrap();
    let (failure, line) = tls_failure(&service(&without), &without).await;
    assert!(
        matches!(
            failure,
            TlsFailure::ClientCertificateRequired | TlsFailure::ClientCertificateRejected
        ),
        "{line}"
    );
    assert!(
        line.contains("`tls.client_cert` and `tls.client_key`"),
        "{line}"
    );

    let (cert, key) = pki
        .ca
        .issue_client("terminal-4027096")
        .write(pki.dir.path(), "client")
        .unwrap();
    let extra = format!(
        "{}    client_cert: \"{}\"\n    client_key: \"{}\"\n",
        pki.ca_line(),
        cert.display(),
        key.display()
    );
    let with = config(sim.base_url(), &extra).unwrap();
    let answer = call(&service(&with), &with).await.unwrap();
    assert!(answer.get("result").is_some(), "{answer}");
    assert_eq!(sim.stats().logins, 1);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    let pki = Pki::new();
    let stranger = Authority::new("not the gateway's CA");
    let server = ServerTls::new(&pki.ca.issue_server(&["127.0.0.1"]))
        .require_client_certs(&pki.ca.cert_pem());
    let sim = https_sim(server).await;
    let (cert, key) = stranger
        .issue_client("intruder")
        .write(pki.dir.path(), "stranger")
        .unwrap();
    let extra = format!(
        "{}    client_cert: \"{}\"\n    client_key: \"{}\"\n",
        pki.ca_line(),
        cert.display(),
        key.display()
    );
    let config = config(sim.base_url(), &extra).unwrap();
    let (failure, line) = tls_failure(&service(&config), &config).await;
    assert_eq!(failure, TlsFailure::ClientCertificateRejected, "{line}");
}

#[tokio::test]
async fn plain_http_keeps_working() {
    let sim = Simulator::start().await.unwrap();
    assert!(sim.base_url().starts_with("http://"));
    let config = config(sim.base_url(), "").unwrap();
    call(&service(&config), &config).await.unwrap();
    assert_eq!(sim.stats().tls_handshakes, 0);
}

/// The error of the client itself (not through the layer) says the same, with its kind.
#[tokio::test]
async fn the_clients_error_has_its_kind() {
    let pki = Pki::new();
    let sim = https_sim(ServerTls::new(&pki.ca.issue_server(&["127.0.0.1"]))).await;
    let request = Request::post(format!("{}/v2/user", sim.base_url()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let error = HttpClient::builder()
        .no_proxy()
        .build()
        .unwrap()
        .oneshot(request)
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        &HttpErrorKind::Tls(TlsFailure::UnknownIssuer),
        "{error}"
    );
    assert!(error.is_connect(), "a failed handshake sent nothing");
}

fn refusal(base_url: &str, extra: &str) -> String {
    config(base_url, extra).unwrap_err().to_string()
}

#[test]
fn unusable_tls_files_are_refused_at_load_naming_key_and_file() {
    let pki = Pki::new();
    let (cert, key) = pki
        .ca
        .issue_client("terminal")
        .write(pki.dir.path(), "client")
        .unwrap();
    let other_key = pki
        .ca
        .issue_client("other")
        .write(pki.dir.path(), "other")
        .unwrap()
        .1;
    let missing = pki.path("missing.pem");
    let url = "https://gateway.example/gw";

    let error = refusal(url, &format!("  tls:\n    ca_file: \"{missing}\"\n"));
    assert!(
        error.contains("paynet.tls.ca_file")
            && error.contains(&missing)
            && error.contains("cannot be read"),
        "{error}"
    );

    // A key where a certificate was meant.
    let error = refusal(
        url,
        &format!("  tls:\n    ca_file: \"{}\"\n", key.display()),
    );
    assert!(
        error.contains("paynet.tls.ca_file") && error.contains("no PEM certificate"),
        "{error}"
    );

    let error = refusal(
        url,
        &format!("  tls:\n    client_cert: \"{}\"\n", cert.display()),
    );
    assert!(
        error.contains("paynet.tls.client_key") && error.contains("go together"),
        "{error}"
    );

    let error = refusal(
        url,
        &format!(
            "  tls:\n    client_cert: \"{}\"\n    client_key: \"{}\"\n",
            cert.display(),
            cert.display()
        ),
    );
    assert!(
        error.contains("paynet.tls.client_key") && error.contains("no usable private key"),
        "{error}"
    );

    let error = refusal(
        url,
        &format!(
            "  tls:\n    client_cert: \"{}\"\n    client_key: \"{}\"\n",
            cert.display(),
            other_key.display()
        ),
    );
    assert!(
        error.contains("is not the private key of the certificate"),
        "{error}"
    );

    let error = refusal(url, "  tls:\n    default_roots: false\n");
    assert!(error.contains("paynet.tls.default_roots"), "{error}");

    let error = refusal(url, "  proxy: \"socks5://user:hunter2@proxy:1080\"\n");
    assert!(
        error.contains("paynet.proxy") && !error.contains("hunter2"),
        "{error}"
    );

    // Credentials in the gateway's URL would be printed and stored in the credential key: refused, unprinted.
    let error = refusal("https://agent:hunter2@gateway.example/gw", "");
    assert!(
        error.contains("base_url") && error.contains("must not hold credentials"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");

    // Each refusal names the line of its key in the file, or of its section in a flow mapping.
    let error = refusal(url, &format!("  tls: {{ ca_file: \"{missing}\" }}\n"));
    assert!(
        error.contains("paynet.yaml: line 7: `paynet.tls.ca_file`"),
        "{error}"
    );
    let error = refusal(url, &format!("  tls:\n    ca_file: \"{missing}\"\n"));
    assert!(
        error.contains("paynet.yaml: line 8: `paynet.tls.ca_file`"),
        "{error}"
    );
}

#[test]
fn key_forms_people_have_are_read() {
    let pki = Pki::new();
    let identity = pki.ca.issue_client("terminal");
    let (cert, key) = identity.write(pki.dir.path(), "client").unwrap();
    paynet_auth::tls::read_identity(&cert, &key).unwrap();
    let legacy = identity
        .key_pem_pkcs1_or_sec1()
        .expect("the simulator's keys have a SEC1 form");
    assert!(legacy.contains("BEGIN EC PRIVATE KEY"), "{legacy}");
    let path = pki.dir.path().join("legacy.key");
    std::fs::write(&path, legacy).unwrap();
    paynet_auth::tls::read_identity(&cert, Path::new(&path)).unwrap();
}
