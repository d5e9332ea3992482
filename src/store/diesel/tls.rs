//! TLS to the database servers: the TLS parameters of a PostgreSQL or MySQL/MariaDB URL, read once at
//! [`DieselStore::connect`](super::DieselStore::connect) (files included, so that a missing certificate is a
//! configuration error there and then), and the connection set-up each pool (and the migrations, which take their
//! connection from the pool's manager) runs with them.
//!
//! PostgreSQL follows libpq: `sslmode` (`disable`, `prefer` by default, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert`, `sslcert`, `sslkey`. tokio-postgres knows only the first three modes and none of the files, so
//! these parameters are taken out of the URL before tokio-postgres reads it, and the rustls configuration is built
//! here (diesel-async's own path for TLS: `AsyncPgConnection::try_from_client_and_connection`).
//!
//! MySQL/MariaDB takes mysql_async's parameters (`require_ssl`, `verify_ca`, `verify_identity`, `built_in_roots`)
//! or the MySQL client's (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`), read here into mysql_async's `SslOpts`.
//! mysql_async has no `PREFERRED`: it is made here by connecting again without TLS when the server does not offer
//! it.
//!
//! A failed handshake becomes a sentence that says what is wrong and which parameter fixes it
//! ([`TlsFailure::explain`]); every such message starts with [`HANDSHAKE_FAILED`].

use std::path::Path;
#[cfg(feature = "postgres")]
use std::path::PathBuf;

use crate::error::StoreError;
use crate::tls::PemFileError;

/// How every message about a failed TLS handshake with a database starts (the pool's last-error report looks for
/// it).
pub(super) const HANDSHAKE_FAILED: &str = "TLS handshake with the database failed";

/// One `name=value` parameter of a URL's query: as written (kept as it is when it is passed on), and decoded.
#[derive(Debug)]
struct Param<'a> {
    raw: &'a str,
    name: String,
    value: String,
}

/// Splits a query string (without its `?`) into its parameters, percent-decoding names and values the way the
/// drivers do (`+` is not a space). A segment without `=` has an empty value.
fn params(query: &str) -> Vec<Param<'_>> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|raw| {
            let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
            Param {
                raw,
                name: percent_decode(name),
                value: percent_decode(value),
            }
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error and its causes, `outer: inner: innermost` (tokio-postgres' errors print only their kind: "error
/// connecting to server", "invalid connection string"), leaving out a cause whose text is already there.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// libpq's directory of default certificate files, `~/.postgresql`, if there is a home directory.
#[cfg(feature = "postgres")]
fn libpq_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join(".postgresql"))
}

/// A certificate file that cannot be used, as a configuration error naming the URL parameter.
fn file_error(backend: &str, parameter: &str, error: &PemFileError) -> StoreError {
    StoreError::Config(format!("{backend} URL parameter `{parameter}`: {error}"))
}

/// A client certificate chain and its key.
type Identity = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

/// Reads a client certificate and its key, naming the parameter of whichever file is wrong.
fn identity(
    backend: &str,
    (cert_param, cert): (&str, &Path),
    (key_param, key): (&str, &Path),
) -> Result<Identity, StoreError> {
    crate::tls::read_identity(cert, key).map_err(|error| {
        let parameter = if error.path == cert {
            cert_param
        } else {
            key_param
        };
        file_error(backend, parameter, &error)
    })
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
pub(super) use self::postgres::PgConnector;

#[cfg(feature = "postgres")]
mod postgres {
    use std::fmt;
    use std::path::{Path, PathBuf};
    use std::str::FromStr;
    use std::sync::Arc;

    use diesel::ConnectionError;
    use diesel_async::AsyncPgConnection;
    use rustls::RootCertStore;
    use tokio_postgres::config::SslMode;
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::{
        HANDSHAKE_FAILED, Identity, Param, file_error, identity, libpq_home, params, with_causes,
    };
    use crate::error::StoreError;
    use crate::tls::{self, AnyCertificate, ChainOnly, TlsFailure};

    const BACKEND: &str = "PostgreSQL";

    /// libpq's `sslmode`s.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(in crate::store::diesel) enum PgSslMode {
        Disable,
        Prefer,
        Require,
        VerifyCa,
        VerifyFull,
    }

    impl PgSslMode {
        fn parse(value: &str) -> Result<Self, StoreError> {
            // libpq compares exactly (`Require` is refused), and so does this.
            Ok(match value {
                "disable" => Self::Disable,
                "prefer" => Self::Prefer,
                "require" => Self::Require,
                "verify-ca" => Self::VerifyCa,
                "verify-full" => Self::VerifyFull,
                "allow" => {
                    return Err(StoreError::Config(
                        "PostgreSQL URL: sslmode=allow (plaintext first, TLS only if the server insists) is not \
                         supported; use sslmode=prefer, or sslmode=disable for plaintext"
                            .into(),
                    ));
                }
                other => {
                    return Err(StoreError::Config(format!(
                        "PostgreSQL URL: invalid sslmode `{other}` (expected disable, prefer, require, verify-ca \
                         or verify-full)"
                    )));
                }
            })
        }
    }

    impl fmt::Display for PgSslMode {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Self::Disable => "disable",
                Self::Prefer => "prefer",
                Self::Require => "require",
                Self::VerifyCa => "verify-ca",
                Self::VerifyFull => "verify-full",
            })
        }
    }

    /// The TLS parameters of a URL, as written.
    #[derive(Debug, Default)]
    struct Requested {
        sslmode: Option<String>,
        sslrootcert: Option<String>,
        sslcert: Option<String>,
        sslkey: Option<String>,
        sslpassword: bool,
    }

    /// What the server's certificate is checked against.
    enum Verification {
        /// Nothing (encryption only): libpq's `prefer` and `require` without a root certificate.
        None,
        /// The chain up to these roots, not the host name: `verify-ca`, and `prefer`/`require` with a root file.
        Chain(RootCertStore),
        /// The chain and the host name: `verify-full`.
        Full(RootCertStore),
    }

    /// How a PostgreSQL store connects: tokio-postgres' configuration (the URL without the parameters read here)
    /// and the rustls connector built from them, once.
    pub(in crate::store::diesel) struct PgConnector {
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        /// `sslmode=verify-full, sslrootcert=/etc/ca.pem`, for messages.
        summary: String,
    }

    impl PgConnector {
        /// Reads `url`'s TLS parameters and the files they name.
        pub(in crate::store::diesel) fn from_url(url: &str) -> Result<Self, StoreError> {
            Self::with_home(url, libpq_home().as_deref())
        }

        /// [`from_url`](Self::from_url) with libpq's default file directory (`~/.postgresql`) given.
        pub(super) fn with_home(url: &str, home: Option<&Path>) -> Result<Self, StoreError> {
            let (driver_url, requested) = split(url);
            let mut config = tokio_postgres::Config::from_str(&driver_url)
                .map_err(|e| StoreError::Config(format!("PostgreSQL URL: {}", with_causes(&e))))?;
            if requested.sslpassword {
                return Err(StoreError::Config(
                    "PostgreSQL URL parameter `sslpassword` is not supported: rustls reads no encrypted keys. \
                     Decrypt the key (openssl pkey -in KEY -out KEY.plain), point `sslkey` at it and remove \
                     `sslpassword`"
                        .into(),
                ));
            }
            let mode = requested
                .sslmode
                .as_deref()
                .map_or(Ok(PgSslMode::Prefer), PgSslMode::parse)?;
            if requested.sslrootcert.as_deref() == Some("system") {
                return Err(StoreError::Config(
                    "PostgreSQL URL: sslrootcert=system is not supported (this build has no system or Mozilla \
                     root store for the database); set `sslrootcert` to the file of the CA that signed the \
                     server's certificate"
                        .into(),
                ));
            }
            config.ssl_mode(match mode {
                PgSslMode::Disable => SslMode::Disable,
                PgSslMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            });

            let mut summary = format!("sslmode={mode}");
            let (verification, identity) = if mode == PgSslMode::Disable {
                // libpq reads no certificate file without TLS; neither does this.
                (Verification::None, None)
            } else {
                let roots = root_certificates(mode, requested.sslrootcert.as_deref(), home)?;
                if let Some((path, _)) = &roots {
                    summary.push_str(&format!(", sslrootcert={}", path.display()));
                }
                let roots = roots.map(|(_, roots)| roots);
                let verification = match (mode, roots) {
                    (PgSslMode::VerifyFull, Some(roots)) => Verification::Full(roots),
                    (_, Some(roots)) => Verification::Chain(roots),
                    (_, None) => Verification::None,
                };
                let identity = client_identity(
                    requested.sslcert.as_deref(),
                    requested.sslkey.as_deref(),
                    home,
                )?;
                (verification, identity)
            };
            let tls = MakeRustlsConnect::new(client_config(verification, identity)?);
            Ok(Self {
                config,
                tls,
                summary,
            })
        }

        /// A connection, over TLS as the URL asks.
        pub(in crate::store::diesel) async fn connect(
            &self,
        ) -> diesel::ConnectionResult<AsyncPgConnection> {
            self.connect_with(&self.config).await
        }

        /// A connection like [`connect`](Self::connect)'s that reports `application_name` to the server, whatever
        /// the URL says: the listener's, which operators find by that name in `pg_stat_activity`.
        pub(in crate::store::diesel) async fn connect_as(
            &self,
            application_name: &str,
        ) -> diesel::ConnectionResult<AsyncPgConnection> {
            let mut config = self.config.clone();
            config.application_name(application_name);
            self.connect_with(&config).await
        }

        async fn connect_with(
            &self,
            config: &tokio_postgres::Config,
        ) -> diesel::ConnectionResult<AsyncPgConnection> {
            let (client, connection) = config
                .connect(self.tls.clone())
                .await
                .map_err(|error| self.failure(&error))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        }

        /// A connection error in the words an operator acts on: a TLS failure says what failed and which
        /// parameter to change; anything else reads as diesel-async would have put it.
        fn failure(&self, error: &tokio_postgres::Error) -> ConnectionError {
            if let Some(failure) = TlsFailure::find(error) {
                return ConnectionError::BadConnection(format!(
                    "{HANDSHAKE_FAILED} (PostgreSQL, {}): {}",
                    self.summary,
                    failure.explain("`sslrootcert`", "`sslcert` and `sslkey`")
                ));
            }
            if let Some(db) = error.as_db_error() {
                return ConnectionError::BadConnection(db.message().to_owned());
            }
            let text = with_causes(error);
            // tokio-postgres' own TLS errors (a server that answers "no TLS" under `require`) have no rustls
            // error to explain; they read as handshake failures all the same.
            match text.strip_prefix("error performing TLS handshake: ") {
                Some(reason) => ConnectionError::BadConnection(format!(
                    "{HANDSHAKE_FAILED} (PostgreSQL, {}): {reason}",
                    self.summary
                )),
                None => ConnectionError::BadConnection(text),
            }
        }
    }

    /// The URL with the parameters read here taken out (and its scheme in lower case, which tokio-postgres
    /// needs), and those parameters. The query is found as tokio-postgres finds it: after the first `@`, if any.
    fn split(url: &str) -> (String, Requested) {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            // Not a URL tokio-postgres reads; it says so.
            None => return (url.to_owned(), Requested::default()),
        };
        let after_credentials = rest.find('@').map_or(0, |at| at + 1);
        let (base, query) = match rest[after_credentials..].find('?') {
            Some(q) => (
                &rest[..after_credentials + q],
                &rest[after_credentials + q + 1..],
            ),
            None => (rest, ""),
        };
        let mut requested = Requested::default();
        let mut kept = Vec::new();
        for Param { raw, name, value } in params(query) {
            // The last occurrence wins, as in libpq.
            match name.as_str() {
                "sslmode" => requested.sslmode = Some(value),
                "sslrootcert" => requested.sslrootcert = Some(value),
                "sslcert" => requested.sslcert = Some(value),
                "sslkey" => requested.sslkey = Some(value),
                "sslpassword" => requested.sslpassword = true,
                _ => kept.push(raw),
            }
        }
        let mut driver_url = format!("{scheme}://{base}");
        if !kept.is_empty() {
            driver_url.push('?');
            driver_url.push_str(&kept.join("&"));
        }
        (driver_url, requested)
    }

    /// The root certificates to verify with, and their file: `sslrootcert`, else libpq's default file
    /// `~/.postgresql/root.crt` if it exists (libpq then verifies the chain even for `prefer` and `require`).
    /// The `verify-*` modes need one.
    fn root_certificates(
        mode: PgSslMode,
        sslrootcert: Option<&str>,
        home: Option<&Path>,
    ) -> Result<Option<(PathBuf, RootCertStore)>, StoreError> {
        let path = match sslrootcert {
            Some(path) => PathBuf::from(path),
            None => {
                let default = home.map(|home| home.join("root.crt"));
                match default {
                    Some(default) if default.exists() => default,
                    _ if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) => {
                        let looked = default.map_or_else(
                            || "there is no home directory".to_owned(),
                            |path| format!("{} does not exist", path.display()),
                        );
                        return Err(StoreError::Config(format!(
                            "PostgreSQL URL: sslmode={mode} verifies the server's certificate and needs the \
                             certificate of the CA that signed it: set `sslrootcert` to its file (libpq's \
                             default, ~/.postgresql/root.crt, is not there: {looked})"
                        )));
                    }
                    _ => return Ok(None),
                }
            }
        };
        let certificates =
            tls::read_certificates(&path).map_err(|e| file_error(BACKEND, "sslrootcert", &e))?;
        Ok(Some((path, tls::roots_of(certificates))))
    }

    /// The client certificate and key: `sslcert` and `sslkey` together, else libpq's default files
    /// `~/.postgresql/postgresql.crt` and `.key` if the certificate exists.
    fn client_identity(
        sslcert: Option<&str>,
        sslkey: Option<&str>,
        home: Option<&Path>,
    ) -> Result<Option<Identity>, StoreError> {
        let (cert, key) = match (sslcert, sslkey) {
            (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
            (Some(_), None) | (None, Some(_)) => {
                let (given, missing) = if sslcert.is_some() {
                    ("sslcert", "sslkey")
                } else {
                    ("sslkey", "sslcert")
                };
                return Err(StoreError::Config(format!(
                    "PostgreSQL URL: `{given}` is set but `{missing}` is not; a client certificate needs both"
                )));
            }
            (None, None) => match home.map(|home| home.join("postgresql.crt")) {
                Some(cert) if cert.exists() => {
                    let key = cert.with_extension("key");
                    (cert, key)
                }
                _ => return Ok(None),
            },
        };
        identity(BACKEND, ("sslcert", &cert), ("sslkey", &key)).map(Some)
    }

    fn client_config(
        verification: Verification,
        identity: Option<Identity>,
    ) -> Result<rustls::ClientConfig, StoreError> {
        let builder = tls::client_builder();
        let builder = match verification {
            Verification::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate)),
            Verification::Chain(roots) => {
                let verifier = ChainOnly::new(roots).map_err(|e| {
                    StoreError::Config(format!(
                        "PostgreSQL URL parameter `sslrootcert`: no usable root certificate ({e})"
                    ))
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
            Verification::Full(roots) => builder.with_root_certificates(roots),
        };
        let mut config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                StoreError::Config(format!(
                    "PostgreSQL URL parameters `sslcert` and `sslkey`: unusable client certificate ({e})"
                ))
            })?,
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 sends, and PostgreSQL 17 requires for `sslnegotiation=direct`; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn config_error(url: &str) -> String {
            match PgConnector::with_home(url, None) {
                Err(StoreError::Config(message)) => message,
                Err(other) => panic!("not a configuration error: {other:?}"),
                Ok(_) => panic!("{url} was accepted"),
            }
        }

        #[test]
        fn takes_out_what_tokio_postgres_would_refuse() {
            let (driver, requested) = split(
                "PostgreSQL://app:p%3Fss@db:5432/pay?sslmode=verify-full&application_name=a%20b&sslrootcert=%2Ftmp%2Fca.pem&sslcert=c&sslkey=k",
            );
            assert_eq!(
                driver,
                "postgresql://app:p%3Fss@db:5432/pay?application_name=a%20b"
            );
            assert_eq!(requested.sslmode.as_deref(), Some("verify-full"));
            assert_eq!(requested.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
            assert_eq!(
                (requested.sslcert.as_deref(), requested.sslkey.as_deref()),
                (Some("c"), Some("k"))
            );
            // A `?` in the password is not the query.
            let (driver, requested) = split("postgres://app:a?b@db/pay?sslmode=disable");
            assert_eq!(driver, "postgres://app:a?b@db/pay");
            assert_eq!(requested.sslmode.as_deref(), Some("disable"));
            assert_eq!(split("postgres://db/pay").0, "postgres://db/pay");
        }

        #[test]
        fn modes_and_their_tokio_postgres_mode() {
            for (url, expected) in [
                ("postgres://db/pay", SslMode::Prefer),
                ("postgres://db/pay?sslmode=disable", SslMode::Disable),
                ("postgres://db/pay?sslmode=prefer", SslMode::Prefer),
                ("postgres://db/pay?sslmode=require", SslMode::Require),
            ] {
                let connector = PgConnector::with_home(url, None).unwrap();
                assert_eq!(connector.config.get_ssl_mode(), expected, "{url}");
            }
            assert!(
                config_error("postgres://db/pay?sslmode=Require")
                    .contains("invalid sslmode `Require`")
            );
            assert!(config_error("postgres://db/pay?sslmode=allow").contains("sslmode=allow"));
        }

        #[test]
        fn refusals_name_the_parameter() {
            let message = config_error("postgres://db/pay?sslmode=require&sslpassword=hunter2");
            assert!(
                message.contains("`sslpassword`") && !message.contains("hunter2"),
                "{message}"
            );
            let message = config_error("postgres://db/pay?sslmode=verify-full&sslrootcert=system");
            assert!(message.contains("sslrootcert=system"), "{message}");
            let message = config_error("postgres://db/pay?sslmode=verify-ca");
            assert!(message.contains("`sslrootcert`"), "{message}");
            let message = config_error("postgres://db/pay?sslcert=/tmp/c.pem");
            assert!(
                message.contains("`sslcert` is set but `sslkey` is not"),
                "{message}"
            );
            let message = config_error("postgres://db/pay?sslkey=/tmp/k.pem");
            assert!(
                message.contains("`sslkey` is set but `sslcert` is not"),
                "{message}"
            );
            let message =
                config_error("postgres://db/pay?sslmode=require&sslrootcert=/nonexistent/ca.pem");
            assert!(
                message.contains("`sslrootcert`") && message.contains("/nonexistent/ca.pem"),
                "{message}"
            );
            // Unknown parameters are tokio-postgres' to refuse, at connect too.
            let message = config_error("postgres://db/pay?sslcrl=/tmp/crl.pem");
            assert!(message.contains("sslcrl"), "{message}");
            // Without TLS, the files are not read (libpq's behaviour).
            PgConnector::with_home(
                "postgres://db/pay?sslmode=disable&sslrootcert=/nonexistent/ca.pem",
                None,
            )
            .unwrap();
        }

        /// A server that answers PostgreSQL's SSLRequest with `N` (no TLS), then hangs up.
        async fn server_without_tls() -> u16 {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let mut request = [0u8; 8];
                    if socket.read_exact(&mut request).await.is_ok() {
                        let _ = socket.write_all(b"N").await;
                    }
                }
            });
            port
        }

        #[tokio::test]
        async fn a_server_without_tls_under_require_is_a_handshake_failure() {
            let port = server_without_tls().await;
            let connector = PgConnector::with_home(
                &format!("postgres://u@127.0.0.1:{port}/d?sslmode=require"),
                None,
            )
            .unwrap();
            let Err(ConnectionError::BadConnection(message)) = connector.connect().await else {
                panic!("connected to a server without TLS under sslmode=require");
            };
            assert!(message.starts_with(HANDSHAKE_FAILED), "{message}");
            assert!(
                message.contains("sslmode=require") && message.contains("TLS"),
                "{message}"
            );
        }

        #[test]
        fn libpq_default_root_file() {
            let home = tempfile::tempdir().unwrap();
            // verify-* without sslrootcert and without ~/.postgresql/root.crt: refused, naming the default.
            let message = match PgConnector::with_home(
                "postgres://db/pay?sslmode=verify-full",
                Some(home.path()),
            ) {
                Err(StoreError::Config(message)) => message,
                other => panic!("{:?}", other.map(|_| ())),
            };
            assert!(
                message.contains("`sslrootcert`") && message.contains("root.crt"),
                "{message}"
            );
            // With the file there, it is used by verify-* and makes prefer verify the chain.
            let ca = rcgen::generate_simple_self_signed(vec!["db".to_owned()]).unwrap();
            std::fs::write(home.path().join("root.crt"), ca.cert.pem()).unwrap();
            for mode in ["verify-full", "verify-ca", "prefer", "require"] {
                let connector = PgConnector::with_home(
                    &format!("postgres://db/pay?sslmode={mode}"),
                    Some(home.path()),
                )
                .unwrap();
                assert!(
                    connector.summary.contains("root.crt"),
                    "{mode}: {}",
                    connector.summary
                );
            }
            // A damaged default file is refused, naming it.
            std::fs::write(home.path().join("root.crt"), "not a certificate").unwrap();
            let message = match PgConnector::with_home("postgres://db/pay", Some(home.path())) {
                Err(StoreError::Config(message)) => message,
                other => panic!("{:?}", other.map(|_| ())),
            };
            assert!(
                message.contains("root.crt") && message.contains("`sslrootcert`"),
                "{message}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// MySQL / MariaDB

#[cfg(feature = "mysql")]
pub(super) use self::mysql::MysqlConnector;

#[cfg(feature = "mysql")]
mod mysql {
    use std::fmt;
    use std::path::PathBuf;

    use diesel::ConnectionError;
    use diesel_async::AsyncMysqlConnection;
    use futures_util::FutureExt;
    use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};
    use rustls_pki_types::PrivateKeyDer;

    use super::{HANDSHAKE_FAILED, Param, file_error, identity, params, with_causes};
    use crate::error::StoreError;
    use crate::tls::{self, TlsFailure};

    const BACKEND: &str = "MySQL";

    /// The MySQL client's `--ssl-mode`s.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(in crate::store::diesel) enum MysqlSslMode {
        Disabled,
        Preferred,
        Required,
        VerifyCa,
        VerifyIdentity,
    }

    impl MysqlSslMode {
        fn parse(parameter: &str, value: &str) -> Result<Self, StoreError> {
            Ok(
                match value.to_ascii_uppercase().replace('-', "_").as_str() {
                    "DISABLED" => Self::Disabled,
                    "PREFERRED" => Self::Preferred,
                    "REQUIRED" => Self::Required,
                    "VERIFY_CA" => Self::VerifyCa,
                    "VERIFY_IDENTITY" => Self::VerifyIdentity,
                    _ => {
                        return Err(StoreError::Config(format!(
                            "MySQL URL: invalid {parameter} `{value}` (expected DISABLED, PREFERRED, REQUIRED, \
                         VERIFY_CA or VERIFY_IDENTITY)"
                        )));
                    }
                },
            )
        }
    }

    impl fmt::Display for MysqlSslMode {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Self::Disabled => "DISABLED",
                Self::Preferred => "PREFERRED",
                Self::Required => "REQUIRED",
                Self::VerifyCa => "VERIFY_CA",
                Self::VerifyIdentity => "VERIFY_IDENTITY",
            })
        }
    }

    /// The TLS parameters of a URL, as written: `(name as written, value)`.
    #[derive(Debug, Default)]
    struct Requested {
        ssl_mode: Option<(String, String)>,
        ssl_ca: Option<(String, String)>,
        ssl_cert: Option<(String, String)>,
        ssl_key: Option<(String, String)>,
        require_ssl: Option<bool>,
        verify_ca: Option<bool>,
        verify_identity: Option<bool>,
        built_in_roots: Option<bool>,
    }

    /// How long a `PREFERRED` store goes on connecting in plaintext, without asking again, after the server said it
    /// offers no TLS.
    const PLAINTEXT_RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

    /// How a MySQL/MariaDB store connects: mysql_async's options (TLS included) and, for `PREFERRED`, the same
    /// without TLS for a server that offers none.
    pub(in crate::store::diesel) struct MysqlConnector {
        opts: Opts,
        plaintext_fallback: Option<Opts>,
        /// When a `PREFERRED` server last answered that it offers no TLS: for a while the next connections go
        /// plain at once instead of asking again (each ask costs a connection, and a pool opens many); after
        /// [`PLAINTEXT_RECHECK`] TLS is asked for again, so a server that turns TLS on is not left in plaintext.
        plaintext_learned: std::sync::Mutex<Option<std::time::Instant>>,
        /// For a mode that verifies the chain but not the name: see [`ChainOnly`].
        chain_only: Option<ChainOnly>,
        /// `ssl-mode=VERIFY_CA, ssl-ca=/etc/ca.pem`, for messages.
        summary: String,
    }

    /// `VERIFY_CA` over mysql_async 0.36: its "skip the host name" option (`verify_identity=false`) recognises
    /// rustls' name error by the text `NotValidForName`, which rustls 0.23 no longer prints, so the name is always
    /// checked. rustls checks the chain before the name, so a name error means the chain was good: the
    /// connection is then made again with mysql_async's host name override set to a name the certificate holds
    /// (the chain and that name are checked), and the options that worked are kept for the next connections.
    struct ChainOnly {
        ssl: SslOpts,
        learned: std::sync::Mutex<Option<Opts>>,
    }

    impl MysqlConnector {
        /// Reads `url`'s TLS parameters and the files they name.
        pub(in crate::store::diesel) fn from_url(url: &str) -> Result<Self, StoreError> {
            let (driver_url, requested) = split(url)?;
            let opts = Opts::from_url(&driver_url)
                .map_err(|e| StoreError::Config(format!("MySQL URL: {e}")))?;
            let mode = mode(&requested)?;
            // diesel-async's own `establish` sets these two; `AsyncMysqlConnection::try_from` does not. The
            // store's writes rely on CLIENT_FOUND_ROWS (see `mysql.rs`).
            let plain = OptsBuilder::from_opts(opts)
                .stmt_cache_size(0)
                .client_found_rows(true);
            let mut summary = format!("ssl-mode={mode}");
            if mode == MysqlSslMode::Disabled {
                return Ok(Self {
                    opts: plain.into(),
                    plaintext_fallback: None,
                    plaintext_learned: std::sync::Mutex::new(None),
                    chain_only: None,
                    summary,
                });
            }

            let ca = match &requested.ssl_ca {
                Some((parameter, path)) => {
                    let path = PathBuf::from(path);
                    let certificates = tls::read_certificates(&path)
                        .map_err(|e| file_error(BACKEND, parameter, &e))?;
                    summary.push_str(&format!(", {parameter}={}", path.display()));
                    Some(pem_certificates(&certificates))
                }
                None => None,
            };
            // The verification the mode asks for; a CA file always verifies the chain (as `sslrootcert` does for
            // libpq's `prefer` and `require`).
            let (check_chain, check_name) = match mode {
                MysqlSslMode::VerifyIdentity => (true, true),
                MysqlSslMode::VerifyCa => (true, false),
                _ => (ca.is_some(), false),
            };
            // mysql_async's built-in roots (Mozilla's) unless a CA file is given, then that file alone.
            let built_in_roots = requested.built_in_roots.unwrap_or(ca.is_none());
            if check_chain && ca.is_none() && !built_in_roots {
                return Err(StoreError::Config(format!(
                    "MySQL URL: ssl-mode={mode} with built_in_roots=false has no certificate to verify the server \
                     with: set `ssl-ca` to the file of the CA that signed the server's certificate"
                )));
            }
            let mut ssl = SslOpts::default()
                .with_root_certs(ca.into_iter().map(Into::into).collect())
                .with_disable_built_in_roots(!built_in_roots)
                .with_danger_accept_invalid_certs(!check_chain)
                .with_danger_skip_domain_validation(!check_name);
            if let Some(identity) = client_identity(&requested)? {
                ssl = ssl.with_client_identity(Some(identity));
            }
            let chain_only = (check_chain && !check_name).then(|| ChainOnly {
                ssl: ssl.clone(),
                learned: std::sync::Mutex::new(None),
            });
            // mysql_async moves a connection to this machine onto the server's Unix socket when it can, and with
            // TLS asks for it there too, which it cannot do on a socket: the attempt fails (an aborted connection
            // in the server's counters) and the TCP connection is kept. So with TLS, TCP from the start.
            let tls = plain.clone().ssl_opts(ssl).prefer_socket(false);
            Ok(Self {
                opts: tls.into(),
                plaintext_fallback: (mode == MysqlSslMode::Preferred).then(|| plain.into()),
                plaintext_learned: std::sync::Mutex::new(None),
                chain_only,
                summary,
            })
        }

        /// A connection, over TLS as the URL asks.
        pub(in crate::store::diesel) async fn connect(
            &self,
        ) -> diesel::ConnectionResult<AsyncMysqlConnection> {
            let learned_plain = self
                .plaintext_learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|at| at.elapsed() < PLAINTEXT_RECHECK);
            if let Some(plain) = &self.plaintext_fallback
                && learned_plain
            {
                let conn = self
                    .new_conn(plain)
                    .await
                    .map_err(|failure| self.failure(failure))?;
                return AsyncMysqlConnection::try_from(conn).await;
            }
            let learned = self.chain_only.as_ref().and_then(ChainOnly::learned);
            let conn = match self.new_conn(learned.as_ref().unwrap_or(&self.opts)).await {
                Ok(conn) => conn,
                Err(Failure::Driver(mysql_async::Error::Driver(
                    mysql_async::DriverError::NoClientSslFlagFromServer,
                ))) if self.plaintext_fallback.is_some() => {
                    // PREFERRED, and the server offers no TLS: plaintext, on a new connection (mysql_async gives
                    // up on the first one once it has asked for TLS).
                    let plain = self.plaintext_fallback.as_ref().expect("checked");
                    let conn = self
                        .new_conn(plain)
                        .await
                        .map_err(|failure| self.failure(failure))?;
                    *self
                        .plaintext_learned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
                    conn
                }
                Err(Failure::Driver(error)) => match self.chain_only_retry(&error) {
                    Some(retry) => {
                        let conn = self
                            .new_conn(&retry)
                            .await
                            .map_err(|failure| self.failure(failure))?;
                        if let Some(chain_only) = &self.chain_only {
                            *chain_only.learned.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(retry);
                        }
                        conn
                    }
                    None => return Err(self.failure(Failure::Driver(error))),
                },
                Err(failure) => return Err(self.failure(failure)),
            };
            AsyncMysqlConnection::try_from(conn).await
        }

        /// For a chain-only mode whose handshake failed on the host name alone: the options that check the chain
        /// and a name the certificate holds (see [`ChainOnly`]).
        fn chain_only_retry(&self, error: &mysql_async::Error) -> Option<Opts> {
            let chain_only = self.chain_only.as_ref()?;
            let Some(TlsFailure::NameMismatch { presented, .. }) = TlsFailure::find(error) else {
                return None;
            };
            let name = presented.iter().find_map(|name| name_to_verify(name))?;
            Some(
                OptsBuilder::from_opts(self.opts.clone())
                    .ssl_opts(
                        chain_only
                            .ssl
                            .clone()
                            .with_danger_tls_hostname_override(Some(name)),
                    )
                    .into(),
            )
        }

        /// `Conn::new`, with a panic turned into an error: mysql_async builds its rustls configuration with
        /// rustls' process-wide default provider, and rustls panics when it cannot pick one (a program that links
        /// both of rustls' providers and installs neither).
        async fn new_conn(&self, opts: &Opts) -> Result<mysql_async::Conn, Failure> {
            match std::panic::AssertUnwindSafe(mysql_async::Conn::new(opts.clone()))
                .catch_unwind()
                .await
            {
                Ok(result) => result.map_err(Failure::Driver),
                Err(panic) => Err(Failure::Panic(
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default(),
                )),
            }
        }

        fn failure(&self, failure: Failure) -> ConnectionError {
            let error = match failure {
                Failure::Driver(error) => error,
                Failure::Panic(message) => {
                    return ConnectionError::BadConnection(format!(
                        "{HANDSHAKE_FAILED} (MySQL, {}): mysql_async could not set up TLS ({}); if rustls has no \
                         process-wide provider, install one at start-up with \
                         rustls::crypto::ring::default_provider().install_default()",
                        self.summary,
                        message.trim()
                    ));
                }
            };
            if let Some(failure) = TlsFailure::find(&error) {
                return ConnectionError::BadConnection(format!(
                    "{HANDSHAKE_FAILED} (MySQL, {}): {}",
                    self.summary,
                    failure.explain("`ssl-ca`", "`ssl-cert` and `ssl-key`")
                ));
            }
            if let mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) =
                error
            {
                return ConnectionError::BadConnection(format!(
                    "{HANDSHAKE_FAILED} (MySQL, {}): the server does not offer TLS; enable TLS on the server, \
                     or connect with ssl-mode=PREFERRED or DISABLED",
                    self.summary
                ));
            }
            ConnectionError::BadConnection(with_causes(&error))
        }
    }

    impl ChainOnly {
        fn learned(&self) -> Option<Opts> {
            self.learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    /// A name a certificate holds, as [`TlsFailure::NameMismatch`] reports it (`db.internal`, `10.0.0.5`, or
    /// webpki's own `DnsName("db.internal")`, `IpAddress(10.0.0.5)`), as a name to verify against: a wildcard
    /// gets a label of its own; a name of another kind (a directory name, a URI) is no use.
    pub(super) fn name_to_verify(presented: &str) -> Option<String> {
        let name = presented
            .strip_prefix("DnsName(\"")
            .and_then(|rest| rest.strip_suffix("\")"))
            .or_else(|| {
                presented
                    .strip_prefix("IpAddress(")
                    .and_then(|rest| rest.strip_suffix(')'))
            })
            .unwrap_or(presented);
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return Some(ip.to_string());
        }
        if name == "DirectoryName" || name.contains(['(', '"', ':', '/']) {
            return None;
        }
        let name = match name.strip_prefix("*.") {
            Some(parent) => format!("paynet-verify-ca.{parent}"),
            None => name.to_owned(),
        };
        matches!(
            rustls_pki_types::ServerName::try_from(name.as_str()),
            Ok(rustls_pki_types::ServerName::DnsName(_))
        )
        .then_some(name)
    }

    enum Failure {
        Driver(mysql_async::Error),
        Panic(String),
    }

    /// The URL with the parameters read here taken out (mysql_async refuses those it does not know), and those
    /// parameters.
    fn split(url: &str) -> Result<(String, Requested), StoreError> {
        let mut parsed =
            ::url::Url::parse(url).map_err(|e| StoreError::Config(format!("MySQL URL: {e}")))?;
        let query = parsed.query().unwrap_or("").to_owned();
        let mut requested = Requested::default();
        let mut kept = Vec::new();
        for Param { raw, name, value } in params(&query) {
            let flag = |value: &str| match value {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(StoreError::Config(format!(
                    "MySQL URL: `{name}` must be true or false, not `{value}`"
                ))),
            };
            let named = || Some((name.clone(), value.clone()));
            match name.as_str() {
                "ssl-mode" | "ssl_mode" | "sslmode" => requested.ssl_mode = named(),
                "ssl-ca" | "ssl_ca" => requested.ssl_ca = named(),
                "ssl-cert" | "ssl_cert" => requested.ssl_cert = named(),
                "ssl-key" | "ssl_key" => requested.ssl_key = named(),
                "require_ssl" => requested.require_ssl = Some(flag(&value)?),
                "verify_ca" => requested.verify_ca = Some(flag(&value)?),
                "verify_identity" => requested.verify_identity = Some(flag(&value)?),
                "built_in_roots" => requested.built_in_roots = Some(flag(&value)?),
                _ => kept.push(raw),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.set_query(Some(&kept.join("&")));
        }
        Ok((parsed.into(), requested))
    }

    /// The mode the parameters ask for: `ssl-mode`, or mysql_async's flags (`require_ssl=true` verifies the chain
    /// and the name unless `verify_ca=false` or `verify_identity=false` say otherwise); `ssl-ca` alone means
    /// `VERIFY_CA`; nothing at all, `PREFERRED`, the MySQL client's default.
    fn mode(requested: &Requested) -> Result<MysqlSslMode, StoreError> {
        let flags = [
            ("require_ssl", requested.require_ssl),
            ("verify_ca", requested.verify_ca),
            ("verify_identity", requested.verify_identity),
        ];
        let flag_given = flags.iter().find(|(_, value)| value.is_some());
        if let Some((parameter, value)) = &requested.ssl_mode {
            if let Some((flag, _)) = flag_given {
                return Err(StoreError::Config(format!(
                    "MySQL URL: `{parameter}` and mysql_async's `{flag}` are both set; use one or the other"
                )));
            }
            return MysqlSslMode::parse(parameter, value);
        }
        match requested.require_ssl {
            Some(true) => Ok(match (requested.verify_ca, requested.verify_identity) {
                (Some(false), _) => MysqlSslMode::Required,
                (_, Some(false)) => MysqlSslMode::VerifyCa,
                _ => MysqlSslMode::VerifyIdentity,
            }),
            Some(false) => Ok(MysqlSslMode::Disabled),
            None => {
                if let Some((flag, _)) = flag_given {
                    // mysql_async would ignore it silently, leaving the connection in plaintext.
                    return Err(StoreError::Config(format!(
                        "MySQL URL: `{flag}` has no effect without require_ssl=true"
                    )));
                }
                Ok(if requested.ssl_ca.is_some() {
                    MysqlSslMode::VerifyCa
                } else {
                    MysqlSslMode::Preferred
                })
            }
        }
    }

    /// The client certificate (`ssl-cert` and `ssl-key`, both or neither), as mysql_async reads it: its rustls
    /// build takes an RSA key in PKCS#1 only, so a PKCS#8 RSA key is unwrapped and any other key refused.
    fn client_identity(requested: &Requested) -> Result<Option<ClientIdentity>, StoreError> {
        let ((cert_param, cert), (key_param, key)) = match (&requested.ssl_cert, &requested.ssl_key)
        {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some((given, _)), None) | (None, Some((given, _))) => {
                let missing = if requested.ssl_cert.is_some() {
                    "ssl-key"
                } else {
                    "ssl-cert"
                };
                return Err(StoreError::Config(format!(
                    "MySQL URL: `{given}` is set but `{missing}` is not; a client certificate needs both"
                )));
            }
        };
        let (cert_path, key_path) = (PathBuf::from(cert), PathBuf::from(key));
        let (chain, private) = identity(BACKEND, (cert_param, &cert_path), (key_param, &key_path))?;
        let pkcs1 = match &private {
            PrivateKeyDer::Pkcs1(key) => Some(key.secret_pkcs1_der().to_vec()),
            PrivateKeyDer::Pkcs8(key) => rsa_in_pkcs8(key.secret_pkcs8_der()),
            _ => None,
        };
        let Some(pkcs1) = pkcs1 else {
            return Err(StoreError::Config(format!(
                "MySQL URL parameter `{key_param}`: {} is not an RSA key; mysql_async (the MySQL driver) accepts \
                 only RSA client keys over rustls",
                key_path.display()
            )));
        };
        // DER is not UTF-8, which is how mysql_async tells it from PEM.
        Ok(Some(ClientIdentity::new(
            pem_certificates(&chain).into(),
            pkcs1.into(),
        )))
    }

    fn pem_certificates(certificates: &[rustls_pki_types::CertificateDer<'_>]) -> Vec<u8> {
        use base64::Engine as _;
        let mut pem = String::new();
        for certificate in certificates {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }

    /// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`, if the key is RSA.
    pub(super) fn rsa_in_pkcs8(der: &[u8]) -> Option<Vec<u8>> {
        const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let (tag, info, _) = der_element(der)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, _version, rest) = der_element(info)?;
        if tag != 0x02 {
            return None;
        }
        let (tag, algorithm, rest) = der_element(rest)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, oid, _) = der_element(algorithm)?;
        if tag != 0x06 || oid != RSA_ENCRYPTION {
            return None;
        }
        let (tag, key, _) = der_element(rest)?;
        (tag == 0x04).then(|| key.to_vec())
    }

    /// One DER element: its tag, its contents and what follows it.
    fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
            (length, &rest[count..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn config_error(url: &str) -> String {
            match MysqlConnector::from_url(url) {
                Err(StoreError::Config(message)) => message,
                Err(other) => panic!("not a configuration error: {other:?}"),
                Ok(_) => panic!("{url} was accepted"),
            }
        }

        fn mode_of(url: &str) -> MysqlSslMode {
            let (_, requested) = split(url).unwrap();
            mode(&requested).unwrap()
        }

        #[test]
        fn modes_from_either_family_of_parameters() {
            for (query, expected) in [
                ("", MysqlSslMode::Preferred),
                ("?ssl-mode=disabled", MysqlSslMode::Disabled),
                ("?sslmode=PREFERRED", MysqlSslMode::Preferred),
                ("?ssl_mode=Required", MysqlSslMode::Required),
                ("?ssl-mode=verify-ca", MysqlSslMode::VerifyCa),
                ("?ssl-mode=VERIFY_IDENTITY", MysqlSslMode::VerifyIdentity),
                ("?ssl-ca=/tmp/ca.pem", MysqlSslMode::VerifyCa),
                ("?require_ssl=false", MysqlSslMode::Disabled),
                ("?require_ssl=true", MysqlSslMode::VerifyIdentity),
                (
                    "?require_ssl=true&verify_identity=false",
                    MysqlSslMode::VerifyCa,
                ),
                ("?require_ssl=true&verify_ca=false", MysqlSslMode::Required),
            ] {
                assert_eq!(
                    mode_of(&format!("mysql://db/pay{query}")),
                    expected,
                    "{query}"
                );
            }
        }

        #[test]
        fn takes_out_its_parameters_and_keeps_the_drivers() {
            let (driver, requested) = split(
                "mysql://app:pw@db:3306/pay?ssl-mode=REQUIRED&pool_min=0&ssl-ca=%2Ftmp%2Fca.pem&prefer_socket=true",
            )
            .unwrap();
            assert_eq!(
                driver,
                "mysql://app:pw@db:3306/pay?pool_min=0&prefer_socket=true"
            );
            assert_eq!(requested.ssl_ca.unwrap().1, "/tmp/ca.pem");
            assert_eq!(
                split("mysql://db/pay?sslmode=disabled").unwrap().0,
                "mysql://db/pay"
            );
        }

        #[test]
        fn refusals_name_the_parameter() {
            let message = config_error("mysql://db/pay?ssl-mode=REQUIRED&require_ssl=true");
            assert!(
                message.contains("`ssl-mode`") && message.contains("`require_ssl`"),
                "{message}"
            );
            let message = config_error("mysql://db/pay?verify_identity=false");
            assert!(message.contains("require_ssl=true"), "{message}");
            let message = config_error("mysql://db/pay?ssl-mode=SOMETIMES");
            assert!(message.contains("SOMETIMES"), "{message}");
            let message = config_error("mysql://db/pay?require_ssl=yes");
            assert!(message.contains("`require_ssl`"), "{message}");
            let message =
                config_error("mysql://db/pay?ssl-mode=REQUIRED&ssl_ca=/nonexistent/ca.pem");
            assert!(
                message.contains("`ssl_ca`") && message.contains("/nonexistent/ca.pem"),
                "{message}"
            );
            let message = config_error("mysql://db/pay?ssl-cert=/tmp/c.pem");
            assert!(
                message.contains("`ssl-cert` is set but `ssl-key` is not"),
                "{message}"
            );
            let message = config_error("mysql://db/pay?ssl-mode=VERIFY_CA&built_in_roots=false");
            assert!(message.contains("`ssl-ca`"), "{message}");
            // mysql_async's own refusal of what it does not know, at connect.
            let message = config_error("mysql://db/pay?ssl-capath=/etc/ssl/certs");
            assert!(message.contains("ssl-capath"), "{message}");
        }

        #[test]
        fn an_ec_client_key_is_refused_by_name() {
            let dir = tempfile::tempdir().unwrap();
            let certified = rcgen::generate_simple_self_signed(vec!["client".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            let message = config_error(&format!(
                "mysql://db/pay?ssl-mode=REQUIRED&ssl-cert={}&ssl-key={}",
                cert.display(),
                key.display()
            ));
            assert!(
                message.contains("`ssl-key`") && message.contains("not an RSA key"),
                "{message}"
            );
        }

        #[test]
        fn names_to_verify_from_webpkis_description() {
            assert_eq!(
                name_to_verify(r#"DnsName("db.internal")"#).as_deref(),
                Some("db.internal")
            );
            assert_eq!(
                name_to_verify(r#"DnsName("*.db.internal")"#).as_deref(),
                Some("paynet-verify-ca.db.internal")
            );
            assert_eq!(
                name_to_verify("IpAddress(10.0.0.5)").as_deref(),
                Some("10.0.0.5")
            );
            assert_eq!(name_to_verify("IpAddress(::1)").as_deref(), Some("::1"));
            assert_eq!(
                name_to_verify("db.internal").as_deref(),
                Some("db.internal")
            );
            assert_eq!(
                name_to_verify("*.db.internal").as_deref(),
                Some("paynet-verify-ca.db.internal")
            );
            assert_eq!(name_to_verify("10.0.0.5").as_deref(), Some("10.0.0.5"));
            assert_eq!(name_to_verify("DirectoryName"), None);
            assert_eq!(name_to_verify("Unsupported(0x88)"), None);
            assert_eq!(
                name_to_verify(r#"UniformResourceIdentifier("spiffe://x")"#),
                None
            );
        }

        #[test]
        fn der_reading_refuses_what_is_not_pkcs8_rsa() {
            assert_eq!(rsa_in_pkcs8(&[]), None);
            assert_eq!(rsa_in_pkcs8(&[0x30, 0x05, 0x02, 0x01]), None);
            // SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption, NULL }, OCTET STRING { 01 02 } }
            let mut der = vec![0x30, 0x16, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09];
            der.extend_from_slice(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]);
            der.extend_from_slice(&[0x05, 0x00, 0x04, 0x02, 0x01, 0x02]);
            assert_eq!(rsa_in_pkcs8(&der), Some(vec![0x01, 0x02]));
            der[10] = 0x2b; // another algorithm
            assert_eq!(rsa_in_pkcs8(&der), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_the_drivers() {
        assert_eq!(percent_decode("%2Ftmp%2Fa+b.pem"), "/tmp/a+b.pem");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        let parsed = params("a=1&&b&c=%3D");
        let pairs: Vec<_> = parsed
            .iter()
            .map(|p| (p.raw, p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("a=1", "a", "1"), ("b", "b", ""), ("c=%3D", "c", "=")]
        );
    }
}
