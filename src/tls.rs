//! TLS shared by the HTTPS client and the databases' connections (feature `tls`, enabled by `hyper-client`,
//! `postgres` and `mysql`): rustls with the ring provider, certificates and keys read from PEM files, the
//! verifiers libpq's `sslmode`s need, and a TLS failure told in words an operator can act on.
//!
//! The ring provider is named explicitly everywhere rather than installed as the process default: a service may
//! link another provider too (reqwest's default `rustls` feature brings aws-lc-rs), and rustls refuses to guess
//! between two.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every TLS configuration of the project is built with: ring.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A certificate or key file that cannot be used: the file and why.
///
/// ```
/// let error = paynet_auth::tls::read_certificates("/nonexistent/ca.pem".as_ref()).unwrap_err();
/// assert!(error.to_string().starts_with("/nonexistent/ca.pem: cannot be read"), "{error}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for PemFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl StdError for PemFileError {}

fn pem_error(path: &Path, reason: impl Into<String>) -> PemFileError {
    PemFileError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|e| pem_error(path, format!("cannot be read ({e})")))
}

/// Every certificate in a PEM file (`-----BEGIN CERTIFICATE-----` blocks), in order; an error if the file cannot
/// be read, is not PEM, or holds no certificate (a key given where a certificate was meant, say).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let bytes = read_file(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("is not a PEM certificate file ({e})")))?;
    if certificates.is_empty() {
        return Err(pem_error(
            path,
            "holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    for (index, certificate) in certificates.iter().enumerate() {
        // Parsing now, not at the first handshake, so that a damaged file is refused where it is configured.
        webpki_check(certificate).map_err(|reason| {
            pem_error(
                path,
                format!(
                    "certificate {} is not a valid X.509 certificate ({reason})",
                    index + 1
                ),
            )
        })?;
    }
    Ok(certificates)
}

fn webpki_check(certificate: &CertificateDer<'_>) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add(certificate.clone()).map_err(|e| e.to_string())
}

/// The private key in a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`) or SEC1 EC
/// (`BEGIN EC PRIVATE KEY`). Encrypted keys are refused with that said.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemFileError> {
    read_signing_key(path).map(|(key, _)| key)
}

/// The private key of a PEM file and the signer rustls makes of it (which checks that it can be used).
fn read_signing_key(
    path: &Path,
) -> Result<(PrivateKeyDer<'static>, Arc<dyn rustls::sign::SigningKey>), PemFileError> {
    let bytes = read_file(path)?;
    if bytes
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(pem_error(
            path,
            "is an encrypted private key; decrypt it first (openssl pkcs8 -in KEY -out KEY.plain)",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        pem_error(
            path,
            format!(
                "holds no usable private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" PEM \
                 expected: {e})"
            ),
        )
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            pem_error(
                path,
                format!("holds a private key that cannot be used ({e})"),
            )
        })?;
    Ok((key, signer))
}

/// A certificate chain and its private key, checked to belong together.
pub fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PemFileError> {
    let chain = read_certificates(cert)?;
    let (private, signing) = read_signing_key(key)?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    if let Err(e) = certified.keys_match() {
        // `keys_match` cannot tell for every key type; only a definite mismatch is refused.
        if matches!(
            e,
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)
        ) {
            return Err(pem_error(
                key,
                format!(
                    "is not the private key of the certificate in {}",
                    cert.display()
                ),
            ));
        }
    }
    Ok((chain, private))
}

/// Mozilla's root certificates as webpki-roots bundles them (feature `hyper-client`), plus `extra`.
#[cfg(feature = "hyper-client")]
pub(crate) fn webpki_roots() -> impl Iterator<Item = rustls_pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}

/// A root store of `certificates` only.
#[cfg(feature = "postgres")]
pub(crate) fn roots_of(certificates: Vec<CertificateDer<'static>>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    // Checked when read; one that still does not parse is left out rather than failing every connection.
    let _ = roots.add_parsable_certificates(certificates);
    roots
}

/// A client configuration over the ring provider with rustls' safe protocol versions.
#[cfg(any(feature = "hyper-client", feature = "postgres"))]
pub(crate) fn client_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>
{
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// The verifiers libpq's `sslmode`s need (feature `postgres`).
#[cfg(feature = "postgres")]
mod verify {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::provider;

    /// Accepts any server certificate but still checks the handshake's signatures: what libpq's `sslmode=require`
    /// (and `prefer`) does without a root certificate, and MySQL's `REQUIRED`. It protects against eavesdropping,
    /// not against a man in the middle; the `verify-*` modes do.
    #[derive(Debug)]
    pub(crate) struct AnyCertificate;

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// Verifies the certificate chain up to the given roots but not the host name: libpq's `sslmode=verify-ca` and
    /// MySQL's `VERIFY_CA`. webpki checks the chain before the name, so a name error means the chain was good.
    #[derive(Debug)]
    pub(crate) struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ChainOnly {
        pub(crate) fn new(
            roots: RootCertStore,
        ) -> Result<Self, rustls::client::VerifierBuilderError> {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map(Self)
        }
    }

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}
#[cfg(feature = "postgres")]
pub(crate) use verify::{AnyCertificate, ChainOnly};

/// What went wrong in a TLS handshake, found anywhere in an error's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted root.
    UnknownIssuer,
    /// The certificate is for other names than the one connected to.
    NameMismatch {
        /// The name the client connected to.
        expected: String,
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet (or this machine's clock is behind).
    NotYetValid,
    /// The server wanted a client certificate and got none.
    ClientCertificateRequired,
    /// The server refused the client certificate it was sent.
    ClientCertificateRejected,
    /// Another certificate problem, in rustls' words.
    BadCertificate(String),
    /// Another TLS failure, in rustls' words.
    Other(String),
}

/// A name as rustls presents it (`DnsName("gw.example")`, `IpAddress(10.0.0.5)`) without its wrapping.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(")
        .or_else(|| presented.strip_prefix("IpAddress("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"').to_owned()
}

impl TlsFailure {
    /// The TLS failure in `error` or its causes, if there is one. Looks inside `std::io::Error`s, where TLS
    /// streams put rustls' errors.
    pub fn find(error: &(dyn StdError + 'static)) -> Option<TlsFailure> {
        let mut next = Some(error);
        while let Some(current) = next {
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                return Some(Self::from_rustls(tls));
            }
            if let Some(io) = current.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(found) = Self::find(inner)
            {
                return Some(found);
            }
            next = current.source();
        }
        None
    }

    fn from_rustls(error: &rustls::Error) -> Self {
        use rustls::AlertDescription as Alert;
        match error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => Self::NameMismatch {
                    expected: expected.to_str().into_owned(),
                    presented: presented.iter().map(|name| plain_name(name)).collect(),
                },
                CertificateError::NotValidForName => Self::NameMismatch {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                other => Self::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::AlertReceived(Alert::CertificateRequired) => {
                Self::ClientCertificateRequired
            }
            rustls::Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::UnsupportedCertificate
                | Alert::CertificateExpired
                | Alert::AccessDenied,
            ) => Self::ClientCertificateRejected,
            other => Self::Other(other.to_string()),
        }
    }

    /// The failure and what to do about it, with `ca` naming where the operator adds a trusted CA and `identity`
    /// where a client certificate goes (`tls.ca_file`, `sslrootcert` …).
    pub fn explain(&self, ca: &str, identity: &str) -> String {
        match self {
            Self::UnknownIssuer => format!(
                "the server's certificate is not signed by a trusted certificate authority (unknown issuer); if \
                 the server uses a private CA, trust it with {ca}"
            ),
            Self::NameMismatch {
                expected,
                presented,
            } if !presented.is_empty() => format!(
                "the server's certificate is for {} but the connection is to {expected}; connect by a name the \
                 certificate holds, or have it reissued for {expected}",
                presented.join(", ")
            ),
            Self::NameMismatch { expected, .. } => format!(
                "the server's certificate is not valid for {expected}; connect by a name the certificate holds"
            ),
            Self::Expired => {
                "the server's certificate has expired; the server must renew it (or check this \
                              machine's clock)"
                    .to_owned()
            }
            Self::NotYetValid => {
                "the server's certificate is not valid yet; check this machine's clock".to_owned()
            }
            Self::ClientCertificateRequired => format!(
                "the server requires a client certificate and none was sent; set {identity}"
            ),
            Self::ClientCertificateRejected => format!(
                "the server refused the client certificate (or the TLS handshake); check {identity} and that the \
                 server trusts its issuer"
            ),
            Self::BadCertificate(what) => {
                format!("the server's certificate is not acceptable ({what})")
            }
            Self::Other(what) => format!("TLS failed ({what})"),
        }
    }
}
