//! Where a store URL points: the backend it names, the connection string each driver wants, and the URL with its
//! password hidden for messages. Parsing happens before any cargo feature is consulted, so that a URL for a backend
//! left out of the build gets a message naming the missing feature rather than "unsupported scheme".

use super::Backend;
use crate::error::StoreError;

/// Where a URL points, before any feature is consulted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) backend: Backend,
    /// What the backend's driver takes: the URL in a scheme it knows, or SQLite's path.
    pub(super) address: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Self, StoreError> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(unsupported_scheme(url));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Target::new(Backend::Postgres, url.to_owned())),
            // mysql_async only knows `mysql://`; MariaDB users tend to write what they run.
            "mysql" => Ok(Target::new(Backend::Mysql, url.to_owned())),
            "mariadb" => Ok(Target::new(Backend::Mysql, format!("mysql:{rest}"))),
            "sqlite" => {
                // `sqlite::memory:` and `sqlite:path` are sqlx's spellings, `sqlite://path` the URL-like one; a
                // `file:` URI after the scheme reaches SQLite as it is (diesel opens with SQLITE_OPEN_URI).
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(StoreError::Config(
                        "SQLite store URL has no path (use sqlite://path/to/file.db or sqlite::memory:)".into(),
                    ));
                }
                Ok(Target::new(Backend::Sqlite, path.to_owned()))
            }
            _ => Err(unsupported_scheme(url)),
        }
    }

    fn new(backend: Backend, address: String) -> Self {
        Self { backend, address }
    }
}

fn unsupported_scheme(url: &str) -> StoreError {
    // Only the scheme: the rest of the URL may hold a password.
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    StoreError::Config(format!(
        "unsupported token store URL scheme `{scheme}` (expected memory:, sqlite://, postgres://, postgresql://, \
         mysql://, mariadb://, redis:// or rediss://)"
    ))
}

#[cfg(any(
    not(feature = "postgres"),
    not(feature = "sqlite"),
    not(feature = "mysql")
))]
pub(super) fn not_compiled(backend: Backend) -> StoreError {
    let feature = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
        Backend::Mysql => "mysql",
    };
    StoreError::Config(format!(
        "the token store URL is for {backend}, but paynet-auth was built without its `{feature}` feature"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let parsed = |url: &str| Target::parse(url).ok();
        let target = |backend, address: &str| Some(Target::new(backend, address.to_owned()));
        assert_eq!(
            parsed("sqlite::memory:"),
            target(Backend::Sqlite, ":memory:")
        );
        assert_eq!(
            parsed("sqlite://:memory:"),
            target(Backend::Sqlite, ":memory:")
        );
        assert_eq!(
            parsed("sqlite:///tmp/a.db"),
            target(Backend::Sqlite, "/tmp/a.db")
        );
        assert_eq!(parsed("sqlite://a.db"), target(Backend::Sqlite, "a.db"));
        assert_eq!(parsed("sqlite:a.db"), target(Backend::Sqlite, "a.db"));
        assert!(matches!(
            Target::parse("sqlite://"),
            Err(StoreError::Config(_))
        ));
        assert_eq!(
            parsed("PostgreSQL://h/d"),
            target(Backend::Postgres, "PostgreSQL://h/d")
        );
        assert_eq!(
            parsed("mariadb://h/d"),
            target(Backend::Mysql, "mysql://h/d")
        );
        let err = Target::parse("redis://:secret@h")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`redis`") && !err.contains("secret"), "{err}");
        assert!(Target::parse("no scheme").is_err());
    }
}
