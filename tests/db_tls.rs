//! TLS between the token store and its databases, against real servers: the machine's PostgreSQL
//! (`PAYNET_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`; TLS on, with Debian's snakeoil
//! certificate for `localhost`), and a MariaDB of each test's own with TLS required (the machine's has TLS off;
//! see `support/tls_mariadb.rs`).
//!
//! That a store connection is encrypted is read on the server, from another session: `pg_stat_ssl` for the
//! session with the store's `application_name`, `performance_schema` for the MariaDB sessions of the store's
//! account.
#![cfg(all(feature = "postgres", feature = "mysql"))]

#[allow(dead_code)]
#[path = "support/servers.rs"]
mod servers;
#[path = "support/tls_mariadb.rs"]
mod tls_mariadb;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use paynet_auth::StoreError;
use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
use secrecy::ExposeSecret;
use servers::postgres_url;
use tls_mariadb::{TestCa, TlsMariaDb, X509_USER};

/// The test PostgreSQL's URL with another host (if given) and these parameters added.
fn pg_url(host: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&postgres_url()).expect("PAYNET_TEST_POSTGRES_URL is a URL");
    if let Some(host) = host {
        url.set_host(Some(host)).unwrap();
    }
    for (name, value) in params {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.into()
}

/// A name no other test (or run) uses.
fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "db_tls-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn options() -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    }
}

fn record(generation: u64) -> TokenRecord {
    TokenRecord {
        token: format!("token-{generation}").into(),
        generation: Generation(generation),
        obtained_at_ms: 1_700_000_000_000,
        expires_at_ms: None,
        meta: LoginMeta::default(),
        written_by: "db-tls-test:1:abcd".into(),
    }
}

/// Creates the tables, then writes and reads a row back: the store works over its connections.
async fn round_trip(store: &DieselStore) {
    store.migrate().await.expect("migrations");
    let key = unique("key");
    assert!(store.save(&key, &record(1)).await.expect("save"));
    let loaded = store.load(&key).await.expect("load").expect("a row");
    assert_eq!(loaded.token.expose_secret(), "token-1");
    store.clear(&key).await.unwrap();
}

/// A plaintext session of the test's own to the test PostgreSQL, to look at the server's views.
async fn raw_postgres() -> tokio_postgres::Client {
    let url = pg_url(None, &[("sslmode", "disable")]);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Whether each open session named `application_name` is encrypted, as the server sees it.
async fn pg_sessions_tls(application_name: &str) -> Vec<bool> {
    raw_postgres()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The certificate the test PostgreSQL serves (self-signed, for `localhost`), as the server names it.
async fn server_certificate() -> PathBuf {
    let row = raw_postgres()
        .await
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap();
    let path = PathBuf::from(row.get::<_, String>(0));
    assert!(path.is_file(), "{} is not readable here", path.display());
    path
}

fn unavailable_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(error @ StoreError::Unavailable { .. }) => {
            paynet_auth::error::Chain(&error).to_string()
        }
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
}

fn config_message<T>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Config(message)) => message,
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("expected a configuration error, the store was created"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_sslmode_require_connects_over_tls() {
    let name = unique("require");
    let url = pg_url(None, &[("sslmode", "require"), ("application_name", &name)]);
    let store = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&store).await;
    // The pool keeps the connection the last operation used.
    let sessions = pg_sessions_tls(&name).await;
    assert!(!sessions.is_empty(), "no session named {name}");
    assert!(sessions.iter().all(|&tls| tls), "{sessions:?}");
}

#[tokio::test]
async fn postgres_sslmode_disable_is_plaintext() {
    let name = unique("disable");
    let url = pg_url(None, &[("sslmode", "disable"), ("application_name", &name)]);
    let store = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&store).await;
    let sessions = pg_sessions_tls(&name).await;
    assert!(!sessions.is_empty(), "no session named {name}");
    assert!(sessions.iter().all(|&tls| !tls), "{sessions:?}");
}

#[tokio::test]
async fn postgres_default_prefers_tls() {
    let name = unique("prefer");
    let url = pg_url(None, &[("application_name", &name)]);
    let store = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&store).await;
    let sessions = pg_sessions_tls(&name).await;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|&tls| tls),
        "{sessions:?}"
    );
}

#[tokio::test]
async fn postgres_verify_full_to_the_certificates_name_works() {
    let root = server_certificate().await;
    let name = unique("verify-full");
    let url = pg_url(
        Some("localhost"),
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", root.to_str().unwrap()),
            ("application_name", &name),
        ],
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&store).await;
    let sessions = pg_sessions_tls(&name).await;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|&tls| tls),
        "{sessions:?}"
    );
}

#[tokio::test]
async fn postgres_verify_full_to_another_name_is_refused_naming_both() {
    let root = server_certificate().await;
    let url = pg_url(
        Some("127.0.0.1"),
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", root.to_str().unwrap()),
        ],
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    // The migration's own connection, and a pooled one (after the pool's retries).
    let migrate = unavailable_message(store.migrate().await);
    let load = unavailable_message(store.load("k").await);
    for message in [migrate, load] {
        assert!(message.contains("TLS handshake"), "{message}");
        assert!(
            message.contains("localhost") && message.contains("connection is to 127.0.0.1"),
            "{message}"
        );
        // What went wrong comes first, not a bare "no connection".
        let cause = message.split_once("is unreachable: ").unwrap().1;
        assert!(cause.starts_with("TLS handshake"), "{message}");
    }
}

#[tokio::test]
async fn postgres_verify_ca_with_another_ca_is_refused_as_unknown_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new("not the server's CA").write(dir.path(), "other-ca.pem");
    let url = pg_url(
        None,
        &[
            ("sslmode", "verify-ca"),
            ("sslrootcert", other.to_str().unwrap()),
        ],
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let message = unavailable_message(store.load("k").await);
    assert!(
        message.contains("unknown issuer") && message.contains("`sslrootcert`"),
        "{message}"
    );
}

#[tokio::test]
async fn postgres_verify_ca_with_the_servers_certificate_works_by_any_name() {
    // verify-ca checks the chain only: 127.0.0.1 is not in the certificate, and that is fine.
    let root = server_certificate().await;
    let url = pg_url(
        Some("127.0.0.1"),
        &[
            ("sslmode", "verify-ca"),
            ("sslrootcert", root.to_str().unwrap()),
        ],
    );
    round_trip(&DieselStore::connect(&url, options()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_missing_root_certificate_is_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let url = pg_url(
        None,
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", missing.to_str().unwrap()),
        ],
    );
    let message = config_message(DieselStore::connect(&url, options()).await);
    assert!(
        message.contains("`sslrootcert`") && message.contains(missing.to_str().unwrap()),
        "{message}"
    );
}

#[tokio::test]
async fn postgres_migrations_go_through_the_tls_connection() {
    // With the server's certificate as root, the migrations run over verify-full …
    let root = server_certificate().await;
    let url = pg_url(
        Some("localhost"),
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", root.to_str().unwrap()),
        ],
    );
    DieselStore::connect(&url, options())
        .await
        .unwrap()
        .migrate()
        .await
        .expect("migrations over verify-full");

    // … and with a root that did not sign it, they are refused: their connection is the TLS one.
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new("not the server's CA").write(dir.path(), "other-ca.pem");
    let url = pg_url(
        Some("localhost"),
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", other.to_str().unwrap()),
        ],
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let message = unavailable_message(store.migrate().await);
    assert!(message.contains("unknown issuer"), "{message}");
}

// ---------------------------------------------------------------------------------------------------------------
// MariaDB

#[tokio::test]
async fn mariadb_verified_tls_works_for_the_store_and_its_migrations() {
    let server = TlsMariaDb::start(&["localhost", "127.0.0.1"]).await;
    let ca = server.ca_file.display().to_string();
    let url = server.url(
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&store).await;
    let ciphers = server.ciphers_of(tls_mariadb::USER).await;
    assert!(!ciphers.is_empty(), "no session of the store's account");
    assert!(
        ciphers.iter().all(|cipher| !cipher.is_empty()),
        "{ciphers:?}"
    );
    // Nor did any connection attempt fail on the way (mysql_async trying the server's Unix socket, say).
    assert_eq!(server.aborted_connects().await, 0);

    // mysql_async's own parameter names, with the CA: the same.
    let url = server.url("localhost", &format!("require_ssl=true&ssl_ca={ca}"));
    round_trip(&DieselStore::connect(&url, options()).await.unwrap()).await;
}

#[tokio::test]
async fn mariadb_with_a_ca_that_did_not_sign_the_server_is_refused() {
    let server = TlsMariaDb::start(&["localhost", "127.0.0.1"]).await;
    let other = TestCa::new("not the server's CA").write(server.dir(), "other-ca.pem");
    let url = server.url(
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_CA&ssl-ca={}", other.display()),
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let migrate = unavailable_message(store.migrate().await);
    let load = unavailable_message(store.load("k").await);
    for message in [migrate, load] {
        assert!(
            message.contains("TLS handshake")
                && message.contains("unknown issuer")
                && message.contains("`ssl-ca`"),
            "{message}"
        );
    }

    // Without verification (REQUIRED, no CA; PREFERRED, the default), the same server is reached, over TLS.
    let url = server.url("127.0.0.1", "ssl-mode=REQUIRED");
    let required = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&required).await;
    let preferred = DieselStore::connect(&server.url("127.0.0.1", ""), options())
        .await
        .unwrap();
    round_trip(&preferred).await;
    let ciphers = server.ciphers_of(tls_mariadb::USER).await;
    assert!(
        !ciphers.is_empty() && ciphers.iter().all(|cipher| !cipher.is_empty()),
        "{ciphers:?}"
    );
}

#[tokio::test]
async fn mariadb_verify_ca_skips_the_name_and_verify_identity_checks_it() {
    // A certificate for `localhost` only, reached as 127.0.0.1.
    let server = TlsMariaDb::start(&["localhost"]).await;
    let ca = server.ca_file.display().to_string();
    for query in [
        format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"),
        format!("require_ssl=true&verify_identity=false&ssl-ca={ca}"),
    ] {
        let url = server.url("127.0.0.1", &query);
        let store = DieselStore::connect(&url, options()).await.unwrap();
        round_trip(&store).await;
        let ciphers = server.ciphers_of(tls_mariadb::USER).await;
        assert!(
            !ciphers.is_empty() && ciphers.iter().all(|cipher| !cipher.is_empty()),
            "{query}: {ciphers:?}"
        );
    }

    let url = server.url(
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    );
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let message = unavailable_message(store.migrate().await);
    assert!(
        message.contains("localhost") && message.contains("connection is to 127.0.0.1"),
        "{message}"
    );
}

#[tokio::test]
async fn mariadb_client_certificate() {
    let server = TlsMariaDb::start(&["localhost", "127.0.0.1"]).await;
    let (cert, key) = server.ca.issue_rsa_client(server.dir());
    let ca = server.ca_file.display().to_string();

    // The account requires a client certificate: without one, the server refuses the login.
    let url = server.url_as(
        X509_USER,
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"),
    );
    // A refusal of the account is `Denied`, not an outage to wait out.
    let store = DieselStore::connect(&url, options()).await.unwrap();
    let message = match store.migrate().await {
        Err(error @ StoreError::Denied { .. }) => paynet_auth::error::Chain(&error).to_string(),
        other => panic!("expected the store to deny the account, got {other:?}"),
    };
    assert!(message.contains("Access denied"), "{message}");

    // With `ssl-cert` and `ssl-key` (an RSA key in PKCS#8, unwrapped for mysql_async), it logs in.
    let url = server.url_as(
        X509_USER,
        "127.0.0.1",
        &format!(
            "ssl-mode=VERIFY_CA&ssl-ca={ca}&ssl-cert={}&ssl-key={}",
            cert.display(),
            key.display()
        ),
    );
    round_trip(&DieselStore::connect(&url, options()).await.unwrap()).await;
}

#[tokio::test]
async fn mysql_preferred_falls_back_to_plaintext_when_the_server_has_no_tls() {
    // The machine's own MariaDB (TLS off on these machines); PREFERRED is the default.
    let url = servers::mysql_url();
    let have_ssl = {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(&url)
            .await
            .expect("the test MariaDB");
        let row: Option<(String, String)> = conn
            .query_first("SHOW VARIABLES LIKE 'have_ssl'")
            .await
            .unwrap();
        let _ = conn.disconnect().await;
        row.map(|(_, value)| value)
    };
    assert_ne!(
        have_ssl.as_deref(),
        Some("YES"),
        "this test needs a MariaDB/MySQL without TLS at {url} (have_ssl=YES)"
    );
    let preferred = DieselStore::connect(&url, options()).await.unwrap();
    round_trip(&preferred).await;
    // Once the server has said it has no TLS, new connections go plain at once: a migration (on a dedicated
    // connection) costs the server as many connections as it does for a store that never asks for TLS.
    let disabled_url = format!(
        "{url}{}ssl-mode=DISABLED",
        if url.contains('?') { '&' } else { '?' }
    );
    let disabled = DieselStore::connect(&disabled_url, options())
        .await
        .unwrap();
    let cost = |store: DieselStore| {
        let url = url.clone();
        async move {
            let before = server_connections(&url).await;
            store.migrate().await.unwrap();
            server_connections(&url).await - before
        }
    };
    assert_eq!(cost(preferred).await, cost(disabled).await);
    // And with TLS required, the same server is refused, saying why.
    let required = format!(
        "{url}{}ssl-mode=REQUIRED",
        if url.contains('?') { '&' } else { '?' }
    );
    let store = DieselStore::connect(&required, options()).await.unwrap();
    let message = unavailable_message(store.migrate().await);
    assert!(message.contains("does not offer TLS"), "{message}");
}

/// The server's count of connection attempts so far (`Connections`), read on a connection of its own.
async fn server_connections(url: &str) -> u64 {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(url)
        .await
        .expect("the test MariaDB");
    let row: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Connections'")
        .await
        .unwrap();
    let _ = conn.disconnect().await;
    row.expect("the Connections counter").1
}
