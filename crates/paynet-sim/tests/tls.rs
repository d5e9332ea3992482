//! The simulator over HTTPS: the certificates `paynet_sim::tls` makes, server and client authentication, ALPN,
//! and the connection and handshake counters. Clients are hyper's HTTP/1.1 connection over tokio-rustls.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use paynet_sim::tls::{self, Authority, Identity, ServerTls};
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, SimStats, Simulator};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a test waits for the simulator to count something before it gives up (a failure, not a pause).
const PATIENCE: Duration = Duration::from_secs(10);

async fn start(tls: ServerTls) -> Simulator {
    Simulator::builder()
        .tls(tls)
        .start()
        .await
        .expect("the simulator starts")
}

/// Waits, without sleeping, for the simulator's counters to satisfy `condition`.
async fn seen(sim: &Simulator, condition: impl FnMut(&SimStats) -> bool) -> SimStats {
    tokio::time::timeout(PATIENCE, sim.wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("the simulator never counted it: {:?}", sim.stats()))
}

/// An HTTP/1.1 connection over `stream`, its driver spawned.
async fn http1(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One HTTPS connection to the simulator with `config`.
async fn https(
    sim: &Simulator,
    config: rustls::ClientConfig,
) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    http1(tls::connect(sim.addr(), config).await?).await
}

/// Sends the ticket's login on `sender` and returns the JSON answer.
async fn login(sender: &mut SendRequest<Full<Bytes>>, sim: &Simulator) -> Result<Value, BoxError> {
    let body = json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
        "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}});
    let request = Request::post("/gw/v2/user")
        .header(header::HOST, sim.addr().to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

fn token(answer: &Value) -> &str {
    answer["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {answer}"))
}

/// Every message in an error's chain, for asserting on what a refusal said.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("paynet-sim-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- serving HTTPS ----

#[tokio::test]
async fn a_client_trusting_the_authority_logs_in_over_https() {
    let (server_tls, authority) = ServerTls::generated();
    let sim = start(server_tls).await;
    assert!(
        sim.base_url()
            .starts_with(&format!("https://{}/", sim.addr())),
        "{}",
        sim.base_url()
    );
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));

    let mut sender = https(&sim, authority.client_config(None))
        .await
        .expect("the handshake succeeds");
    let answer = login(&mut sender, &sim).await.expect("the gateway answers");

    assert_eq!(token(&answer), sim.issued_tokens()[0]);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.connections,
            stats.tls_handshakes,
            stats.tls_handshake_failures
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.logins, 1);
}

#[tokio::test]
async fn the_generated_certificate_names_localhost_as_well_as_127_0_0_1() {
    let (server_tls, authority) = ServerTls::generated();
    let sim = start(server_tls).await;
    let tcp = TcpStream::connect(sim.addr()).await.unwrap();
    let connector = TlsConnector::from(Arc::new(authority.client_config(None)));

    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("localhost is among the certificate's names");

    let mut sender = http1(stream).await.unwrap();
    login(&mut sender, &sim).await.expect("the gateway answers");
}

#[tokio::test]
async fn one_handshake_per_connection_however_many_calls_it_carries() {
    let (server_tls, authority) = ServerTls::generated();
    let sim = start(server_tls).await;

    let mut first = https(&sim, authority.client_config(None)).await.unwrap();
    for _ in 0..20 {
        login(&mut first, &sim).await.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.connections, stats.tls_handshakes),
        (20, 1, 1)
    );

    let mut second = https(&sim, authority.client_config(None)).await.unwrap();
    login(&mut second, &sim).await.unwrap();
    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.connections, stats.tls_handshakes),
        (21, 2, 2)
    );
}

#[tokio::test]
async fn plain_http_counts_connections_and_no_handshakes() {
    let sim = Simulator::start().await.unwrap();
    assert!(
        sim.base_url().starts_with("http://127.0.0.1:"),
        "{}",
        sim.base_url()
    );

    let mut sender = http1(TcpStream::connect(sim.addr()).await.unwrap())
        .await
        .unwrap();
    for _ in 0..3 {
        login(&mut sender, &sim).await.unwrap();
    }

    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.connections, stats.tls_handshakes),
        (3, 1, 0)
    );
}

// ---- refusals ----

#[tokio::test]
async fn a_client_that_does_not_trust_the_authority_is_refused_and_the_server_keeps_serving() {
    let (server_tls, authority) = ServerTls::generated();
    let sim = start(server_tls).await;
    let stranger = Authority::new("some other CA");

    let error = match https(&sim, stranger.client_config(None)).await {
        Ok(_) => panic!("a server certificate from an unknown CA was accepted"),
        Err(error) => chain(error.as_ref()),
    };

    assert!(error.contains("UnknownIssuer"), "{error}");
    let stats = seen(&sim, |stats| stats.tls_handshake_failures == 1).await;
    assert_eq!(
        (stats.connections, stats.tls_handshakes, stats.requests),
        (1, 0, 0)
    );
    // The failed handshake cost that connection only.
    let mut sender = https(&sim, authority.client_config(None)).await.unwrap();
    login(&mut sender, &sim).await.unwrap();
}

#[tokio::test]
async fn plain_http_to_the_https_port_fails_the_handshake_without_an_answer() {
    let (server_tls, _authority) = ServerTls::generated();
    let sim = start(server_tls).await;

    let mut sender = http1(TcpStream::connect(sim.addr()).await.unwrap())
        .await
        .unwrap();
    let outcome = login(&mut sender, &sim).await;

    assert!(outcome.is_err(), "{outcome:?}");
    let stats = seen(&sim, |stats| stats.tls_handshake_failures == 1).await;
    assert_eq!(stats.requests, 0);
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let authority = Authority::new("test CA");
    let sim = start(ServerTls::new(
        &authority.issue_server_expired(&["127.0.0.1"]),
    ))
    .await;

    let error = match https(&sim, authority.client_config(None)).await {
        Ok(_) => panic!("an expired server certificate was accepted"),
        Err(error) => chain(error.as_ref()),
    };

    assert!(error.contains("certificate expired"), "{error}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let authority = Authority::new("test CA");
    // `localhost` only: a client that connected to 127.0.0.1 checks that address, which is not on it.
    let sim = start(ServerTls::new(&authority.issue_server(&["localhost"]))).await;

    let error = match https(&sim, authority.client_config(None)).await {
        Ok(_) => panic!("a certificate without the address was accepted"),
        Err(error) => chain(error.as_ref()),
    };

    assert!(
        error.contains("not valid for name \"127.0.0.1\""),
        "{error}"
    );
}

#[tokio::test]
async fn alpn_offers_http_1_1_and_refuses_a_client_that_wants_only_h2() {
    let (server_tls, authority) = ServerTls::generated();
    let sim = start(server_tls).await;
    let connect = |alpn: &[&[u8]]| {
        let mut config = authority.client_config(None);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let connector = TlsConnector::from(Arc::new(config));
        let addr = sim.addr();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
        }
    };

    let both = connect(&[b"h2", b"http/1.1"])
        .await
        .expect("http/1.1 is common ground");
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let refused = connect(&[b"h2"]).await;
    assert!(refused.is_err(), "a client that speaks only h2 got through");
    let none = connect(&[])
        .await
        .expect("a client that offers nothing gets HTTP/1.1 all the same");
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
}

// ---- client certificates ----

#[tokio::test]
async fn with_client_certs_required_only_a_client_with_one_from_the_ca_gets_an_answer() {
    let authority = Authority::new("test CA");
    let server_tls = ServerTls::new(&authority.issue_server(&["127.0.0.1"]))
        .require_client_certs(&authority.cert_pem());
    assert!(server_tls.requires_client_certs());
    let sim = start(server_tls).await;

    // TLS 1.3: the client's side of the handshake ends before the server has checked the client, so the
    // refusal reaches the client as the answer to its first request.
    let anonymous = async {
        let mut sender = https(&sim, authority.client_config(None)).await?;
        login(&mut sender, &sim).await
    };
    let error = anonymous
        .await
        .expect_err("a client without a certificate got an answer");
    let stats = seen(&sim, |stats| stats.tls_handshake_failures == 1).await;
    assert_eq!(
        stats.requests,
        0,
        "refused before any request: {}",
        chain(error.as_ref())
    );

    let stranger = Authority::new("some other CA").issue_client("intruder");
    let foreign = async {
        let mut sender = https(&sim, authority.client_config(Some(&stranger))).await?;
        login(&mut sender, &sim).await
    };
    foreign
        .await
        .expect_err("a client certificate from another CA got an answer");
    let stats = seen(&sim, |stats| stats.tls_handshake_failures == 2).await;
    assert_eq!(stats.requests, 0);

    let identity = authority.issue_client("terminal 4027096");
    let mut sender = https(&sim, authority.client_config(Some(&identity)))
        .await
        .expect("the handshake succeeds");
    let answer = login(&mut sender, &sim).await.expect("the gateway answers");
    assert_eq!(token(&answer), sim.issued_tokens()[0]);
    assert_eq!(sim.stats().tls_handshakes, 1);
}

#[tokio::test]
async fn a_server_certificate_cannot_stand_in_for_a_client_certificate() {
    let authority = Authority::new("test CA");
    let sim = start(
        ServerTls::new(&authority.issue_server(&["127.0.0.1"]))
            .require_client_certs(&authority.cert_pem()),
    )
    .await;
    // Signed by the right CA, but its extended key usage is serverAuth only.
    let server_identity = authority.issue_server(&["client.example"]);

    let outcome = async {
        let mut sender = https(&sim, authority.client_config(Some(&server_identity))).await?;
        login(&mut sender, &sim).await
    }
    .await;

    assert!(outcome.is_err(), "{outcome:?}");
    seen(&sim, |stats| stats.tls_handshake_failures == 1).await;
}

// ---- files ----

#[tokio::test]
async fn files_written_by_identity_serve_https_and_require_client_certs() {
    let dir = TempDir::new("files");
    let authority = Authority::new("test CA");
    let (cert, key) = authority
        .issue_server(&["127.0.0.1"])
        .write(&dir.0, "server")
        .unwrap();
    assert_eq!(
        (cert.file_name().unwrap(), key.file_name().unwrap()),
        ("server.crt".as_ref(), "server.key".as_ref())
    );
    let ca_file = dir.0.join("ca.pem");
    authority.write_cert(&ca_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is its owner's alone");
    }

    let server_tls = ServerTls::from_pem_files(&cert, &key)
        .unwrap()
        .require_client_certs_from_file(&ca_file)
        .unwrap();
    let sim = start(server_tls).await;

    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();
    let identity = authority.issue_client("terminal");
    let mut sender = https(&sim, tls::client_config(&ca_pem, Some(&identity)).unwrap())
        .await
        .unwrap();
    login(&mut sender, &sim).await.unwrap();
}

#[tokio::test]
async fn an_ec_private_key_file_serves_as_well_as_a_pkcs8_one() {
    let dir = TempDir::new("sec1");
    let authority = Authority::new("test CA");
    let identity = authority.issue_server(&["127.0.0.1"]);
    let sec1 = identity
        .key_pem_pkcs1_or_sec1()
        .expect("an EC key has a SEC1 form");
    assert!(
        sec1.starts_with("-----BEGIN EC PRIVATE KEY-----\n"),
        "{sec1}"
    );
    let PrivateKeyDer::Sec1(der) = PrivateKeyDer::from_pem_slice(sec1.as_bytes()).unwrap() else {
        panic!("not read back as SEC1: {sec1}");
    };
    // [0] { OID prime256v1 }: SEC1 readers (OpenSSL among them) need the curve named in the key itself.
    let named_curve = [
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    assert!(
        der.secret_sec1_der()
            .windows(named_curve.len())
            .any(|window| window == named_curve),
        "no curve in {sec1}"
    );
    let (cert, _) = identity.write(&dir.0, "server").unwrap();
    let key = dir.0.join("server-ec.key");
    std::fs::write(&key, &sec1).unwrap();

    let sim = start(ServerTls::from_pem_files(&cert, &key).expect("the SEC1 key loads")).await;

    let mut sender = https(&sim, authority.client_config(None)).await.unwrap();
    login(&mut sender, &sim).await.unwrap();
}

#[test]
fn file_errors_name_the_file_and_what_is_wrong_with_it() {
    let dir = TempDir::new("errors");
    let authority = Authority::new("test CA");
    let (cert, key) = authority
        .issue_server(&["127.0.0.1"])
        .write(&dir.0, "server")
        .unwrap();
    let (_, other_key) = authority
        .issue_server(&["127.0.0.1"])
        .write(&dir.0, "other")
        .unwrap();
    let missing = dir.0.join("missing.pem");

    let error = ServerTls::from_pem_files(&missing, &key).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(
        error
            .to_string()
            .contains(&format!("certificate file {}", missing.display())),
        "{error}"
    );

    let error = ServerTls::from_pem_files(&cert, &missing).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("private key file {}", missing.display())),
        "{error}"
    );

    let error = ServerTls::from_pem_files(&key, &key).unwrap_err();
    assert!(
        error.to_string().contains(&key.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("no PEM certificate"), "{error}");

    let error = ServerTls::from_pem_files(&cert, &cert).unwrap_err();
    assert!(error.to_string().contains("no PEM private key"), "{error}");

    let error = ServerTls::from_pem_files(&cert, &other_key).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&cert.display().to_string())
            && text.contains(&other_key.display().to_string()),
        "{text}"
    );
    assert!(text.contains("cannot be served together"), "{text}");

    let error = ServerTls::from_pem_files(&cert, &key)
        .unwrap()
        .require_client_certs_from_file(&missing)
        .unwrap_err();
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
    let error = ServerTls::from_pem_files(&cert, &key)
        .unwrap()
        .require_client_certs_from_file(&key)
        .unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}

#[test]
fn identities_keep_their_keys_out_of_debug_output() {
    let authority = Authority::new("test CA");
    let identity: Identity = authority.issue_client("terminal");
    let shown = format!("{identity:?} {authority:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(
        !shown.contains(identity.key_pem.lines().nth(1).unwrap()),
        "{shown}"
    );
}

#[tokio::test]
async fn serve_in_the_current_task_speaks_https_too() {
    let (server_tls, authority) = ServerTls::generated();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Simulator::builder()
            .tls(server_tls)
            .serve(listener, stopped),
    );

    let mut sender = http1(
        tls::connect(addr, authority.client_config(None))
            .await
            .expect("a TLS handshake"),
    )
    .await
    .unwrap();
    let request = Request::post("/gw/v2/user")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::from(
            json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
                "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}})
            .to_string(),
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(sender);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
