//! A Redis store URL: `redis://` or `rediss://` (TLS), the database number, and the TLS files named as the
//! PostgreSQL store names them (`sslrootcert`, `sslcert`, `sslkey`), read and checked at connect time so that an
//! unusable file is refused at start-up, naming its parameter and the file.

use std::path::Path;

use crate::error::StoreError;
use crate::tls::PemFileError;

/// What [`parse`] makes of a URL.
pub(super) struct Address {
    /// The client the store's connection and the process's pub/sub connection are made with.
    pub(super) client: redis::Client,
    /// The database number (`/N`; 0 without a path): it names the wake-up channel, since Redis pub/sub channels
    /// are shared by every database of a server.
    pub(super) database: i64,
}

fn file_error(parameter: &str, error: &PemFileError) -> StoreError {
    StoreError::Config(format!("Redis URL parameter `{parameter}`: {error}"))
}

/// Reads `url`; fails with [`StoreError::Config`] (never showing the password) for anything that cannot work.
pub(super) fn parse(url: &str) -> Result<Address, StoreError> {
    let mut parsed = url::Url::parse(url).map_err(|e| {
        StoreError::Config(format!(
            "Redis URL {} does not parse ({e})",
            crate::redact::url(url)
        ))
    })?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(StoreError::Config(format!(
                "unsupported Redis URL scheme `{other}` (expected redis:// or rediss://)"
            )));
        }
    };
    let database = match parsed.path().trim_matches('/') {
        "" => 0,
        path => path
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                StoreError::Config(format!(
                    "Redis URL path `/{path}` is not a database number (redis://host:6379/N)"
                ))
            })?,
    };

    let (mut rootcert, mut cert, mut key) = (None, None, None);
    for (name, value) in parsed.query_pairs() {
        let slot = match &*name {
            "sslrootcert" => &mut rootcert,
            "sslcert" => &mut cert,
            "sslkey" => &mut key,
            other => {
                return Err(StoreError::Config(format!(
                    "Redis URL parameter `{other}` is not known (the store takes sslrootcert, sslcert and sslkey, \
                     with rediss://)"
                )));
            }
        };
        *slot = Some(value.into_owned());
    }
    let has_tls_files = rootcert.is_some() || cert.is_some() || key.is_some();
    if has_tls_files && !tls {
        return Err(StoreError::Config(
            "Redis URL has sslrootcert, sslcert or sslkey but the scheme redis:// connects in plaintext; use \
             rediss:// for TLS"
                .into(),
        ));
    }
    // The redis crate reads the rest; these parameters are the store's.
    parsed.set_query(None);

    let client = if has_tls_files {
        let root_cert = rootcert
            .map(|path| read_pem("sslrootcert", &path, crate::tls::read_certificates))
            .transpose()?;
        let client_tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                let (cert_path, key_path) = (Path::new(&cert), Path::new(&key));
                // Checked here for a message naming the file; the redis crate parses the bytes again.
                crate::tls::read_identity(cert_path, key_path).map_err(|error| {
                    let parameter = if error.path == cert_path {
                        "sslcert"
                    } else {
                        "sslkey"
                    };
                    file_error(parameter, &error)
                })?;
                Some(redis::ClientTlsConfig {
                    client_cert: read_bytes("sslcert", cert_path)?,
                    client_key: read_bytes("sslkey", key_path)?,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(StoreError::Config(
                    "Redis URL parameter `sslcert` needs `sslkey` (a client certificate and its key, both or \
                     neither)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(StoreError::Config(
                    "Redis URL parameter `sslkey` needs `sslcert` (a client certificate and its key, both or \
                     neither)"
                        .into(),
                ));
            }
        };
        redis::Client::build_with_tls(
            parsed.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    } else {
        redis::Client::open(parsed.as_str())
    }
    .map_err(|e| {
        StoreError::Config(format!(
            "Redis URL {} cannot be used: {e}",
            crate::redact::url(url)
        ))
    })?;
    Ok(Address { client, database })
}

/// The bytes of a PEM file once `check` found it usable.
fn read_pem<T>(
    parameter: &str,
    path: &str,
    check: impl FnOnce(&Path) -> Result<T, PemFileError>,
) -> Result<Vec<u8>, StoreError> {
    let path = Path::new(path);
    check(path).map_err(|error| file_error(parameter, &error))?;
    read_bytes(parameter, path)
}

fn read_bytes(parameter: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        file_error(
            parameter,
            &PemFileError {
                path: path.to_owned(),
                reason: format!("cannot be read ({e})"),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match parse(url) {
            Err(StoreError::Config(message)) => message,
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    #[test]
    fn reads_the_database_number_and_refuses_what_cannot_work() {
        assert_eq!(parse("redis://127.0.0.1:6379").unwrap().database, 0);
        assert_eq!(parse("redis://:pw@127.0.0.1:6379/7").unwrap().database, 7);
        let message = refused("redis://:hunter2@h/x");
        assert!(
            message.contains("`/x`") && !message.contains("hunter2"),
            "{message}"
        );
        let message = refused("redis://:hunter2@h/0?sslrootcert=/ca.pem");
        assert!(
            message.contains("rediss://") && !message.contains("hunter2"),
            "{message}"
        );
        let message = refused("redis://h/0?timeout=5");
        assert!(message.contains("`timeout`"), "{message}");
        let message = refused("rediss://h/0?sslcert=/c.pem");
        assert!(message.contains("`sslcert` needs `sslkey`"), "{message}");
        let message = refused("rediss://h/0?sslrootcert=/nonexistent/ca.pem");
        assert!(
            message.contains("`sslrootcert`")
                && message.contains("/nonexistent/ca.pem: cannot be read"),
            "{message}"
        );
        assert!(refused("memcached://h").contains("`memcached`"));
    }
}
