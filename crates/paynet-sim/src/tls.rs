//! HTTPS for the simulator: a throwaway certificate authority, the certificates it issues, and the TLS
//! configuration the simulator serves with.
//!
//! [`Authority`] is a CA made at run time with rcgen; it issues server certificates ([`Authority::issue_server`],
//! also an expired one for the failure path) and client certificates ([`Authority::issue_client`]), each as an
//! [`Identity`] (a certificate and its key, both PEM). [`ServerTls`] is what
//! [`SimulatorBuilder::tls`](crate::SimulatorBuilder::tls) takes: a server certificate and key, from an
//! [`Identity`] or from PEM files, optionally requiring client certificates signed by a given CA.
//!
//! Everything uses rustls with the ring provider, passed explicitly: nothing here installs or needs a process-wide
//! default provider, so it works next to code that installs another one (or none).
//!
//! [`client_config`] and [`connect`] are the client side, for tests that talk to the simulator by hand.
//!
//! ```
//! use paynet_sim::Simulator;
//! use paynet_sim::tls::{self, ServerTls};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # fn main() -> std::io::Result<()> {
//! tokio_test::block_on(async {
//!     // A fresh CA and a certificate for 127.0.0.1 and localhost, signed by it.
//!     let (server_tls, authority) = ServerTls::generated();
//!     let sim = Simulator::builder().tls(server_tls).start().await?;
//!     assert!(sim.base_url().starts_with("https://127.0.0.1:"));
//!
//!     // A client that trusts that CA, and nothing else.
//!     let mut stream = tls::connect(sim.addr(), authority.client_config(None)).await?;
//!     let body = r#"{"jsonrpc":"2.0","method":"login","id":1,"params":{"username":"username_17627_56530","password":"password_17627_56530","terminal_id":4027096}}"#;
//!     let request = format!(
//!         "POST /gw/v2/user HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
//!         sim.addr(),
//!         body.len(),
//!     );
//!     stream.write_all(request.as_bytes()).await?;
//!     let mut response = String::new();
//!     stream.read_to_string(&mut response).await?;
//!     assert!(response.starts_with("HTTP/1.1 200 OK"));
//!     assert!(response.contains(r#""token":""#));
//!     assert_eq!(sim.stats().tls_handshakes, 1);
//!     Ok(())
//! })
//! # }
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The ALPN protocol the simulator speaks; a client that offers only others (say `h2` alone) is refused in the
/// handshake rather than met with HTTP/1.1 bytes it would not expect.
const HTTP_1_1: &[u8] = b"http/1.1";

/// A certificate authority made at run time (an ECDSA P-256 key and a self-signed CA certificate, valid from a
/// day ago for ten years), for tests and demos: nothing it signs is trusted anywhere but where its certificate,
/// [`cert_pem`](Self::cert_pem), is installed on purpose.
///
/// ```
/// use paynet_sim::tls::Authority;
///
/// let ca = Authority::new("paynet-sim test CA");
/// assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// let server = ca.issue_server(&["127.0.0.1", "localhost"]);
/// let client = ca.issue_client("terminal 4027096");
/// assert!(server.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
/// assert_ne!(server.cert_pem, client.cert_pem);
/// ```
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs, even a test CA's.
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA whose certificate's subject is `CN=<common_name>`.
    ///
    /// # Panics
    ///
    /// When the system's random generator fails (no key can be made), or `common_name` is empty.
    pub fn new(common_name: &str) -> Authority {
        assert!(!common_name.is_empty(), "a CA needs a common name");
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::Current { years: 10 });
        let key = new_key();
        let cert = params
            .self_signed(&key)
            .expect("rcgen signs a CA certificate made of valid parameters");
        Authority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// The CA certificate, PEM: what a client installs as its only trusted root.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Writes the CA certificate, PEM, to `path` (replacing the file), for a client configured with a CA file.
    ///
    /// # Errors
    ///
    /// When the file cannot be written; the error names it.
    pub fn write_cert(&self, path: &Path) -> io::Result<()> {
        fs::write(path, &self.cert_pem).map_err(|error| named(path, "cannot write", &error))
    }

    /// A server certificate for `names`, signed by this CA, valid from a day ago for a year. Each name that parses
    /// as an IP address (`127.0.0.1`, `::1`) becomes an IP address SAN, any other a DNS name SAN; clients check the
    /// host they connected to against these. The subject's common name is the first name.
    ///
    /// # Panics
    ///
    /// When `names` is empty or a name is neither an IP address nor a valid DNS name (with a message naming it).
    pub fn issue_server(&self, names: &[&str]) -> Identity {
        self.issue_for_names(names, Validity::Current { years: 1 })
    }

    /// Like [`issue_server`](Self::issue_server), but the certificate expired yesterday (it was valid for the 30
    /// days before): a client that checks validity refuses it.
    ///
    /// # Panics
    ///
    /// As [`issue_server`](Self::issue_server).
    pub fn issue_server_expired(&self, names: &[&str]) -> Identity {
        self.issue_for_names(names, Validity::Expired)
    }

    /// A client certificate (extended key usage `clientAuth`, subject `CN=<common_name>`, no SAN) signed by this
    /// CA, valid from a day ago for a year: what a client presents to a simulator started with
    /// [`ServerTls::require_client_certs`].
    ///
    /// # Panics
    ///
    /// When `common_name` is empty.
    pub fn issue_client(&self, common_name: &str) -> Identity {
        assert!(
            !common_name.is_empty(),
            "a client certificate needs a common name"
        );
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        self.issue(
            params,
            ExtendedKeyUsagePurpose::ClientAuth,
            Validity::Current { years: 1 },
        )
    }

    /// A rustls client configuration that trusts this CA only, presenting `identity` as its client certificate
    /// when given. See [`client_config`].
    pub fn client_config(&self, identity: Option<&Identity>) -> rustls::ClientConfig {
        client_config(&self.cert_pem, identity)
            .expect("the CA's own certificate and the identities it issued are valid")
    }

    fn issue_for_names(&self, names: &[&str], validity: Validity) -> Identity {
        let first = names
            .first()
            .expect("a server certificate needs at least one name");
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|error| {
            panic!("{names:?}: each name must be an IP address or a DNS name: {error}")
        });
        params.distinguished_name = common_name_only(first);
        self.issue(params, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Identity {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("rcgen signs a certificate made of valid parameters");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn new_key() -> KeyPair {
    KeyPair::generate().expect("the system's random generator makes a P-256 key")
}

#[derive(Clone, Copy)]
enum Validity {
    /// From a day ago (a peer whose clock is a little behind still accepts it) for this many years.
    Current { years: u32 },
    /// From 31 days ago to yesterday.
    Expired,
}

// A certificate's validity is checked by the peer against its wall clock, so it is made from the wall clock: an
// injected clock would only make certificates that real peers refuse.
#[allow(clippy::disallowed_methods)]
fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the system clock is after 1970");
    // rcgen takes `time` dates; this crate does not depend on `time`, so "now" is built from rcgen's own helper.
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let (from, to) = match validity {
        Validity::Current { years } => (now - DAY, now + DAY * 365 * years),
        Validity::Expired => (now - DAY * 31, now - DAY),
    };
    params.not_before = from;
    params.not_after = to;
}

/// A certificate and its private key, both PEM: a leaf issued by an [`Authority`], or any pair a test brings.
///
/// `cert_pem` holds the leaf certificate alone (its CA is the [`Authority`]'s certificate); `key_pem` its PKCS#8
/// private key (`-----BEGIN PRIVATE KEY-----`).
#[derive(Clone)]
pub struct Identity {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"****")
            .finish()
    }
}

impl Identity {
    /// Writes `<dir>/<stem>.crt` (the certificate) and `<dir>/<stem>.key` (the key, readable by its owner only on
    /// Unix, as servers such as PostgreSQL insist), replacing them, and returns their paths in that order.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let ca = paynet_sim::tls::Authority::new("test CA");
    /// let dir = std::env::temp_dir().join(format!("paynet-sim-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let (cert, key) = ca.issue_server(&["localhost"]).write(&dir, "server")?;
    /// assert!(cert.ends_with("server.crt") && key.ends_with("server.key"));
    /// let tls = paynet_sim::tls::ServerTls::from_pem_files(&cert, &key)?;
    /// # drop(tls);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When a file cannot be written; the error names it.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        fs::write(&cert, &self.cert_pem).map_err(|error| named(&cert, "cannot write", &error))?;
        write_private(&key, self.key_pem.as_bytes())
            .map_err(|error| named(&key, "cannot write", &error))?;
        Ok((cert, key))
    }

    /// The same private key in its algorithm's own PEM form, the one older tools write and some servers still
    /// expect: `-----BEGIN EC PRIVATE KEY-----` (SEC1, with its curve named) for an EC key such as those an
    /// [`Authority`] makes, `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) for an RSA key. `None` when `key_pem` is
    /// not a PKCS#8 key of either kind (an Ed25519 key has no such form).
    ///
    /// ```
    /// let ca = paynet_sim::tls::Authority::new("test CA");
    /// let sec1 = ca.issue_server(&["localhost"]).key_pem_pkcs1_or_sec1().unwrap();
    /// assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    /// ```
    pub fn key_pem_pkcs1_or_sec1(&self) -> Option<String> {
        let PrivateKeyDer::Pkcs8(pkcs8) =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).ok()?
        else {
            return None;
        };
        let (label, der) = der::traditional_key(pkcs8.secret_pkcs8_der())?;
        Some(der::pem(label, &der))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file this call creates; one that was there keeps its mode unless told.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    fs::write(path, contents)
}

/// What the simulator serves HTTPS with: a certificate chain, its key and, optionally, the CA that client
/// certificates must be signed by. Give it to [`SimulatorBuilder::tls`](crate::SimulatorBuilder::tls).
///
/// The server speaks TLS 1.2 and 1.3 (rustls' safe defaults, ring provider) and HTTP/1.1 over it, which it
/// advertises through ALPN. Cloning is cheap.
///
/// ```
/// use paynet_sim::tls::{Authority, ServerTls};
///
/// let ca = Authority::new("test CA");
/// let tls = ServerTls::new(&ca.issue_server(&["127.0.0.1", "localhost"]))
///     // Mutual TLS: only clients with a certificate from this CA get through the handshake.
///     .require_client_certs(&ca.cert_pem());
/// assert!(tls.requires_client_certs());
/// ```
#[derive(Clone)]
pub struct ServerTls {
    chain: Arc<[CertificateDer<'static>]>,
    key: Arc<PrivateKeyDer<'static>>,
    client_roots: Option<Arc<RootCertStore>>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("chain_len", &self.chain.len())
            .field("client_certs_required", &self.requires_client_certs())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves `identity`'s certificate with its key.
    ///
    /// # Panics
    ///
    /// When `identity` holds no PEM certificate or no PEM private key, or the key does not belong to the
    /// certificate; an [`Identity`] an [`Authority`] issued always works. For files, whose content is not known
    /// in advance, use [`from_pem_files`](Self::from_pem_files), which returns an error instead.
    pub fn new(identity: &Identity) -> ServerTls {
        let chain = parse_chain(identity.cert_pem.as_bytes())
            .unwrap_or_else(|error| panic!("the identity's cert_pem: {error}"));
        let key = parse_key(identity.key_pem.as_bytes())
            .unwrap_or_else(|error| panic!("the identity's key_pem: {error}"));
        Self::build(chain, key, None)
            .unwrap_or_else(|error| panic!("the identity's certificate and key: {error}"))
    }

    /// Serves the certificate chain in `cert` (PEM; the leaf first, then any intermediate CAs) with the private
    /// key in `key` (PEM: PKCS#8 `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// When a file cannot be read, holds no PEM certificate (or private key), or the key does not belong to the
    /// certificate. Each error names the file at fault.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<ServerTls> {
        let chain =
            parse_chain(&read(cert, "certificate")?).map_err(|error| in_file(cert, error))?;
        let key_der = parse_key(&read(key, "private key")?).map_err(|error| in_file(key, error))?;
        Self::build(chain, key_der, None).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the certificate in {} and the key in {} cannot be served together: {error}",
                    cert.display(),
                    key.display()
                ),
            )
        })
    }

    /// Requires every client to present a certificate that chains to a CA certificate in `ca_pem` (PEM, one or
    /// more certificates); a client without one, or with one from another CA, fails the handshake.
    ///
    /// # Panics
    ///
    /// When `ca_pem` holds no valid PEM certificate. For a file use
    /// [`require_client_certs_from_file`](Self::require_client_certs_from_file), which returns an error instead.
    pub fn require_client_certs(self, ca_pem: &str) -> ServerTls {
        let roots = parse_roots(ca_pem.as_bytes())
            .unwrap_or_else(|error| panic!("the client CA certificate: {error}"));
        self.with_client_roots(roots)
            .unwrap_or_else(|error| panic!("the client CA certificate: {error}"))
    }

    /// [`require_client_certs`](Self::require_client_certs) with the CA certificates read from a PEM file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or holds no valid PEM certificate; the error names the file.
    pub fn require_client_certs_from_file(self, ca_file: &Path) -> io::Result<ServerTls> {
        let roots = parse_roots(&read(ca_file, "CA certificate")?)
            .map_err(|error| in_file(ca_file, error))?;
        self.with_client_roots(roots).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {error}", ca_file.display()),
            )
        })
    }

    /// A fresh CA (`CN=paynet-sim test CA`) and a certificate it signed for `127.0.0.1` and `localhost`, served
    /// without client certificates; the [`Authority`] is what a client must trust.
    pub fn generated() -> (ServerTls, Authority) {
        let authority = Authority::new("paynet-sim test CA");
        let tls = ServerTls::new(&authority.issue_server(&["127.0.0.1", "localhost"]));
        (tls, authority)
    }

    /// Whether clients must present a certificate ([`require_client_certs`](Self::require_client_certs)).
    pub fn requires_client_certs(&self) -> bool {
        self.client_roots.is_some()
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }

    fn with_client_roots(self, roots: RootCertStore) -> Result<ServerTls, rustls::Error> {
        Self::build(
            self.chain.to_vec(),
            self.key.clone_key(),
            Some(Arc::new(roots)),
        )
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: Option<Arc<RootCertStore>>,
    ) -> Result<ServerTls, rustls::Error> {
        let provider = ring();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &client_roots {
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider)
                    .build()
                    .map_err(|error| rustls::Error::General(error.to_string()))?,
            ),
            None => builder.with_no_client_auth(),
        };
        // rustls checks here that the key belongs to the leaf certificate.
        let mut config = builder.with_single_cert(chain.clone(), key.clone_key())?;
        config.alpn_protocols = vec![HTTP_1_1.to_vec()];
        Ok(ServerTls {
            chain: chain.into(),
            key: Arc::new(key),
            client_roots,
            config: Arc::new(config),
        })
    }
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) that trusts only the CA certificates in
/// `ca_pem` and, with `identity`, presents it as its client certificate. It sets no ALPN protocols, so it can be
/// handed to clients that set their own (hyper-rustls' `with_tls_config` insists on that).
///
/// # Errors
///
/// When `ca_pem` holds no valid PEM certificate, or `identity` no certificate and matching key.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&Identity>,
) -> io::Result<rustls::ClientConfig> {
    let invalid = |what: &str, error: &dyn fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}"))
    };
    let roots =
        parse_roots(ca_pem.as_bytes()).map_err(|error| invalid("the CA certificate", &error))?;
    let builder = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("the TLS versions", &error))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let chain = parse_chain(identity.cert_pem.as_bytes())
                .map_err(|error| invalid("the client certificate", &error))?;
            let key = parse_key(identity.key_pem.as_bytes())
                .map_err(|error| invalid("the client key", &error))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| invalid("the client certificate and key", &error))
        }
    }
}

/// Opens a TCP connection to `addr` and completes a TLS handshake over it with `config`, checking the server's
/// certificate against `addr`'s IP address (an IP address SAN such as [`ServerTls::generated`]'s `127.0.0.1`).
/// What comes back reads and writes plain bytes: write an HTTP/1.1 request, read the answer.
///
/// A server that requires client certificates checks this client's only after the handshake the client sees
/// complete (TLS 1.3), so without a certificate the refusal arrives as an error on the first read, not here.
///
/// # Errors
///
/// When the connection cannot be made or the handshake fails (such as a server certificate that `config` does
/// not trust).
pub async fn connect(
    addr: SocketAddr,
    config: impl Into<Arc<rustls::ClientConfig>>,
) -> io::Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config.into())
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// The crypto provider for every configuration here: ring, given explicitly, because rustls' process-wide
/// default may be absent (then `ServerConfig::builder()` panics) or be aws-lc-rs, which needs cmake to build.
fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    fs::read(path).map_err(|error| named(path, &format!("cannot read the {what} file"), &error))
}

fn named(path: &Path, doing: &str, error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{doing} {}: {error}", path.display()))
}

fn in_file(path: &Path, error: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {error}", path.display()),
    )
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(&error, "a certificate"))?;
    if chain.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned());
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        pem::Error::NoItemsFound => {
            "no PEM private key (-----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA \
                                     PRIVATE KEY) in it"
                .to_owned()
        }
        error => pem_error(&error, "a private key"),
    })
}

fn parse_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_chain(pem)? {
        roots
            .add(cert)
            .map_err(|error| format!("not a usable CA certificate: {error}"))?;
    }
    Ok(roots)
}

fn pem_error(error: &pem::Error, what: &str) -> String {
    format!("not valid PEM where {what} was expected: {error}")
}

/// Just enough DER to turn a PKCS#8 key into its algorithm's own form, and PEM to write it.
mod der {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    /// `[0]`, constructed: the optional curve parameters of a SEC1 `ECPrivateKey`.
    const CONTEXT_0: u8 = 0xa0;
    /// 1.2.840.113549.1.1.1, rsaEncryption.
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.2.840.10045.2.1, id-ecPublicKey.
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

    /// The tag, the contents and what follows one DER element at the start of `input`.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (digits, rest) = rest.split_at(count);
            let len = digits
                .iter()
                .fold(0usize, |len, digit| (len << 8) | usize::from(*digit));
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }

    fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if let Ok(short @ 0..0x80) = u8::try_from(len) {
            out.push(short);
        } else {
            let digits = len.to_be_bytes();
            let skip = digits.iter().take_while(|digit| **digit == 0).count();
            let count = u8::try_from(digits.len() - skip).expect("a usize has at most 8 bytes");
            out.push(0x80 | count);
            out.extend_from_slice(&digits[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// The PEM label and DER of a PKCS#8 key's own form: PKCS#1 for RSA, SEC1 for EC (with the curve named in
    /// it, which PKCS#8 keeps outside and tools reading SEC1 need).
    pub(super) fn traditional_key(pkcs8: &[u8]) -> Option<(&'static str, Vec<u8>)> {
        // PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm AlgorithmIdentifier, privateKey OCTET STRING, .. }
        let (SEQUENCE, info, _) = element(pkcs8)? else {
            return None;
        };
        let (INTEGER, _, rest) = element(info)? else {
            return None;
        };
        let (SEQUENCE, algorithm, rest) = element(rest)? else {
            return None;
        };
        let (OCTET_STRING, private_key, _) = element(rest)? else {
            return None;
        };
        let (OID, oid, parameters) = element(algorithm)? else {
            return None;
        };
        match oid {
            RSA_ENCRYPTION => Some(("RSA PRIVATE KEY", private_key.to_vec())),
            EC_PUBLIC_KEY => {
                let (OID, _, after_curve) = element(parameters)? else {
                    return None;
                };
                let curve = &parameters[..parameters.len() - after_curve.len()];
                // ECPrivateKey ::= SEQUENCE { version INTEGER, privateKey OCTET STRING,
                //                             parameters [0] OPTIONAL, publicKey [1] OPTIONAL }
                let (SEQUENCE, ec, _) = element(private_key)? else {
                    return None;
                };
                let (INTEGER, _, after_version) = element(ec)? else {
                    return None;
                };
                let (OCTET_STRING, _, tail) = element(after_version)? else {
                    return None;
                };
                if tail.first() == Some(&CONTEXT_0) {
                    return Some(("EC PRIVATE KEY", private_key.to_vec()));
                }
                let mut contents = ec[..ec.len() - tail.len()].to_vec();
                contents.extend(encode(CONTEXT_0, curve));
                contents.extend_from_slice(tail);
                Some(("EC PRIVATE KEY", encode(SEQUENCE, &contents)))
            }
            _ => None,
        }
    }

    /// `der` as a PEM block: base64 in lines of 64 characters between the `label`'s markers.
    pub(super) fn pem(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
        for chunk in der.chunks(3) {
            let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, byte)| {
                bits | (u32::from(*byte) << (16 - 8 * i))
            });
            for i in 0..4 {
                base64.push(if i <= chunk.len() {
                    ALPHABET[((bits >> (18 - 6 * i)) & 0x3f) as usize]
                } else {
                    b'='
                });
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in base64.chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}
