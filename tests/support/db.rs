//! The databases the store tests run against: PostgreSQL (`PAYNET_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), MariaDB/MySQL (`PAYNET_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`) and SQLite files in temporary directories, with raw connections to look at
//! rows behind the store's back.

use base64::Engine as _;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection};
use paynet_auth::store::{DieselStore, StoreOptions, TokenStore};
use secrecy::SecretString;
use tempfile::TempDir;

pub type SqliteConnection =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

diesel::table! {
    paynet_tokens (credential_key) {
        credential_key -> Text,
        token -> Text,
        nonce -> Nullable<Text>,
        generation -> BigInt,
        obtained_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        agent_id -> Nullable<Text>,
        terminal_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        user_login -> Nullable<Text>,
        written_by -> Text,
    }
}

pub use super::servers::{mysql_url, postgres_url};

/// Runs `$body` with the connection of a [`Raw`], whatever its backend.
macro_rules! on_raw {
    ($raw:expr, |$conn:ident| $body:expr) => {
        match $raw {
            $crate::support::db::Raw::Postgres($conn) => $body,
            $crate::support::db::Raw::Sqlite($conn) => $body,
            $crate::support::db::Raw::Mysql($conn) => $body,
        }
    };
}
// Only the binaries that use raw SQL import it.
#[allow(unused_imports)]
pub(crate) use on_raw;

/// A database for one test: a server database shared with the other tests, or a SQLite file of its own.
pub struct Fixture {
    pub url: String,
    pub _dir: Option<TempDir>,
}

impl Fixture {
    pub fn postgres() -> Self {
        Self {
            url: postgres_url(),
            _dir: None,
        }
    }

    pub fn mysql() -> Self {
        Self {
            url: mysql_url(),
            _dir: None,
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self {
            url: format!("sqlite://{}", dir.path().join("tokens.db").display()),
            _dir: Some(dir),
        }
    }

    /// A migrated store; panics (fails the test) if the database is unreachable.
    pub async fn store(&self, options: StoreOptions) -> DieselStore {
        let store = DieselStore::connect(&self.url, options)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate {}: {e}", store.describe()));
        store
    }

    pub async fn plain_store(&self) -> DieselStore {
        self.store(StoreOptions::default()).await
    }

    pub async fn encrypted_store(&self, key_byte: u8) -> DieselStore {
        self.store(StoreOptions {
            encryption_key: Some(encryption_key(key_byte)),
            ..StoreOptions::default()
        })
        .await
    }

    /// The same kind of database, but empty: a new SQLite file, or a new database on the server (dropped by
    /// [`Fixture::drop_database`]). Migrations are only really exercised on an empty database, since the shared
    /// test database keeps its tables from earlier runs.
    pub async fn empty(&self) -> Fixture {
        if self._dir.is_some() {
            return Fixture::sqlite();
        }
        let name = format!("paynet_test_{:016x}", rand::random::<u64>());
        self.admin(&format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_path(&name);
        Fixture {
            url: url.to_string(),
            _dir: None,
        }
    }

    pub async fn drop_database(&self, server: &Fixture) {
        if self._dir.is_some() {
            return;
        }
        let url = url::Url::parse(&self.url).unwrap();
        let name = url.path().trim_start_matches('/');
        if self.url.starts_with("postgres") {
            // FORCE: the stores' pooled connections are still open.
            server
                .admin(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await;
        } else {
            server.admin(&format!("DROP DATABASE {name}")).await;
        }
    }

    pub async fn admin(&self, statement: &str) {
        use diesel_async::SimpleAsyncConnection;
        on_raw!(&mut self.raw().await, |conn| conn
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}")));
    }

    pub async fn raw(&self) -> Raw {
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            Raw::Sqlite(
                SqliteConnection::establish(path)
                    .await
                    .expect("raw SQLite connection"),
            )
        } else if self.url.starts_with("postgres") {
            Raw::Postgres(
                AsyncPgConnection::establish(&self.url)
                    .await
                    .expect("raw PostgreSQL connection"),
            )
        } else {
            Raw::Mysql(
                AsyncMysqlConnection::establish(&self.url)
                    .await
                    .expect("raw MySQL connection"),
            )
        }
    }
}

/// A direct connection, to look at and tamper with rows behind the store's back.
#[allow(clippy::large_enum_variant)] // one short-lived value per test
pub enum Raw {
    Postgres(AsyncPgConnection),
    Sqlite(SqliteConnection),
    Mysql(AsyncMysqlConnection),
}

type FullRow = (
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

diesel::table! {
    paynet_lease (name) {
        name -> Text,
        lock_until -> BigInt,
        locked_at -> BigInt,
        locked_by -> Text,
    }
}

impl Raw {
    /// The lease row's `lock_until - locked_at`: the TTL it was taken for, in milliseconds.
    pub async fn lease_span_ms(&mut self, key: &str) -> i64 {
        // Scoped: diesel's `load`/`first` would shadow the store's methods where this is used.
        use diesel_async::RunQueryDsl;
        use paynet_lease::dsl as l;
        let (until, at) = on_raw!(self, |conn| l::paynet_lease
            .filter(l::name.eq(key))
            .select((l::lock_until, l::locked_at))
            .get_result::<(i64, i64)>(conn)
            .await
            .expect("raw lease row"));
        until - at
    }

    /// Moves the lease of `key` `by_ms` into the past: on the database's clock, as if that much time had passed.
    pub async fn age_lease(&mut self, key: &str, by_ms: i64) {
        // Scoped: diesel's `load`/`first` would shadow the store's methods where this is used.
        use diesel_async::RunQueryDsl;
        use paynet_lease::dsl as l;
        let updated = on_raw!(self, |conn| diesel::update(
            l::paynet_lease.filter(l::name.eq(key))
        )
        .set((
            l::lock_until.eq(l::lock_until - by_ms),
            l::locked_at.eq(l::locked_at - by_ms),
        ))
        .execute(conn)
        .await
        .expect("raw lease update"));
        assert_eq!(updated, 1, "one lease row for {key}");
    }

    /// How many sessions other than this one wait for the migration lock: PostgreSQL's advisory lock
    /// `b"paynetmg"` in this database, MySQL's `paynet_auth_migrations`. SQLite has no such view.
    pub async fn migration_lock_waiters(&mut self) -> i64 {
        use diesel::sql_types::BigInt;
        use diesel_async::RunQueryDsl;
        let count = match self {
            // The 64-bit key is split into classid (high half) and objid (low half).
            Raw::Postgres(_) => {
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND classid = 1885436270 AND objid = 1702128999 \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            }
            Raw::Mysql(_) => {
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE ID <> CONNECTION_ID() AND DB = DATABASE() AND INFO LIKE '%GET_LOCK(''paynet_auth_migrations''%'"
            }
            Raw::Sqlite(_) => panic!("SQLite has no view of who waits for a lock"),
        };
        on_raw!(self, |conn| diesel::select(diesel::dsl::sql::<BigInt>(
            &format!("({count})")
        ))
        .get_result::<i64>(conn)
        .await
        .expect("lock waiters"))
    }

    /// The `token` and `nonce` columns.
    pub async fn token_columns(&mut self, key: &str) -> (String, Option<String>) {
        // Scoped: diesel's `load`/`first` would shadow the store's methods where this is used.
        use diesel_async::RunQueryDsl;
        use paynet_tokens::dsl as t;
        on_raw!(self, |conn| t::paynet_tokens
            .filter(t::credential_key.eq(key))
            .select((t::token, t::nonce))
            .get_result::<(String, Option<String>)>(conn)
            .await
            .expect("raw row"))
    }

    pub async fn set_token_column(&mut self, key: &str, value: &str) {
        // Scoped: diesel's `load`/`first` would shadow the store's methods where this is used.
        use diesel_async::RunQueryDsl;
        use paynet_tokens::dsl as t;
        on_raw!(self, |conn| diesel::update(
            t::paynet_tokens.filter(t::credential_key.eq(key))
        )
        .set(t::token.eq(value))
        .execute(conn)
        .await
        .expect("raw update"));
    }

    /// Copies the row of `from` as it is to a new row under `to`, as someone with database access could.
    pub async fn copy_row(&mut self, from: &str, to: &str) {
        // Scoped: diesel's `load`/`first` would shadow the store's methods where this is used.
        use diesel_async::RunQueryDsl;
        use paynet_tokens::dsl as t;
        on_raw!(self, |conn| {
            let row: FullRow = t::paynet_tokens
                .filter(t::credential_key.eq(from))
                .select((
                    t::token,
                    t::nonce,
                    t::generation,
                    t::obtained_at,
                    t::expires_at,
                    t::agent_id,
                    t::terminal_id,
                    t::user_id,
                    t::user_login,
                    t::written_by,
                ))
                .get_result(conn)
                .await
                .expect("raw row");
            diesel::insert_into(t::paynet_tokens)
                .values((
                    t::credential_key.eq(to),
                    t::token.eq(row.0),
                    t::nonce.eq(row.1),
                    t::generation.eq(row.2),
                    t::obtained_at.eq(row.3),
                    t::expires_at.eq(row.4),
                    t::agent_id.eq(row.5),
                    t::terminal_id.eq(row.6),
                    t::user_id.eq(row.7),
                    t::user_login.eq(row.8),
                    t::written_by.eq(row.9),
                ))
                .execute(conn)
                .await
                .expect("raw insert");
        });
    }
}

/// A credential key no other test (or earlier run) uses.
pub fn unique_key(test: &str) -> String {
    format!("{test}-{:016x}", rand::random::<u64>())
}

pub fn encryption_key(byte: u8) -> SecretString {
    base64::engine::general_purpose::STANDARD
        .encode([byte; 32])
        .into()
}
